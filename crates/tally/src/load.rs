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

mod http1;
mod http_read;
mod mix;
mod rebuilds;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::workload::{W1Size, w1};
use tally_domain::Command;

use http1::{Conn, Target};

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

/// A command as a request: path and JSON body.
fn request(command: &Command) -> anyhow::Result<(String, Value)> {
    let tagged = serde_json::to_value(command).context("encoding a command")?;
    let body = tagged
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .context("a command is one tagged object")?;
    let path = match command {
        Command::RegisterSupplier { .. } => "/v1/suppliers".to_owned(),
        Command::RegisterStore { .. } => "/v1/stores".to_owned(),
        Command::RegisterItem { .. } => "/v1/items".to_owned(),
        Command::RecordDelivery { .. } => "/v1/deliveries".to_owned(),
        Command::RecordSale { .. } => "/v1/sales".to_owned(),
        Command::RecordReturn { .. } => "/v1/returns".to_owned(),
        Command::AdjustStock { .. } => "/v1/stock-adjustments".to_owned(),
        Command::VoidSale {
            sale_id, reason, ..
        } => {
            return Ok((
                format!("/v1/sales/{}/void", sale_id.as_str()),
                serde_json::json!({ "reason": reason.as_str() }),
            ));
        }
        Command::CorrectDelivery {
            correction_id,
            delivery_id,
            reason,
            lines,
            ..
        } => {
            return Ok((
                format!("/v1/deliveries/{}/corrections", delivery_id.as_str()),
                serde_json::json!({
                    "correction_id": correction_id.as_str(),
                    "reason": reason.as_str(),
                    "lines": lines,
                }),
            ));
        }
    };
    Ok((path, body))
}

/// The store a command concerns, for the lag probe's read.
fn store_of(command: &Command) -> Option<String> {
    match command {
        Command::RecordDelivery { store_id, .. }
        | Command::RecordSale { store_id, .. }
        | Command::RecordReturn { store_id, .. }
        | Command::AdjustStock { store_id, .. } => Some(store_id.as_str().to_owned()),
        _ => None,
    }
}

/// What the load generator shares between its workers.
struct Shared {
    target: Target,
    key: String,
    /// Every command of the workload, encoded, by index.
    requests: Vec<Vec<u8>>,
    /// Commands that got their 202 (all phases), for the progress line.
    accepted: AtomicU64,
    /// 429/503 answers (retried).
    pushed_back: AtomicU64,
    /// The newest 202: (index, command id, when), for the lag probe.
    newest: std::sync::Mutex<Option<(usize, uuid::Uuid, Instant)>>,
}

/// A command that got its 202.
struct Sent {
    index: usize,
    command_id: uuid::Uuid,
    latency: Duration,
}

/// What one worker saw.
#[derive(Default)]
struct WorkerReport {
    sent: Vec<Sent>,
    /// Final answers other than 202, by status, with one example body each.
    errors: BTreeMap<u16, (u64, String)>,
    /// Requests that lost their connection (retried with the same idempotency key).
    reconnects: u64,
}

impl WorkerReport {
    fn merge(&mut self, other: WorkerReport) {
        self.sent.extend(other.sent);
        self.reconnects += other.reconnects;
        for (status, (n, example)) in other.errors {
            self.errors.entry(status).or_insert((0, example)).0 += n;
        }
    }
}

#[derive(Deserialize)]
struct AcceptedBody {
    command_id: uuid::Uuid,
}

