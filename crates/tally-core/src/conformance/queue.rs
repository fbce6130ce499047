//! [`CommandQueue`](crate::CommandQueue) checks. Waits are bounded only to turn a hang into a failure;
//! nothing here asserts how fast a queue is.
//!
//! Not checked, because the contract leaves the timing to the adapter: redelivery of a message whose
//! consumer died without acking or nacking it.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use super::support::{PATIENCE, SHORT, consume, ids, message, receive_all, receive_one, sorted};
use crate::Backend;
use crate::model::{Delivery, QueueMessage};

/// Nacks with `retry_after` 0 allowed before a message must have been dead-lettered: the suites assume
/// an adapter's `max_deliveries` is configured below this.
pub const MAX_NACKS: usize = 20;

fn position_of(seen: &[Uuid], id: Uuid) -> usize {
    seen.iter()
        .position(|m| *m == id)
        .unwrap_or_else(|| panic!("message {id} was never delivered"))
}

fn the_one(got: &[Delivery], id: Uuid) -> &Delivery {
    let mut of = got.iter().filter(|d| d.message_id == id);
    let one = of
        .next()
        .unwrap_or_else(|| panic!("message {id} not delivered: {got:?}"));
    assert!(of.next().is_none(), "message {id} delivered twice at once");
    one
}

pub async fn delivers_messages_intact(b: &Backend) {
    let sent = vec![
        message("p-1", b"{\"hello\":1}"),
        message("store:s-2", &[0, 159, 146, 150, 255, 10, 13]),
        message("reference", &[]),
    ];
    b.queue.enqueue(sent.clone()).await.expect("enqueue");
    let got = consume(b.queue.as_ref(), sent.len()).await;
    let tags: HashSet<u64> = got.iter().map(|d| d.tag).collect();
    assert_eq!(tags.len(), got.len(), "tags tell deliveries apart");
    let mut received: Vec<QueueMessage> = got
        .iter()
        .map(|d| {
            assert_eq!(d.redeliveries, 0, "first delivery of {}", d.message_id);
            QueueMessage {
                message_id: d.message_id,
                partition_key: d.partition_key.clone(),
                payload: d.payload.clone(),
            }
        })
        .collect();
    received.sort_by_key(|m| m.message_id);
    let mut sent = sent;
    sent.sort_by_key(|m| m.message_id);
    assert_eq!(received, sent);
}

pub async fn keeps_partition_order(b: &Backend) {
    let [a1, b1, a2, b2, a3] = ["a", "b", "a", "b", "a"].map(|p| message(p, p.as_bytes()));
    let first = vec![a1.clone(), b1.clone(), a2.clone(), b2.clone()];
    b.queue.enqueue(first).await.expect("enqueue");
    b.queue.enqueue(vec![a3.clone()]).await.expect("enqueue");
    let seen = ids(&consume(b.queue.as_ref(), 5).await);
    let at = |m: &QueueMessage| position_of(&seen, m.message_id);
    assert!(
        at(&a1) < at(&a2) && at(&a2) < at(&a3),
        "partition a out of order"
    );
    assert!(at(&b1) < at(&b2), "partition b out of order");
}

pub async fn holds_a_partition_while_a_message_is_in_flight(b: &Backend) {
    let [a1, b1, a2, b2] = ["a", "b", "a", "b"].map(|p| message(p, p.as_bytes()));
    let all = vec![a1.clone(), b1.clone(), a2.clone(), b2.clone()];
    b.queue.enqueue(all).await.expect("enqueue");

    // Receiving one at a time and acking nothing, only the head of each partition comes out.
    let out = receive_all(b.queue.as_ref()).await;
    assert_eq!(
        sorted(ids(&out)),
        sorted(vec![a1.message_id, b1.message_id])
    );

    let a1_tag = the_one(&out, a1.message_id).tag;
    b.queue.ack(&[a1_tag]).await.expect("ack");
    let next = receive_all(b.queue.as_ref()).await;
    assert_eq!(
        ids(&next),
        [a2.message_id],
        "a2 follows a1; b2 waits for b1"
    );
}

pub async fn ack_removes_messages(b: &Backend) {
    assert_eq!(b.queue.depth().await, Ok(0));
    let sent = ["x", "y", "z"].map(|p| message(p, b"m"));
    b.queue.enqueue(sent.to_vec()).await.expect("enqueue");
    assert_eq!(b.queue.depth().await, Ok(3));
    let out = receive_all(b.queue.as_ref()).await;
    assert_eq!(out.len(), 3);
    assert_eq!(b.queue.depth().await, Ok(3), "in-flight messages count");
    let tags: Vec<u64> = out.iter().map(|d| d.tag).collect();
    b.queue.ack(&tags[..1]).await.expect("ack");
    assert_eq!(b.queue.depth().await, Ok(2));
    b.queue.ack(&tags[1..]).await.expect("ack");
    assert_eq!(b.queue.depth().await, Ok(0));
    assert_eq!(
        b.queue.receive(16, SHORT).await,
        Ok(Vec::new()),
        "acked is gone"
    );
}

