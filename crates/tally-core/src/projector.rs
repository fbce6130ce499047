//! The projector: follows the global log from the projections' checkpoints and applies each batch of
//! events to every read model, moving the checkpoints in the same transaction. A crash between two
//! batches loses nothing and applies nothing twice; a checkpoint that moved under it (another projector)
//! makes it reload instead of writing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::lease::Leases;
use crate::model::RecordedEvent;
use crate::ports::{Error, EventStore, ReadStore};
use crate::readmodel::{Accumulator, PROJECTIONS, ProjectionUpdate};
use crate::signals::{Cadence, Signals, changed_or_poll};

/// The lease a projector holds while it applies to the read models.
pub const PROJECTOR_LEASE: &str = "projector";
/// How often a standing-by projector asks for the lease.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Most events per batch when following the log live; catch-up and rebuild use `batch_size`.
const LIVE_BATCH: usize = 5000;

/// When following the log live, a batch starts at most this often. Under a steady stream the events
/// of the interval go in as one update: each read-model row (and page) written once per interval,
/// not once per small batch (the read models' pages, spread over every store and item, were most of
/// what each commit wrote). After a quiet spell an event is applied at once. Adds at most this much to
/// the visibility lag.
pub const LIVE_INTERVAL: Duration = Duration::from_millis(50);

pub struct Projector {
    store: Arc<dyn EventStore>,
    read: Arc<dyn ReadStore>,
    signals: Signals,
    batch_size: usize,
    checkpoints: Option<HashMap<String, u64>>,
}

