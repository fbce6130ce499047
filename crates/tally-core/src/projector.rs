//! The projector: follows the global log from the projections' checkpoints and applies each batch of
//! events to every read model, moving the checkpoints in the same transaction. A crash between two
//! batches loses nothing and applies nothing twice; a checkpoint that moved under it (another projector)
//! makes it reload instead of writing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::lease::Leases;
use crate::model::EventPayload;
use crate::ports::{Error, EventStore, ProjectionSink};
use crate::readmodel::journal::{self, JOURNAL};
use crate::readmodel::{Accumulator, Delta, PROJECTIONS, ProjectionUpdate};
use crate::signals::{Cadence, Signals, changed_or_poll};
use tally_domain::Event;

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
/// the visibility lag. Chosen when the embedded intake shared the projector's writer, so that a
/// request waited for an update too: at 50 ms an update took 2.7 ms under W1 over HTTP, which set the
/// p99 of accepting a command; at 10 ms the writer's extra commits of scattered read-model pages cost
/// about 8 % of the throughput. Since the intake has a file and a writer of its own, the update no
/// longer holds requests up; a 100 ms interval (with the processor's at 50 ms) was not measurably
/// faster than 20 ms over HTTP and tripled the lag, so it stays.
pub const LIVE_INTERVAL: Duration = Duration::from_millis(20);

/// Decodes a batch of the log for folding.
fn decode(payloads: Vec<EventPayload>) -> Result<Vec<(u64, Event)>, Error> {
    payloads
        .iter()
        .map(|p| {
            p.decode()
                .map(|e| (p.position, e))
                .map_err(|e| Error::Corrupt(format!("event {}: {e}", p.position)))
        })
        .collect()
}

/// An update being folded: one accumulator per projection, each from its own checkpoint (events at
/// or before it are skipped), up to the last event folded.
struct Pending {
    projections: Vec<(&'static str, u64, Accumulator)>,
    to: u64,
}

impl Pending {
    fn new(checkpoints: &HashMap<String, u64>) -> Self {
        let projections = PROJECTIONS
            .iter()
            .filter_map(|name| {
                let from = checkpoints.get(*name).copied().unwrap_or(0);
                Accumulator::for_projection(name).map(|acc| (*name, from, acc))
            })
            .collect();
        Self { projections, to: 0 }
    }

    /// Folds the next events of the log (in order, after those folded before).
    fn fold(&mut self, events: &[(u64, Event)]) {
        for (_, from, acc) in &mut self.projections {
            for (_, event) in events.iter().filter(|(p, _)| *p > *from) {
                acc.fold(event);
            }
        }
        if let Some((last, _)) = events.last() {
            self.to = self.to.max(*last);
        }
    }

    /// One update per projection that has events past its checkpoint.
    fn finish(self) -> Vec<ProjectionUpdate> {
        let to = self.to;
        self.projections
            .into_iter()
            .filter(|(_, from, _)| to > *from)
            .map(|(name, from, acc)| ProjectionUpdate {
                projection: name.to_owned(),
                from,
                to,
                delta: acc.finish(),
            })
            .collect()
    }
}

pub struct Projector {
    store: Arc<dyn EventStore>,
    read: Arc<dyn ProjectionSink>,
    signals: Signals,
    batch_size: usize,
    checkpoints: Option<HashMap<String, u64>>,
    /// The journal's intervals not sealed yet, folded in memory; `None` until the checkpoints are
    /// read (and again after a failed apply, when it is folded anew from its checkpoint).
    journal: Option<journal::Builder>,
    journal_interval: u64,
}

impl Projector {
    pub fn new(
        store: Arc<dyn EventStore>,
        read: Arc<dyn ProjectionSink>,
        signals: Signals,
    ) -> Self {
        Self {
            store,
            read,
            signals,
            batch_size: 40_000,
            checkpoints: None,
            journal: None,
            journal_interval: journal::INTERVAL,
        }
    }

