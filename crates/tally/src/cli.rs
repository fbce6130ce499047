//! The command line: `serve`, `config`, `keys`, `dlq`, `events`, `verify`, `bench`, `rebuild`,
//! `migrate`, `openapi`, and the clients of a running server: `report`, `import`, `events tail`,
//! `load`; `demo` runs a server with simulated traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "tally", version, about = "An event-sourced retail ledger")]
pub struct Cli {
    /// Configuration file (TOML); `./tally.toml` is read when it exists and this is not given.
    #[arg(long, env = "TALLY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// A directory of `*.toml` files of named queries (`[[queries]]`), beside those of the
    /// configuration file [default: `queries_dir` in tally.toml, relative to the file].
    #[arg(long, env = "TALLY_QUERIES_DIR", global = true)]
    pub queries_dir: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where the data lives. Without a database URL, tally runs on its embedded SQLite default.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Where the embedded database lives [default: ./tally-data].
    #[arg(long, env = "TALLY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host:port/db): event store, read models, keys and queue there.
    #[arg(
        long,
        env = "TALLY_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding tally's tables [default: tally].
    #[arg(long, env = "TALLY_DATABASE_SCHEMA", global = true)]
    pub database_schema: Option<String>,
    /// Most PostgreSQL connections per process [default: 16].
    #[arg(long, env = "TALLY_DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<std::num::NonZeroUsize>,
    /// The login of data services (named queries): a PostgreSQL URL whose user is the schema's
    /// query role, `<schema>_query` [default: that role on the same server, without a password].
    #[arg(long, env = "TALLY_DATABASE_QUERY_URL", global = true)]
    pub database_query_url: Option<String>,
    /// The durable command queue: the database's own (`embedded` for SQLite, `postgres`) or a broker
    /// (`activemq`, `rabbitmq`, `nats`) [default: the database's own].
    #[arg(long, env = "TALLY_QUEUE_KIND", global = true, value_enum)]
    pub queue_kind: Option<QueueKind>,
    /// The broker's address: stomp://127.0.0.1:61613, amqp://guest:guest@127.0.0.1:5672/%2f,
    /// nats://127.0.0.1:4222 [default: that broker's local address].
    #[arg(long, env = "TALLY_QUEUE_URL", global = true, hide_env_values = true)]
    pub queue_url: Option<String>,
    /// Prefix of the broker's queue, stream and subject names, so deployments can share a broker
    /// [default: tally].
    #[arg(long, env = "TALLY_QUEUE_NAMESPACE", global = true)]
    pub queue_namespace: Option<String>,
    /// Seconds a queue consumer that stopped answering keeps its partitions [default: 30].
    #[arg(long, env = "TALLY_QUEUE_LEASE_SECONDS", global = true)]
    pub queue_lease_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    Embedded,
    Postgres,
    Activemq,
    Rabbitmq,
    Nats,
}

impl QueueKind {
    pub fn is_broker(self) -> bool {
        matches!(self, Self::Activemq | Self::Rabbitmq | Self::Nats)
    }
}

