//! W1 through the processor with this queue: the full W1 (seed 42) enqueued on NATS, then decided
//! and committed by `tally_core::processor` into an embedded SQLite store (fresh temporary directory),
//! then the books checked. The figure is the processor's commands per second with NATS as its queue.
//!
//! `cargo run --release -p tally-queue-nats --features nats --example w1 [url]`

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tally_core::model::{CommandEnvelope, Principal, QueueMessage, Role};
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::workload::{W1Size, w1};
use tally_core::{CommandQueue, Signals};
use tally_queue_nats::NatsOptions;
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let dir = tempfile::tempdir()?;
    let store = tally_store_sqlite::Sqlite::open(dir.path())?;
    let mut options = NatsOptions::new(url.clone());
    options.namespace = format!("w1_{}", Uuid::now_v7().simple());
    let queue = tally_queue_nats::connect(options.clone()).await?;
    let mut backend = store.backend();
    backend.queue = queue.clone();

    let workload = w1(42, W1Size::FULL);
    let submitted = workload.commands.len();
    let principal = Principal {
        key_id: "bench".into(),
        role: Role::Admin,
        scope: None,
    };
    let now = Timestamp::now();
    let messages: Vec<QueueMessage> = workload
        .commands
        .into_iter()
        .map(|command| {
            let partition_key = command.partition_key();
            let envelope = CommandEnvelope {
                command_id: Uuid::now_v7(),
                received_at: now,
                principal: principal.clone(),
                correlation_id: None,
                command,
            };
            QueueMessage {
                message_id: envelope.command_id,
                partition_key,
                payload: envelope.encode(),
            }
        })
        .collect();
    let started = Instant::now();
    for chunk in messages.chunks(10_000) {
        queue.enqueue(chunk.to_vec()).await?;
    }
    eprintln!(
        "W1 on nats: {submitted} commands enqueued in {:.2}s",
        started.elapsed().as_secs_f64()
    );

    let signals = Signals::default();
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        signals.clone(),
        ProcessorConfig::default(),
    );
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let (mut steps, mut received) = (0usize, 0usize);
    let started = Instant::now();
    while backend.queue.depth().await? > 0 {
        let r = processor.step(Duration::from_millis(100)).await?;
        accepted += r.processed as u64;
        rejected += r.rejected as u64;
        steps += 1;
        received += r.received;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{steps} processor steps, {:.0} commands per receive",
        received as f64 / steps.max(1) as f64
    );
    let mut projector = Projector::new(backend.events.clone(), backend.sink.clone(), signals);
    projector.catch_up().await?;
    let verified = tally_core::workload::verify(
        backend.read.as_ref(),
        &workload.expected,
        accepted,
        rejected,
    )
    .await;
    println!(
        "W1 queue=nats store=sqlite commands={submitted} accepted={accepted} rejected={rejected} \
         cmd_per_s={:.0} verified={}",
        submitted as f64 / secs,
        verified.is_ok()
    );
    drop(backend);
    drop(queue);
    tally_queue_nats::remove_namespace(&url, &options.namespace).await?;
    verified.map_err(|e| e.into())
}