/// Sends one command until it gets a final answer: 202, or an error other than 429/503/lost connection.
async fn send_one(
    shared: &Shared,
    conn: &mut Conn,
    index: usize,
    due: Instant,
    report: &mut WorkerReport,
) -> anyhow::Result<()> {
    let request = &shared.requests[index];
    let mut lost = 0u32;
    loop {
        let r = match conn.send(request).await {
            Ok(r) => r,
            Err(e) => {
                lost += 1;
                report.reconnects += 1;
                if lost > 600 {
                    return Err(e.context("the server stayed unreachable"));
                }
                tracing::debug!(error = %format!("{e:#}"), "request failed; retrying with the same key");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match r.status {
            202 => {
                let body: AcceptedBody =
                    serde_json::from_slice(&r.body).context("a 202 names its command")?;
                let now = Instant::now();
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut newest) = shared.newest.try_lock() {
                    *newest = Some((index, body.command_id, now));
                }
                report.sent.push(Sent {
                    index,
                    command_id: body.command_id,
                    latency: now.saturating_duration_since(due),
                });
                return Ok(());
            }
            429 | 503 => {
                shared.pushed_back.fetch_add(1, Ordering::Relaxed);
                let wait = r.retry_after.unwrap_or(1).clamp(1, 5);
                // A fraction of Retry-After, jittered by index, so a fleet does not come back at once.
                let ms = wait * 200 + (index as u64 % 97);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            status => {
                let e = report
                    .errors
                    .entry(status)
                    .or_insert_with(|| (0, String::from_utf8_lossy(&r.body).into_owned()));
                e.0 += 1;
                return Ok(());
            }
        }
    }
}

/// How the commands of a phase are paced.
#[derive(Clone, Copy)]
struct Pace {
    start: Instant,
    /// Commands per second; none: as fast as answered.
    rate: Option<f64>,
    /// No command is sent that is due after this.
    until: Option<Instant>,
}

impl Pace {
    fn due(&self, n: usize) -> Instant {
        match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(n as f64 / rate),
            None => Instant::now(),
        }
    }
}

/// The items a pool of workers shares: each takes the next one when done with the last.
struct Shares<T> {
    items: Arc<Vec<T>>,
    next: Arc<AtomicUsize>,
}

impl<T> Shares<T> {
    /// The next item and its index, if any is left.
    fn take(&self) -> Option<(usize, &T)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.items.get(n).map(|item| (n, item))
    }
    /// No worker takes another item.
    fn close(&self) {
        self.next.store(self.items.len(), Ordering::Relaxed);
    }
}

/// Works through `items` on `connections` workers, each with its own connection, so a slow answer
/// holds up only its own worker; returns what each worker gathered.
async fn on_workers<T, R, F, Fut>(
    shared: &Arc<Shared>,
    items: Arc<Vec<T>>,
    connections: usize,
    work: F,
) -> anyhow::Result<Vec<R>>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(Arc<Shared>, Conn, Shares<T>) -> Fut,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let shares = Shares {
                items: items.clone(),
                next: next.clone(),
            };
            let conn = Conn::new(shared.target.clone());
            tokio::spawn(work(shared.clone(), conn, shares))
        })
        .collect();
    let mut gathered = Vec::with_capacity(workers.len());
    for w in workers {
        gathered.push(w.await.context("load worker")??);
    }
    Ok(gathered)
}

/// Sends `indices` on `connections` workers; returns what they saw.
async fn spread(
    shared: &Arc<Shared>,
    indices: Arc<Vec<usize>>,
    connections: usize,
    pace: Pace,
) -> anyhow::Result<WorkerReport> {
    let reports = on_workers(
        shared,
        indices,
        connections,
        |shared, mut conn, shares| async move {
            let mut report = WorkerReport::default();
            while let Some((n, &index)) = shares.take() {
                let due = pace.due(n);
                let now = Instant::now();
                if pace.until.is_some_and(|until| due.max(now) > until) {
                    // Later commands are due later still: the run is over.
                    shares.close();
                    break;
                }
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                send_one(&shared, &mut conn, index, due, &mut report).await?;
            }
            Ok(report)
        },
    )
    .await?;
    let mut all = WorkerReport::default();
    reports.into_iter().for_each(|r| all.merge(r));
    Ok(all)
}

/// A command's outcome as `GET /v1/commands/{id}` tells it.
#[derive(Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    position: Option<u64>,
    #[serde(default)]
    rejection: Option<Rejection>,
}

#[derive(Deserialize)]
struct Rejection {
    code: String,
}

/// How a command ended: its rejection code, or its position.
#[derive(Clone)]
enum Outcome {
    Processed(u64),
    Rejected(String),
}

