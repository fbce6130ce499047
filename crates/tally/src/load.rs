//! `tally load w1`: W1 over HTTP against a running tally, as a client fleet would send it, then the
//! books checked through the query API.
//!
//! Phases:
//! 1. reference data, one request at a time (items need their supplier), then waits until processed;
//! 2. deliveries, on every connection at once, until every one has its 202 (so each store's
//!    deliveries are queued before its sales);
//! 3. sales, on every connection at once. Which sales of a store come first is then the server's to
//!    decide, so which of them are rejected for stock may differ from W1's sequential books; as
//!    WORKLOAD.md says, the books are verified against those computed directly from the commands
//!    that were accepted (`tally_core::workload::books_of`), and every rejection must be
//!    `insufficient_stock` of a sale, with no stock below zero.
//!
//! Figures: commands accepted per second (202s over the time from the first to the last request),
//! commands processed per second (until the last outcome), accept latency p50/p99/p99.9, and the
//! processing lag (last outcome after the last 202). Every command's outcome is then read back, the
//! read models are awaited (`min_position`), and inventory, store and supplier reports are compared
//! with the books. A run whose books differ has no figure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use hdrhistogram::Histogram;
use jiff::civil::Date;
use serde_json::Value;
use tally_core::ports::{Error, ReadStore, Result as PortResult};
use tally_core::readmodel::{DayFigures, ProjectionUpdate, SupplierDay};
use tally_core::workload::{W1Size, w1};
use tally_domain::Command;
use tokio::sync::Mutex;

pub struct LoadOptions {
    pub url: String,
    pub key: String,
    pub seed: u64,
    pub sales: usize,
    pub connections: usize,
}

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
    };
    Ok((path, body))
}

/// A W1 command with its index in W1.
type Numbered = (usize, Command);

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Makes this run's idempotency keys its own.
    run: String,
}

impl Client {
    fn idempotency_key(&self, index: usize) -> String {
        format!("w1-{}-{index}", self.run)
    }
}

struct Sent {
    command_id: String,
    latency: Duration,
}

