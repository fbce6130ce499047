//! The NATS queue with several consumer processes, a consumer that dies, and a broker restart, on a
//! real server. The restart test runs alone (it takes the write side of [`GATE`]); the others share.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_core::CommandQueue;
use tally_core::model::{Delivery, QueueMessage};
use tokio::sync::RwLock;
use tokio::time::Instant;
use uuid::Uuid;

use support::{Cleanup, open, options};

static GATE: RwLock<()> = RwLock::const_new(());

/// `count` messages for each of `keys` partitions, interleaved; payload `"<key>/<index in key>"`.
fn messages(keys: usize, count: usize) -> Vec<QueueMessage> {
    let mut out = Vec::with_capacity(keys * count);
    for i in 0..count {
        for k in 0..keys {
            let key = format!("store:s-{k}");
            out.push(QueueMessage {
                message_id: Uuid::now_v7(),
                payload: format!("{key}/{i}").into_bytes(),
                partition_key: key,
            });
        }
    }
    out
}

fn index_of(d: &Delivery) -> usize {
    let text = String::from_utf8(d.payload.clone()).unwrap();
    let (key, i) = text.rsplit_once('/').unwrap();
    assert_eq!(key, d.partition_key, "payload belongs to its partition");
    i.parse().unwrap()
}

/// Asserts that each key's deliveries are exactly `0..count` in order.
fn assert_in_order(by_key: &BTreeMap<String, Vec<usize>>, keys: usize, count: usize) {
    assert_eq!(by_key.len(), keys, "every partition delivered");
    let expected: Vec<usize> = (0..count).collect();
    for (key, seen) in by_key {
        assert_eq!(seen, &expected, "partition {key} in order, each once");
    }
}

#[derive(Default)]
struct Watch {
    /// Partition key → which consumer has a message of it in flight now.
    in_flight: HashMap<String, usize>,
    violations: Vec<String>,
    by_key: BTreeMap<String, Vec<usize>>,
    per_consumer: [usize; 2],
    redelivered: usize,
    done: usize,
}

