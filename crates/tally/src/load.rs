//! `tally load`: a workload over HTTP against a running tally, as a fleet of tills would send it,
//! then every command's outcome read back and the books checked through the query API.
//!
//! Workloads:
//! - `w1` (WORKLOAD.md): reference data, one request at a time (items need their supplier), then
//!   deliveries on every connection until each has its 202 (so each store's deliveries are queued
//!   before its sales), then sales on every connection. The figures cover the whole run.
//! - `steady`: W1's reference data and deliveries as set-up (not measured), then a POS-like stream of
//!   sales at `--rate` commands/s for `--duration`; the figures cover the stream.
//!
//! Which sales of a store come first is the server's to decide, so which of them are rejected for
//! stock may differ from W1 sent in sequence; as WORKLOAD.md says, the books are verified against
//! those computed from the commands that were accepted (`tally_core::workload::books_of`), and every
//! rejection must be `insufficient_stock` of a sale, with no stock below zero.
//!
//! With `--rate`, requests are sent on a fixed schedule (open loop) and each latency is measured from
//! the moment its request was due, so a server that stalls is charged for the requests it delayed
//! (no coordinated omission). 429 and 503 answers are retried after `Retry-After` with the same
//! idempotency key, and counted. While the run goes, a probe measures the visibility lag: from a
//! command's 202 until the read models answer at its position.

mod client;
mod http1;
mod http_read;
mod mix;
mod pacing;
mod probes;
mod rebuilds;
mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use tally_core::workload::{W1Size, w1};
use tally_domain::Command;

use client::{
    Outcome, Shared, WorkerReport, get_json, last_per_partition, outcome, outcomes, request,
    store_of,
};
use http1::{Conn, Target};
use pacing::{Pace, spread};
use probes::{probe_lag, progress, visible};
use summary::{Latency, Phase, Summary, print_summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// WORKLOAD.md's W1, as fast as the server takes it (or at --rate).
    W1,
    /// Set-up from W1, then a steady stream of sales at --rate for --duration.
    Steady,
    /// A mix of the named queries the server serves, with random W1 parameters, for --duration
    /// (beside a W1 load run by another `tally load`).
    Queries,
}

