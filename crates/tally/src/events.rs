//! `tally events check`: every stored event read back with this binary's decoder (its upcasters
//! included), in position order, a page at a time: counts per event type and stored schema version,
//! and each event that does not decode, by position. Run it before deploying a build that changes an
//! event's schema, or on a database a newer build has written to. (`tally events tail` goes here
//! too: `tail.rs`.)
//!
//! It reads the log as the projector's catch-up does (`EventStore::read_payloads`), one page ahead
//! of the one being decoded, so reading and decoding share the cores and at most two pages are in
//! memory whatever the log's length. It uses nothing of the decoder but `Event::decode` and its
//! error's message, so it knows no schema version itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tally_core::model::EventPayload;
use tally_core::ports::EventStore;
use tokio::task::JoinHandle;

use crate::config::{Opened, StoreConfig};

/// `tally events …`: the event log itself.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCmd {
    /// Decode every stored event with this binary (older schema versions upcast); print the events
    /// per type and schema version and each one that does not decode; exit non-zero on any.
    Check {
        /// Print the summary as one JSON object (for CI).
        #[arg(long)]
        json: bool,
    },
    /// Follow a running server's live event feed, one line per event (position, recorded_at,
    /// type, stream, a summary); connects again from the last position seen when it drops.
    Tail(crate::tail::TailArgs),
}

/// Events read per page: a million events are a hundred reads.
pub const PAGE: usize = 10_000;

/// Failures kept (and printed) at most; the rest are counted only, so memory stays bounded when a
/// whole log fails.
const KEPT_FAILURES: usize = 100;

/// How many stored events have one type and schema version, and how many of them failed.
#[derive(Debug, Serialize)]
pub struct Count {
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub events: u64,
    pub failed: u64,
}

/// An event that does not decode.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub error: String,
}

/// What a check found (`--json` prints it as it is).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The log's head when the check started; it checks the events up to it.
    pub head: u64,
    /// Events read.
    pub total: u64,
    /// Events that do not decode.
    pub failed: u64,
    /// Per type and schema version as stored, sorted by type, then version.
    pub counts: Vec<Count>,
    /// The first failures, in position order.
    pub failures: Vec<Failure>,
    /// Failures counted but not kept in `failures`.
    pub failures_left_out: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

impl Summary {
    /// Decodes each event of a page at or before the head and counts it.
    fn tally(&mut self, page: &[EventPayload]) {
        let head = self.head;
        for p in page.iter().take_while(|p| p.position <= head) {
            let slot = self.slot(&p.event_type, p.schema_version);
            self.counts[slot].events += 1;
            self.total += 1;
            if let Err(e) = tally_domain::Event::decode(&p.event_type, p.schema_version, &p.data) {
                self.counts[slot].failed += 1;
                self.failed += 1;
                if self.failures.len() < KEPT_FAILURES {
                    self.failures.push(Failure {
                        position: p.position,
                        event_type: p.event_type.clone(),
                        schema_version: p.schema_version,
                        error: e.to_string(),
                    });
                } else {
                    self.failures_left_out += 1;
                }
            }
        }
    }

    /// The count of this type and version (a handful exist: a scan allocates nothing per event).
    fn slot(&mut self, event_type: &str, schema_version: u32) -> usize {
        let found = self
            .counts
            .iter()
            .position(|c| c.schema_version == schema_version && c.event_type == event_type);
        found.unwrap_or_else(|| {
            self.counts.push(Count {
                event_type: event_type.to_owned(),
                schema_version,
                events: 0,
                failed: 0,
            });
            self.counts.len() - 1
        })
    }

    fn finish(&mut self, elapsed: Duration) {
        self.counts.sort_by(|a, b| {
            (a.event_type.as_str(), a.schema_version)
                .cmp(&(b.event_type.as_str(), b.schema_version))
        });
        self.seconds = elapsed.as_secs_f64();
        self.events_per_second = self.total as f64 / self.seconds.max(1e-9);
    }

    /// The table, the total and the failures, for people.
    fn print(&self) {
        println!(
            "{:<24} {:>7} {:>12} {:>8}",
            "type", "version", "events", "failed"
        );
        for c in &self.counts {
            let version = format!("v{}", c.schema_version);
            println!(
                "{:<24} {version:>7} {:>12} {:>8}",
                c.event_type, c.events, c.failed
            );
        }
        println!(
            "{} events checked (head {}) in {:.2}s: {:.0} events/s; {} failed",
            self.total, self.head, self.seconds, self.events_per_second, self.failed
        );
        for f in &self.failures {
            println!(
                "position {}: {} v{}: {}",
                f.position, f.event_type, f.schema_version, f.error
            );
        }
        if self.failures_left_out > 0 {
            println!("... and {} more", self.failures_left_out);
        }
    }
}

