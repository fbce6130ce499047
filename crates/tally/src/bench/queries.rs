//! `tally bench queries`: the named queries of a configuration (by default the shipped
//! `queries.example.toml`) over a W1-shaped log of about `--events` events, each called `--calls`
//! times with random parameters through the data services port, timed (p50, p99).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tally_core::dataservices::catalog;
use tally_core::workload::{SplitMix64, W1_FIRST_DAY, W1Size};

use super::asof::{Timings, fill};
use super::scratch::Scratch;

pub struct QueriesOptions {
    pub seed: u64,
    pub events: usize,
    pub days: usize,
    pub calls: usize,
    pub config: PathBuf,
    pub postgres: Option<String>,
}

pub async fn queries_bench(o: QueriesOptions) -> anyhow::Result<()> {
    let scratch = Scratch::open(o.postgres.clone()).await?;
    let result = run(&scratch, &o).await;
    scratch.close(result).await
}

/// A random value for a parameter of the examples, by its name (W1's ids and business dates);
/// `None` leaves it to its default.
pub fn param_value(name: &str, rng: &mut SplitMix64, days: usize) -> Option<String> {
    let size = W1Size::FULL;
    let day = |rng: &mut SplitMix64, spread: usize| {
        let offset = rng.below(spread.max(1) as u64) as i64;
        W1_FIRST_DAY
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(W1_FIRST_DAY)
    };
    Some(match name {
        "store_id" => format!("store-{:02}", rng.below(size.stores as u64)),
        "supplier_id" => format!("sup-{:02}", rng.below(size.suppliers as u64)),
        // A 31-day range: `from` here, `to` derived from it by the caller.
        "from" => day(rng, days.saturating_sub(30)).to_string(),
        "since" => day(rng, days).to_string(),
        "week" => {
            let d = day(rng, days);
            let back = i64::from(d.weekday().to_monday_zero_offset());
            d.checked_sub(jiff::Span::new().days(back))
                .unwrap_or(d)
                .to_string()
        }
        _ => return None,
    })
}

async fn run(scratch: &Scratch, o: &QueriesOptions) -> anyhow::Result<()> {
    let backend = &scratch.backend;
    eprintln!("named queries on {}, {}", scratch.name, scratch.place);
    let (head, _) = fill(backend, o.seed, o.events, o.days).await?;
    let files = crate::queries::Files {
        config: Some(o.config.clone()),
        dir: None,
    };
    let set = catalog::load(&files, backend.data.as_ref())
        .await
        .map_err(|p| anyhow::anyhow!("the queries are refused:\n  {}", p.join("\n  ")))?;
    let mut rng = SplitMix64::new(o.seed ^ 0x0DA7A);
    let mut worst: f64 = 0.0;
    for q in set.iter() {
        let mut timings = Timings::new()?;
        let mut rows = 0usize;
        for _ in 0..o.calls {
            let mut given: HashMap<String, String> = HashMap::new();
            for p in &q.params {
                if let Some(v) = param_value(&p.name, &mut rng, o.days) {
                    given.insert(p.name.clone(), v);
                }
            }
            if let (Some(from), true) = (given.get("from"), q.params.iter().any(|p| p.name == "to"))
            {
                let from: jiff::civil::Date = from.parse().context("a generated date")?;
                let to = from.checked_add(jiff::Span::new().days(30)).unwrap_or(from);
                given.insert("to".to_owned(), to.to_string());
            }
            let binds = q
                .bind(&given, None)
                .map_err(|e| anyhow::anyhow!("query {}: {e}", q.name))?;
            let t = Instant::now();
            let table = backend
                .data
                .run(q, binds, tally_core::dataservices::DEFAULT_LIMIT)
                .await
                .with_context(|| format!("query {}", q.name))?;
            timings.record(t);
            rows += table.rows.len();
        }
        println!("{} (rows {rows})", timings.line(&q.name));
        worst = worst.max(timings.0.value_at_quantile(0.99) as f64 / 1000.0);
    }
    println!(
        "QUERIES backend={} events={head} queries={} calls={} worst_p99_ms={worst:.2}",
        scratch.name,
        set.len(),
        o.calls
    );
    Ok(())
}
