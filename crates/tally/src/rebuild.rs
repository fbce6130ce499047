//! `tally rebuild [--projection NAME]`: builds new versions of read models from the log into shadow
//! tables and swaps each in atomically once caught up, so nothing is ever taken away from queries
//! ([`tally_core::projector::rebuild`]). With no projector running on the store, this process does
//! the work; with one running (a server, here or on another machine sharing the database), the
//! rebuild is asked of it and this process follows its progress until the swap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tally_core::Backend;
use tally_core::projector::rebuild::{Rebuilder, Status};
use tally_core::projector::{PROJECTOR_LEASE, Projector};
use tally_core::readmodel::journal::JOURNAL;
use tally_core::readmodel::{PROJECTIONS, shadow};
use tally_core::signals::Signals;

use crate::config::{Opened, StoreConfig};
use crate::events::progress_bar;

#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// Rebuild only this projection (e.g. store_daily_sales); every one when not given, and then
    /// also the journal time travel reads.
    #[arg(long)]
    pub projection: Option<String>,
}

/// How often progress is shown.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(store: &StoreConfig, args: RebuildArgs) -> anyhow::Result<()> {
    let names: Vec<&'static str> = match args.projection.as_deref() {
        None => PROJECTIONS.to_vec(),
        Some(name) => match PROJECTIONS.into_iter().find(|p| *p == name) {
            Some(p) => vec![p],
            None => bail!(
                "--projection: there is no projection named {name:?}; the projections are {}",
                PROJECTIONS.join(", ")
            ),
        },
    };
    let opened = Opened::store_only(store, true, Duration::from_secs(10)).await?;
    let backend = opened.backend();
    let started = std::time::Instant::now();
    let c = backend
        .sink
        .checkpoints()
        .await
        .context("reading the checkpoints")?;
    for name in &names {
        if c.contains_key(&shadow::checkpoint_of(name)) {
            eprintln!("{name}: a rebuild is already under way; going on with it");
        } else {
            backend
                .sink
                .start_rebuild(name)
                .await
                .with_context(|| format!("starting the rebuild of {name}"))?;
        }
    }
    let lease = backend
        .leases
        .try_acquire(PROJECTOR_LEASE)
        .await
        .context("asking for the projector lease")?;
    match lease {
        Some(_lease) => {
            // No projector runs on this store: the rebuild is this process's to run.
            let status = Arc::new(Status::default());
            let rebuilder =
                Rebuilder::new(backend.events.clone(), backend.sink.clone(), status.clone());
            let bar = progress_bar(
                "{elapsed_precise} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
            );
            let shown = {
                let (bar, status) = (bar.clone(), status.clone());
                tokio::spawn(async move {
                    loop {
                        if let Some(p) = status.progress().values().next() {
                            bar.set_length(p.head);
                            bar.set_position(p.position);
                        }
                        tokio::time::sleep(TICK).await;
                    }
                })
            };
            let swapped = rebuilder.run_pending().await;
            shown.abort();
            bar.finish_and_clear();
            let swapped = swapped.context("rebuilding")?;
            println!("rebuilt and swapped in: {}", swapped.join(", "));
            if args.projection.is_none() {
                journal(&backend).await?;
            }
        }
        None => {
            // A projector runs (in a server, maybe on another machine): it runs the rebuild.
            eprintln!("a projector is running on this store: it rebuilds; following its progress");
            follow(&backend, &names).await?;
            if args.projection.is_none() {
                eprintln!(
                    "the journal (time travel's index) is rebuilt only with no projector running"
                );
            }
        }
    }
    println!(
        "rebuilt {} in {:.2}s",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The journal is time travel's index, not an answer: emptied and folded again in place, time
/// travel stays exact meanwhile (it folds the log from where the journal ends), only slower.
async fn journal(backend: &Backend) -> anyhow::Result<()> {
    backend
        .sink
        .reset(JOURNAL)
        .await
        .context("emptying the journal")?;
    let mut projector = Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    );
    let events = projector
        .catch_up()
        .await
        .context("building the journal again")?;
    println!("rebuilt the journal from {events} events");
    Ok(())
}

/// Waits until none of `names` has a rebuild under way, showing how far the furthest behind is.
async fn follow(backend: &Backend, names: &[&'static str]) -> anyhow::Result<()> {
    let bar =
        progress_bar("{elapsed_precise} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)");
    loop {
        let (head, c) = tokio::try_join!(backend.events.head(), backend.sink.checkpoints())
            .context("reading the rebuild's progress")?;
        let left: HashMap<&str, u64> = shadow::rebuilding(&c)
            .into_iter()
            .filter(|(p, _)| names.contains(p))
            .collect();
        let Some(slowest) = left.values().min() else {
            bar.finish_and_clear();
            return Ok(());
        };
        bar.set_length(head);
        bar.set_position(*slowest);
        tokio::time::sleep(TICK).await;
    }
}
