//! The queue on a real ActiveMQ broker, beyond the conformance checks: two consumer processes (separate
//! connections) sharing one queue, a consumer that dies, and a broker restart. The broker is at
//! `TALLY_TEST_ACTIVEMQ_URL` (default `stomp://127.0.0.1:61613`); the restart test stops and starts it
//! with `TALLY_TEST_ACTIVEMQ_STOP` / `TALLY_TEST_ACTIVEMQ_START` (default: Debian's init script, as
//! root). `ci.sh` sets the broker up. A broker that cannot be reached fails the tests.
#![cfg(feature = "activemq")]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_core::CommandQueue;
use tally_core::model::{Delivery, QueueMessage};
use tally_queue_activemq::{ActiveMq, ActiveMqOptions, connect};
use tokio::sync::RwLock;
use tokio::time::Instant;
use uuid::Uuid;

/// The restart test takes this exclusively, so no other test of this file sees the broker go away.
static BROKER: RwLock<()> = RwLock::const_new(());

fn url() -> String {
    std::env::var("TALLY_TEST_ACTIVEMQ_URL").unwrap_or_else(|_| "stomp://127.0.0.1:61613".into())
}

fn options(namespace: &str) -> ActiveMqOptions {
    let mut o = ActiveMqOptions::new(url());
    o.namespace = namespace.to_owned();
    o
}

fn namespace() -> String {
    format!("t{}", Uuid::now_v7().simple())
}

async fn open(namespace: &str) -> Arc<ActiveMq> {
    connect(options(namespace))
        .await
        .expect("ActiveMQ must be running (crates/tally-queue-activemq/ci.sh starts it)")
}

/// Message `seq` of partition `p`; the payload says which, so a delivery can be checked.
fn message(p: usize, seq: usize) -> QueueMessage {
    QueueMessage {
        message_id: Uuid::now_v7(),
        partition_key: format!("store:p-{p}"),
        payload: format!("{p}/{seq}").into_bytes(),
    }
}

fn parse(d: &Delivery) -> (usize, usize) {
    let text = String::from_utf8(d.payload.clone()).unwrap();
    let (p, seq) = text.split_once('/').unwrap();
    assert_eq!(d.partition_key, format!("store:p-{p}"));
    (p.parse().unwrap(), seq.parse().unwrap())
}

/// `partitions` × `per` messages, interleaved across partitions, in batches of `batch`.
fn workload(partitions: usize, per: usize) -> Vec<QueueMessage> {
    (0..partitions * per)
        .map(|i| message(i % partitions, i / partitions))
        .collect()
}

/// One delivery as a consumer saw it: when its receive returned and when its ack returned.
#[derive(Debug, Clone)]
struct Seen {
    consumer: usize,
    partition: usize,
    seq: usize,
    redeliveries: u32,
    received: Instant,
    /// Position in its receive's result (several messages of a partition may come in one).
    index: usize,
    acked: Instant,
}

