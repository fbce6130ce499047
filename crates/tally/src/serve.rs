//! `tally serve`: wires the embedded backend, the processor, the projector and the HTTP API into one
//! process, and stops them in order on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use tally_core::model::{ApiKey, Role as KeyRole};
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::{Backend, Signals};
use tally_domain::StockPolicy;
use tally_http::AppState;
use tally_http::auth::{generate_key, hash_secret};
use tokio::sync::watch;

use crate::cli::Role;
use crate::config::{Opened, OpenedStore, StoreConfig};

pub struct Options {
    pub store: StoreConfig,
    pub role: Role,
    pub listen: SocketAddr,
    pub admin_key: Option<String>,
    pub policy: StockPolicy,
    /// Serve HTTPS with these files; plain HTTP without.
    pub tls: Option<crate::http_server::TlsFiles>,
    /// Rate limits, load shedding and the request timeout of the API (`[limits]`).
    pub limits: tally_http::traffic::Limits,
    /// Where the named queries are declared.
    pub queries: crate::queries::Files,
    /// How long a rebuild waits after each batch it folds.
    pub rebuild_pace: Duration,
    /// What each projection does with a poison event.
    pub policies: tally_core::projector::poison::Policies,
    /// Told the bound address once the server listens (`tally demo` listens on port 0).
    pub ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// Stops the server as Ctrl-C would, for a server run inside another command (`bench import`).
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Options {
    /// What `tally serve` runs with, from the resolved settings.
    pub fn new(
        store: StoreConfig,
        settings: crate::settings::ServeSettings,
        queries: crate::queries::Files,
    ) -> Self {
        let policy = match settings.stock_policy {
            crate::cli::Policy::Reject => StockPolicy::Reject,
            crate::cli::Policy::AllowNegative => StockPolicy::AllowNegative,
        };
        Self {
            store,
            role: settings.role,
            listen: settings.listen,
            admin_key: settings.admin_key,
            policy,
            tls: settings.tls,
            limits: settings.limits,
            queries,
            rebuild_pace: Duration::from_millis(settings.rebuild_pace_ms),
            policies: settings.policies,
            ready: None,
            stop: None,
        }
    }
}

/// How long a starting server waits for its database before giving up.
const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

pub async fn serve(opts: Options) -> anyhow::Result<()> {
    // Before any worker starts, so that the processor's first batch is counted too.
    tally_http::metrics::install();
    if opts.role != Role::All && matches!(opts.store, StoreConfig::Embedded { .. }) {
        bail!(
            "--role {:?} needs a database shared by several processes: set TALLY_DATABASE_URL (the embedded store serves one process, with --role all)",
            opts.role
        );
    }
    // Bad TLS files are refused before anything is opened.
    let tls = opts
        .tls
        .as_ref()
        .map(crate::http_server::TlsFiles::acceptor)
        .transpose()?;
    let clock_skew = test_clock_skew()?;
    let opened = Opened::open(&opts.store, true, DATABASE_PATIENCE).await?;
    let backend = opened.backend();
    let api = matches!(opts.role, Role::All | Role::Gateway | Role::Query);
    let processes = matches!(opts.role, Role::All | Role::Processor);
    let projects = matches!(opts.role, Role::All | Role::Projector);
    if api {
        ensure_admin_key(&backend, opts.admin_key.as_deref()).await?;
    }
    // A server does not start with named queries it refuses; one without an API serves none.
    let catalog = if api {
        crate::queries::open(opts.queries, &backend).await?
    } else {
        std::sync::Arc::new(tally_core::dataservices::catalog::Catalog::empty(
            backend.data.clone(),
        ))
    };

    let signals = Signals::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    if api && let Some(broker) = &opened.broker {
        // Sends what the outbox holds: commands recorded while the broker could not confirm them.
        workers.push((
            "outbox relay",
            tokio::spawn(tally_core::intake::relay(
                backend.ledger.clone(),
                broker.clone(),
                stop_rx.clone(),
            )),
        ));
    }
    if processes {
        let processor = Processor::new(
            backend.events.clone(),
            backend.queue.clone(),
            signals.clone(),
            ProcessorConfig {
                policy: opts.policy,
                clock_skew,
                ..ProcessorConfig::default()
            },
        );
        workers.push(("processor", tokio::spawn(processor.run(stop_rx.clone()))));
    }
    if projects {
        let projector = Projector::new(
            backend.events.clone(),
            backend.sink.clone(),
            signals.clone(),
        )
        .with_rebuild_pace(opts.rebuild_pace)
        .with_policies(opts.policies.clone());
        workers.push((
            "projector",
            tokio::spawn(projector.run_leader(backend.leases.clone(), stop_rx.clone())),
        ));
    }

    let traffic = tally_http::traffic::Traffic::new(opts.limits.clone());
    let keys = backend.keys.clone();
    if api {
        // Reads the queue depth for load shedding, stores per-key usage every few seconds.
        workers.push((
            "traffic upkeep",
            tokio::spawn(traffic.clone().run(backend.clone(), stop_rx.clone())),
        ));
    }
    if api {
        workers.push((
            "query reloads",
            tokio::spawn(crate::queries::reload_on_hangup(
                catalog.clone(),
                stop_rx.clone(),
            )),
        ));
    }
    let state = AppState::from(tally_http::AppContext {
        backend,
        signals,
        shutdown: stop_rx,
        traffic: traffic.clone(),
        queries: catalog,
    });
    let app = if api {
        tally_http::router(state)
    } else {
        tally_http::ops_router(state)
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let role = format!("{:?}", opts.role).to_lowercase();
    println!(
        "tally listening on {}://{addr} ({}) as {role}",
        crate::http_server::scheme(tls.is_some()),
        opts.store.describe()
    );
    tracing::info!(%addr, role, store = %opts.store.describe(), "listening");
    if let Some(ready) = opts.ready {
        let _ = ready.send(addr);
    }

    let stop = stop_tx.clone();
    let asked = opts.stop;
    crate::http_server::serve(listener, app, tls, async move {
        match asked {
            Some(asked) => tokio::select! {
                () = shutdown_signal() => {}
                _ = asked => {}
            },
            None => shutdown_signal().await,
        }
        tracing::info!("shutting down: no new requests; finishing the ones in hand");
        let _ = stop.send(true);
    })
    .await;
    let _ = stop_tx.send(true);
    for (name, worker) in workers {
        worker.await.with_context(|| format!("{name} task"))?;
    }
    // The usage counted since the last flush, now that no request is in hand.
    if let Err(e) = traffic.flush_usage(keys.as_ref()).await {
        tracing::warn!(error = %e, "could not store the last API key usage counts");
    }
    drop(opened);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The environment variable that moves the clock this process stamps events with (signed
/// milliseconds), so that tests can run several processes whose clocks disagree. For tests only.
const TEST_CLOCK_SKEW: &str = "TALLY_TEST_CLOCK_SKEW_MS";

/// [`TEST_CLOCK_SKEW`], read once at start-up: zero when unset.
fn test_clock_skew() -> anyhow::Result<SignedDuration> {
    let raw = match std::env::var(TEST_CLOCK_SKEW) {
        Ok(raw) => raw,
        Err(std::env::VarError::NotPresent) => return Ok(SignedDuration::ZERO),
        Err(e) => return Err(e).context(TEST_CLOCK_SKEW),
    };
    let ms: i64 = raw.trim().parse().with_context(|| {
        format!("{TEST_CLOCK_SKEW}={raw:?}: not a whole number of milliseconds")
    })?;
    if ms != 0 {
        tracing::warn!(
            var = TEST_CLOCK_SKEW,
            skew_ms = ms,
            "the clock this process records events with is moved (for tests only)"
        );
    }
    Ok(SignedDuration::from_millis(ms))
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
            if let Err(e) = keys.create(admin(key_id), hash).await {
                // Another process starting at the same moment may have stored it first.
                if keys.find(hash).await.ok().flatten().is_none() {
                    return Err(e).context("storing TALLY_ADMIN_KEY");
                }
            }
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
        role: KeyRole::Admin,
        scope: None,
        rate_per_second: None,
        created_at: Timestamp::now(),
        revoked_at: None,
    }
}

/// `tally migrate`: brings the database schema up to date.
pub async fn migrate(store: &StoreConfig) -> anyhow::Result<()> {
    match Opened::store_only(store, false, Duration::from_secs(10))
        .await?
        .store
    {
        OpenedStore::Postgres(pg) => {
            let done = pg.migrate().await.context("migrating the schema")?;
            if done.from == done.to {
                println!(
                    "schema {} is up to date (version {})",
                    pg.options().schema,
                    done.to
                );
            } else {
                println!(
                    "schema {} migrated from version {} to {}",
                    pg.options().schema,
                    done.from,
                    done.to
                );
            }
        }
        OpenedStore::Embedded(_) => {
            println!(
                "{}: the embedded store migrates itself when opened",
                store.describe()
            );
        }
    }
    Ok(())
}