pub struct LoadOptions {
    pub url: String,
    pub key: String,
    pub workload: Workload,
    pub seed: u64,
    /// Sales to generate (W1: 100,000; steady: rate × duration).
    pub sales: Option<usize>,
    pub connections: usize,
    /// Commands per second to send (open loop); none: as fast as the server answers.
    pub rate: Option<f64>,
    /// Stop sending sales after this long.
    pub duration: Option<Duration>,
    /// After the sales phase (an overload, say): this long at `recovery_rate` on fresh connections,
    /// measured on its own, to show how the server serves once the pressure is off.
    pub recovery: Option<Duration>,
    pub recovery_rate: f64,
    pub json: bool,
    /// While the sales run: a loop of queries, each checked against a replay to its position
    /// (`Checks`), and rebuilds of every read model back to back (`Rebuilds`).
    pub checks: Option<Checks>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checks {
    /// Queries checked against a replay.
    Queries,
    /// The same, and rebuilds of every read model back to back.
    Rebuilds,
}

/// Connections of the recovery phase (W1's).
const RECOVERY_CONNECTIONS: usize = 64;

/// A steady run's rate when none is given: the figure the issue sets for a POS-like stream.
const STEADY_RATE: f64 = 5_000.0;
const STEADY_DURATION: Duration = Duration::from_secs(60);

pub async fn run(opts: LoadOptions) -> anyhow::Result<()> {
    if opts.workload == Workload::Queries {
        return mix::run(&opts).await;
    }
    let connections = opts.connections.max(1);
    let target = Target::parse(&opts.url)?;
    // Reads and admin calls beside the measured write path (`http1.rs`) go through the one client.
    let client = crate::client::Client::new(&opts.url, &opts.key)?;
    let Plan {
        rate,
        duration,
        sales,
        recovery_sales,
    } = plan(&opts)?;
    let workload = w1(
        opts.seed,
        W1Size {
            sales: sales + recovery_sales,
            ..W1Size::FULL
        },
    );
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut requests = Vec::with_capacity(workload.commands.len());
    for (i, c) in workload.commands.iter().enumerate() {
        let (path, body) = request(c)?;
        let body = serde_json::to_vec(&body).context("encoding a body")?;
        let idempotency = format!("load-{run_id}-{i}");
        requests.push(target.encode("POST", &path, &opts.key, Some(&idempotency), Some(&body)));
    }
    let shared = Arc::new(Shared {
        target,
        key: opts.key.clone(),
        requests,
        accepted: AtomicU64::new(0),
        pushed_back: AtomicU64::new(0),
        newest: std::sync::Mutex::new(None),
    });
    let mut conn = Conn::new(shared.target.clone());
    get_json::<Value>(&shared, &mut conn, "/v1/admin/api-keys")
        .await
        .context("the key must be an admin key of the server at --url")?;

    let reference: Vec<usize> = (0..workload.reference_count).collect();
    let (deliveries, mut sales): (Vec<usize>, Vec<usize>) = (workload.reference_count
        ..workload.commands.len())
        .partition(|&i| matches!(workload.commands[i], Command::RecordDelivery { .. }));
    // The last sales are the recovery phase's (none without --recovery).
    let recovery_indices: Vec<usize> = sales.split_off(sales.len().saturating_sub(recovery_sales));
    let recovery_from = recovery_indices.first().copied().unwrap_or(usize::MAX);
    eprintln!(
        "{:?} over HTTP: {} reference, {} deliveries, {} sales to {} on {connections} connections{}{}",
        opts.workload,
        reference.len(),
        deliveries.len(),
        sales.len(),
        opts.url,
        rate.map(|r| format!(", {r:.0} commands/s"))
            .unwrap_or_default(),
        duration
            .map(|d| format!(", sales for at most {:.0}s", d.as_secs_f64()))
            .unwrap_or_default(),
    );
    let stores: Arc<Vec<Option<String>>> =
        Arc::new(workload.commands.iter().map(store_of).collect());
    let bar = progress(&shared, workload.commands.len() as u64);

    let mut report = WorkerReport::default();
    let started = Instant::now();
    // 1. Reference data, in order, then processed.
    let serial = Pace {
        start: started,
        rate: None,
        until: None,
    };
    report.merge(spread(&shared, Arc::new(reference), 1, serial).await?);
    if let Some(last) = report.sent.last() {
        outcome(&shared, &mut conn, last.command_id).await?;
    }
    // 2. Deliveries on every connection (W1: measured; steady: set-up, then awaited).
    let pace = Pace {
        start: Instant::now(),
        rate: if opts.workload == Workload::W1 {
            rate
        } else {
            None
        },
        until: None,
    };
    report.merge(spread(&shared, Arc::new(deliveries), connections, pace).await?);
    if opts.workload == Workload::Steady {
        for id in last_per_partition(&workload.commands, &report.sent) {
            outcome(&shared, &mut conn, id).await?;
        }
    }
    // 3. Sales on every connection, paced and cut off by --duration; the lag probe runs meanwhile.
    let checking = opts.checks.map(|c| {
        let mut names: Vec<String> = stores.iter().flatten().cloned().collect();
        names.sort();
        names.dedup();
        rebuilds::start(client.clone(), names, c == Checks::Rebuilds)
    });
    let (stop_probe, probe_stop) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(probe_lag(shared.clone(), stores.clone(), probe_stop));
    let sales_started = Instant::now();
    let pace = Pace {
        start: sales_started,
        rate,
        until: duration.map(|d| sales_started + d),
    };
    report.merge(spread(&shared, Arc::new(sales), connections, pace).await?);
    let window_start = if opts.workload == Workload::W1 {
        started
    } else {
        sales_started
    };
    let accept_secs = window_start.elapsed().as_secs_f64();
    // 4. The recovery phase, if asked for: a sustainable rate right after the sales phase.
    let recovery = match opts.recovery {
        Some(d) => {
            let (figures, seen) =
                recovery_phase(&shared, &opts, d, recovery_indices, connections).await?;
            report.merge(seen);
            Some(figures)
        }
        None => None,
    };
    let last_accepted = Instant::now();
    // Each partition's commands are processed in queue order: its last 202 is decided last.
    let mut head = 0;
    for id in last_per_partition(&workload.commands, &report.sent) {
        if let Outcome::Processed(p) = outcome(&shared, &mut conn, id).await? {
            head = head.max(p);
        }
    }
    let processing_lag = last_accepted.elapsed();
    // The read models at the newest event: every accepted command is visible in queries.
    if let Some(store) = stores.iter().flatten().next() {
        visible(&shared, &mut conn, store, head).await?;
    }
    let visibility_lag = last_accepted.elapsed();
    let process_secs = Instant::now().duration_since(window_start).as_secs_f64();
    let _ = stop_probe.send(true);
    let mut lag_samples = probe.await.context("lag probe")?;
    let checked = match checking {
        Some(c) => Some(c.finish().await?),
        None => None,
    };
    bar.abort();

    // Every outcome, read back (not timed).
    report.sent.sort_by_key(|s| s.index);
    let ids: Vec<uuid::Uuid> = report.sent.iter().map(|s| s.command_id).collect();
    let decided = outcomes(&shared, ids, connections).await?;
    let head = decided
        .iter()
        .chain([&Outcome::Processed(head)])
        .filter_map(|o| match o {
            Outcome::Processed(p) => Some(*p),
            Outcome::Rejected(_) => None,
        })
        .max()
        .unwrap_or(0);
    lag_samples.push(visibility_lag.as_secs_f64() * 1000.0);

    // The books of what was accepted, and the checks.
    let sent_count =
        report.sent.len() + report.errors.values().map(|(n, _)| n).sum::<u64>() as usize;
    let Judged {
        problems,
        rejected,
        books,
    } = judge(&report, &decided, &workload.commands);
    let read = http_read::HttpReadModels {
        client,
        min_position: head,
    };
    let verified = match problems.first() {
        Some(p) => Err(p.clone()),
        None => tally_core::workload::verify(&read, &books, books.accepted, books.rejected).await,
    };

    // Figures over the measured window.
    // W1: every command; steady: the stream of sales (set-up is not measured).
    let in_window: Vec<Duration> = report
        .sent
        .iter()
        .filter(|s| {
            s.index < recovery_from
                && (opts.workload == Workload::W1
                    || matches!(workload.commands[s.index], Command::RecordSale { .. }))
        })
        .map(|s| s.latency)
        .collect();
    let n_window = in_window.len() as f64;
    let n_processed_window = n_window + recovery.as_ref().map_or(0.0, |r| r.accepted_202 as f64);
    let summary = Summary {
        workload: opts.workload,
        connections,
        rate,
        sent: sent_count as u64,
        accepted_202: report.sent.len() as u64,
        processed: books.accepted,
        rejected,
        errors: report.errors.iter().map(|(s, (n, _))| (*s, *n)).collect(),
        pushed_back_429_503: shared.pushed_back.load(Ordering::Relaxed),
        reconnects: report.reconnects,
        accepted_per_s: n_window / accept_secs,
        processed_per_s: n_processed_window / process_secs,
        latency_ms: Latency::of(&in_window)?,
        recovery,
        processing_lag_end_s: processing_lag.as_secs_f64(),
        visibility_lag_end_s: visibility_lag.as_secs_f64(),
        visibility_lag_max_ms: lag_samples.iter().copied().fold(0.0, f64::max),
        visibility_lag_samples: lag_samples.len(),
        verified: verified.is_ok(),
        failure: verified.as_ref().err().cloned(),
    };
    print_summary(&summary, opts.json, workload.expected.rejected)?;
    if let Some(c) = &checked {
        println!(
            "CHECKS rebuilds={} rebuild_events_per_s={:.0} queries={} wrong={} empty={} longest_query_ms={:.1}",
            c.rebuilds, c.events_per_s, c.queries, c.wrong, c.empty, c.longest_query_ms
        );
        if let Some(e) = &c.example {
            bail!("a query answered wrong or empty: {e}");
        }
    }
    if let Err(e) = verified {
        bail!("the books do not match what was accepted: this run has no figure ({e})");
    }
    Ok(())
}

/// A run's rate, duration and numbers of sales, from the options and the workload's defaults.
struct Plan {
    rate: Option<f64>,
    duration: Option<Duration>,
    sales: usize,
    recovery_sales: usize,
}

fn plan(opts: &LoadOptions) -> anyhow::Result<Plan> {
    let (rate, duration) = match opts.workload {
        Workload::W1 | Workload::Queries => (opts.rate, opts.duration),
        Workload::Steady => (
            Some(opts.rate.unwrap_or(STEADY_RATE)),
            Some(opts.duration.unwrap_or(STEADY_DURATION)),
        ),
    };
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of commands per second");
    }
    if !(opts.recovery_rate.is_finite() && opts.recovery_rate > 0.0) {
        bail!("--recovery-rate must be a positive number of commands per second");
    }
    let sales = match (opts.sales, opts.workload, rate, duration) {
        (Some(n), ..) => n,
        (None, Workload::W1 | Workload::Queries, ..) => W1Size::FULL.sales,
        (None, Workload::Steady, Some(r), Some(d)) => (r * d.as_secs_f64()).ceil() as usize,
        (None, Workload::Steady, ..) => W1Size::FULL.sales,
    };
    let recovery_sales = opts.recovery.map_or(0, |d| {
        (opts.recovery_rate * d.as_secs_f64()).ceil() as usize
    });
    Ok(Plan {
        rate,
        duration,
        sales,
        recovery_sales,
    })
}