/// Receives, "works" a little, acks, and logs each delivery, until `done` reaches `total`.
async fn work(
    queue: Arc<ActiveMq>,
    consumer: usize,
    log: Arc<Mutex<Vec<Seen>>>,
    done: Arc<AtomicUsize>,
    total: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "consumer {consumer} gave up waiting"
        );
        let got = queue
            .receive(64, Duration::from_millis(100))
            .await
            .expect("receive");
        if got.is_empty() {
            continue;
        }
        let received = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
        let acked = Instant::now();
        let mut log = log.lock().unwrap();
        for (index, d) in got.iter().enumerate() {
            let (partition, seq) = parse(d);
            log.push(Seen {
                consumer,
                partition,
                seq,
                redeliveries: d.redeliveries,
                received,
                index,
                acked,
            });
        }
        done.fetch_add(got.len(), Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_share_a_queue_in_partition_order_and_never_hold_a_partition_both() {
    let _shared = BROKER.read().await;
    let ns = namespace();
    let (a, b, producer) = (open(&ns).await, open(&ns).await, open(&ns).await);
    // Both consumers subscribe before the messages come, so the broker spreads the partitions.
    for q in [&a, &b] {
        assert_eq!(q.receive(16, Duration::from_millis(50)).await, Ok(vec![]));
    }
    const PARTITIONS: usize = 40;
    const PER: usize = 50;
    let total = PARTITIONS * PER;
    for batch in workload(PARTITIONS, PER).chunks(200) {
        producer.enqueue(batch.to_vec()).await.expect("enqueue");
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, q)| tokio::spawn(work(q, i, log.clone(), done.clone(), total)))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let log = log.lock().unwrap().clone();

    // Every message exactly once (nothing failed, so nothing comes twice).
    let mut count: HashMap<(usize, usize), usize> = HashMap::new();
    for s in &log {
        *count.entry((s.partition, s.seq)).or_default() += 1;
        assert_eq!(s.redeliveries, 0, "{s:?}");
    }
    assert_eq!(count.len(), total, "every message delivered");
    assert!(count.values().all(|n| *n == 1), "each exactly once");

    let mut by_partition: HashMap<usize, Vec<&Seen>> = HashMap::new();
    for s in &log {
        by_partition.entry(s.partition).or_default().push(s);
    }
    let mut partitions_at = [0usize; 2];
    for (p, mut seen) in by_partition {
        // In the order they were handed out, across both consumers: enqueue order.
        seen.sort_by_key(|s| (s.received, s.index));
        let seqs: Vec<usize> = seen.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, (0..PER).collect::<Vec<_>>(), "partition {p} in order");
        // Never in flight at both consumers at once.
        for x in seen.iter().filter(|s| s.consumer == 0) {
            for y in seen.iter().filter(|s| s.consumer == 1) {
                assert!(
                    x.acked <= y.received || y.acked <= x.received,
                    "partition {p} in flight at both consumers: {x:?} {y:?}"
                );
            }
        }
        let consumers: HashSet<usize> = seen.iter().map(|s| s.consumer).collect();
        for c in consumers {
            partitions_at[c] += 1;
        }
    }
    println!("partitions worked by consumer a, b: {partitions_at:?}");
    assert!(
        partitions_at.iter().all(|n| *n > 0),
        "both consumers worked partitions in parallel: {partitions_at:?}"
    );
    assert_eq!(producer.depth().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_messages_of_a_consumer_that_dies_come_back_to_the_other_in_order() {
    let _shared = BROKER.read().await;
    let ns = namespace();
    let dying = open(&ns).await;
    assert_eq!(
        dying.receive(16, Duration::from_millis(50)).await,
        Ok(vec![])
    );
    const PARTITIONS: usize = 10;
    const PER: usize = 20;
    dying
        .enqueue(workload(PARTITIONS, PER))
        .await
        .expect("enqueue");
    // The only consumer takes every partition; it receives some messages and never acks them.
    let mut taken = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken.len() < PARTITIONS && Instant::now() < deadline {
        taken.extend(
            dying
                .receive(5, Duration::from_millis(200))
                .await
                .expect("receive"),
        );
    }
    assert!(!taken.is_empty(), "the first consumer received messages");
    let taken: HashSet<Uuid> = taken.iter().map(|d| d.message_id).collect();

    // A second process: the partitions stay with the first while it lives.
    let survivor = open(&ns).await;
    assert_eq!(
        survivor.receive(100, Duration::from_millis(500)).await,
        Ok(vec![]),
        "nothing for the second consumer while the first holds every partition"
    );
    drop(dying);

    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut back = HashSet::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while n < PARTITIONS * PER {
        assert!(Instant::now() < deadline, "only {n} messages came back");
        let got = survivor
            .receive(64, Duration::from_millis(200))
            .await
            .expect("receive");
        for d in &got {
            let (p, seq) = parse(d);
            seen.entry(p).or_default().push(seq);
            if taken.contains(&d.message_id) {
                assert!(d.redeliveries >= 1, "{d:?} was delivered before");
                back.insert(d.message_id);
            }
        }
        n += got.len();
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        survivor.ack(&tags).await.expect("ack");
    }
    assert_eq!(back, taken, "everything the first consumer held came back");
    for (p, seqs) in seen {
        assert_eq!(seqs, (0..PER).collect::<Vec<_>>(), "partition {p} in order");
    }
    assert_eq!(survivor.depth().await, Ok(0));
}

async fn broker_command(var: &str, default: &str) {
    let command = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert!(status.success(), "{command}: {status}");
}

async fn port_open() -> bool {
    let addr = url()
        .trim_start_matches("stomp://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Retries `f` (a call failing while the adapter reconnects) until it succeeds.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tally_core::ports::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_loses_nothing_and_the_adapter_reconnects_by_itself() {
    let _alone = BROKER.write().await;
    let ns = namespace();
    let queue = open(&ns).await;
    const PARTITIONS: usize = 10;
    const PER: usize = 10;
    let before = workload(PARTITIONS, PER);
    queue.enqueue(before.clone()).await.expect("enqueue");
    // Some are delivered and not acked when the broker goes away.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 30 && Instant::now() < deadline {
        held.extend(
            queue
                .receive(30, Duration::from_millis(200))
                .await
                .expect("receive"),
        );
    }
    assert!(!held.is_empty());

    broker_command("TALLY_TEST_ACTIVEMQ_STOP", "/etc/init.d/activemq stop").await;
    let down = Instant::now();
    while port_open().await {
        assert!(
            down.elapsed() < Duration::from_secs(60),
            "the broker did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While it is down, calls fail (and do not hang).
    let t = Instant::now();
    let refused = queue.enqueue(vec![message(0, 999)]).await;
    assert!(
        matches!(refused, Err(tally_core::Error::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        queue.receive(10, Duration::from_millis(100)).await.is_err(),
        "receive while the broker is down"
    );
    assert!(
        queue.depth().await.is_err(),
        "depth while the broker is down"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "failing calls took {:?}",
        t.elapsed()
    );

    broker_command("TALLY_TEST_ACTIVEMQ_START", "/etc/init.d/activemq start").await;
    let up = Instant::now();
    while !port_open().await {
        assert!(
            up.elapsed() < Duration::from_secs(120),
            "the broker did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let after: Vec<QueueMessage> = (0..PARTITIONS * PER)
        .map(|i| message(i % PARTITIONS, PER + i / PARTITIONS))
        .collect();
    eventually("enqueue after the restart", || queue.enqueue(after.clone())).await;
    // Tags from before the restart ack nothing now.
    let stale: Vec<u64> = held.iter().map(|d| d.tag).collect();
    assert_eq!(queue.ack(&stale).await, Ok(()));
    assert_eq!(
        eventually("depth after the restart", || queue.depth()).await,
        2 * (PARTITIONS * PER) as u64,
        "nothing lost, nothing acked by stale tags"
    );

    let held: HashSet<Uuid> = held.iter().map(|d| d.message_id).collect();
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < 2 * PARTITIONS * PER {
        assert!(
            Instant::now() < deadline,
            "only {} messages came back",
            ids.len()
        );
        let got = match queue.receive(64, Duration::from_millis(200)).await {
            Ok(got) => got,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for d in &got {
            let (p, seq) = parse(d);
            if !ids.insert(d.message_id) || held.contains(&d.message_id) {
                assert!(
                    d.redeliveries >= 1,
                    "delivered again without saying so: {d:?}"
                );
            }
            seen.entry(p).or_default().push(seq);
        }
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        eventually("ack after the restart", || queue.ack(&tags)).await;
    }
    for (p, seqs) in seen {
        let expected: Vec<usize> = (0..2 * PER).collect();
        assert_eq!(seqs, expected, "partition {p}: everything, once, in order");
    }
    assert_eq!(queue.depth().await, Ok(0));
}

#[tokio::test]
async fn heart_beats_keep_an_idle_consumer_connected() {
    let _shared = BROKER.read().await;
    let ns = namespace();
    let mut o = options(&ns);
    o.heartbeat = Duration::from_millis(1000);
    let queue = connect(o).await.expect("ActiveMQ must be running");
    queue.enqueue(vec![message(0, 0)]).await.expect("enqueue");
    let got = queue
        .receive(1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    // Idle far longer than the broker waits for a heart-beat (1.5 intervals) and than this side
    // waits for the broker's (3 intervals and 2 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    queue.ack(&[got[0].tag]).await.expect("ack");
    assert_eq!(
        queue.depth().await,
        Ok(0),
        "the ack went out on the same connection: it never broke"
    );
    assert_eq!(
        queue.receive(1, Duration::from_millis(300)).await,
        Ok(vec![])
    );
}