impl Projector {
    pub fn new(store: Arc<dyn EventStore>, read: Arc<dyn ReadStore>, signals: Signals) -> Self {
        Self {
            store,
            read,
            signals,
            batch_size: 40_000,
            checkpoints: None,
        }
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    async fn checkpoints(&mut self) -> Result<HashMap<String, u64>, Error> {
        if let Some(c) = &self.checkpoints {
            return Ok(c.clone());
        }
        let c = self.read.checkpoints().await?;
        self.checkpoints = Some(c.clone());
        Ok(c)
    }

    /// Where the next batch starts: the lowest checkpoint.
    async fn next_from(&mut self) -> Result<u64, Error> {
        let c = self.checkpoints().await?;
        Ok(PROJECTIONS
            .iter()
            .map(|p| c.get(*p).copied().unwrap_or(0))
            .min()
            .unwrap_or(0))
    }

    /// Applies the next batch of events; returns how many events it read (0: caught up).
    pub async fn step(&mut self) -> Result<usize, Error> {
        let from = self.next_from().await?;
        // Live batches stay small: a big apply would hold the single writer (and every 202) up.
        let events = self
            .store
            .read_all(from, self.batch_size.min(LIVE_BATCH))
            .await?;
        if events.is_empty() {
            self.signals.projected(from);
            return Ok(0);
        }
        self.project(events).await
    }

    /// Folds a batch (the events right after the lowest checkpoint) into an update for every
    /// projection that has not seen them, and moves the cached checkpoints to the batch's end as if the
    /// update were applied (a failed apply clears the cache).
    fn fold(
        &mut self,
        events: &[RecordedEvent],
        checkpoints: &HashMap<String, u64>,
    ) -> Result<Vec<ProjectionUpdate>, Error> {
        let at = |name: &str| checkpoints.get(name).copied().unwrap_or(0);
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(Vec::new());
        };
        let decoded = events
            .iter()
            .map(|r| {
                r.decode()
                    .map(|e| (r.position, e))
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut updates = Vec::with_capacity(PROJECTIONS.len());
        for name in PROJECTIONS {
            let cp = at(name);
            let Some(mut acc) = Accumulator::for_projection(name).filter(|_| last > cp) else {
                continue;
            };
            for (_, event) in decoded.iter().filter(|(p, _)| *p > cp) {
                acc.fold(event);
            }
            updates.push(ProjectionUpdate {
                projection: name.to_owned(),
                from: cp,
                to: last,
                delta: acc.finish(),
            });
        }
        if let Some(c) = &mut self.checkpoints {
            for name in PROJECTIONS {
                c.insert(name.to_owned(), last);
            }
        }
        Ok(updates)
    }

    async fn project(&mut self, events: Vec<RecordedEvent>) -> Result<usize, Error> {
        let checkpoints = self.checkpoints().await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(0);
        };
        let updates = self.fold(&events, &checkpoints)?;
        match self.read.apply(updates).await {
            Ok(()) => {
                self.signals.projected(last);
                Ok(events.len())
            }
            Err(e) => {
                self.checkpoints = None;
                Err(e)
            }
        }
    }

    /// Applies batches until the log is exhausted; returns the events read. Three stages overlap: the
    /// next batch is read while the current one is folded and the previous one is applied. Each apply
    /// starts only after the previous one committed, and checks its checkpoints, so the order holds.
    pub async fn catch_up(&mut self) -> Result<u64, Error> {
        let mut total = 0u64;
        let (store, limit) = (self.store.clone(), self.batch_size);
        let read = move |from: u64| {
            let store = store.clone();
            tokio::spawn(async move { store.read_all(from, limit).await })
        };
        let joined = |r: Result<Result<(), Error>, tokio::task::JoinError>| {
            r.map_err(|e| Error::Unavailable(format!("projector task failed: {e}")))?
        };
        let mut next = read(self.next_from().await?);
        let mut applying: Option<(u64, tokio::task::JoinHandle<Result<(), Error>>)> = None;
        loop {
            let events = next
                .await
                .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))??;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            next = read(last);
            let checkpoints = self.checkpoints().await?;
            let updates = self.fold(&events, &checkpoints)?;
            if let Some((position, handle)) = applying.take() {
                if let Err(e) = joined(handle.await) {
                    self.checkpoints = None;
                    return Err(e);
                }
                self.signals.projected(position);
            }
            let read_store = self.read.clone();
            applying = Some((
                last,
                tokio::spawn(async move { read_store.apply(updates).await }),
            ));
            total += events.len() as u64;
        }
        if let Some((position, handle)) = applying.take() {
            if let Err(e) = joined(handle.await) {
                self.checkpoints = None;
                return Err(e);
            }
            self.signals.projected(position);
        }
        Ok(total)
    }

    /// Empties every read model and builds it again from the log.
    pub async fn rebuild(&mut self) -> Result<u64, Error> {
        for name in PROJECTIONS {
            self.read.reset(name).await?;
        }
        self.checkpoints = None;
        self.catch_up().await
    }

    /// Follows the log until `shutdown` turns true, but only while holding the [`PROJECTOR_LEASE`]:
    /// one projector applies to the read models at a time, however many processes run one. The others
    /// wait and try again every [`LEASE_RETRY`]; when the holder dies its lease ends with its database
    /// session and another takes over from the checkpoints.
    pub async fn run_leader(
        mut self,
        leases: Arc<dyn Leases>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut waiting_logged = false;
        while !*shutdown.borrow() {
            let lease = match leases.try_acquire(PROJECTOR_LEASE).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!("another projector is active; standing by");
                        waiting_logged = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not ask for the projector lease; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            waiting_logged = false;
            tracing::info!("projector lease taken; following the log");
            // Whatever was cached may be stale: another projector may have moved on meanwhile.
            self.checkpoints = None;
            let mut lease = lease;
            tokio::select! {
                _ = self.follow(&mut shutdown) => {}
                _ = lease.lost() => {
                    tracing::warn!("projector lease lost; stopping until it can be taken again");
                }
            }
            drop(lease);
        }
        tracing::info!("projector stopped");
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.follow(&mut shutdown).await;
        tracing::info!("projector stopped");
    }

    async fn follow(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut head = self.signals.watch_head();
        let mut backoff = Duration::from_millis(50);
        let mut cadence = Cadence::new(LIVE_INTERVAL);
        while !*shutdown.borrow() {
            let started = cadence.wait(shutdown).await;
            match self.step().await {
                Ok(0) => {
                    tokio::select! {
                        _ = changed_or_poll(&mut head) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(n) => {
                    backoff = Duration::from_millis(50);
                    cadence.ran(started, n, self.batch_size.min(LIVE_BATCH));
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "projector step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