/// What a `tally serve` process does.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in one process.
    All,
    /// The HTTP API: accepts commands onto the queue, answers queries and statuses.
    Gateway,
    /// Takes commands from the queue, decides them and appends events.
    Processor,
    /// Folds the log into the read models (one active per database; the others stand by).
    Projector,
    /// The HTTP API for read traffic (the same contract as the gateway).
    Query,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the service (by default HTTP API, processor and projector in one process).
    Serve(ServeArgs),
    /// Print the configuration `serve` would run with (defaults, then tally.toml, then TALLY_*
    /// environment, then flags) as TOML, secrets redacted.
    Config(ServeArgs),
    /// Manage API keys directly in the store (also while the server runs).
    Keys {
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: crate::bench::cmd::BenchCmd,
    },
    /// Build read models again from the event log into shadow tables and swap each in atomically
    /// once caught up (queries keep the old version until then); against a running server, the
    /// server's projector does it and this follows its progress.
    Rebuild(crate::rebuild::RebuildArgs),
    /// Create or update the database schema (PostgreSQL; safe to run twice, or beside running servers).
    Migrate,
    /// Drive a running tally over HTTP with W1 or a steady stream; prints figures, verifies the books.
    Load(LoadArgs),
    /// Read models' poison events: list where they stopped and what they parked; retry or skip.
    Projections {
        #[command(subcommand)]
        action: crate::projections::ProjectionsCmd,
    },
    /// Commands that could not be handled after their retries (the dead-letter queue).
    Dlq {
        #[command(subcommand)]
        action: DlqCmd,
    },
    /// Compare every read model with a fresh fold of the log (server running or not); name each
    /// row that differs; exit non-zero on any.
    Verify(crate::verify::VerifyArgs),
    /// The event log itself: `check` decodes every stored event with this build.
    Events {
        #[command(subcommand)]
        action: crate::events::EventsCmd,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Read a report of a running server: a table, or the server's CSV or JSON.
    Report(crate::report::ReportArgs),
    /// Send a file of sales or deliveries (CSV or NDJSON) through a running server's API; safe to
    /// run twice.
    Import(crate::import::ImportArgs),
    /// Start a server on a temporary data dir with a small chain and simulated traffic; prints the
    /// dashboard's URL and an admin key; Ctrl-C stops it and removes the data.
    Demo(crate::demo::DemoArgs),
    /// Named queries (data services).
    Queries {
        #[command(subcommand)]
        action: QueriesCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueriesCmd {
    /// Read every named query of the configuration and prepare it against the database's views;
    /// print each problem (query, file and line, what is wrong); exit non-zero on any.
    Check,
}

/// The settings of `tally serve` beyond where the data lives (`tally config` takes them too, to show
/// their effect). Each is a flag, else its environment variable, else `[server]` in tally.toml, else
/// the default.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// What this process does; several processes with different roles can share one database
    /// [default: all].
    #[arg(long, env = "TALLY_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Make this secret an admin key at start-up (for automation).
    #[arg(long, env = "TALLY_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// What a sale that would take stock below zero does [default: reject].
    #[arg(long, env = "TALLY_STOCK_POLICY", value_enum)]
    pub stock_policy: Option<Policy>,
    /// Log lines as text for people or as JSON objects [default: human].
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "TALLY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TALLY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Milliseconds a rebuild (or back-fill) of a read model waits after each batch of the log it
    /// folds, to leave the database to live traffic [default: 0].
    #[arg(long, env = "TALLY_REBUILD_PACE_MS")]
    pub rebuild_pace_ms: Option<u64>,
    /// Projections (comma-separated) that park a poison event and go on; the others stop before
    /// it until an operator retries or skips it [default: none].
    #[arg(long, env = "TALLY_PARK_POISON", value_delimiter = ',')]
    pub park_poison: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Reject,
    AllowNegative,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a key and print its secret once.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        rate_per_second: Option<i64>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key; running servers stop accepting it within their key cache's TTL (1 s).
    Revoke { key_id: String },
}

/// `tally load`: a workload over HTTP against a running server (see BENCHMARKS.md).
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server (gateway) to load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin key of that server.
    #[arg(long, env = "TALLY_ADMIN_KEY", hide_env_values = true)]
    pub key: String,
    /// `w1`: WORKLOAD.md's W1; `steady`: W1's set-up, then sales at --rate for --duration.
    #[arg(long, value_enum, default_value = "w1")]
    pub workload: crate::load::Workload,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of sales to generate (W1: 100,000; steady: rate × duration).
    #[arg(long)]
    pub sales: Option<usize>,
    /// Keep-alive connections (W1 specifies 64).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Commands per second, sent on a fixed schedule (steady: 5000); none: as fast as answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop sending sales after this many seconds (steady: 60), e.g. `60` or `60s` or `2m`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// After the sales, this long at --recovery-rate on fresh connections (64, or --connections if
    /// fewer), with its own figures:
    /// how the server serves right after an overload (e.g. `--rate 48000 --duration 30 --recovery 15`).
    #[arg(long, value_parser = parse_duration)]
    pub recovery: Option<std::time::Duration>,
    /// The recovery phase's commands per second.
    #[arg(long, default_value_t = 5000.0)]
    pub recovery_rate: f64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// While the sales run: queries checked against a replay to their position, and (`rebuilds`)
    /// rebuilds of every read model back to back; prints what they saw, fails on a wrong answer.
    #[arg(long, value_enum)]
    pub checks: Option<crate::load::Checks>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s}: expected e.g. 60, 60s, 2m"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "ms" => n / 1000.0,
        _ => return Err(format!("{s}: the unit is s, m or ms")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s}: must be positive"));
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("{s}: too long"))
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List the dead letters: id, partition, when, why, and the command when it can be decoded.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the command queue (their retries start again).
    Replay {
        /// Message (command) ids to replay.
        #[arg(required_unless_present = "all")]
        ids: Vec<uuid::Uuid>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let file = crate::config::FileConfig::load(cli.config.as_deref())?;
    let store = crate::config::StoreConfig::resolve(&cli.store, &file)?;
    let source = crate::config::FileConfig::source(cli.config.as_deref());
    let query_files = crate::queries::Files {
        dir: cli.queries_dir.clone().or_else(|| {
            let dir = file.queries_dir.as_ref()?;
            let base = source.as_deref().and_then(std::path::Path::parent);
            Some(base.map_or_else(|| dir.clone(), |b| b.join(dir)))
        }),
        config: source,
    };
    match cli.command {
        Cmd::Serve(args) => {
            let settings = crate::settings::ServeSettings::resolve(&args, &file)?;
            init_logging(settings.log_format);
            runtime.block_on(crate::serve::serve(crate::serve::Options::new(
                store,
                settings,
                query_files,
            )))?;
        }
        Cmd::Config(args) => {
            let settings = crate::settings::ServeSettings::resolve(&args, &file)?;
            let source = crate::config::FileConfig::source(cli.config.as_deref());
            print!(
                "{}",
                crate::settings::render(&store, &settings, source.as_deref())?
            );
        }
        Cmd::Keys { action } => runtime.block_on(crate::keys::run(&store, action))?,
        Cmd::Bench { which } => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::bench::cmd::run(which))?
        }
        Cmd::Rebuild(args) => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::rebuild::run(&store, args))?
        }
        Cmd::Migrate => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::serve::migrate(&store))?
        }
        Cmd::Load(args) => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::load::run(crate::load::LoadOptions {
                url: args.url,
                key: args.key,
                workload: args.workload,
                seed: args.seed,
                sales: args.sales,
                connections: args.connections,
                rate: args.rate,
                duration: args.duration,
                recovery: args.recovery,
                recovery_rate: args.recovery_rate,
                json: args.json,
                checks: args.checks,
            }))?
        }
        Cmd::Dlq { action } => runtime.block_on(crate::dlq::run(&store, action))?,
        Cmd::Projections { action } => runtime.block_on(crate::projections::run(&store, action))?,
        Cmd::Verify(args) => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::verify::run(&store, args))?
        }
        Cmd::Events { action } => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::events::run(&store, action))?
        }
        Cmd::Queries {
            action: QueriesCmd::Check,
        } => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::queries::check(query_files, &store))?
        }
        Cmd::Report(args) => return runtime.block_on(crate::report::run(args)),
        Cmd::Import(args) => return runtime.block_on(crate::import::run(args)),
        Cmd::Demo(args) => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::demo::run(args))?
        }
        Cmd::Openapi => {
            let doc = tally_http::openapi();
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).context("rendering the OpenAPI document")?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Without `TALLY_LOG`: info, but no access line per request (at thousands of requests a second that
/// is a tenth of the server's CPU; `/metrics` counts every request). `TALLY_LOG=info` logs them.
const DEFAULT_LOG: &str = "info,tower_http=warn,tally_http::access=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Parses the command line. A bad value that came from a `TALLY_*` environment variable is reported
/// under that variable's name (clap alone names only the flag, which the user never typed).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|matches| Cli::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => cli,
        Err(e) => name_the_variable(e, &command).exit(),
    }
}

fn name_the_variable(e: clap::Error, command: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return e;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    let Some(flag) = arg.split_whitespace().next().map(str::to_owned) else {
        return e;
    };
    let typed = std::env::args().skip(1).any(|a| {
        a == flag
            || a.strip_prefix(flag.as_str())
                .is_some_and(|rest| rest.starts_with('='))
    });
    let Some(var) = env_of(command, flag.trim_start_matches("--")) else {
        return e;
    };
    if typed || std::env::var(&var).ok().as_deref() != Some(value.as_str()) {
        return e;
    }
    let reason = match (
        std::error::Error::source(&e),
        e.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => "not a valid value".to_owned(),
    };
    clap::Error::raw(
        e.kind(),
        format!(
            "invalid value '{value}' in the environment variable {var} (the setting of {flag}): {reason}\n"
        ),
    )
}

/// The environment variable of the flag `--long`, in any subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_refuse_what_is_not_one() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "", "5h", "x", "99999999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