/// Receives, checks that no other consumer has the partition in flight, "works" a little, marks the
/// partitions free again and only then acks (so an overlap can only be a real one).
async fn consume(
    me: usize,
    queue: Arc<tally_queue_nats::Nats>,
    watch: Arc<Mutex<Watch>>,
    total: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if watch.lock().unwrap().done >= total {
            return;
        }
        assert!(Instant::now() < deadline, "consumer {me} timed out");
        let got = queue
            .receive(64, Duration::from_millis(200))
            .await
            .expect("receive");
        if got.is_empty() {
            continue;
        }
        {
            let mut w = watch.lock().unwrap();
            let mut mine = HashSet::new();
            for d in &got {
                if let Some(other) = w.in_flight.get(&d.partition_key)
                    && *other != me
                {
                    let v = format!("{} in flight at {other} and {me}", d.partition_key);
                    w.violations.push(v);
                }
                mine.insert(d.partition_key.clone());
                let i = index_of(d);
                w.by_key.entry(d.partition_key.clone()).or_default().push(i);
                if d.redeliveries > 0 {
                    w.redelivered += 1;
                }
            }
            for key in mine {
                w.in_flight.insert(key, me);
            }
            w.per_consumer[me] += got.len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        {
            let mut w = watch.lock().unwrap();
            for d in &got {
                w.in_flight.remove(&d.partition_key);
            }
            w.done += got.len();
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_partitions_in_order_and_never_overlap() {
    let _shared = GATE.read().await;
    let options = options("two");
    let _cleanup = Cleanup(options.namespace.clone());
    // Two processes: two connections, two lease owners.
    let first = open(&options).await;
    let second = open(&options).await;
    let (keys, count) = (40, 150);
    let total = keys * count;
    let watch = Arc::new(Mutex::new(Watch::default()));
    let consumers = [
        tokio::spawn(consume(0, first.clone(), watch.clone(), total)),
        tokio::spawn(consume(1, second.clone(), watch.clone(), total)),
    ];
    // Produced over about five seconds while both consume, so partitions change hands (the second
    // process gets its share from the first) under load.
    let started = Instant::now();
    for chunk in messages(keys, count).chunks(120) {
        first.enqueue(chunk.to_vec()).await.expect("enqueue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in consumers {
        c.await.expect("consumer");
    }
    let w = std::mem::take(&mut *watch.lock().unwrap());
    eprintln!(
        "{total} messages in {:?}, per process {:?}",
        started.elapsed(),
        w.per_consumer
    );
    assert!(w.violations.is_empty(), "overlaps: {:?}", w.violations);
    assert_eq!(w.redelivered, 0, "nothing crashed: no redeliveries");
    assert_in_order(&w.by_key, keys, count);
    assert!(
        w.per_consumer.iter().all(|n| *n > 0),
        "both processes consumed: {:?}",
        w.per_consumer
    );
    assert_eq!(first.depth().await, Ok(0));
    let held = (first.partitions_held(), second.partitions_held());
    assert_eq!(
        held.0.len() + held.1.len(),
        16,
        "every partition held once: {held:?}"
    );
    assert!(
        held.0.iter().all(|p| !held.1.contains(p)),
        "no partition held twice: {held:?}"
    );
}

#[tokio::test]
async fn a_dead_consumers_messages_come_back_to_another_in_order() {
    let _shared = GATE.read().await;
    let options = options("dies");
    let _cleanup = Cleanup(options.namespace.clone());
    let (keys, count) = (8, 10);
    let doomed = open(&options).await;
    doomed
        .enqueue(messages(keys, count))
        .await
        .expect("enqueue");
    // It takes the head of every partition key (and maybe more) and dies without acking or nacking.
    let mut taken: HashSet<Uuid> = HashSet::new();
    let mut heads: HashSet<String> = HashSet::new();
    let started = Instant::now();
    while heads.len() < keys {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first process receives every key's head"
        );
        let got = doomed
            .receive(1000, Duration::from_millis(500))
            .await
            .expect("receive");
        taken.extend(got.iter().map(|d| d.message_id));
        heads.extend(got.into_iter().map(|d| d.partition_key));
    }
    drop(doomed);

    let started = Instant::now();
    let survivor = open(&options).await;
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen = 0;
    while seen < keys * count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the dead consumer's messages came back: {seen} of {}",
            keys * count
        );
        let got = survivor
            .receive(1000, Duration::from_millis(500))
            .await
            .expect("receive");
        for d in &got {
            if taken.contains(&d.message_id) {
                assert!(
                    d.redeliveries >= 1,
                    "{} was delivered to the dead consumer: counted as a redelivery",
                    d.message_id
                );
            } else {
                // Fetched into the dead process's memory but never handed out: JetStream counts it
                // as delivered once, so it may come back marked as possibly seen.
                assert!(d.redeliveries <= 1, "{d:?}");
            }
            by_key
                .entry(d.partition_key.clone())
                .or_default()
                .push(index_of(d));
        }
        seen += got.len();
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        survivor.ack(&tags).await.expect("ack");
    }
    assert_in_order(&by_key, keys, count);
    assert_eq!(survivor.depth().await, Ok(0));
    eprintln!("taken over after {:?}", started.elapsed());
}

/// Runs a shell command that stops or starts the real server (overridable for other setups).
async fn run(var: &str, default: &str) {
    let script = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .status()
        .await
        .expect("run a broker command");
    assert!(status.success(), "{script}: {status}");
}

/// Stops the server (waiting until it has exited), the way its service does.
async fn stop_broker() {
    run(
        "TALLY_TEST_NATS_STOP",
        "start-stop-daemon --stop --oknodo --retry 30 --exec /usr/sbin/nats-server",
    )
    .await;
}

/// Starts the server as `ci.sh` does, and waits until it accepts connections.
async fn start_broker() {
    run(
        "TALLY_TEST_NATS_START",
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
         -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = support::url()
        .trim_start_matches("nats://")
        .trim_end_matches('/')
        .to_owned();
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(Instant::now() < deadline, "NATS did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn survives_a_broker_restart_and_reconnects_by_itself() {
    let _alone = GATE.write().await;
    let mut options = options("restart");
    options.call_timeout = Duration::from_secs(2);
    let _cleanup = Cleanup(options.namespace.clone());
    let (keys, count) = (10, 20);
    let queue = open(&options).await;
    let all = messages(keys, count * 2);
    let (before, after) = all.split_at(keys * count);
    // Enqueued before the restart in messages order, so each key's first `count` come first.
    queue.enqueue(before.to_vec()).await.expect("enqueue");
    let mut old = Vec::new();
    while old.len() < keys {
        old.extend(
            queue
                .receive(keys * 2, Duration::from_secs(5))
                .await
                .expect("receive"),
        );
    }

    stop_broker().await;
    // While the broker is down, calls fail with `Unavailable` within their bound, never hang.
    let down = Instant::now();
    assert!(matches!(
        queue.enqueue(after[..1].to_vec()).await,
        Err(tally_core::Error::Unavailable(_))
    ));
    assert!(matches!(
        queue.depth().await,
        Err(tally_core::Error::Unavailable(_))
    ));
    assert!(matches!(
        queue.receive(10, Duration::from_millis(100)).await,
        Err(tally_core::Error::Unavailable(_))
    ));
    assert!(
        down.elapsed() < Duration::from_secs(10),
        "{:?}",
        down.elapsed()
    );
    start_broker().await;

    // The adapter reconnects by itself; calls fail with `Unavailable` until it has.
    let started = Instant::now();
    loop {
        match queue.enqueue(after.to_vec()).await {
            Ok(()) => break,
            Err(tally_core::Error::Unavailable(e)) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no reconnect: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("enqueue after restart: {e}"),
        }
    }
    eprintln!("enqueue accepted {:?} after the restart", started.elapsed());
    // Tags of the broken connection ack nothing (and nothing else).
    let stale: Vec<u64> = old.iter().map(|d| d.tag).collect();
    queue.ack(&stale).await.expect("stale ack is a no-op");

    let old_ids: HashSet<Uuid> = old.iter().map(|d| d.message_id).collect();
    // Each key's messages in the order they were first delivered after the restart.
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut duplicates = 0;
    while seen.len() < all.len() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "everything came back after the restart: {} of {}",
            seen.len(),
            all.len()
        );
        let got = match queue.receive(1000, Duration::from_millis(500)).await {
            Ok(got) => got,
            Err(tally_core::Error::Unavailable(_)) => continue,
            Err(e) => panic!("receive: {e}"),
        };
        for d in &got {
            if old_ids.contains(&d.message_id) {
                assert!(
                    d.redeliveries >= 1,
                    "unacked before the restart: a redelivery"
                );
            }
            if seen.insert(d.message_id) {
                by_key
                    .entry(d.partition_key.clone())
                    .or_default()
                    .push(index_of(d));
            } else {
                assert!(
                    d.redeliveries >= 1,
                    "a message seen twice must be a redelivery"
                );
                duplicates += 1;
            }
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
    }
    // Nothing lost, every key in order from its first message.
    assert_in_order(&by_key, keys, count * 2);
    eprintln!("{duplicates} redelivered twice after the restart");
    assert_eq!(queue.depth().await, Ok(0));
    eprintln!("all consumed {:?} after the restart", started.elapsed());
}

#[tokio::test]
async fn one_enqueue_of_many_messages_is_confirmed_whole() {
    let _shared = GATE.read().await;
    let options = options("big");
    let _cleanup = Cleanup(options.namespace.clone());
    let queue = open(&options).await;
    // More than the client's in-flight publish permits (5,000).
    let all = messages(30, 400);
    let started = Instant::now();
    queue.enqueue(all.clone()).await.expect("enqueue");
    eprintln!("{} in one enqueue: {:?}", all.len(), started.elapsed());
    assert_eq!(queue.depth().await, Ok(12_000));
    // The same ids again within the duplicate window are dropped by the broker.
    queue.enqueue(all[..100].to_vec()).await.expect("enqueue");
    assert_eq!(queue.depth().await, Ok(12_000));
}

#[tokio::test]
async fn dead_letters_keep_any_reason_and_partition_key() {
    let _shared = GATE.read().await;
    let mut options = options("dead");
    options.max_deliveries = 1;
    let _cleanup = Cleanup(options.namespace.clone());
    let queue = open(&options).await;
    let key = "store:Müller & Söhne 100%";
    let reason = "line one\r\nline two: 100% \"quoted\" ü";
    let m = QueueMessage {
        message_id: Uuid::now_v7(),
        partition_key: key.to_owned(),
        payload: vec![0, 1, 2, 255],
    };
    queue.enqueue(vec![m.clone()]).await.expect("enqueue");
    let got = queue
        .receive(10, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].partition_key, key);
    queue
        .nack(got[0].tag, reason, Duration::ZERO)
        .await
        .expect("nack");
    let dead = queue.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].message_id,
            dead[0].partition_key.as_str(),
            dead[0].reason.as_str()
        ),
        (m.message_id, key, reason)
    );
    assert_eq!(dead[0].payload, m.payload);
    assert_eq!(queue.depth().await, Ok(0));
    // Replayed within the broker's duplicate window, and still delivered.
    assert_eq!(queue.replay_dead_letter(m.message_id).await, Ok(true));
    let back = queue
        .receive(10, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(back.len(), 1);
    assert_eq!(
        (
            back[0].message_id,
            back[0].partition_key.as_str(),
            back[0].redeliveries
        ),
        (m.message_id, key, 0)
    );
    queue.ack(&[back[0].tag]).await.expect("ack");
    assert_eq!(queue.depth().await, Ok(0));
}

