//! `tally import deliveries|sales FILE`: a file of sales or deliveries sent through the API
//! (`POST /v1/sales`, `POST /v1/deliveries`). The file is read and every command checked as the API
//! would first (`import/parse.rs`, `import/validate.rs`); by default a file with any bad line
//! imports nothing, `--skip-bad` imports the commands none of whose lines is bad, `--dry-run` only
//! checks. Then the commands go out a few at a time under idempotency keys made from their ids, so
//! running an import again imports nothing twice (`import/send.rs`), and how each ended is read back.

mod parse;
mod send;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, ServerArgs};
pub use parse::InputFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Deliveries,
    Sales,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::Deliveries => "delivery",
            Self::Sales => "sale",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Self::Deliveries => "deliveries",
            Self::Sales => "sales",
        }
    }
    fn singular(self) -> &'static str {
        self.noun()
    }
    fn id_field(self) -> &'static str {
        match self {
            Self::Deliveries => "delivery_id",
            Self::Sales => "sale_id",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Self::Deliveries => "/v1/deliveries",
            Self::Sales => "/v1/sales",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What the file holds.
    #[arg(value_enum)]
    pub kind: Kind,
    /// A CSV file with a header (one row per line item; rows with the same id are one command) or
    /// NDJSON (one request body per line). See README.md for the columns.
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// The file's format [default: from its extension: .csv, or .ndjson/.jsonl/.json].
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// Import the commands that are good and report the others (by default a file with any bad
    /// line imports nothing).
    #[arg(long)]
    pub skip_bad: bool,
    /// Check the file as the API would and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Do not wait to learn how each command ended (only that it was accepted).
    #[arg(long)]
    pub no_wait: bool,
}

/// Bad lines printed at most; the rest are counted.
const SHOWN_BAD: usize = 50;

pub async fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let format = match args.input_format {
        Some(f) => f,
        None => InputFormat::of(&args.file)?,
    };
    let file = parse::read(&args.file, format, args.kind)?;
    let rows = file.rows;
    let checked = validate::check(args.kind, file, format == InputFormat::Csv)?;
    let shown = args.file.display();
    for b in checked.bad.iter().take(SHOWN_BAD) {
        eprintln!("{shown}:{}: {}", b.line, b.reason);
    }
    if checked.bad.len() > SHOWN_BAD {
        eprintln!("… and {} more bad lines", checked.bad.len() - SHOWN_BAD);
    }
    let ready_rows: u64 = checked.ready.iter().map(|r| r.rows).sum();
    let bad = checked.bad_lines;
    if bad > 0 && !args.skip_bad {
        eprintln!(
            "{shown}: {bad} bad lines: nothing imported (fix them, or pass --skip-bad to import the {} good {})",
            checked.ready.len(),
            args.kind.plural()
        );
        println!(
            "IMPORT sent=0 already=0 rejected=0 bad_lines={bad} skipped_commands={} rows={rows} rows_per_s=0",
            checked.left_out
        );
        return Ok(ExitCode::FAILURE);
    }
    if args.dry_run {
        println!(
            "dry run: {} {} from {ready_rows} rows would be sent; {bad} bad lines ({} commands left out); nothing sent",
            checked.ready.len(),
            args.kind.plural(),
            checked.left_out
        );
        return Ok(if bad > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let client = Client::from_args(&args.server)?;
    let rows_done = AtomicU64::new(0);
    let bar = progress(ready_rows);
    let ticking = async {
        loop {
            bar.set_position(rows_done.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let outcomes = tokio::select! {
        o = send::send_all(&client, args.kind, &checked.ready, args.concurrency, &rows_done, !args.no_wait) => o,
        () = ticking => unreachable!("the progress loop does not end"),
    };
    bar.finish_and_clear();
    let outcomes = outcomes?;
    let secs = started.elapsed().as_secs_f64();
    for (id, reason) in outcomes.rejected.iter().take(SHOWN_BAD) {
        eprintln!("{} {id}: {reason}", args.kind.id_field());
    }
    let rejected = outcomes.rejected.len();
    let rate = ready_rows as f64 / secs.max(1e-9);
    println!(
        "imported {shown}: {} {} from {ready_rows} rows: {} sent, {} already imported, {rejected} rejected, {bad} bad lines skipped; {secs:.1}s, {rate:.0} rows/s",
        checked.ready.len(),
        args.kind.plural(),
        outcomes.sent,
        outcomes.already,
    );
    println!(
        "IMPORT sent={} already={} rejected={rejected} bad_lines={bad} skipped_commands={} rows={ready_rows} rows_per_s={rate:.0} send_s={:.1} outcomes_s={:.1}",
        outcomes.sent, outcomes.already, checked.left_out, outcomes.send_secs, outcomes.wait_secs
    );
    Ok(if rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A bar of rows answered, with rate and ETA, on stderr when stdout is a terminal; none otherwise.
fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} rows ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_endpoint_and_key() {
        assert_eq!(Kind::Sales.path(), "/v1/sales");
        assert_eq!(Kind::Deliveries.id_field(), "delivery_id");
        assert!(InputFormat::of(std::path::Path::new("x.csv")).is_ok());
        assert!(InputFormat::of(std::path::Path::new("x.jsonl")).is_ok());
        assert!(InputFormat::of(std::path::Path::new("x.txt")).is_err());
    }
}
