//! `tally bench …`: the benchmarks' command line, and which benchmark each runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

/// The database `tally bench … --backend postgres` uses when --postgres is not given.
const BENCH_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL database a benchmark runs on, if any.
fn bench_database(backend: BenchBackend, postgres: Option<String>) -> Option<String> {
    match (backend, postgres) {
        (_, Some(url)) => Some(url),
        (BenchBackend::Postgres, None) => Some(BENCH_POSTGRES.to_owned()),
        (BenchBackend::Sqlite, None) => None,
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// W1 through the processor in-process, with durable appends, in a fresh temporary data dir.
    W1 {
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of sales (W1 has 100000).
        #[arg(long, default_value_t = 100_000)]
        sales: usize,
        /// Commands decided and committed per transaction.
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Where the events go: a temporary SQLite data dir, or a scratch schema (dropped afterwards)
        /// of the PostgreSQL database at --postgres.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: BenchBackend,
        /// The PostgreSQL database for `--backend postgres` (giving it implies that backend).
        #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
        postgres: Option<String>,
        /// Before the catch-up and the rebuild, store this share (%) of the sales, voids and
        /// returns in their schema version 1 form, as a build before discounts wrote them (the
        /// cost of upcasting).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
        old_percent: u32,
    },
    /// Time travel on a long W1-shaped log: a store's 31-day daily sales and one item's stock as of
    /// random instants, and a day's history, each timed; disk per event per table.
    Asof {
        #[command(flatten)]
        log: LogArgs,
        /// Random instants asked, for each of the three questions.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
    },
    /// Named queries (data services) on a long W1-shaped log: each query of a configuration
    /// called with random parameters, timed.
    Queries {
        #[command(flatten)]
        log: LogArgs,
        /// Calls of each query.
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        /// The queries to time (`[[queries]]` tables).
        #[arg(long, default_value = "queries.example.toml")]
        queries: PathBuf,
    },
    /// `tally events check` on a long W1-shaped log: events decoded per second, and memory.
    EventsCheck {
        #[command(flatten)]
        log: LogArgs,
    },
    /// `tally import` of generated sales into a server in this process (temporary data dir):
    /// rows per second, then the same file again.
    Import {
        #[arg(long, default_value_t = 100_000)]
        sales: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// `tally verify` on a long W1-shaped log, projected first: events folded per second, and
    /// memory.
    Verify {
        #[command(flatten)]
        log: LogArgs,
    },
}

/// The long W1-shaped log `bench asof`, `bench queries` and `bench events-check` run on.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// About this many events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Business times spread over this many days.
    #[arg(long, default_value_t = 90)]
    days: usize,
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BenchBackend,
    /// The PostgreSQL database for `--backend postgres` (giving it implies that backend).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
    postgres: Option<String>,
}

impl LogArgs {
    fn options(self) -> crate::bench::LogOptions {
        crate::bench::LogOptions {
            seed: self.seed,
            events: self.events,
            days: self.days,
            postgres: bench_database(self.backend, self.postgres),
        }
    }
}

pub async fn run(which: BenchCmd) -> anyhow::Result<()> {
    match which {
        BenchCmd::W1 {
            seed,
            sales,
            batch,
            backend,
            postgres,
            old_percent,
        } => {
            super::w1_bench(super::W1Options {
                seed,
                sales,
                batch,
                postgres: bench_database(backend, postgres),
                old_percent,
            })
            .await
        }
        BenchCmd::Asof { log, queries } => {
            super::asof_bench(super::AsofOptions {
                log: log.options(),
                queries,
            })
            .await
        }
        BenchCmd::Queries {
            log,
            calls,
            queries,
        } => {
            super::queries_bench(super::QueriesOptions {
                log: log.options(),
                calls,
                config: queries,
            })
            .await
        }
        BenchCmd::EventsCheck { log } => super::events_check_bench(log.options()).await,
        BenchCmd::Import {
            sales,
            concurrency,
            seed,
        } => {
            super::import_bench(super::ImportOptions {
                sales,
                concurrency,
                seed,
            })
            .await
        }
        BenchCmd::Verify { log } => super::verify_bench(log.options()).await,
    }
}
