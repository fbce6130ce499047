//! The RabbitMQ queue across processes and failures: two consumers (separate connections, as two
//! processes would have) sharing the queues, a consumer dying with messages in hand, a broker
//! restart, exact depth while deliveries are in transit, and stale tags after a reconnect.
//!
//! The restart test stops the real broker (`rabbitmqctl stop_app` / `start_app`), so it takes the
//! broker lock exclusively; the other tests share it.

#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_core::CommandQueue;
use tally_core::model::{Delivery, QueueMessage};
use tally_queue_rabbitmq::{Rabbit, connect};
use tokio::sync::RwLock;
use tokio::time::Instant;
use uuid::Uuid;

use common::{Cleanup, fresh_options};

/// Held shared by every test, exclusively by the one that restarts the broker.
static BROKER: RwLock<()> = RwLock::const_new(());

fn message(partition: &str, seq: u32) -> QueueMessage {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.extend_from_slice(partition.as_bytes());
    QueueMessage {
        message_id: Uuid::now_v7(),
        partition_key: partition.to_owned(),
        payload,
    }
}

fn seq_of(d: &Delivery) -> u32 {
    u32::from_le_bytes(d.payload[..4].try_into().unwrap())
}

async fn open(options: &tally_queue_rabbitmq::RabbitOptions) -> Arc<Rabbit> {
    connect(options.clone())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be running at {}: {e}", options.url))
}

/// Enqueues `per_partition` messages to each partition, in rounds, in batches of `batch`.
fn workload(partitions: usize, per_partition: u32, prefix: &str) -> Vec<QueueMessage> {
    let mut all = Vec::new();
    for seq in 0..per_partition {
        for p in 0..partitions {
            all.push(message(&format!("{prefix}{p}"), seq));
        }
    }
    all
}

/// Checks that every partition's messages were seen in order: the deliveries, in the order they
/// happened, without repeats, are 0, 1, 2, … per partition; a repeat must be a redelivery.
fn assert_in_order(log: &[(String, u32, u32)], partitions: &[String], per_partition: u32) {
    let mut seen: HashMap<&str, Vec<u32>> = HashMap::new();
    for (p, seq, redeliveries) in log {
        let list = seen.entry(p.as_str()).or_default();
        if list.contains(seq) {
            assert!(
                *redeliveries >= 1,
                "{p}/{seq} delivered twice, the second time not as a redelivery"
            );
            continue;
        }
        list.push(*seq);
    }
    for p in partitions {
        let got = seen.get(p.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            got,
            (0..per_partition).collect::<Vec<_>>(),
            "partition {p} out of order or incomplete"
        );
    }
}

/// Who holds each partition right now, and every delivery in the order it happened.
#[derive(Default)]
struct Shared {
    holder: HashMap<String, usize>,
    log: Vec<(String, u32, u32)>,
    violations: Vec<String>,
    unique: HashSet<Uuid>,
}

