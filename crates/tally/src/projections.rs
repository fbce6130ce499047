//! `tally projections parked list|retry|skip`: the poison events of a store
//! ([`tally_core::projector::poison`]), for an operator at a terminal: where a projection stopped
//! and why, what it parked; a retry or a skip, as `POST /v1/admin/projections/{name}/faults/…` does.
//! A running projector sees what is done here within about a second.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tally_core::projector::poison;
use tally_core::readmodel::PROJECTIONS;

use crate::config::{Opened, StoreConfig};

#[derive(Debug, Subcommand)]
pub enum ProjectionsCmd {
    /// Poison events: where projections stopped, and what they parked.
    Parked {
        #[command(subcommand)]
        action: ParkedCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParkedCmd {
    /// Every poison event: projection, position, stopped or parked, when, why.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A stopped projection tries the event again; a parked event is folded and applied alone.
    Retry { projection: String, position: u64 },
    /// A stopped projection goes on without the event (it stays listed as parked); a parked
    /// one is dismissed.
    Skip { projection: String, position: u64 },
}

fn known(name: &str) -> anyhow::Result<&'static str> {
    PROJECTIONS
        .into_iter()
        .find(|p| *p == name)
        .with_context(|| {
            format!(
                "no projection named {name:?}; the projections are {}",
                PROJECTIONS.join(", ")
            )
        })
}

pub async fn run(store: &StoreConfig, cmd: ProjectionsCmd) -> anyhow::Result<()> {
    let ProjectionsCmd::Parked { action } = cmd;
    let opened = Opened::store_only(store, true, Duration::from_secs(10)).await?;
    let backend = opened.backend();
    match action {
        ParkedCmd::List { json } => {
            let faults = backend.sink.faults().await.context("reading the faults")?;
            if json {
                for f in &faults {
                    println!(
                        "{}",
                        serde_json::json!({"projection": f.projection, "position": f.position,
                            "state": f.state.as_str(), "reason": f.reason, "at": f.at.to_string()})
                    );
                }
            } else if faults.is_empty() {
                println!("no poison events");
            } else {
                for f in &faults {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        f.projection,
                        f.position,
                        f.state.as_str(),
                        f.at,
                        f.reason
                    );
                }
            }
        }
        ParkedCmd::Retry {
            projection,
            position,
        } => {
            let name = known(&projection)?;
            let was = poison::retry(&backend, name, position).await?;
            println!("{name} at {position} ({}): retried", was.as_str());
        }
        ParkedCmd::Skip {
            projection,
            position,
        } => {
            let name = known(&projection)?;
            let was = poison::skip(&backend, name, position).await?;
            println!("{name} at {position} ({}): skipped", was.as_str());
        }
    }
    Ok(())
}
