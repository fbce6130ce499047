//! `tally bench w1`: W1 through the processor in-process, with durable appends (SQLite WAL,
//! `synchronous=FULL`, in a fresh temporary data dir; or PostgreSQL with its `synchronous_commit`, in
//! a scratch schema); then the projection catch-up from an empty read
//! store; then the books checked against the ones computed directly from the commands.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use tally_core::model::{CommandEnvelope, Principal, Role};
use tally_core::ports::Submission;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::workload::{W1Size, w1};
use tally_core::{Backend, Signals};
use uuid::Uuid;

pub async fn w1_bench(
    seed: u64,
    sales: usize,
    batch: usize,
    postgres: Option<String>,
) -> anyhow::Result<()> {
    match postgres {
        None => {
            let dir = tempfile::tempdir().context("creating a temporary data dir")?;
            let store = tally_store_sqlite::Sqlite::open(dir.path())
                .context("opening the benchmark database")?;
            let place = format!("data in {}", dir.path().display());
            run(&store.backend(), "sqlite", &place, seed, sales, batch).await
        }
        Some(url) => {
            let mut options = tally_store_postgres::PgOptions::new(url);
            options.schema = format!("bench_{}", Uuid::now_v7().simple());
            let pg = tally_store_postgres::Postgres::connect(options)
                .await
                .context("connecting to the benchmark database")?;
            let place = format!("scratch schema {}", pg.options().schema);
            let result = run(&pg.backend(), "postgres", &place, seed, sales, batch).await;
            let dropped = pg.drop_schema().await;
            result?;
            dropped.context("dropping the scratch schema")?;
            Ok(())
        }
    }
}

async fn run(
    backend: &Backend,
    name: &str,
    place: &str,
    seed: u64,
    sales: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let size = W1Size {
        sales,
        ..W1Size::FULL
    };
    let workload = w1(seed, size);
    let submitted = workload.commands.len();
    eprintln!("W1 on {name}: {submitted} commands (seed {seed}), {place}");

    let started = Instant::now();
    enqueue(backend, workload.commands).await?;
    eprintln!(
        "enqueued durably in {:.2}s (not part of the figure)",
        started.elapsed().as_secs_f64()
    );

    let signals = Signals::default();
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        signals.clone(),
        ProcessorConfig {
            commit_size: batch,
            ..ProcessorConfig::default()
        },
    );
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let started = Instant::now();
    while backend.queue.depth().await? > 0 {
        let r = processor
            .step(Duration::from_millis(100))
            .await
            .context("processor step")?;
        accepted += r.processed as u64;
        rejected += r.rejected as u64;
        if r.poison > 0 {
            bail!("{} benchmark commands could not be decoded", r.poison);
        }
    }
    let process_secs = started.elapsed().as_secs_f64();
    let events = backend.events.head().await?;

    let mut projector = Projector::new(backend.events.clone(), backend.sink.clone(), signals);
    let started = Instant::now();
    let projected = projector.catch_up().await.context("projection catch-up")?;
    let catchup_secs = started.elapsed().as_secs_f64();

    let books = async || {
        tally_core::workload::verify(
            backend.read.as_ref(),
            &workload.expected,
            accepted,
            rejected,
        )
        .await
    };
    let mut verified = books().await;
    eprintln!("caught up in {catchup_secs:.2}s; rebuilding the read models from the log");
    // A rebuild: every read model emptied and folded again from the log, as `tally rebuild` does;
    // the books must come out the same.
    let started = Instant::now();
    let rebuilt = projector.rebuild().await.context("projection rebuild")?;
    let rebuild_secs = started.elapsed().as_secs_f64();
    if verified.is_ok() {
        verified = books().await.map_err(|e| format!("after the rebuild: {e}"));
    }
    if let Err(e) = &verified {
        eprintln!("verification FAILED: {e:#}");
    }
    let cmd_per_s = submitted as f64 / process_secs;
    let catchup = projected as f64 / catchup_secs;
    let rebuild = rebuilt as f64 / rebuild_secs;
    println!(
        "processor: {submitted} commands in {process_secs:.2}s = {cmd_per_s:.0} commands/s ({accepted} accepted, {rejected} rejected)"
    );
    println!(
        "events: {events} = {:.0} events/s appended",
        events as f64 / process_secs
    );
    println!(
        "projection catch-up: {projected} events in {catchup_secs:.2}s = {catchup:.0} events/s"
    );
    println!(
        "rebuild (read models emptied, then caught up): {rebuilt} events in {rebuild_secs:.2}s = {rebuild:.0} events/s"
    );
    println!(
        "W1 backend={name} commands={submitted} accepted={accepted} rejected={rejected} cmd_per_s={cmd_per_s:.0} events={events} catchup_events_per_s={catchup:.0} rebuild_events_per_s={rebuild:.0} verified={}",
        verified.is_ok()
    );
    if verified.is_err() {
        bail!("the books do not match W1's expected books: this run has no figure");
    }
    Ok(())
}

/// Submits W1 through the intake, as the gateway does: each command durable, queued and recorded as
/// accepted before the processor starts.
async fn enqueue(backend: &Backend, commands: Vec<tally_domain::Command>) -> anyhow::Result<()> {
    let principal = Principal {
        key_id: "bench".into(),
        role: Role::Admin,
        scope: None,
    };
    let now = Timestamp::now();
    let mut submissions = Vec::with_capacity(commands.len());
    for command in commands {
        let envelope = CommandEnvelope {
            command_id: Uuid::now_v7(),
            received_at: now,
            principal: principal.clone(),
            correlation_id: None,
            command,
        };
        let partition_key = envelope.command.partition_key();
        submissions.push(Submission {
            envelope,
            partition_key,
            idempotency: None,
        });
    }
    while !submissions.is_empty() {
        let rest = submissions.split_off(submissions.len().min(10_000));
        let chunk = std::mem::replace(&mut submissions, rest);
        backend
            .intake
            .submit_many(chunk)
            .await
            .context("submitting W1")?;
    }
    Ok(())
}