/// `tally events …` on the configured store.
pub async fn run(store: &StoreConfig, action: EventsCmd) -> anyhow::Result<()> {
    let json = match action {
        EventsCmd::Check { json } => json,
        EventsCmd::Tail(args) => return crate::tail::run(args).await,
    };
    // No migrations: it reads (an older schema still has the log's columns; a running server of
    // this build has migrated already).
    let opened = Opened::existing(store).await?;
    let events = opened.backend().events;
    let bar = progress_bar("{elapsed_precise} [{bar:40}] {pos}/{len} events ({per_sec})");
    let summary = check(events, &bar).await;
    bar.finish_and_clear();
    let summary = summary?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&summary).context("rendering the summary")?
        );
    } else {
        summary.print();
    }
    if summary.failed > 0 {
        anyhow::bail!(
            "{} of {} events do not decode with this build",
            summary.failed,
            summary.total
        );
    }
    Ok(())
}

/// A bar on stderr when it is a terminal, in indicatif's `template`; hidden otherwise (a log, CI).
pub fn progress_bar(template: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Decodes every event up to the head as the check starts, a page at a time: while one page is
/// decoded on a blocking thread, the next one is read. `bar` gets the head as its length and the
/// position reached.
pub async fn check(events: Arc<dyn EventStore>, bar: &ProgressBar) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let head = events.head().await.context("reading the log's head")?;
    bar.set_length(head);
    let mut summary = Summary {
        head,
        ..Summary::default()
    };
    let mut next = (head > 0).then(|| read(&events, 0, head));
    while let Some(reading) = next.take() {
        let page = reading.await.context("the log's reader failed")??;
        let Some(last) = page.last().map(|p| p.position) else {
            break;
        };
        if last < head {
            next = Some(read(&events, last, head));
        }
        // The page is dropped there too: freeing ten thousand payloads is work of its own.
        summary = tokio::task::spawn_blocking(move || {
            summary.tally(&page);
            summary
        })
        .await
        .context("decoding a page of events")?;
        bar.set_position(last.min(head));
    }
    summary.finish(started.elapsed());
    Ok(summary)
}

/// Reads the page after `after` on a task of its own (no further than `head`).
fn read(
    events: &Arc<dyn EventStore>,
    after: u64,
    head: u64,
) -> JoinHandle<anyhow::Result<Vec<EventPayload>>> {
    let events = events.clone();
    let limit = usize::try_from(head.saturating_sub(after))
        .unwrap_or(PAGE)
        .clamp(1, PAGE);
    tokio::spawn(async move {
        events
            .read_payloads(after, limit)
            .await
            .with_context(|| format!("reading the log after position {after}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(position: u64, event_type: &str, schema_version: u32, data: &str) -> EventPayload {
        EventPayload {
            position,
            event_type: event_type.to_owned(),
            schema_version,
            data: data.to_owned(),
        }
    }

    #[test]
    fn counts_per_type_and_version_and_keeps_each_failure_with_its_position() {
        let supplier = r#"{"supplier_id":"acme","name":"Acme"}"#;
        let mut summary = Summary {
            head: 4,
            ..Summary::default()
        };
        summary.tally(&[
            payload(1, "SupplierRegistered", 1, supplier),
            payload(2, "SupplierRegistered", 99, supplier),
            payload(3, "SupplierRegistered", 1, "{not json"),
        ]);
        // A page running past the head the check started with: the event after it is not counted.
        summary.tally(&[
            payload(4, "NoSuchEvent", 1, "{}"),
            payload(5, "SupplierRegistered", 1, supplier),
        ]);
        summary.finish(Duration::from_secs(1));
        assert_eq!((summary.total, summary.failed), (4, 3));
        let counts: Vec<(&str, u32, u64, u64)> = summary
            .counts
            .iter()
            .map(|c| (c.event_type.as_str(), c.schema_version, c.events, c.failed))
            .collect();
        assert_eq!(
            counts,
            [
                ("NoSuchEvent", 1, 1, 1),
                ("SupplierRegistered", 1, 2, 1),
                ("SupplierRegistered", 99, 1, 1)
            ]
        );
        let positions: Vec<u64> = summary.failures.iter().map(|f| f.position).collect();
        assert_eq!(positions, [2, 3, 4]);
        assert!(
            summary.failures.iter().all(|f| !f.error.is_empty()),
            "{:?}",
            summary.failures
        );
    }

    #[test]
    fn keeps_a_bounded_number_of_failures_and_counts_the_rest() {
        let mut summary = Summary {
            head: 1000,
            ..Summary::default()
        };
        let page: Vec<EventPayload> = (1..=1000).map(|p| payload(p, "Nope", 1, "{}")).collect();
        summary.tally(&page);
        assert_eq!(summary.failed, 1000);
        assert_eq!(summary.failures.len(), KEPT_FAILURES);
        assert_eq!(summary.failures_left_out, 1000 - KEPT_FAILURES as u64);
    }
}
