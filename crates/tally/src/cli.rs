//! The command line: `serve`, `keys`, `bench`, `rebuild`, `openapi`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "tally", version, about = "An event-sourced retail ledger")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Args)]
pub struct DataDir {
    /// Where the embedded database lives.
    #[arg(
        long,
        env = "TALLY_DATA_DIR",
        default_value = "./tally-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the service: HTTP API, processor and projector in one process.
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Make this secret an admin key at start-up (for automation).
        #[arg(long, env = "TALLY_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// What a sale that would take stock below zero does.
        #[arg(long, env = "TALLY_STOCK_POLICY", value_enum, default_value = "reject")]
        stock_policy: Policy,
        #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Manage API keys directly in the data dir (also while the server runs).
    Keys {
        #[command(flatten)]
        data: DataDir,
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Empty the read models and build them again from the event log (server stopped).
    Rebuild {
        #[command(flatten)]
        data: DataDir,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
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
    /// Revoke a key; it stops working at once.
    Revoke { key_id: String },
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
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Cmd::Serve {
            data,
            listen,
            admin_key,
            stock_policy,
            log_format,
        } => {
            init_logging(log_format);
            let policy = match stock_policy {
                Policy::Reject => tally_domain::StockPolicy::Reject,
                Policy::AllowNegative => tally_domain::StockPolicy::AllowNegative,
            };
            runtime.block_on(crate::serve::serve(crate::serve::Options {
                data_dir: data.data_dir,
                listen,
                admin_key,
                policy,
            }))?;
        }
        Cmd::Keys { data, action } => runtime.block_on(crate::keys::run(&data.data_dir, action))?,
        Cmd::Bench {
            which: BenchCmd::W1 { seed, sales, batch },
        } => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::bench::w1_bench(seed, sales, batch))?
        }
        Cmd::Rebuild { data } => {
            init_logging(LogFormat::Human);
            runtime.block_on(crate::serve::rebuild(&data.data_dir))?
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
