//! `tally bench import`: `tally import` of generated sales (a CSV file, one to three line items a
//! sale) into a server running in this process on a temporary data dir, timed as a user would see
//! it, from reading the file to every command's outcome. Prints `tally import`'s summary, whose
//! `IMPORT … rows_per_s=` line is the figure, then the same file imported again (nothing is sent
//! twice: every command is already imported).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tally_core::workload::SplitMix64;

use crate::cli::Policy;
use crate::client::{Client, ServerArgs};
use crate::demo::chain::{self, ITEMS, STORES};
use crate::embedded::Embedded;
use crate::import::{ImportArgs, Kind};

pub struct ImportOptions {
    pub sales: usize,
    pub concurrency: usize,
    pub seed: u64,
}

/// Enough of every item in every store that no generated sale is short of stock.
const OPENING: i64 = 1_000_000;

/// Writes `sales` sales as CSV rows to `path`; returns the number of rows.
fn write_sales(path: &Path, sales: usize, seed: u64) -> anyhow::Result<u64> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(f);
    let mut rng = SplitMix64::new(seed);
    writeln!(
        out,
        "sale_id,store_id,occurred_at,item_id,quantity,unit_price_cents"
    )?;
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    let mut rows = 0;
    for n in 0..sales {
        let store = STORES[rng.below(STORES.len() as u64) as usize].0;
        let at = start + jiff::SignedDuration::from_millis(n as i64);
        let first = rng.below(ITEMS.len() as u64) as usize;
        for k in 0..1 + rng.below(3) as usize {
            let (item, _, _, price, _) = ITEMS[(first + k * 3) % ITEMS.len()];
            let quantity = 1 + rng.below(3);
            writeln!(out, "bench-s{n},{store},{at},{item},{quantity},{price}")?;
            rows += 1;
        }
    }
    out.flush().context("writing the sales file")?;
    Ok(rows)
}

pub async fn import_bench(options: ImportOptions) -> anyhow::Result<()> {
    let server =
        Embedded::start("127.0.0.1:0".parse().context("an address")?, Policy::Reject).await?;
    let client = Client::new(&server.url(), &server.admin)?;
    chain::register(&client, OPENING).await?;
    let files = tempfile::tempdir().context("a temporary dir for the file")?;
    let path = files.path().join("sales.csv");
    let rows = write_sales(&path, options.sales, options.seed)?;
    eprintln!(
        "bench import: {} sales in {rows} rows into {} ({} in flight)",
        options.sales,
        server.url(),
        options.concurrency
    );
    let args = || ImportArgs {
        kind: Kind::Sales,
        file: path.clone(),
        server: ServerArgs {
            url: server.url(),
            key: Some(server.admin.clone()),
        },
        input_format: None,
        skip_bad: false,
        dry_run: false,
        concurrency: options.concurrency,
        no_wait: false,
    };
    let first = crate::import::run(args()).await;
    eprintln!("bench import: the same file again");
    let again = crate::import::run(args()).await;
    server.stop().await?;
    let (first, again) = (first?, again?);
    if first != std::process::ExitCode::SUCCESS || again != std::process::ExitCode::SUCCESS {
        anyhow::bail!("an import did not succeed: this run has no figure");
    }
    Ok(())
}