#[tokio::test]
async fn a_namespace_keeps_its_partition_count() {
    let _shared = GATE.read().await;
    let options = options("count");
    let _cleanup = Cleanup(options.namespace.clone());
    let _queue = open(&options).await;
    let mut other = options.clone();
    other.partitions = 8;
    match tally_queue_nats::connect(other).await {
        Err(tally_core::Error::Unavailable(e)) => assert!(e.contains("partition count"), "{e}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected with another partition count"),
    }
}

#[tokio::test]
async fn a_missing_server_is_unavailable_not_a_hang() {
    let mut options = options("none");
    options.url = "nats://127.0.0.1:1".to_owned();
    options.call_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let result = tally_queue_nats::connect(options).await;
    assert!(matches!(result, Err(tally_core::Error::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_process_that_only_enqueues_takes_no_partitions() {
    let _shared = GATE.read().await;
    let options = options("producer");
    let _cleanup = Cleanup(options.namespace.clone());
    let producer = open(&options).await;
    let consumer = open(&options).await;
    producer.enqueue(messages(20, 5)).await.expect("enqueue");
    let mut seen = 0;
    let started = Instant::now();
    while seen < 100 {
        assert!(started.elapsed() < Duration::from_secs(30), "{seen} of 100");
        let got = consumer
            .receive(1000, Duration::from_millis(500))
            .await
            .expect("receive");
        seen += got.len();
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        consumer.ack(&tags).await.expect("ack");
    }
    // Well past a few maintenance rounds: the producer is no member and holds nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(producer.partitions_held(), Vec::<usize>::new());
    assert_eq!(consumer.partitions_held().len(), 16);
    assert_eq!(producer.depth().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_gets_a_backlog_in_enqueue_order_across_partitions() {
    let _shared = GATE.read().await;
    let options = options("backlog");
    let _cleanup = Cleanup(options.namespace.clone());
    let queue = open(&options).await;
    // Skewed: half the messages on one key, so partitions' buffers reach different distances into
    // the stream; a later message of a quiet partition must still wait for the busy one's earlier
    // ones (as a void of a sale waits for the sale).
    let total = 20_000;
    let sent: Vec<QueueMessage> = (0..total)
        .map(|i| {
            let key = if i % 2 == 0 {
                "store:hot".to_owned()
            } else {
                format!("sale:{}", i % 61)
            };
            QueueMessage {
                message_id: Uuid::now_v7(),
                payload: format!("{key}/{i}").into_bytes(),
                partition_key: key,
            }
        })
        .collect();
    for chunk in sent.chunks(1_000) {
        queue.enqueue(chunk.to_vec()).await.expect("enqueue");
    }
    let mut order = Vec::with_capacity(total);
    let started = Instant::now();
    while order.len() < total {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {total}",
            order.len()
        );
        let got = queue
            .receive(8192, Duration::from_millis(500))
            .await
            .expect("receive");
        order.extend(got.iter().map(|d| d.message_id));
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
    }
    let expected: Vec<Uuid> = sent.iter().map(|m| m.message_id).collect();
    let first_difference = order.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "delivered in enqueue order");
}
