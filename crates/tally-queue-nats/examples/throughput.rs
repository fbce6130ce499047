//! Enqueue + receive + ack throughput of the NATS queue: 100,000 small messages over 20 partition
//! keys, enqueued in batches of 1,000, one consumer (`receive(8192, 200 ms)` then ack, as the processor
//! does). Prints figures, asserts nothing but completeness and order.
//!
//! `cargo run --release -p tally-queue-nats --features nats --example throughput [url]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tally_core::CommandQueue;
use tally_core::model::QueueMessage;
use tally_queue_nats::NatsOptions;
use uuid::Uuid;

const MESSAGES: usize = 100_000;
const KEYS: usize = 20;
const BATCH: usize = 1_000;

fn batches() -> Vec<Vec<QueueMessage>> {
    let all: Vec<QueueMessage> = (0..MESSAGES)
        .map(|i| {
            let key = format!("store:s-{}", i % KEYS);
            QueueMessage {
                message_id: Uuid::now_v7(),
                payload: format!("{}", i / KEYS).into_bytes(),
                partition_key: key,
            }
        })
        .collect();
    all.chunks(BATCH).map(<[QueueMessage]>::to_vec).collect()
}

async fn consume(queue: &dyn CommandQueue) -> Result<(), tally_core::Error> {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut seen = 0;
    while seen < MESSAGES {
        let got = queue.receive(8192, Duration::from_millis(200)).await?;
        for d in &got {
            let i: u64 = String::from_utf8_lossy(&d.payload)
                .parse()
                .unwrap_or(u64::MAX);
            let expected = next.entry(d.partition_key.clone()).or_default();
            assert_eq!(i, *expected, "order of {}", d.partition_key);
            *expected += 1;
        }
        seen += got.len();
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let mut options = NatsOptions::new(url.clone());
    options.namespace = format!("bench_{}", Uuid::now_v7().simple());
    let queue = tally_queue_nats::connect(options.clone()).await?;

    // 1. Producer and consumer at the same time: the end-to-end rate.
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for batch in batches() {
                queue.enqueue(batch).await?;
            }
            Ok::<_, tally_core::Error>(started.elapsed())
        })
    };
    let started = Instant::now();
    consume(queue.as_ref()).await?;
    let both = started.elapsed();
    let enqueue_alone = producer.await??;
    println!(
        "concurrent: {MESSAGES} enqueued+received+acked in {both:.2?} = {:.0} msg/s (enqueue side {:.0} msg/s)",
        MESSAGES as f64 / both.as_secs_f64(),
        MESSAGES as f64 / enqueue_alone.as_secs_f64()
    );

    // 2. The phases one after the other.
    let started = Instant::now();
    for batch in batches() {
        queue.enqueue(batch).await?;
    }
    let enqueue = started.elapsed();
    println!(
        "enqueue only: {MESSAGES} in {enqueue:.2?} = {:.0} msg/s (batches of {BATCH})",
        MESSAGES as f64 / enqueue.as_secs_f64()
    );
    let started = Instant::now();
    consume(queue.as_ref()).await?;
    let drain = started.elapsed();
    println!(
        "receive+ack of a backlog: {MESSAGES} in {drain:.2?} = {:.0} msg/s",
        MESSAGES as f64 / drain.as_secs_f64()
    );
    assert_eq!(queue.depth().await?, 0);
    drop(queue);
    tally_queue_nats::remove_namespace(&url, &options.namespace).await?;
    Ok(())
}
