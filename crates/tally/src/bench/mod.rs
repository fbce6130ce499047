//! `tally bench w1`: W1 through the processor in-process, with durable appends (SQLite WAL,
//! `synchronous=FULL`, in a fresh temporary data dir; or PostgreSQL with its `synchronous_commit`, in
//! a scratch schema); then the projection catch-up from an empty read
//! store; then the books checked against the ones computed directly from the commands.

use std::time::Instant;

use anyhow::{Context, bail};
use tally_core::Signals;
use tally_core::projector::Projector;
use tally_core::workload::{W1Size, w1};

mod asof;
pub mod cmd;
mod events;
mod import;
mod queries;
mod scratch;
mod verify;

pub use asof::{AsofOptions, LogOptions, asof_bench};
pub use events::events_check_bench;
pub use import::{ImportOptions, import_bench};
pub use queries::{QueriesOptions, params, queries_bench};
use scratch::{Scratch, enqueue, process};
pub use verify::verify_bench;

/// `tally bench w1`'s settings.
pub struct W1Options {
    pub seed: u64,
    pub sales: usize,
    pub batch: usize,
    pub postgres: Option<String>,
    /// The share (%) of sales, voids and returns stored in their schema version 1 form before
    /// the catch-up and the rebuild, as a build before discounts wrote them.
    pub old_percent: u32,
}

pub async fn w1_bench(options: W1Options) -> anyhow::Result<()> {
    let scratch = Scratch::open(options.postgres.clone()).await?;
    let result = run(&scratch, &options).await;
    scratch.close(result).await
}

async fn run(scratch: &Scratch, options: &W1Options) -> anyhow::Result<()> {
    let (backend, name, place) = (&scratch.backend, scratch.name, &scratch.place);
    let (seed, sales, batch) = (options.seed, options.sales, options.batch);
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
    let started = Instant::now();
    let (accepted, rejected) = process(backend, &signals, batch).await?;
    let process_secs = started.elapsed().as_secs_f64();
    let events = backend.events.head().await?;
    if options.old_percent > 0 {
        let rewritten = scratch.store_as_version_1(options.old_percent).await?;
        eprintln!(
            "{rewritten} sales, voids and returns stored in their version 1 form ({}% of them)",
            options.old_percent
        );
    }

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