pub async fn nack_redelivers_in_partition_order(b: &Backend) {
    let (m1, m2) = (message("p", b"first"), message("p", b"second"));
    b.queue
        .enqueue(vec![m1.clone(), m2.clone()])
        .await
        .expect("enqueue");
    let out = receive_all(b.queue.as_ref()).await;
    assert_eq!(ids(&out), [m1.message_id]);
    b.queue
        .nack(out[0].tag, "try again", Duration::from_millis(20))
        .await
        .expect("nack");
    assert_eq!(
        b.queue.depth().await,
        Ok(2),
        "a nacked message stays queued"
    );

    let again = [receive_one(b.queue.as_ref()).await];
    assert_eq!(ids(&again), [m1.message_id], "m1 comes back before m2");
    assert_eq!(again[0].redeliveries, 1);
    assert_eq!(
        (again[0].partition_key.as_str(), again[0].payload.as_slice()),
        ("p", &b"first"[..])
    );
    b.queue.ack(&[again[0].tag]).await.expect("ack");

    let last = [receive_one(b.queue.as_ref()).await];
    assert_eq!(ids(&last), [m2.message_id]);
    assert_eq!(last[0].redeliveries, 0);
}

pub async fn nack_delays_redelivery(b: &Backend) {
    let (m1, m2) = (message("p", b"1"), message("p", b"2"));
    b.queue
        .enqueue(vec![m1.clone(), m2])
        .await
        .expect("enqueue");
    let out = receive_all(b.queue.as_ref()).await;
    assert_eq!(ids(&out), [m1.message_id]);
    b.queue
        .nack(out[0].tag, "later", Duration::from_secs(3600))
        .await
        .expect("nack");
    // Not due for an hour, and the partition waits behind it.
    assert_eq!(b.queue.receive(16, SHORT).await, Ok(Vec::new()));
    assert_eq!(b.queue.depth().await, Ok(2));
}

pub async fn dead_letters_after_max_deliveries(b: &Backend) {
    let (poison, after) = (message("d", b"poison"), message("d", b"after"));
    b.queue
        .enqueue(vec![poison.clone(), after.clone()])
        .await
        .expect("enqueue");
    let mut dead = Vec::new();
    for attempt in 0..MAX_NACKS {
        let d = receive_one(b.queue.as_ref()).await;
        assert_eq!(
            d.message_id, poison.message_id,
            "the partition waits behind the poison message"
        );
        assert_eq!(d.redeliveries as usize, attempt);
        b.queue
            .nack(d.tag, "cannot decode", Duration::ZERO)
            .await
            .expect("nack");
        dead = b.queue.dead_letters().await.expect("dead_letters");
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "dead-lettered within {MAX_NACKS} nacks");
    let letter = &dead[0];
    assert_eq!(letter.message_id, poison.message_id);
    assert_eq!(letter.partition_key, "d");
    assert_eq!(letter.payload, b"poison");
    assert_eq!(letter.reason, "cannot decode");
    assert_eq!(
        b.queue.depth().await,
        Ok(1),
        "a dead letter is off the queue"
    );

    // The partition moves on past it.
    let next = consume(b.queue.as_ref(), 1).await;
    assert_eq!(ids(&next), [after.message_id]);

    assert_eq!(b.queue.replay_dead_letter(Uuid::now_v7()).await, Ok(false));
    assert_eq!(
        b.queue.replay_dead_letter(poison.message_id).await,
        Ok(true)
    );
    assert_eq!(b.queue.dead_letters().await, Ok(Vec::new()));
    assert_eq!(
        b.queue.replay_dead_letter(poison.message_id).await,
        Ok(false)
    );
    let back = consume(b.queue.as_ref(), 1).await;
    assert_eq!(ids(&back), [poison.message_id]);
    assert_eq!(back[0].payload, b"poison");
    assert_eq!(b.queue.depth().await, Ok(0));
}

pub async fn receive_on_empty_queue_returns_empty(b: &Backend) {
    let wait = Duration::from_millis(100);
    let got = tokio::time::timeout(wait + PATIENCE, b.queue.receive(16, wait)).await;
    assert_eq!(
        got,
        Ok(Ok(Vec::new())),
        "an empty receive returns after its wait"
    );
}

pub async fn receive_waits_for_a_message(b: &Backend) {
    let queue = b.queue.clone();
    let m = message("late", b"late");
    let sent = m.clone();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.enqueue(vec![sent]).await
    });
    let got = b.queue.receive(16, PATIENCE).await.expect("receive");
    assert_eq!(
        ids(&got),
        [m.message_id],
        "receive picks up a message enqueued while it waits"
    );
    assert_eq!(producer.await.expect("task"), Ok(()));
}
