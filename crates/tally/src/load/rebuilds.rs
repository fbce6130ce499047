//! `tally load --rebuild-loop`: rebuilds of every read model, one after another, for as long as the
//! workload's sales run, and a query loop checking every answer meanwhile: each store's daily sales
//! and inventory as they are must equal the same query folded from the log to the answer's own
//! position (`as_of_position`), and must not be empty once the store has data. Reports the rebuilds'
//! events per second and what the queries saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tally_core::readmodel::PROJECTIONS;

/// What the loop saw.
#[derive(Debug, Default, serde::Serialize)]
pub struct RebuildReport {
    /// Rebuilds of every projection completed (swapped in).
    pub rebuilds: u64,
    /// Events folded by them, per second of rebuilding.
    pub events_per_s: f64,
    /// Queries answered (each checked against a replay).
    pub queries: u64,
    /// Answers that differed from the replay to their position.
    pub wrong: u64,
    /// Answers that were empty where the replay was not.
    pub empty: u64,
    /// The longest a query (the answer of the read models, not its replay) took.
    pub longest_query_ms: f64,
    /// The first wrong answer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

pub struct RebuildLoop {
    stop: Arc<AtomicBool>,
    rebuilding: tokio::task::JoinHandle<anyhow::Result<(u64, f64)>>,
    querying: tokio::task::JoinHandle<RebuildReport>,
}

/// The server, through the one client layer; an answer other than 2xx (a 503 included) is an
/// error, counted as a wrong answer.
struct Api {
    client: crate::client::Client,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<(Value, Duration)> {
        let started = Instant::now();
        let body = self.client.get_json(path).await?;
        Ok((body, started.elapsed()))
    }
}

/// Starts checking queries on `stores` of the server at `url`, and with `rebuild`, rebuilding.
pub fn start(client: crate::client::Client, stores: Vec<String>, rebuild: bool) -> RebuildLoop {
    let api = Arc::new(Api {
        client: client.without_retries(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (api2, stop2) = (api.clone(), stop.clone());
    let rebuilding = tokio::spawn(async move {
        if rebuild {
            rebuild_all(api2, stop2).await
        } else {
            Ok((0, 0.0))
        }
    });
    let querying = tokio::spawn(check_queries(api, stores, stop.clone()));
    RebuildLoop {
        stop,
        rebuilding,
        querying,
    }
}

impl RebuildLoop {
    /// Stops after the rebuild under way ends; the report.
    pub async fn finish(self) -> anyhow::Result<RebuildReport> {
        self.stop.store(true, Ordering::Relaxed);
        let (rebuilds, events_per_s) = self.rebuilding.await.context("rebuild loop")??;
        let mut report = self.querying.await.context("query loop")?;
        report.rebuilds = rebuilds;
        report.events_per_s = events_per_s;
        Ok(report)
    }
}

/// Rebuilds of every projection back to back until `stop`; how many, and their events per second.
async fn rebuild_all(api: Arc<Api>, stop: Arc<AtomicBool>) -> anyhow::Result<(u64, f64)> {
    let (mut rebuilds, mut events, mut secs) = (0u64, 0u64, 0.0f64);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        for p in PROJECTIONS {
            let path = format!("/v1/admin/projections/{p}/rebuild");
            api.client
                .send(&format!("POST {path}"), || {
                    api.client.request(reqwest::Method::POST, &path)
                })
                .await
                .with_context(|| format!("asking for a rebuild of {p}"))?;
        }
        let position = loop {
            let (list, _) = api.get("/v1/admin/projections").await?;
            let models = list["projections"].as_array().cloned().unwrap_or_default();
            if models.iter().all(|m| m.get("rebuild").is_none()) {
                break models
                    .iter()
                    .filter_map(|m| m["position"].as_u64())
                    .min()
                    .unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        rebuilds += 1;
        events += position;
        secs += started.elapsed().as_secs_f64();
    }
    Ok((rebuilds, events as f64 / secs.max(1e-9)))
}

async fn check_queries(api: Arc<Api>, stores: Vec<String>, stop: Arc<AtomicBool>) -> RebuildReport {
    let mut report = RebuildReport::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) && !stores.is_empty() {
        let store = &stores[n % stores.len()];
        n += 1;
        for (path, rows) in [
            (format!("/v1/reports/stores/{store}/daily-sales"), "days"),
            (format!("/v1/inventory/{store}"), "items"),
        ] {
            if let Err(e) = check_one(&api, &path, rows, &mut report).await {
                report.wrong += 1;
                report.example.get_or_insert(format!("{e:#}"));
            }
        }
    }
    report
}

async fn check_one(
    api: &Api,
    path: &str,
    rows: &str,
    report: &mut RebuildReport,
) -> anyhow::Result<()> {
    let (now, took) = api.get(path).await?;
    report.longest_query_ms = report.longest_query_ms.max(took.as_secs_f64() * 1000.0);
    let position = now["position"].as_u64().context("an answer's position")?;
    let (then, _) = api
        .get(&format!("{path}?as_of_position={position}"))
        .await
        .with_context(|| format!("{path} as of {position}"))?;
    report.queries += 1;
    let count = |v: &Value| v[rows].as_array().map_or(0, Vec::len);
    if count(&now) == 0 && count(&then) > 0 {
        report.empty += 1;
        report
            .example
            .get_or_insert(format!("{path} at {position}: empty"));
    } else if now[rows] != then[rows] {
        report.wrong += 1;
        report.example.get_or_insert(format!(
            "{path} at {position}: {} != replay {}",
            now[rows], then[rows]
        ));
    }
    Ok(())
}