    /// Seals the journal every `positions` positions instead of every [`journal::INTERVAL`] (tests
    /// use short intervals to have many chunks from a small log).
    pub fn with_journal_interval(mut self, positions: u64) -> Self {
        self.journal_interval = positions.max(1);
        self
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
        self.journal = Some(journal::Builder::new(
            c.get(JOURNAL).copied().unwrap_or(0),
            self.journal_interval,
        ));
        self.checkpoints = Some(c.clone());
        Ok(c)
    }

    /// Forgets the cached checkpoints and the journal's open intervals: after a failed apply, both
    /// are read again (the open intervals folded again from the journal's checkpoint).
    fn forget(&mut self) {
        self.checkpoints = None;
        self.journal = None;
    }

    /// Where the next batch starts: the lowest checkpoint, the journal's being what it has folded
    /// (its open intervals are in memory; after a restart, its sealed checkpoint).
    async fn next_from(&mut self) -> Result<u64, Error> {
        let c = self.checkpoints().await?;
        let journal = self.journal.as_ref().map_or(0, |j| j.folded());
        Ok(PROJECTIONS
            .iter()
            .map(|p| c.get(*p).copied().unwrap_or(0))
            .chain(std::iter::once(journal))
            .min()
            .unwrap_or(0))
    }

    /// Folds the next events into the read models' update and the journal.
    fn fold(&mut self, pending: &mut Pending, events: &[(u64, Event)]) {
        pending.fold(events);
        if let Some(j) = &mut self.journal {
            j.fold(events);
        }
    }

    /// The update's rows, and the journal's chunks of every interval it folded to its end.
    fn finish(&mut self, pending: Pending) -> Vec<ProjectionUpdate> {
        let mut updates = pending.finish();
        if let Some((from, to, chunks)) = self.journal.as_mut().and_then(|j| j.seal()) {
            updates.push(ProjectionUpdate {
                projection: JOURNAL.to_owned(),
                from,
                to,
                delta: Delta::Journal(chunks),
            });
        }
        updates
    }

    /// Most events per batch when following the log live.
    fn live_batch(&self) -> usize {
        self.batch_size.min(LIVE_BATCH)
    }

    /// Applies the next batch of events; returns how many events it read (0: caught up).
    pub async fn step(&mut self) -> Result<usize, Error> {
        let from = self.next_from().await?;
        // Live batches stay small: a big apply holds its writer (and whatever waits for it) up.
        let limit = self.live_batch();
        // What this process's processor committed since, when it continues without a gap; else the
        // store's log (see `signals::Tail`).
        let read: Vec<(u64, Event)>;
        let recent = self.signals.recent_events(from, limit);
        let batches: Vec<&[(u64, Event)]> = match &recent {
            Some(recent) => recent.iter().map(|r| &**r).collect(),
            None => {
                read = decode(self.store.read_payloads(from, limit).await?)?;
                vec![&read[..]]
            }
        };
        let Some(last) = batches.iter().rev().find_map(|b| b.last()).map(|(p, _)| *p) else {
            self.signals.projected(from);
            return Ok(0);
        };
        let mut pending = Pending::new(&self.checkpoints().await?);
        for batch in &batches {
            self.fold(&mut pending, batch);
        }
        self.apply(pending).await?;
        self.signals.projected(last);
        Ok(batches.iter().map(|b| b.len()).sum())
    }

