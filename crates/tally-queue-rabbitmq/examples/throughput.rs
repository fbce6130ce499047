//! Enqueue + receive + ack throughput of the RabbitMQ queue: 100,000 small messages over 20
//! partitions, one consumer, enqueues in batches of 1,000. Prints figures; asserts nothing.
//!
//! `cargo run --release -p tally-queue-rabbitmq --features rabbitmq --example throughput`
//! (`TALLY_TEST_AMQP_URL` picks the broker, `TALLY_BENCH_QUEUES` the number of quorum queues,
//! `TALLY_BENCH_BATCH` the batch size; a fresh namespace is used and deleted afterwards).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_core::CommandQueue;
use tally_core::model::QueueMessage;
use tally_queue_rabbitmq::{Rabbit, RabbitOptions, connect};
use uuid::Uuid;

const MESSAGES: usize = 100_000;
const PARTITIONS: usize = 20;
const PAYLOAD: usize = 160;

fn batch_size() -> usize {
    std::env::var("TALLY_BENCH_BATCH")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn messages() -> Vec<QueueMessage> {
    (0..MESSAGES)
        .map(|i| QueueMessage {
            message_id: Uuid::now_v7(),
            partition_key: format!("store:s-{}", i % PARTITIONS),
            payload: vec![b'x'; PAYLOAD],
        })
        .collect()
}

async fn drain(q: &Rabbit, n: usize) -> Duration {
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        let got = q
            .receive(8192, Duration::from_millis(200))
            .await
            .expect("receive");
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        q.ack(&tags).await.expect("ack");
        seen += got.len();
    }
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>8.0} msg/s ({n} in {:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() {
    let url = std::env::var("TALLY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let mut options = RabbitOptions::new(url);
    options.namespace = format!("tally-bench-{}", Uuid::now_v7().simple());
    if let Some(n) = std::env::var("TALLY_BENCH_QUEUES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        options.queues = n;
    }
    let q: Arc<Rabbit> = connect(options.clone()).await.expect("connect");
    println!(
        "{MESSAGES} messages of {PAYLOAD} bytes, {PARTITIONS} partitions, {} quorum queues, batches of {}",
        options.queues,
        batch_size()
    );

    // 0. Latency of one enqueue of one message (a gateway request), sequentially.
    let mut took = Vec::new();
    for m in messages().into_iter().take(200) {
        let started = Instant::now();
        q.enqueue(vec![m]).await.expect("enqueue");
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "enqueue of 1 message:             median {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
    drain(&q, took.len()).await;

    // 1. Enqueue alone, one batch at a time (each batch pipelined, then all its confirms awaited).
    let all = messages();
    let started = Instant::now();
    for batch in all.chunks(batch_size()) {
        q.enqueue(batch.to_vec()).await.expect("enqueue");
    }
    println!(
        "enqueue, sequential batches:      {}",
        rate(MESSAGES, started.elapsed())
    );

    // 2. Receive + ack alone, from a full queue.
    let d = drain(&q, MESSAGES).await;
    println!("receive + ack, one consumer:      {}", rate(MESSAGES, d));
    assert_eq!(q.depth().await, Ok(0));

    // 3. Both at once: one producer (sequential batches) and one consumer, end to end.
    let all = messages();
    let started = Instant::now();
    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            for batch in all.chunks(batch_size()) {
                q.enqueue(batch.to_vec()).await.expect("enqueue");
            }
        })
    };
    drain(&q, MESSAGES).await;
    producer.await.expect("producer");
    println!(
        "enqueue + receive + ack together: {}",
        rate(MESSAGES, started.elapsed())
    );

    // 4. Four producers at once (as concurrent gateway requests would), one consumer.
    let started = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mine: Vec<QueueMessage> = messages().into_iter().take(MESSAGES / 4).collect();
                for batch in mine.chunks(batch_size()) {
                    q.enqueue(batch.to_vec()).await.expect("enqueue");
                }
            })
        })
        .collect();
    drain(&q, MESSAGES).await;
    for p in producers {
        p.await.expect("producer");
    }
    println!(
        "4 producers + 1 consumer:         {}",
        rate(MESSAGES, started.elapsed())
    );

    // 5. Four producers at once, nothing consuming meanwhile.
    let started = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mine: Vec<QueueMessage> = messages().into_iter().take(MESSAGES / 4).collect();
                for batch in mine.chunks(batch_size()) {
                    q.enqueue(batch.to_vec()).await.expect("enqueue");
                }
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer");
    }
    println!(
        "enqueue, 4 producers at once:     {}",
        rate(MESSAGES, started.elapsed())
    );
    drain(&q, MESSAGES).await;

    q.delete_queues().await.expect("delete queues");
}
