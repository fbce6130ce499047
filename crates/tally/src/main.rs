//! The tally binary: parses the command line and hands over to the command it names. See `cli.rs`.

mod bench;
mod brokers;
mod cli;
mod client;
mod config;
mod demo;
mod dlq;
mod embedded;
mod events;
mod http_server;
mod import;
mod keys;
mod limits;
mod load;
mod projections;
mod queries;
mod rebuild;
mod report;
mod serve;
mod settings;
mod tail;
mod verify;

/// mimalloc: the processor allocates events on one thread and the SQLite writer frees them on
/// another, a pattern glibc's allocator handles poorly (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tally: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
