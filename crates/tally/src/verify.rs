//! `tally verify`: every read model compared with a fresh fold of the log (`tally_core::verify`),
//! with the server running or not. Prints each table's rows and hashes, names each row that differs,
//! and exits non-zero on any difference.

use anyhow::Context;
use serde_json::json;
use tally_core::verify::{Options, Report, Row, TableReport, verify};

use crate::config::{Opened, StoreConfig};

/// `tally verify`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Also verify time travel: every store's stock and daily sales, and every supplier's days, as
    /// of this position, against a fold of the log up to it.
    #[arg(long)]
    pub as_of_position: Option<u64>,
    /// Print the report as one JSON object (for CI and monitoring).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(store: &StoreConfig, args: VerifyArgs) -> anyhow::Result<()> {
    // No migrations: it reads (an older schema still has the log's columns; a running server of
    // this build has migrated already).
    let opened = Opened::existing(store).await?;
    let backend = opened.backend();
    if let Some(n) = args.as_of_position {
        let head = backend
            .events
            .head()
            .await
            .context("reading the log's head")?;
        if n > head {
            anyhow::bail!("--as-of-position {n} is past the log's head ({head})");
        }
    }
    // The position reached and the time left, on a terminal.
    let bar = crate::events::progress_bar(
        "{elapsed_precise} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
    );
    let options = Options {
        as_of_position: args.as_of_position,
        ..Options::default()
    };
    let report = verify(&backend, options, |at, upto| {
        bar.set_length(upto);
        bar.set_position(at);
    })
    .await;
    bar.finish_and_clear();
    let report = report.context("verifying the read models")?;
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print(&report);
    }
    let bad = report.tables.iter().filter(|t| !t.ok()).count();
    if bad > 0 {
        anyhow::bail!(
            "{bad} of {} tables differ from the log",
            report.tables.len()
        );
    }
    Ok(())
}

fn cells(row: &Row) -> String {
    row.texts()
        .into_iter()
        .map(str::to_owned)
        .chain(row.figures.iter().map(i64::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print(report: &Report) {
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>18} {:>8}",
        "table", "position", "stored", "expected", "hash", "differ"
    );
    for t in &report.tables {
        let hash = if t.stored_hash == t.expected_hash {
            format!("{:016x}", t.stored_hash)
        } else {
            "≠".to_owned()
        };
        println!(
            "{:<28} {:>10} {:>9} {:>9} {:>18} {:>8}",
            t.table, t.position, t.stored_rows, t.expected_rows, hash, t.differing
        );
    }
    for t in report.tables.iter().filter(|t| !t.ok()) {
        print_differences(t);
    }
    println!(
        "{} events folded in {:.2}s ({:.0} events/s); {}",
        report.events,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9),
        if report.ok() {
            "every read model equals the log".to_owned()
        } else {
            format!(
                "{} tables differ",
                report.tables.iter().filter(|t| !t.ok()).count()
            )
        }
    );
}

fn print_differences(t: &TableReport) {
    for d in &t.differences {
        let side = |r: &Option<Row>| r.as_ref().map_or("(no row)".to_owned(), cells);
        println!(
            "{} ({}): stored {} | the log says {}",
            t.table,
            d.key.join(", "),
            side(&d.stored),
            side(&d.expected)
        );
    }
    let more = t.differing - t.differences.len();
    if more > 0 {
        println!("{}: ... and {more} more rows", t.table);
    }
}

fn to_json(report: &Report) -> serde_json::Value {
    let row = |r: &Option<Row>| {
        r.as_ref()
            .map(|r| json!({"texts": r.texts(), "figures": r.figures}))
    };
    json!({
        "ok": report.ok(),
        "events": report.events,
        "seconds": report.seconds,
        "phases": {"read": report.phases.read, "fold": report.phases.fold, "compare": report.phases.compare},
        "tables": report.tables.iter().map(|t| json!({
            "table": t.table,
            "projection": t.projection,
            "position": t.position,
            "stored_rows": t.stored_rows,
            "expected_rows": t.expected_rows,
            "stored_hash": format!("{:016x}", t.stored_hash),
            "expected_hash": format!("{:016x}", t.expected_hash),
            "differing": t.differing,
            "differences": t.differences.iter().map(|d| json!({
                "key": d.key,
                "stored": row(&d.stored),
                "expected": row(&d.expected),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
