//! Throughput on a real broker: 100,000 small messages over 20 partitions, enqueued in batches of
//! 1,000, received (up to 8,192 at a time) and acked by one consumer. Prints figures, asserts nothing.
//!
//! `cargo run --release -p tally-queue-activemq --features activemq --example activemq_throughput [url]`
//!
//! `TALLY_BENCH_PREFETCH` and `TALLY_BENCH_TIMEOUT_S` override the adapter's prefetch and timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_core::CommandQueue;
use tally_core::model::QueueMessage;
use tally_queue_activemq::{ActiveMq, ActiveMqOptions, connect};
use uuid::Uuid;

const MESSAGES: usize = 100_000;
const PARTITIONS: usize = 20;
const BATCH: usize = 1_000;
const PRODUCERS: usize = 4;

fn batch(start: usize) -> Vec<QueueMessage> {
    (start..start + BATCH)
        .map(|i| QueueMessage {
            message_id: Uuid::now_v7(),
            partition_key: format!("store:s-{}", i % PARTITIONS),
            payload: vec![7; 160],
        })
        .collect()
}

/// Receives and acks `n` messages the way the processor does; says how long receiving and acking took.
async fn consume(queue: &dyn CommandQueue, n: usize) -> Result<String, tally_core::Error> {
    let (mut seen, mut batches) = (0, 0);
    let (mut receiving, mut acking) = (Duration::ZERO, Duration::ZERO);
    while seen < n {
        let t = Instant::now();
        let got = queue.receive(8192, Duration::from_millis(200)).await?;
        receiving += t.elapsed();
        let t = Instant::now();
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await?;
        acking += t.elapsed();
        seen += got.len();
        batches += usize::from(!got.is_empty());
    }
    Ok(format!(
        "{batches} batches; receiving {:.2} s, acking {:.2} s",
        receiving.as_secs_f64(),
        acking.as_secs_f64()
    ))
}

fn rate(n: usize, t: Duration) -> String {
    format!(
        "{:>8.0} msg/s ({n} in {:.2} s)",
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "stomp://127.0.0.1:61613".into());
    let mut options = ActiveMqOptions::new(url);
    options.namespace = format!("bench{}", Uuid::now_v7().simple());
    if let Ok(t) = std::env::var("TALLY_BENCH_TIMEOUT_S") {
        options.timeout = Duration::from_secs(t.parse()?);
    }
    if let Ok(p) = std::env::var("TALLY_BENCH_PREFETCH") {
        options.prefetch = p.parse()?;
    }
    let queue = connect(options).await?;
    let result = run(queue.clone()).await;
    // Whatever happened, leave nothing behind on the broker.
    if let Err(e) = queue.purge().await {
        eprintln!("could not empty the benchmark's queues: {e}");
    }
    result
}

async fn run(queue: Arc<ActiveMq>) -> Result<(), Box<dyn std::error::Error>> {
    // 1. Enqueue alone, one batch at a time.
    let t = Instant::now();
    for start in (0..MESSAGES).step_by(BATCH) {
        queue.enqueue(batch(start)).await?;
    }
    println!(
        "enqueue, 1 batch at a time:      {}",
        rate(MESSAGES, t.elapsed())
    );
    println!("depth after enqueue: {}", queue.depth().await?);

    // 2. Receive and ack alone.
    let t = Instant::now();
    let how = consume(queue.as_ref(), MESSAGES).await?;
    println!(
        "receive + ack, one consumer:     {} ({how})",
        rate(MESSAGES, t.elapsed())
    );

    // 3. Enqueue alone, PRODUCERS batches at a time.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            for start in (p * BATCH..MESSAGES).step_by(BATCH * PRODUCERS) {
                queue.enqueue(batch(start)).await?;
            }
            Ok::<_, tally_core::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "enqueue, {PRODUCERS} batches at a time:      {}",
        rate(MESSAGES, t.elapsed())
    );
    consume(queue.as_ref(), MESSAGES).await?;

    // 4. Both at once, end to end.
    let t = Instant::now();
    let producer = {
        let queue: Arc<_> = queue.clone();
        tokio::spawn(async move {
            for start in (0..MESSAGES).step_by(BATCH) {
                queue.enqueue(batch(start)).await?;
            }
            Ok::<_, tally_core::Error>(())
        })
    };
    let how = consume(queue.as_ref(), MESSAGES).await?;
    producer.await??;
    println!(
        "enqueue + receive + ack at once: {} ({how})",
        rate(MESSAGES, t.elapsed())
    );
    println!("depth at the end: {}", queue.depth().await?);
    Ok(())
}