impl Client {
    /// POSTs a command with an idempotency key; retries 429/503 (after Retry-After) and lost
    /// connections with the same key, as a careful client does, so a busy or failing server slows the
    /// run instead of failing it, and a retried command is never applied twice. Anything else but 202
    /// is an error.
    async fn send(&self, path: &str, body: &Value, key: &str) -> anyhow::Result<Sent> {
        let url = format!("{}{path}", self.base);
        loop {
            let started = Instant::now();
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&self.key)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await;
            let r = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    tracing::debug!(error = %e, "request failed; retrying with the same key");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("POST {path}")),
            };
            let latency = started.elapsed();
            let status = r.status().as_u16();
            if status == 202 {
                let v: Value = r.json().await.context("reading a 202")?;
                let command_id = v["command_id"]
                    .as_str()
                    .context("a 202 names its command")?
                    .to_owned();
                return Ok(Sent {
                    command_id,
                    latency,
                });
            }
            if status == 429 || status == 503 {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(wait.clamp(1, 5) * 200)).await;
                continue;
            }
            let text = r.text().await.unwrap_or_default();
            bail!("POST {path}: {status} {text}");
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let text = r.text().await.with_context(|| format!("GET {path}"))?;
        if !status.is_success() {
            bail!("GET {path}: {status} {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))
    }

    /// Waits for a command's outcome: (its rejection code if rejected, its position if processed).
    async fn outcome(&self, command_id: &str) -> anyhow::Result<(Option<String>, u64)> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let v = self
                .get(&format!("/v1/commands/{command_id}?wait_ms=10000"))
                .await?;
            match v["status"].as_str() {
                Some("processed") => return Ok((None, v["position"].as_u64().unwrap_or(0))),
                Some("rejected") => {
                    let code = v["rejection"]["code"].as_str().unwrap_or("?").to_owned();
                    return Ok((Some(code), 0));
                }
                _ if Instant::now() > deadline => bail!("command {command_id} never decided"),
                _ => {}
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// `(index in W1, command id)` of every 202.
    ids: Vec<(usize, String)>,
}

pub async fn w1_load(opts: LoadOptions) -> anyhow::Result<()> {
    let connections = opts.connections.max(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let client = Arc::new(Client {
        http,
        base: opts.url.trim_end_matches('/').to_owned(),
        key: opts.key.clone(),
        run: uuid::Uuid::now_v7().simple().to_string(),
    });
    client
        .get("/v1/admin/api-keys")
        .await
        .context("the key must be an admin key of the server at --url")?;
    let workload = w1(
        opts.seed,
        W1Size {
            sales: opts.sales,
            ..W1Size::FULL
        },
    );
    let submitted = workload.commands.len();
    let commands: Vec<Numbered> = workload.commands.iter().cloned().enumerate().collect();
    let (reference, rest) = commands.split_at(workload.reference_count);
    let (deliveries, sales): (Vec<Numbered>, Vec<Numbered>) = rest
        .iter()
        .cloned()
        .partition(|(_, c)| matches!(c, Command::RecordDelivery { .. }));
    eprintln!(
        "W1 over HTTP: {} reference, {} deliveries, {} sales to {} on {connections} connections",
        reference.len(),
        deliveries.len(),
        sales.len(),
        opts.url
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    // 1. Reference data, in order, then processed.
    let mut last = None;
    for (i, c) in reference {
        let (path, body) = request(c)?;
        let sent = client
            .send(&path, &body, &client.idempotency_key(*i))
            .await?;
        let mut t = tally.lock().await;
        t.latencies.push(sent.latency);
        t.ids.push((*i, sent.command_id.clone()));
        last = Some(sent.command_id);
    }
    if let Some(id) = &last {
        client.outcome(id).await?;
    }
    // 2. Deliveries, then 3. sales, each on every connection.
    run_spread(&client, &tally, deliveries, connections).await?;
    run_spread(&client, &tally, sales, connections).await?;
    let accept_secs = started.elapsed().as_secs_f64();
    let last_accepted = Instant::now();
    // Each store's commands are processed in queue order: its last 202 decides last.
    let mut ids = tally.lock().await.ids.clone();
    ids.sort_by_key(|(i, _)| *i);
    let mut last_of: HashMap<String, &str> = HashMap::new();
    for (i, id) in &ids {
        last_of.insert(workload.commands[*i].partition_key(), id.as_str());
    }
    for id in last_of.values() {
        client.outcome(id).await?;
    }
    let lag = last_accepted.elapsed();
    let process_secs = started.elapsed().as_secs_f64();

    // Every outcome, read back (not timed), and the books of what was accepted.
    if ids.len() != submitted {
        bail!("{} commands got a 202, {submitted} were sent", ids.len());
    }
    let only_ids: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    let decided = outcomes(&client, &only_ids, connections).await?;
    let head = decided.iter().map(|d| d.1).max().unwrap_or(0);
    let accepted_at: Vec<bool> = decided.iter().map(|d| d.0.is_none()).collect();
    let mut problems = Vec::new();
    for ((i, _), (rejection, _)) in ids.iter().zip(&decided) {
        if let Some(code) = rejection {
            let is_sale = matches!(workload.commands[*i], Command::RecordSale { .. });
            if !is_sale || code != "insufficient_stock" {
                problems.push(format!("command {i} rejected with {code}"));
            }
        }
    }
    let books = tally_core::workload::books_of(&workload.commands, |i| accepted_at[i]);
    if let Some(((store, item), n)) = books.stock.iter().find(|(_, n)| **n < 0) {
        problems.push(format!("accepted sales take {store}/{item} to {n}"));
    }
    let (accepted, rejected) = (books.accepted, books.rejected);
    let read = HttpReadStore {
        client: client.clone(),
        min_position: head,
    };
    let verified = match problems.first() {
        Some(p) => Err(p.clone()),
        None => tally_core::workload::verify(&read, &books, accepted, rejected).await,
    };
    if let Err(e) = &verified {
        eprintln!("verification FAILED: {e}");
    }
    eprintln!(
        "{rejected} sales rejected for stock (W1 sent in sequence rejects {})",
        workload.expected.rejected
    );

    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    for l in &tally.lock().await.latencies {
        h.saturating_record(l.as_micros().max(1) as u64);
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let accepted_per_s = submitted as f64 / accept_secs;
    let processed_per_s = submitted as f64 / process_secs;
    println!(
        "accepted: {submitted} commands in {accept_secs:.2}s = {accepted_per_s:.0}/s; processed in {process_secs:.2}s = {processed_per_s:.0}/s; lag after the last 202 {:.2}s",
        lag.as_secs_f64()
    );
    println!(
        "accept latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    println!(
        "W1-HTTP commands={submitted} accepted={accepted} rejected={rejected} accepted_per_s={accepted_per_s:.0} processed_per_s={processed_per_s:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} lag_s={:.2} verified={}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        lag.as_secs_f64(),
        verified.is_ok()
    );
    if verified.is_err() {
        bail!("the books do not match W1's expected books: this run has no figure");
    }
    Ok(())
}

/// Sends commands whose order does not matter on `connections` concurrent workers.
async fn run_spread(
    client: &Arc<Client>,
    tally: &Arc<Mutex<Tally>>,
    commands: Vec<Numbered>,
    connections: usize,
) -> anyhow::Result<()> {
    let queue = Arc::new(Mutex::new(commands.into_iter()));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (client, tally, queue) = (client.clone(), tally.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some((i, c)) = queue.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let (path, body) = request(&c)?;
                let sent = client
                    .send(&path, &body, &client.idempotency_key(i))
                    .await?;
                let mut t = tally.lock().await;
                t.latencies.push(sent.latency);
                t.ids.push((i, sent.command_id));
            }
        }));
    }
    for w in workers {
        w.await.context("load worker")??;
    }
    Ok(())
}

