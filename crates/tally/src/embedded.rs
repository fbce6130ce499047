//! A whole tally server inside another command (`tally demo`, `tally bench import`): what `tally
//! serve` runs, on the embedded store in a temporary data dir, on a port of its own, with a fresh
//! admin key. It stops on Ctrl-C or SIGTERM as `serve` does, or when [`Embedded::stop`] is called;
//! its data dir is removed once it has stopped.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::oneshot;

use crate::cli::{Policy, ServeArgs};

/// A server running in this process.
pub struct Embedded {
    pub addr: SocketAddr,
    /// An admin key's secret.
    pub admin: String,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Embedded {
    /// Starts a server listening on `listen` with the stock policy `policy`, and waits until it
    /// listens.
    pub async fn start(listen: SocketAddr, policy: Policy) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tally-embedded-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let admin = tally_http::auth::generate_key().secret;
        let args = ServeArgs {
            listen: Some(listen),
            admin_key: Some(admin.clone()),
            stock_policy: Some(policy),
            ..ServeArgs::default()
        };
        // No tally.toml is read: the server is the same wherever the command is started.
        let settings =
            crate::settings::ServeSettings::resolve(&args, &crate::config::FileConfig::default())?;
        let store = crate::config::StoreConfig::Embedded {
            data_dir: dir.path().to_path_buf(),
            broker: None,
        };
        let files = crate::queries::Files {
            dir: None,
            config: None,
        };
        let mut options = crate::serve::Options::new(store, settings, files);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        options.ready = Some(ready_tx);
        options.stop = Some(stop_rx);
        let server = tokio::spawn(crate::serve::serve(options));
        let addr = match ready_rx.await {
            Ok(addr) => addr,
            // The server ended before it listened: its error says why.
            Err(_) => {
                server.await.context("the embedded server")??;
                anyhow::bail!("the embedded server stopped before it listened");
            }
        };
        Ok(Self {
            addr,
            admin,
            dir,
            server,
            stop: Some(stop_tx),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until the server stops by itself (Ctrl-C, SIGTERM), then removes its data dir.
    pub async fn wait(self) -> anyhow::Result<String> {
        self.finish().await
    }

    /// Stops the server, waits for it, removes its data dir; returns the dir's path.
    pub async fn stop(mut self) -> anyhow::Result<String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finish().await
    }

    async fn finish(self) -> anyhow::Result<String> {
        let Self {
            server, dir, stop, ..
        } = self;
        server.await.context("the embedded server")??;
        // Held until the server has stopped: dropping it would stop the server.
        drop(stop);
        let path = dir.path().display().to_string();
        dir.close()
            .with_context(|| format!("removing the data dir {path}"))?;
        Ok(path)
    }
}
