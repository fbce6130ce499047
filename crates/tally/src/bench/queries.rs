//! `tally bench queries`: the named queries of a configuration (by default the shipped
//! `queries.example.toml`) over a W1-shaped log of about `--events` events, each called `--calls`
//! times with random parameters through the data services port, timed (p50, p99).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tally_core::dataservices::catalog;
use tally_core::workload::{SplitMix64, W1Size};

use super::asof::{LogOptions, Timings, fill, w1_day};
use super::scratch::Scratch;

pub struct QueriesOptions {
    pub log: LogOptions,
    pub calls: usize,
    pub config: PathBuf,
}

pub async fn queries_bench(o: QueriesOptions) -> anyhow::Result<()> {
    let scratch = Scratch::open(o.log.postgres.clone()).await?;
    let result = run(&scratch, &o).await;
    scratch.close(result).await
}

/// Random W1 values for the parameters `names` of the examples, by name (W1's ids and business
/// dates; `from` and `to` a 31-day range); a name it does not know is left to its default.
pub fn params<'n>(
    names: impl Iterator<Item = &'n str> + Clone,
    rng: &mut SplitMix64,
    days: usize,
) -> Vec<(String, String)> {
    let size = W1Size::FULL;
    let mut given = Vec::new();
    for name in names.clone() {
        let value = match name {
            "store_id" => format!("store-{:02}", rng.below(size.stores as u64)),
            "supplier_id" => format!("sup-{:02}", rng.below(size.suppliers as u64)),
            "from" => {
                let from = w1_day(rng, days.saturating_sub(30));
                if names.clone().any(|n| n == "to") {
                    let to = from.checked_add(jiff::Span::new().days(30)).unwrap_or(from);
                    given.push(("to".to_owned(), to.to_string()));
                }
                from.to_string()
            }
            "since" => w1_day(rng, days).to_string(),
            "week" => {
                let d = w1_day(rng, days);
                let back = i64::from(d.weekday().to_monday_zero_offset());
                d.checked_sub(jiff::Span::new().days(back))
                    .unwrap_or(d)
                    .to_string()
            }
            _ => continue,
        };
        given.push((name.to_owned(), value));
    }
    given
}

async fn run(scratch: &Scratch, o: &QueriesOptions) -> anyhow::Result<()> {
    let backend = &scratch.backend;
    eprintln!("named queries on {}, {}", scratch.name, scratch.place);
    let (head, _) = fill(backend, &o.log).await?;
    let files = crate::queries::Files {
        config: Some(o.config.clone()),
        dir: None,
    };
    let set = catalog::load(&files, backend.data.as_ref())
        .await
        .map_err(|p| anyhow::anyhow!("the queries are refused:\n  {}", p.join("\n  ")))?;
    let mut rng = SplitMix64::new(o.log.seed ^ 0x0DA7A);
    let mut worst: f64 = 0.0;
    for q in set.iter() {
        let mut timings = Timings::new()?;
        let mut rows = 0usize;
        for _ in 0..o.calls {
            let names = q.params.iter().map(|p| p.name.as_str());
            let given: HashMap<String, String> =
                params(names, &mut rng, o.log.days).into_iter().collect();
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
