//! `tally load --workload queries`: a mix of the named queries the server serves, called on
//! `--connections` keep-alive connections for `--duration` with random W1 parameters (the same as
//! `tally bench queries` draws), to run beside a W1 load and see what each does to the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tally_core::workload::SplitMix64;

use super::LoadOptions;
use super::http1::{Conn, Target};

/// A run's length when `--duration` is not given.
const DEFAULT_DURATION: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
struct Listed {
    queries: Vec<ListedQuery>,
}

#[derive(Deserialize)]
struct ListedQuery {
    name: String,
    params: Vec<ListedParam>,
}

#[derive(Deserialize)]
struct ListedParam {
    name: String,
}

/// One call's request path with random W1 parameters (those `tally bench queries` draws).
fn path(q: &ListedQuery, rng: &mut SplitMix64, days: usize) -> String {
    let given = crate::bench::params(q.params.iter().map(|p| p.name.as_str()), rng, days);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(given)
        .finish();
    format!("/v1/queries/{}?{query}", q.name)
}

pub async fn run(opts: &LoadOptions) -> anyhow::Result<()> {
    let target = Target::parse(&opts.url)?;
    let duration = opts.duration.unwrap_or(DEFAULT_DURATION);
    let mut conn = Conn::new(target.clone());
    let list = conn
        .send(&target.encode("GET", "/v1/queries", &opts.key, None, None))
        .await
        .context("GET /v1/queries")?;
    if list.status != 200 {
        bail!(
            "GET /v1/queries: {} {}",
            list.status,
            String::from_utf8_lossy(&list.body)
        );
    }
    let listed: Listed = serde_json::from_slice(&list.body).context("the list of queries")?;
    if listed.queries.is_empty() {
        bail!("the server serves no named queries this key may call");
    }
    let queries = Arc::new(listed.queries);
    eprintln!(
        "queries over HTTP: a mix of {} on {} connections for {:?}",
        queries.len(),
        opts.connections,
        duration
    );
    let until = Instant::now() + duration;
    let mut workers = Vec::new();
    for w in 0..opts.connections.max(1) {
        let (target, key, queries) = (target.clone(), opts.key.clone(), queries.clone());
        let seed = opts.seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        workers.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed);
            let mut conn = Conn::new(target.clone());
            let mut latencies: HashMap<String, Histogram<u64>> = HashMap::new();
            let mut errors = 0u64;
            let mut n = w;
            while Instant::now() < until {
                let q = &queries[n % queries.len()];
                n += 1;
                let request = target.encode("GET", &path(q, &mut rng, 7), &key, None, None);
                let t = Instant::now();
                let ok = matches!(conn.send(&request).await, Ok(r) if r.status == 200);
                let micros = t.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                if !ok {
                    errors += 1;
                    continue;
                }
                let h = match latencies.entry(q.name.clone()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(Histogram::new_with_bounds(1, 60_000_000, 3)?)
                    }
                };
                let _ = h.record(micros);
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all: HashMap<String, Histogram<u64>> = HashMap::new();
    let mut errors = 0;
    for w in workers {
        let (latencies, e) = w.await.context("a query worker")??;
        errors += e;
        for (name, h) in latencies {
            match all.get_mut(&name) {
                Some(into) => into.add(&h).context("merging latencies")?,
                None => {
                    all.insert(name, h);
                }
            }
        }
    }
    let mut calls = 0;
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    for name in names {
        let h = &all[name];
        calls += h.len();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name}: n={} p50={:.2}ms p99={:.2}ms",
            h.len(),
            ms(0.5),
            ms(0.99)
        );
    }
    println!(
        "QUERYMIX connections={} seconds={} calls={calls} calls_per_s={:.0} errors={errors}",
        opts.connections,
        duration.as_secs(),
        calls as f64 / duration.as_secs_f64()
    );
    if errors > 0 {
        bail!("{errors} calls failed");
    }
    Ok(())
}