/// Receives, "handles" and acks until `total` distinct messages were seen by all consumers or
/// `stop_after` by this one; records who holds which partition between delivery and ack.
async fn consume_loop(
    me: usize,
    queue: Arc<Rabbit>,
    shared: Arc<Mutex<Shared>>,
    total: usize,
    stop_after: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut mine = 0;
    while Instant::now() < deadline {
        if shared.lock().unwrap().unique.len() >= total || mine >= stop_after {
            break;
        }
        let got = match queue.receive(500, Duration::from_millis(200)).await {
            Ok(got) => got,
            Err(e) => panic!("consumer {me}: {e}"),
        };
        if got.is_empty() {
            continue;
        }
        mine += got.len();
        let partitions: HashSet<String> = got.iter().map(|d| d.partition_key.clone()).collect();
        {
            let mut s = shared.lock().unwrap();
            for p in &partitions {
                match s.holder.get(p) {
                    Some(other) if *other != me => {
                        let v = format!("{p} delivered to {me} while in flight at {other}");
                        s.violations.push(v);
                    }
                    _ => {}
                }
                s.holder.insert(p.clone(), me);
            }
            for d in &got {
                s.log
                    .push((d.partition_key.clone(), seq_of(d), d.redeliveries));
                s.unique.insert(d.message_id);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        {
            // Released before the ack is sent: from here on the other consumer may legitimately
            // get the partition (once the broker has the ack), never before.
            let mut s = shared.lock().unwrap();
            for p in &partitions {
                if s.holder.get(p) == Some(&me) {
                    s.holder.remove(p);
                }
            }
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
    }
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_share_the_queues_in_partition_order() {
    let _shared_broker = BROKER.read().await;
    let options = fresh_options(8);
    let _cleanup = Cleanup(options.clone());
    let producer = open(&options).await;
    let (a, b) = tokio::join!(open(&options), open(&options));

    let partitions: Vec<String> = (0..40).map(|p| format!("store:{p}")).collect();
    let per_partition = 50;
    let all = workload(40, per_partition, "store:");
    let total = all.len();

    let shared = Arc::new(Mutex::new(Shared::default()));
    // A stops (acked, then closed: a clean hand-over) after a third of the messages; B goes on.
    let ca = tokio::spawn(consume_loop(0, a.clone(), shared.clone(), total, total / 3));
    let cb = tokio::spawn(consume_loop(
        1,
        b.clone(),
        shared.clone(),
        total,
        usize::MAX,
    ));
    for batch in all.chunks(100) {
        producer.enqueue(batch.to_vec()).await.expect("enqueue");
    }
    let got_a = ca.await.expect("consumer a");
    a.close().await;
    let got_b = cb.await.expect("consumer b");
    println!("consumer a received {got_a}, consumer b {got_b} of {total}");

    {
        let s = shared.lock().unwrap();
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.unique.len(), total, "every message delivered");
        assert_in_order(&s.log, &partitions, per_partition);
        // Which consumer the broker makes active on a queue depends on who registered first, so
        // how the queues were split is printed, not asserted; B always ends up with A's share.
        assert!(got_b > 0, "B took over");
    }
    assert_eq!(b.depth().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_dies_hands_its_messages_over_in_order() {
    let _shared_broker = BROKER.read().await;
    let options = fresh_options(4);
    let _cleanup = Cleanup(options.clone());
    let producer = open(&options).await;
    let a = open(&options).await;
    // A registers first, so it is the active consumer of every queue; B waits behind it.
    assert_eq!(
        a.receive(16, Duration::from_millis(50)).await,
        Ok(Vec::new())
    );
    let b = open(&options).await;
    assert_eq!(
        b.receive(16, Duration::from_millis(50)).await,
        Ok(Vec::new())
    );

    let partitions: Vec<String> = (0..20).map(|p| format!("p{p}")).collect();
    let first = workload(20, 30, "p");
    producer.enqueue(first).await.expect("enqueue");

    // A takes a batch and dies without acking it (its prefetched messages die with it too).
    let mut held = Vec::new();
    while held.len() < 100 {
        held.extend(
            a.receive(100, Duration::from_secs(5))
                .await
                .expect("receive"),
        );
    }
    let held_ids: HashSet<Uuid> = held.iter().map(|d| d.message_id).collect();
    // More messages arrive while A goes away.
    let late: Vec<QueueMessage> = (30..60)
        .flat_map(|seq| (0..20).map(move |p| message(&format!("p{p}"), seq)))
        .collect();
    let feeding = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for batch in late.chunks(20) {
                producer.enqueue(batch.to_vec()).await.expect("enqueue");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(a);
    feeding.await.expect("producer");

    let total = 20 * 60;
    let mut log = Vec::new();
    let mut unique = HashSet::new();
    let mut handed_over = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unique.len() < total && Instant::now() < deadline {
        let got = b
            .receive(500, Duration::from_millis(200))
            .await
            .expect("receive");
        for d in &got {
            if held_ids.contains(&d.message_id) {
                handed_over += 1;
                assert!(
                    d.redeliveries >= 1,
                    "a message A had is a redelivery: {d:?}"
                );
            }
            log.push((d.partition_key.clone(), seq_of(d), d.redeliveries));
            unique.insert(d.message_id);
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        b.ack(&tags).await.expect("ack");
    }
    assert_eq!(unique.len(), total, "every message reached B");
    assert_eq!(handed_over, held.len(), "everything A held came back once");
    assert_in_order(&log, &partitions, 60);
    assert_eq!(b.depth().await, Ok(0));
}

/// Not a test by itself: the consumer process that `a_killed_consumer_process_…` starts (this
/// test binary again) and kills. Without `TALLY_RABBIT_CHILD_NAMESPACE` it does nothing.
#[tokio::test]
async fn child_process_consumer() {
    let Ok(namespace) = std::env::var("TALLY_RABBIT_CHILD_NAMESPACE") else {
        return;
    };
    let mut options = fresh_options(4);
    options.namespace = namespace;
    let q = open(&options).await;
    let mut held = Vec::new();
    while held.len() < 100 {
        held.extend(
            q.receive(100, Duration::from_secs(5))
                .await
                .expect("receive"),
        );
    }
    let mut out = String::new();
    for d in &held {
        out.push_str(&format!("HELD {}\n", d.message_id));
    }
    out.push_str("READY\n");
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).expect("stdout");
    stdout.flush().expect("stdout");
    drop(stdout);
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_consumer_process_hands_its_messages_over_in_order() {
    use tokio::io::AsyncBufReadExt;

    let _shared_broker = BROKER.read().await;
    let options = fresh_options(4);
    let _cleanup = Cleanup(options.clone());
    let producer = open(&options).await;
    let partitions: Vec<String> = (0..20).map(|p| format!("k{p}")).collect();
    producer
        .enqueue(workload(20, 30, "k"))
        .await
        .expect("enqueue");

    // Another process takes the queues and a batch of messages, and holds them unacked.
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_process_consumer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TALLY_RABBIT_CHILD_NAMESPACE", &options.namespace)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the consumer process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut held_ids = HashSet::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read the consumer process") {
            if let Some(id) = line.strip_prefix("HELD ") {
                held_ids.insert(Uuid::parse_str(id).expect("message id"));
            } else if line == "READY" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the consumer process took its batch");

    // This process waits behind it; more messages arrive while it is killed.
    let b = open(&options).await;
    assert_eq!(
        b.receive(16, Duration::from_millis(50)).await,
        Ok(Vec::new())
    );
    let late: Vec<QueueMessage> = (30..60)
        .flat_map(|seq| (0..20).map(move |p| message(&format!("k{p}"), seq)))
        .collect();
    let feeding = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for batch in late.chunks(20) {
                producer.enqueue(batch.to_vec()).await.expect("enqueue");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    child.kill().await.expect("kill the consumer process");
    feeding.await.expect("producer");

    let total = 20 * 60;
    let mut log = Vec::new();
    let mut unique = HashSet::new();
    let mut handed_over = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unique.len() < total && Instant::now() < deadline {
        let got = b
            .receive(500, Duration::from_millis(200))
            .await
            .expect("receive");
        for d in &got {
            if held_ids.contains(&d.message_id) {
                handed_over += 1;
                assert!(
                    d.redeliveries >= 1,
                    "a message the dead process had is a redelivery"
                );
            }
            log.push((d.partition_key.clone(), seq_of(d), d.redeliveries));
            unique.insert(d.message_id);
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        b.ack(&tags).await.expect("ack");
    }
    assert_eq!(unique.len(), total, "every message reached this process");
    assert_eq!(
        handed_over,
        held_ids.len(),
        "everything the dead process held came back once"
    );
    assert_in_order(&log, &partitions, 60);
    assert_eq!(b.depth().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_exact_while_deliveries_are_in_transit() {
    let _shared_broker = BROKER.read().await;
    let options = fresh_options(4);
    let _cleanup = Cleanup(options.clone());
    let q = open(&options).await;
    // Start consuming: from now on every message is pushed to this process as soon as it is queued.
    assert_eq!(
        q.receive(1, Duration::from_millis(10)).await,
        Ok(Vec::new())
    );
    let mut expected = 0u64;
    for round in 0..30u32 {
        let batch: Vec<QueueMessage> = (0..7).map(|p| message(&format!("d{p}"), round)).collect();
        q.enqueue(batch).await.expect("enqueue");
        expected += 7;
        assert_eq!(q.depth().await, Ok(expected), "after enqueue round {round}");
    }
    let mut seen = 0u64;
    while seen < expected {
        let got = q
            .receive(1000, Duration::from_secs(5))
            .await
            .expect("receive");
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        q.ack(&tags).await.expect("ack");
        seen += got.len() as u64;
        assert_eq!(q.depth().await, Ok(expected - seen), "after acking {seen}");
    }
}

#[tokio::test]
async fn a_stale_tag_acks_nothing_after_a_reconnect() {
    let _shared_broker = BROKER.read().await;
    let options = fresh_options(2);
    let _cleanup = Cleanup(options.clone());
    let q = open(&options).await;
    let m = message("s", 0);
    q.enqueue(vec![m.clone()]).await.expect("enqueue");
    let first = q.receive(1, Duration::from_secs(5)).await.expect("receive");
    assert_eq!(first.len(), 1);
    // The connection goes away (as when the broker drops it); the next call reconnects.
    q.close().await;
    let again = q.receive(1, Duration::from_secs(5)).await.expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, m.message_id);
    assert!(again[0].redeliveries >= 1);
    assert_ne!(again[0].tag, first[0].tag, "tags are never reused");
    // The old tag is a no-op: the message stays in flight until its own tag is acked.
    q.ack(&[first[0].tag]).await.expect("stale ack");
    assert_eq!(q.depth().await, Ok(1));
    q.ack(&[again[0].tag]).await.expect("ack");
    assert_eq!(q.depth().await, Ok(0));
}

#[tokio::test]
async fn a_message_handed_back_too_often_is_dead_lettered() {
    let _shared_broker = BROKER.read().await;
    let mut options = fresh_options(2);
    options.max_returns = 2;
    let _cleanup = Cleanup(options.clone());
    let q = open(&options).await;
    let (poison, after) = (message("x", 0), message("x", 1));
    q.enqueue(vec![poison.clone()]).await.expect("enqueue");
    // Twice the consumer's connection ends while it holds the message (as when a message kills
    // its processor): the broker hands it back each time, counted.
    for returns in 0..2 {
        let got = q.receive(1, Duration::from_secs(5)).await.expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message_id, poison.message_id);
        assert_eq!(got[0].redeliveries, returns);
        q.close().await;
    }
    // (Enqueued only now: a message prefetched behind it would have been handed back as often.)
    q.enqueue(vec![after.clone()]).await.expect("enqueue");
    // The third time it goes to the dead letters instead, and the partition moves on.
    let got = q.receive(1, Duration::from_secs(5)).await.expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, after.message_id);
    let dead = q.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, poison.message_id);
    assert_eq!(dead[0].partition_key, "x");
    assert!(dead[0].reason.contains("handed back"), "{}", dead[0].reason);
    q.ack(&[got[0].tag]).await.expect("ack");
    assert_eq!(q.depth().await, Ok(0));
}

async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("rabbitmqctl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_for_port() {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect("127.0.0.1:5672")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "RabbitMQ did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing_and_the_queue_reconnects() {
    let _exclusive_broker = BROKER.write().await;
    let options = fresh_options(4);
    let _cleanup = Cleanup(options.clone());
    let q = open(&options).await;

    let partitions: Vec<String> = (0..10).map(|p| format!("r{p}")).collect();
    let before = workload(10, 10, "r");
    let after: Vec<QueueMessage> = (10..20)
        .flat_map(|seq| (0..10).map(move |p| message(&format!("r{p}"), seq)))
        .collect();
    let expected: HashSet<Uuid> = before.iter().chain(&after).map(|m| m.message_id).collect();
    q.enqueue(before).await.expect("enqueue");

    // Some handled and acked, some in flight when the broker goes down.
    let mut log = Vec::new();
    let mut unique = HashSet::new();
    let got = q
        .receive(30, Duration::from_secs(5))
        .await
        .expect("receive");
    assert!(!got.is_empty());
    let acked: Vec<u64> = got.iter().take(got.len() / 2).map(|d| d.tag).collect();
    for d in &got {
        log.push((d.partition_key.clone(), seq_of(d), d.redeliveries));
        unique.insert(d.message_id);
    }
    q.ack(&acked).await.expect("ack");

    let started = Instant::now();
    rabbitmqctl(&["stop_app"]).await;
    let down = tokio::time::timeout(
        Duration::from_secs(15),
        q.enqueue(vec![message("outage", 0)]),
    )
    .await
    .expect("a call during the outage returns");
    assert!(down.is_err(), "enqueue while the broker is down: {down:?}");
    assert!(q.depth().await.is_err());
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    wait_for_port().await;

    // Calls fail until the adapter has reconnected by itself; the test only retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match q.enqueue(after.clone()).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    println!(
        "broker back and enqueue accepted after {:?}",
        started.elapsed()
    );

    while !expected.iter().all(|id| unique.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "messages lost: {} of {} seen",
            unique.len(),
            expected.len()
        );
        let got = match q.receive(100, Duration::from_millis(200)).await {
            Ok(got) => got,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for d in &got {
            log.push((d.partition_key.clone(), seq_of(d), d.redeliveries));
            unique.insert(d.message_id);
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        let _ = q.ack(&tags).await;
    }
    assert_in_order(&log, &partitions, 20);
    // The enqueue attempted during the outage may or may not have reached the broker; nothing else
    // is left.
    let left = q.depth().await.expect("depth");
    assert!(left <= 1, "depth {left}");
}