/// The recovery phase: `indices` at `--recovery-rate` for `d` on fresh connections, its figures.
async fn recovery_phase(
    shared: &Arc<Shared>,
    opts: &LoadOptions,
    d: Duration,
    indices: Vec<usize>,
    connections: usize,
) -> anyhow::Result<(Phase, WorkerReport)> {
    let pushed_back = shared.pushed_back.load(Ordering::Relaxed);
    let start = Instant::now();
    let pace = Pace {
        start,
        rate: Some(opts.recovery_rate),
        until: Some(start + d),
    };
    let seen = spread(
        shared,
        Arc::new(indices),
        RECOVERY_CONNECTIONS.min(connections),
        pace,
    )
    .await?;
    let latencies: Vec<Duration> = seen.sent.iter().map(|s| s.latency).collect();
    let figures = Phase {
        rate: opts.recovery_rate,
        seconds: d.as_secs_f64(),
        accepted_202: seen.sent.len() as u64,
        accepted_per_s: seen.sent.len() as f64 / start.elapsed().as_secs_f64(),
        pushed_back_429_503: shared.pushed_back.load(Ordering::Relaxed) - pushed_back,
        latency_ms: Latency::of(&latencies)?,
    };
    Ok((figures, seen))
}

/// What a run's outcomes say: the problems (answers other than 202, rejections W1 does not
/// expect, stock below zero), the rejections by code, and the books of what was accepted.
struct Judged {
    problems: Vec<String>,
    rejected: BTreeMap<String, u64>,
    books: tally_core::workload::Books,
}