    /// Applies a folded update and moves the cached checkpoints to its end; a failed apply clears the
    /// cache, so the next step reads the checkpoints again.
    async fn apply(&mut self, pending: Pending) -> Result<(), Error> {
        let to = pending.to;
        let updates = self.finish(pending);
        match self.read.apply(updates).await {
            Ok(()) => {
                self.moved_to(to);
                Ok(())
            }
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    fn moved_to(&mut self, to: u64) {
        let sealed = self.journal.as_ref().map(|j| j.sealed());
        if let Some(c) = &mut self.checkpoints {
            for name in PROJECTIONS {
                c.insert(name.to_owned(), to);
            }
            if let Some(sealed) = sealed {
                c.insert(JOURNAL.to_owned(), sealed);
            }
        }
    }

    /// Applies batches until the log is exhausted; returns the events read. The stages overlap: a
    /// reader task reads the log batch after batch and hands each to a decoding task of its own
    /// (several batches decode at once, on every core), while this loop folds the decoded batches in
    /// log order and the writer applies the previous update. Batches folded while the writer is busy
    /// go into one update, so the writer's work follows the rows touched, not the events read, and it
    /// never holds the others up. Each apply starts only after the previous one committed, and checks
    /// its checkpoints, so the order holds.
    pub async fn catch_up(&mut self) -> Result<u64, Error> {
        type Decoding = tokio::task::JoinHandle<Result<Vec<(u64, Event)>, Error>>;
        let mut total = 0u64;
        let (store, limit) = (self.store.clone(), self.batch_size);
        // One batch waits decoded or decoding while another is read and a third is folded: memory
        // stays at a few batches however long the log.
        let (batches, mut decoded) = tokio::sync::mpsc::channel::<Result<Decoding, Error>>(1);
        let mut from = self.next_from().await?;
        tokio::spawn(async move {
            loop {
                let payloads = match store.read_payloads(from, limit).await {
                    Ok(payloads) => payloads,
                    Err(e) => {
                        let _ = batches.send(Err(e)).await;
                        return;
                    }
                };
                let Some(last) = payloads.last().map(|p| p.position) else {
                    return; // the end of the log: the channel closes
                };
                from = last;
                let decoding = tokio::task::spawn_blocking(move || decode(payloads));
                if batches.send(Ok(decoding)).await.is_err() {
                    return; // the fold loop stopped
                }
            }
        });
        let joined = |r: Result<Result<(), Error>, tokio::task::JoinError>| {
            r.map_err(|e| Error::Unavailable(format!("projector task failed: {e}")))?
        };
        let mut applying: Option<(u64, tokio::task::JoinHandle<Result<(), Error>>)> = None;
        let mut pending: Option<Pending> = None;
        while let Some(decoding) = decoded.recv().await {
            let events = match decoding {
                Ok(task) => task
                    .await
                    .map_err(|e| Error::Unavailable(format!("decoding task failed: {e}")))
                    .and_then(|events| events),
                Err(e) => Err(e),
            };
            // An update may be in flight: the cached checkpoints are not to be trusted after a failure.
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    self.forget();
                    return Err(e);
                }
            };
            total += events.len() as u64;
            let mut update = match pending.take() {
                Some(update) => update,
                None => Pending::new(&self.checkpoints().await?),
            };
            self.fold(&mut update, &events);
            pending = Some(update);
            drop(events);
            if applying.as_ref().is_some_and(|(_, h)| !h.is_finished()) {
                continue; // the writer is busy: the next batch joins this update
            }
            if let Some((position, handle)) = applying.take() {
                if let Err(e) = joined(handle.await) {
                    self.forget();
                    return Err(e);
                }
                self.signals.projected(position);
            }
            if let Some(update) = pending.take() {
                let to = update.to;
                let updates = self.finish(update);
                self.moved_to(to);
                let sink = self.read.clone();
                applying = Some((to, tokio::spawn(async move { sink.apply(updates).await })));
            }
        }
        if let Some((position, handle)) = applying.take() {
            if let Err(e) = joined(handle.await) {
                self.forget();
                return Err(e);
            }
            self.signals.projected(position);
        }
        if let Some(update) = pending.take() {
            let to = update.to;
            self.apply(update).await?;
            self.signals.projected(to);
        }
        Ok(total)
    }

