//! `tally serve`: wires the embedded backend, the processor, the projector and the HTTP API into one
//! process, and stops them in order on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use tally_core::model::{ApiKey, Role};
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::{Backend, Signals};
use tally_domain::StockPolicy;
use tally_http::AppState;
use tally_http::auth::{generate_key, hash_secret};
use tokio::sync::watch;

pub struct Options {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_key: Option<String>,
    pub policy: StockPolicy,
}

pub async fn serve(opts: Options) -> anyhow::Result<()> {
    let store = tally_store_sqlite::Sqlite::open(&opts.data_dir)
        .with_context(|| format!("opening the data dir {}", opts.data_dir.display()))?;
    let backend = store.backend();
    ensure_admin_key(&backend, opts.admin_key.as_deref()).await?;

    let signals = Signals::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        signals.clone(),
        ProcessorConfig {
            policy: opts.policy,
            ..ProcessorConfig::default()
        },
    );
    let processor = tokio::spawn(processor.run(stop_rx.clone()));
    let projector = Projector::new(
        backend.events.clone(),
        backend.read.clone(),
        signals.clone(),
    );
    let projector = tokio::spawn(projector.run(stop_rx.clone()));

    let app = tally_http::router(AppState {
        backend,
        signals,
        shutdown: stop_rx,
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!(
        "tally listening on http://{addr} (data in {})",
        opts.data_dir.display()
    );
    tracing::info!(%addr, data_dir = %opts.data_dir.display(), "listening");

    let stop = stop_tx.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new requests; finishing the ones in hand");
            let _ = stop.send(true);
        })
        .await
        .context("serving HTTP")?;
    let _ = stop_tx.send(true);
    processor.await.context("processor task")?;
    projector.await.context("projector task")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `TALLY_ADMIN_KEY` becomes an admin key; without it, the first start creates one and prints it once.
async fn ensure_admin_key(backend: &Backend, from_env: Option<&str>) -> anyhow::Result<()> {
    let keys = &backend.keys;
    if let Some(secret) = from_env.map(str::trim).filter(|s| !s.is_empty()) {
        let hash = hash_secret(secret);
        if keys
            .find(hash)
            .await
            .context("looking up the admin key")?
            .is_none()
        {
            let key_id = format!("key_env_{}", &hex_prefix(&hash));
            keys.create(admin(key_id), hash)
                .await
                .context("storing TALLY_ADMIN_KEY")?;
        }
        return Ok(());
    }
    if keys.list().await.context("listing keys")?.is_empty() {
        let new = generate_key();
        keys.create(admin(new.key_id.clone()), new.hash)
            .await
            .context("storing the first admin key")?;
        println!("created the first admin key (shown once; only its hash is stored):");
        println!("admin key: {}", new.secret);
    }
    Ok(())
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn admin(key_id: String) -> ApiKey {
    ApiKey {
        key_id,
        role: Role::Admin,
        scope: None,
        rate_per_second: None,
        created_at: Timestamp::now(),
        revoked_at: None,
    }
}

/// `tally rebuild`: every read model emptied and folded again from the log.
pub async fn rebuild(data_dir: &Path) -> anyhow::Result<()> {
    let store = tally_store_sqlite::Sqlite::open(data_dir)
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let backend = store.backend();
    let started = std::time::Instant::now();
    let mut projector = Projector::new(
        backend.events.clone(),
        backend.read.clone(),
        Signals::default(),
    );
    let events = projector
        .rebuild()
        .await
        .context("rebuilding the read models")?;
    let secs = started.elapsed().as_secs_f64();
    println!("rebuilt the read models from {events} events in {secs:.2}s");
    Ok(())
}