fn judge(report: &WorkerReport, decided: &[Outcome], commands_of_run: &[Command]) -> Judged {
    let mut problems = Vec::new();
    if !report.errors.is_empty() {
        let (status, (n, example)) = report
            .errors
            .iter()
            .next()
            .map(|(s, e)| (*s, e.clone()))
            .unwrap_or_default();
        problems.push(format!(
            "{n} commands answered {status} instead of 202, e.g. {example}"
        ));
    }
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    for (s, o) in report.sent.iter().zip(decided) {
        if let Outcome::Rejected(code) = o {
            *rejected.entry(code.clone()).or_default() += 1;
            let is_sale = matches!(commands_of_run[s.index], Command::RecordSale { .. });
            if !is_sale || code != "insufficient_stock" {
                problems.push(format!("command {} rejected with {code}", s.index));
            }
        }
    }
    let commands: Vec<Command> = report
        .sent
        .iter()
        .map(|s| commands_of_run[s.index].clone())
        .collect();
    let processed_ok: Vec<bool> = decided
        .iter()
        .map(|o| matches!(o, Outcome::Processed(_)))
        .collect();
    let books = tally_core::workload::books_of(&commands, |i| processed_ok[i]);
    if let Some(((store, item), n)) = books.stock.iter().find(|(_, n)| **n < 0) {
        problems.push(format!("accepted sales take {store}/{item} to {n}"));
    }
    Judged {
        problems,
        rejected,
        books,
    }
}
