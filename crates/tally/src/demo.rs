//! `tally demo`: a whole tally to look at in one command. It starts the server in this process, as
//! `tally serve` does, on a temporary data dir; registers a small chain (`demo/chain.rs`: suppliers,
//! stores in time zones on both sides of the date line, items) and runs simulated till and supplier
//! traffic at a gentle rate, late sales, voids, returns and delivery corrections among it
//! (`demo/traffic.rs`); prints the dashboard's URL and an admin key. Ctrl-C (or SIGTERM) stops the
//! traffic and the server cleanly and removes the data dir.

pub mod chain;
mod traffic;

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::Policy;
use crate::client::Client;
use crate::embedded::Embedded;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo server listens (port 0: a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Simulated commands per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 21)]
    pub seed: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        anyhow::bail!("--rate must be between 0 and 10000 commands per second");
    }
    let server = Embedded::start(args.listen, Policy::Reject).await?;
    let base = server.url();
    println!("dashboard: {base}/");
    println!("admin key: {}", server.admin);
    println!(
        "data in {} (removed when the demo stops); Ctrl-C stops it",
        server.data_dir().display()
    );
    let client = Client::new(&base, &server.admin)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let simulation = tokio::spawn(traffic::run(client, args.rate, args.seed, stop_rx));
    // The server stops itself on Ctrl-C or SIGTERM, like `tally serve`; then so does the traffic.
    let stopped = server.wait().await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), simulation).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("tally demo: the simulated traffic stopped: {e:#}"),
        Ok(Err(e)) => eprintln!("tally demo: the simulated traffic failed: {e}"),
        Err(_) => eprintln!("tally demo: the simulated traffic did not stop in time"),
    }
    let path = stopped?;
    println!("demo stopped; removed {path}");
    Ok(())
}