    /// Empties every read model and builds it again from the log.
    pub async fn rebuild(&mut self) -> Result<u64, Error> {
        for name in PROJECTIONS.into_iter().chain([JOURNAL]) {
            self.read.reset(name).await?;
        }
        self.forget();
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
            self.forget();
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
                    cadence.ran(started, n, self.live_batch());
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::readmodel::{Delta, INVENTORY, ITEM_DAILY, STORE_DAILY, SUPPLIER_DAILY};
    use tally_domain::event::{SaleRecorded, SoldLine, StockAdjusted};
    use tally_domain::values::{
        AdjustmentId, AdjustmentReason, Cents, ItemId, Quantity, SaleId, StockDelta, StoreId,
        SupplierId,
    };

    fn sale(n: u64) -> (u64, Event) {
        let event = Event::SaleRecorded(SaleRecorded {
            sale_id: SaleId::parse(format!("x{n}")).unwrap(),
            store_id: StoreId::parse("s1").unwrap(),
            business_date: "2026-11-02".parse().unwrap(),
            lines: vec![SoldLine {
                item_id: ItemId::parse("a").unwrap(),
                supplier_id: SupplierId::parse("acme").unwrap(),
                quantity: Quantity::new(1).unwrap(),
                unit_price_cents: Cents::new(100).unwrap(),
            }],
        });
        (n, event)
    }

    fn adjustment(n: u64) -> (u64, Event) {
        let event = Event::StockAdjusted(StockAdjusted {
            adjustment_id: AdjustmentId::parse(format!("j{n}")).unwrap(),
            store_id: StoreId::parse("s1").unwrap(),
            item_id: ItemId::parse("a").unwrap(),
            delta: StockDelta::new(5).unwrap(),
            reason: AdjustmentReason::Damage,
            business_date: "2026-11-02".parse().unwrap(),
        });
        (n, event)
    }

    /// Item daily sales stand where supplier days do.
    fn checkpoints(inventory: u64, store: u64, supplier: u64) -> HashMap<String, u64> {
        [
            (INVENTORY, inventory),
            (STORE_DAILY, store),
            (SUPPLIER_DAILY, supplier),
            (ITEM_DAILY, supplier),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_owned(), p))
        .collect()
    }

    #[test]
    fn batches_folded_into_one_update_equal_one_big_batch() {
        let events: Vec<_> = (1..=6)
            .map(|n| if n % 3 == 0 { adjustment(n) } else { sale(n) })
            .collect();
        let mut whole = Pending::new(&checkpoints(0, 0, 0));
        whole.fold(&events);
        let mut parts = Pending::new(&checkpoints(0, 0, 0));
        parts.fold(&events[..2]);
        parts.fold(&events[2..5]);
        parts.fold(&events[5..]);
        assert_eq!(parts.to, 6);
        assert_eq!(parts.finish(), whole.finish());
    }

    #[test]
    fn each_projection_starts_after_its_own_checkpoint() {
        let events: Vec<_> = (1..=4).map(sale).collect();
        // inventory has seen 3 events, store days 1, supplier days all 4.
        let mut pending = Pending::new(&checkpoints(3, 1, 4));
        pending.fold(&events);
        let updates = pending.finish();
        let names: Vec<_> = updates.iter().map(|u| u.projection.as_str()).collect();
        assert_eq!(
            names,
            [INVENTORY, STORE_DAILY],
            "supplier and item days have nothing new"
        );
        let Delta::Inventory(stock) = &updates[0].delta else {
            panic!("wrong delta")
        };
        assert_eq!((updates[0].from, updates[0].to), (3, 4));
        assert_eq!(stock.get(&("s1".to_owned(), "a".to_owned())), Some(&-1));
        let Delta::StoreDaily(days) = &updates[1].delta else {
            panic!("wrong delta")
        };
        assert_eq!((updates[1].from, updates[1].to), (1, 4));
        let day = days
            .get(&("s1".to_owned(), "2026-11-02".parse().unwrap()))
            .unwrap();
        assert_eq!(day.transactions, 3);
    }
}