async fn get_json<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    conn: &mut Conn,
    path: &str,
) -> anyhow::Result<T> {
    let request = shared.target.encode("GET", path, &shared.key, None, None);
    let mut lost = 0;
    loop {
        match conn.send(&request).await {
            Ok(r) if r.status == 200 => {
                return serde_json::from_slice(&r.body).with_context(|| format!("GET {path}"));
            }
            Ok(r) if r.status == 429 || r.status == 503 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => bail!(
                "GET {path}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) if lost < 600 => {
                lost += 1;
                tracing::debug!(error = %format!("{e:#}"), "GET failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("GET {path}"))),
        }
    }
}

/// Waits for a command's outcome.
async fn outcome(shared: &Shared, conn: &mut Conn, id: uuid::Uuid) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let path = format!("/v1/commands/{id}?wait_ms=10000");
    loop {
        let s: Status = get_json(shared, conn, &path).await?;
        match s.status.as_str() {
            "processed" => return Ok(Outcome::Processed(s.position.unwrap_or(0))),
            "rejected" => {
                return Ok(Outcome::Rejected(
                    s.rejection.map_or_else(|| "?".to_owned(), |r| r.code),
                ));
            }
            _ if Instant::now() > deadline => bail!("command {id} was never decided"),
            _ => {}
        }
    }
}

/// Every command's outcome, in the order of `ids`.
async fn outcomes(
    shared: &Arc<Shared>,
    ids: Vec<uuid::Uuid>,
    connections: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let gathered = on_workers(
        shared,
        Arc::new(ids),
        connections,
        |shared, mut conn, shares| async move {
            let mut got = Vec::new();
            while let Some((n, &id)) = shares.take() {
                got.push((n, outcome(&shared, &mut conn, id).await?));
            }
            Ok(got)
        },
    )
    .await?;
    let mut all: Vec<(usize, Outcome)> = gathered.into_iter().flatten().collect();
    all.sort_by_key(|(n, _)| *n);
    Ok(all.into_iter().map(|(_, o)| o).collect())
}

/// Waits until the read models answer at `position` (through one store's inventory).
async fn visible(
    shared: &Shared,
    conn: &mut Conn,
    store: &str,
    position: u64,
) -> anyhow::Result<()> {
    let path = format!("/v1/inventory/{store}?min_position={position}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match get_json::<Value>(shared, conn, &path).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %format!("{e:#}"), "read models not there yet");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Samples the visibility lag while the run goes: the newest 202's command, once processed, until
/// the read models answer at its position. Returns the samples in milliseconds.
async fn probe_lag(
    shared: Arc<Shared>,
    stores: Arc<Vec<Option<String>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<f64> {
    let mut conn = Conn::new(shared.target.clone());
    let mut samples = Vec::new();
    let mut last = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return samples,
        }
        let newest = shared.newest.lock().ok().and_then(|n| *n);
        let Some((index, id, accepted_at)) = newest else {
            continue;
        };
        if last == Some(id) {
            continue;
        }
        last = Some(id);
        let Some(store) = stores.get(index).cloned().flatten() else {
            continue;
        };
        let sample = async {
            let position = match outcome(&shared, &mut conn, id).await? {
                Outcome::Processed(p) => p,
                Outcome::Rejected(_) => return Ok(None),
            };
            visible(&shared, &mut conn, &store, position).await?;
            Ok::<_, anyhow::Error>(Some(accepted_at.elapsed().as_secs_f64() * 1000.0))
        };
        match sample.await {
            Ok(Some(ms)) => samples.push(ms),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "lag probe failed"),
        }
    }
}

/// Prints the progress to stderr while the run goes (when stderr is a terminal).
fn progress(shared: &Arc<Shared>, total: u64) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} accepted ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let done = shared.accepted.load(Ordering::Relaxed);
            bar.set_position(done);
            let back = shared.pushed_back.load(Ordering::Relaxed);
            if back > 0 {
                bar.set_message(format!("{back} pushed back (429/503)"));
            }
            if done >= total {
                bar.finish_and_clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The figures of a run (`--json` prints this).
#[derive(Serialize)]
struct Summary {
    workload: Workload,
    connections: usize,
    rate: Option<f64>,
    sent: u64,
    accepted_202: u64,
    processed: u64,
    rejected: BTreeMap<String, u64>,
    errors: BTreeMap<u16, u64>,
    pushed_back_429_503: u64,
    reconnects: u64,
    accepted_per_s: f64,
    /// Over the measured window and the recovery phase, until the last command was decided.
    processed_per_s: f64,
    latency_ms: Latency,
    /// The recovery phase (`--recovery`), measured on its own.
    recovery: Option<Phase>,
    /// From the last 202 until the last command was decided.
    processing_lag_end_s: f64,
    /// From the last 202 until the read models reflected every command.
    visibility_lag_end_s: f64,
    /// The probe's samples during the run: 202 → read models at that command's position.
    visibility_lag_max_ms: f64,
    visibility_lag_samples: usize,
    verified: bool,
    failure: Option<String>,
}

/// Accept latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    /// The percentiles of `latencies`, through an HDR histogram (1 µs to 10 min, 3 significant
    /// digits); all zero when there are none.
    fn of(latencies: &[Duration]) -> anyhow::Result<Self> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
        for l in latencies {
            h.saturating_record(l.as_micros().max(1) as u64);
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// The figures of the recovery phase.
#[derive(Serialize)]
struct Phase {
    rate: f64,
    seconds: f64,
    accepted_202: u64,
    accepted_per_s: f64,
    pushed_back_429_503: u64,
    latency_ms: Latency,
}

pub async fn run(opts: LoadOptions) -> anyhow::Result<()> {
    if opts.workload == Workload::Queries {
        return mix::run(&opts).await;
    }
    let connections = opts.connections.max(1);
    let target = Target::parse(&opts.url)?;
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
        rebuilds::start(&opts.url, &opts.key, names, c == Checks::Rebuilds)
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
            let pushed_back = shared.pushed_back.load(Ordering::Relaxed);
            let start = Instant::now();
            let pace = Pace {
                start,
                rate: Some(opts.recovery_rate),
                until: Some(start + d),
            };
            let seen = spread(
                &shared,
                Arc::new(recovery_indices),
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
    let mut problems = Vec::new();
    let sent_count =
        report.sent.len() + report.errors.values().map(|(n, _)| n).sum::<u64>() as usize;
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
    for (s, o) in report.sent.iter().zip(&decided) {
        if let Outcome::Rejected(code) = o {
            *rejected.entry(code.clone()).or_default() += 1;
            let is_sale = matches!(workload.commands[s.index], Command::RecordSale { .. });
            if !is_sale || code != "insufficient_stock" {
                problems.push(format!("command {} rejected with {code}", s.index));
            }
        }
    }
    let commands: Vec<Command> = report
        .sent
        .iter()
        .map(|s| workload.commands[s.index].clone())
        .collect();
    let processed_ok: Vec<bool> = decided
        .iter()
        .map(|o| matches!(o, Outcome::Processed(_)))
        .collect();
    let books = tally_core::workload::books_of(&commands, |i| processed_ok[i]);
    if let Some(((store, item), n)) = books.stock.iter().find(|(_, n)| **n < 0) {
        problems.push(format!("accepted sales take {store}/{item} to {n}"));
    }
    let read = http_read::HttpReadModels {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?,
        base: opts.url.trim_end_matches('/').to_owned(),
        key: opts.key.clone(),
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

/// The last command that got a 202 in each partition (in W1 order): once it is decided, so is the
/// rest of its partition.
fn last_per_partition(commands: &[Command], sent: &[Sent]) -> Vec<uuid::Uuid> {
    let mut last: HashMap<String, (usize, uuid::Uuid)> = HashMap::new();
    for s in sent {
        let entry = last
            .entry(commands[s.index].partition_key())
            .or_insert((s.index, s.command_id));
        if s.index >= entry.0 {
            *entry = (s.index, s.command_id);
        }
    }
    last.into_values().map(|(_, id)| id).collect()
}

fn print_summary(s: &Summary, json: bool, w1_rejects: u64) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(s).context("encoding the summary")?
        );
        return Ok(());
    }
    let rejected: u64 = s.rejected.values().sum();
    println!(
        "sent {} commands: {} accepted (202), {} processed, {} rejected {:?}, errors {:?}; {} pushed back with 429/503 and retried, {} reconnects",
        s.sent,
        s.accepted_202,
        s.processed,
        rejected,
        s.rejected,
        s.errors,
        s.pushed_back_429_503,
        s.reconnects
    );
    if s.workload == Workload::W1 {
        println!("(W1 sent in sequence rejects {w1_rejects} sales for stock)");
    }
    println!(
        "throughput: {:.0} commands/s accepted, {:.0} commands/s processed",
        s.accepted_per_s, s.processed_per_s
    );
    let l = &s.latency_ms;
    println!(
        "accept latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!(
        "lag: last decision {:.2}s after the last 202, read models caught up {:.2}s after it; during the run 202 → visible in queries at most {:.0} ms ({} samples)",
        s.processing_lag_end_s,
        s.visibility_lag_end_s,
        s.visibility_lag_max_ms,
        s.visibility_lag_samples
    );
    if let Some(r) = &s.recovery {
        println!(
            "RECOVERY rate={:.0} seconds={:.0} accepted={} accepted_per_s={:.0} pushed_back={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
            r.rate,
            r.seconds,
            r.accepted_202,
            r.accepted_per_s,
            r.pushed_back_429_503,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.latency_ms.max
        );
    }
    println!(
        "LOAD workload={} commands={} accepted={} rejected={} accepted_per_s={:.0} processed_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} lag_end_s={:.2} lag_max_ms={:.0} verified={}",
        serde_json::to_value(s.workload)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.sent,
        s.processed,
        rejected,
        s.accepted_per_s,
        s.processed_per_s,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        s.visibility_lag_end_s,
        s.visibility_lag_max_ms,
        s.verified
    );
    if let Some(f) = &s.failure {
        eprintln!("verification FAILED: {f}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let latencies: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let l = Latency::of(&latencies).expect("histogram");
        // Three significant digits: each figure within 0.1 % of the exact percentile.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.p50, 500.0), "p50 {l:?}");
        assert!(near(l.p90, 900.0), "p90 {l:?}");
        assert!(near(l.p99, 990.0), "p99 {l:?}");
        assert!(near(l.p999, 999.0), "p99.9 {l:?}");
        assert!(near(l.max, 1000.0), "max {l:?}");
        let none = Latency::of(&[]).expect("histogram");
        assert_eq!((none.p50, none.max), (0.0, 0.0));
        // A latency beyond the histogram's range is kept at its top, not dropped.
        let huge = Latency::of(&[Duration::from_secs(3600)]).expect("histogram");
        assert!(huge.max >= 599_000.0, "{huge:?}");
    }

    #[test]
    fn an_open_loop_schedule_is_fixed_in_advance() {
        let start = Instant::now();
        let pace = Pace {
            start,
            rate: Some(5000.0),
            until: None,
        };
        assert_eq!(pace.due(0), start);
        assert_eq!(pace.due(5000), start + Duration::from_secs(1));
        assert_eq!(pace.due(2500), start + Duration::from_millis(500));
        // Without a rate every command is due when it is taken.
        let closed = Pace { rate: None, ..pace };
        assert!(closed.due(1_000_000) >= start);
        assert!(closed.due(1_000_000) < start + Duration::from_secs(60));
    }

    fn sale(store: &str, n: usize) -> Command {
        let workload = w1(
            1,
            W1Size {
                sales: 10,
                ..W1Size::FULL
            },
        );
        let template = workload
            .commands
            .iter()
            .find(|c| matches!(c, Command::RecordSale { .. }))
            .expect("W1 has sales")
            .clone();
        let Command::RecordSale {
            lines, occurred_at, ..
        } = template
        else {
            unreachable!()
        };
        Command::RecordSale {
            sale_id: tally_domain::values::SaleId::parse(format!("s-t{n}")).expect("sale id"),
            store_id: tally_domain::values::StoreId::parse(store).expect("store id"),
            occurred_at,
            lines,
            till_id: None,
        }
    }

    #[test]
    fn the_last_202_of_each_partition_is_tracked_whatever_order_the_answers_came_in() {
        let commands = vec![
            sale("store-a", 0),
            sale("store-b", 1),
            sale("store-a", 2),
            sale("store-b", 3),
            sale("store-a", 4),
        ];
        let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
        // Answers arrive out of order; command 4 never got its 202.
        let sent: Vec<Sent> = [2, 0, 3, 1]
            .into_iter()
            .map(|index| Sent {
                index,
                command_id: ids[index],
                latency: Duration::from_millis(1),
            })
            .collect();
        let mut last = last_per_partition(&commands, &sent);
        last.sort();
        let mut want = vec![ids[2], ids[3]];
        want.sort();
        assert_eq!(last, want);
    }

    #[test]
    fn worker_reports_add_up() {
        let mut a = WorkerReport {
            sent: vec![Sent {
                index: 0,
                command_id: uuid::Uuid::now_v7(),
                latency: Duration::ZERO,
            }],
            errors: BTreeMap::from([(422, (2, "first".to_owned()))]),
            reconnects: 1,
        };
        let b = WorkerReport {
            sent: vec![Sent {
                index: 1,
                command_id: uuid::Uuid::now_v7(),
                latency: Duration::ZERO,
            }],
            errors: BTreeMap::from([
                (422, (3, "second".to_owned())),
                (400, (1, "bad".to_owned())),
            ]),
            reconnects: 2,
        };
        a.merge(b);
        assert_eq!(a.sent.len(), 2);
        assert_eq!(a.reconnects, 3);
        assert_eq!(a.errors[&422], (5, "first".to_owned()));
        assert_eq!(a.errors[&400], (1, "bad".to_owned()));
    }
}
