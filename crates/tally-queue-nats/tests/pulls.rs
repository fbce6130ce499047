//! How the adapter fetches when the server or the network misbehaves, on a real server behind a proxy
//! (`support::proxy`) that drops, holds back or stops what the server sends: a pull request whose 408
//! never comes, deliveries that come after the status that closed their pull request, a connection
//! that goes silent without closing. Messages are enqueued by a second process that talks to the
//! server directly.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tally_core::CommandQueue;
use tally_core::model::{Delivery, QueueMessage};
use tally_queue_nats::{Nats, NatsOptions};
use tokio::time::Instant;
use uuid::Uuid;

use support::proxy::Proxy;
use support::{Cleanup, open, options};

/// How long the adapter's pull requests stay open at the server.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

fn message(key: &str, payload: &str) -> QueueMessage {
    QueueMessage {
        message_id: Uuid::now_v7(),
        partition_key: key.to_owned(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// One partition (so every message is on the one pull consumer), a direct producer and a consumer
/// that connects through `proxy`.
async fn one_partition(
    prefix: &str,
    proxy: &Proxy,
    tune: impl FnOnce(&mut NatsOptions),
) -> (Arc<Nats>, Arc<Nats>, Cleanup) {
    let mut o = options(prefix);
    o.partitions = 1;
    tune(&mut o);
    let cleanup = Cleanup(o.namespace.clone());
    let producer = open(&o).await;
    o.url = proxy.url();
    let consumer = open(&o).await;
    (producer, consumer, cleanup)
}

/// Receives until something comes or `within` has passed; `Unavailable` (a reconnect) is waited out.
async fn receive_within(queue: &Nats, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match queue.receive(100, Duration::from_millis(100)).await {
            Ok(got) if !got.is_empty() => return got,
            Ok(_) => {}
            Err(tally_core::Error::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("receive: {e}"),
        }
    }
    Vec::new()
}

#[tokio::test]
async fn a_pull_request_whose_408_never_comes_stalls_nothing_and_drops_nothing() {
    let proxy = Proxy::start().await;
    proxy.drop_timeouts();
    let (producer, consumer, _cleanup) = one_partition("no408", &proxy, |_| {}).await;

    producer
        .enqueue(vec![message("k-0", "0")])
        .await
        .expect("enqueue");
    let first = receive_within(&consumer, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1, "the first message is delivered");
    // Kept unacked throughout: had the partition been reset, its tag would ack nothing and
    // JetStream would deliver it again.
    let first = &first[0];

    for round in 1..=4 {
        // Every pull request open now expires meanwhile, and its 408 is dropped.
        tokio::time::sleep(PULL_EXPIRES + Duration::from_millis(500)).await;
        let sent = Instant::now();
        producer
            .enqueue(vec![message(&format!("k-{round}"), &round.to_string())])
            .await
            .expect("enqueue");
        let got = receive_within(&consumer, Duration::from_secs(10)).await;
        let took = sent.elapsed();
        assert!(
            got.iter().all(|d| d.message_id != first.message_id),
            "round {round}: the first message was delivered again: the partition was reset"
        );
        assert_eq!(got.len(), 1, "round {round}: one message");
        assert_eq!(got[0].payload, round.to_string().into_bytes());
        assert_eq!(got[0].redeliveries, 0, "round {round}: {:?}", got[0]);
        // The old adapter waited 5 s more for the 408, then reset the partition and waited an ack
        // wait (2 s here) for the first message to come back before fetching again.
        assert!(
            took < Duration::from_secs(2),
            "round {round}: delivered {took:?} after its enqueue: the pull request whose 408 was lost \
             held up the partition"
        );
        consumer.ack(&[got[0].tag]).await.expect("ack");
    }
    assert!(
        proxy.dropped_timeouts() >= 3,
        "the proxy dropped the 408s ({})",
        proxy.dropped_timeouts()
    );

    consumer.ack(&[first.tag]).await.expect("ack the first");
    assert_eq!(
        consumer.depth().await,
        Ok(0),
        "the first message's tag still acks it"
    );
    let again = receive_within(&consumer, Duration::from_secs(3)).await;
    assert!(again.is_empty(), "nothing delivered twice: {again:?}");
    assert_eq!(proxy.connections(), 1, "no reconnect");
}

#[tokio::test]
async fn deliveries_that_come_after_their_pull_request_closed_are_taken_in_order() {
    let proxy = Proxy::start().await;
    // Longer than a pull request lives: its 408 (let through at once) comes first, then its
    // deliveries.
    proxy.hold_deliveries(PULL_EXPIRES + Duration::from_secs(1));
    let (producer, consumer, _cleanup) = one_partition("late", &proxy, |o| {
        // Beyond the hold, so JetStream does not redeliver what the proxy holds.
        o.ack_wait = Duration::from_secs(15);
    })
    .await;
    let (keys, count) = (3, 20);
    let mut sent = Vec::new();
    for i in 0..count {
        for k in 0..keys {
            sent.push(message(&format!("k-{k}"), &i.to_string()));
        }
    }
    producer.enqueue(sent.clone()).await.expect("enqueue");

    let started = Instant::now();
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    while seen.len() < sent.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {} delivered",
            seen.len(),
            sent.len()
        );
        let got = receive_within(&consumer, Duration::from_millis(500)).await;
        for d in &got {
            assert!(seen.insert(d.message_id), "delivered twice: {d:?}");
            assert_eq!(d.redeliveries, 0, "{d:?}");
            let i = String::from_utf8(d.payload.clone())
                .unwrap()
                .parse()
                .unwrap();
            by_key.entry(d.partition_key.clone()).or_default().push(i);
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        consumer.ack(&tags).await.expect("ack");
    }
    let expected: Vec<usize> = (0..count).collect();
    for (key, order) in &by_key {
        assert_eq!(order, &expected, "{key} in enqueue order");
    }
    assert!(proxy.held_deliveries() >= sent.len());
    assert_eq!(consumer.depth().await, Ok(0));
    assert_eq!(proxy.connections(), 1, "no reconnect");
}

#[tokio::test]
async fn a_connection_that_goes_silent_is_replaced_within_seconds() {
    let proxy = Proxy::start().await;
    let (producer, consumer, _cleanup) = one_partition("silent", &proxy, |o| {
        o.call_timeout = Duration::from_secs(2);
    })
    .await;
    producer
        .enqueue(vec![message("k", "before")])
        .await
        .expect("enqueue");
    let got = receive_within(&consumer, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    consumer.ack(&[got[0].tag]).await.expect("ack");
    assert_eq!(consumer.depth().await, Ok(0));

    // The consumer's connection stays open and carries nothing: the client's own pings would notice
    // after three minutes (three 60 s intervals).
    proxy.silence();
    let silenced = Instant::now();
    producer
        .enqueue(vec![message("k", "after")])
        .await
        .expect("enqueue");
    let got = receive_within(&consumer, Duration::from_secs(40)).await;
    assert_eq!(
        got.len(),
        1,
        "the message enqueued after the connection went silent was delivered within 40 s"
    );
    assert_eq!(got[0].payload, b"after");
    eprintln!("delivered {:?} after the silence", silenced.elapsed());
    assert!(proxy.connections() >= 2, "the consumer reconnected");
    consumer.ack(&[got[0].tag]).await.expect("ack");
    assert_eq!(consumer.depth().await, Ok(0));
}