/// Every command's outcome, in the order of `ids`: (rejection code if rejected, position if processed).
async fn outcomes(
    client: &Arc<Client>,
    ids: &[String],
    connections: usize,
) -> anyhow::Result<Vec<(Option<String>, u64)>> {
    let owned: Vec<String> = ids.to_owned();
    let queue = Arc::new(Mutex::new(owned.into_iter().enumerate()));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (client, queue) = (client.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let Some((n, id)) = queue.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(got);
                };
                got.push((n, client.outcome(&id).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(ids.len());
    for w in workers {
        all.extend(w.await.context("outcome worker")??);
    }
    all.sort_by_key(|(n, _)| *n);
    Ok(all.into_iter().map(|(_, o)| o).collect())
}

/// The query API as a [`ReadStore`], for [`tally_core::workload::verify`]: every answer waits for the
/// read models to reach the run's last position.
struct HttpReadStore {
    client: Arc<Client>,
    min_position: u64,
}

fn unavailable(e: anyhow::Error) -> Error {
    Error::Unavailable(format!("{e:#}"))
}

fn int(v: &Value, field: &str) -> PortResult<i64> {
    v[field]
        .as_i64()
        .ok_or_else(|| Error::Corrupt(format!("no integer {field} in {v}")))
}

fn date_of(v: &Value) -> PortResult<Date> {
    v["date"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::Corrupt(format!("no date in {v}")))
}

impl HttpReadStore {
    async fn get(&self, path: &str) -> PortResult<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}min_position={}", self.min_position);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.client.get(&path).await {
                Ok(v) => return Ok(v),
                // The read models may still be catching up (min_position answers 503 after 10 s).
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "read model not there yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    fn days(v: &Value) -> PortResult<&Vec<Value>> {
        v["days"]
            .as_array()
            .ok_or_else(|| Error::Corrupt(format!("no days in {v}")))
    }
}

#[async_trait]
impl ReadStore for HttpReadStore {
    async fn checkpoints(&self) -> PortResult<HashMap<String, u64>> {
        Err(Error::Unavailable("not over HTTP".into()))
    }
    async fn apply(&self, _: Vec<ProjectionUpdate>) -> PortResult<()> {
        Err(Error::Unavailable("read-only".into()))
    }
    async fn reset(&self, _: &str) -> PortResult<()> {
        Err(Error::Unavailable("read-only".into()))
    }
    async fn inventory(&self, store_id: &str) -> PortResult<(u64, Vec<(String, i64)>)> {
        let v = self.get(&format!("/v1/inventory/{store_id}")).await?;
        let items = v["items"]
            .as_array()
            .ok_or_else(|| Error::Corrupt(format!("no items in {v}")))?;
        let rows = items
            .iter()
            .map(|i| {
                Ok((
                    i["item_id"].as_str().unwrap_or_default().to_owned(),
                    int(i, "on_hand")?,
                ))
            })
            .collect::<PortResult<_>>()?;
        Ok((self.min_position, rows))
    }
    async fn inventory_item(&self, _: &str, _: &str) -> PortResult<(u64, i64)> {
        Err(Error::Unavailable("not used".into()))
    }
    async fn store_daily(
        &self,
        store_id: &str,
        _: Option<Date>,
        _: Option<Date>,
    ) -> PortResult<(u64, Vec<(Date, DayFigures)>)> {
        let v = self
            .get(&format!("/v1/reports/stores/{store_id}/daily-sales"))
            .await?;
        let rows = Self::days(&v)?
            .iter()
            .map(|d| {
                Ok((
                    date_of(d)?,
                    DayFigures {
                        transactions: int(d, "transactions")?,
                        units_sold: int(d, "units_sold")?,
                        gross_cents: int(d, "gross_cents")?,
                        returned_units: int(d, "returned_units")?,
                        returned_cents: int(d, "returned_cents")?,
                    },
                ))
            })
            .collect::<PortResult<_>>()?;
        Ok((self.min_position, rows))
    }
    async fn daily_sales(&self, _: Date) -> PortResult<(u64, Vec<(String, DayFigures)>)> {
        Err(Error::Unavailable("not used".into()))
    }
    async fn supplier_daily(
        &self,
        supplier_id: &str,
        _: Option<Date>,
        _: Option<Date>,
    ) -> PortResult<(u64, Vec<(Date, SupplierDay)>)> {
        let v = self
            .get(&format!("/v1/reports/suppliers/{supplier_id}/daily"))
            .await?;
        let rows = Self::days(&v)?
            .iter()
            .map(|d| {
                Ok((
                    date_of(d)?,
                    SupplierDay {
                        deliveries: int(d, "deliveries")?,
                        units_supplied: int(d, "units_supplied")?,
                        supply_cost_cents: int(d, "supply_cost_cents")?,
                        units_sold: int(d, "units_sold")?,
                        sales_cents: int(d, "sales_cents")?,
                    },
                ))
            })
            .collect::<PortResult<_>>()?;
        Ok((self.min_position, rows))
    }
}
