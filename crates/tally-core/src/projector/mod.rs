//! The projector: follows the global log from the projections' checkpoints and applies each batch of
//! events to every read model, moving the checkpoints in the same transaction. A crash between two
//! batches loses nothing and applies nothing twice; a checkpoint that moved under it (another projector)
//! makes it reload instead of writing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::model::EventPayload;
use crate::ports::{Error, EventStore, ProjectionSink};
use crate::readmodel::journal::{self, JOURNAL};
use crate::readmodel::{Delta, ITEM_DAILY, LIVE, PROJECTIONS, ProjectionUpdate, shadow};
use crate::signals::Signals;
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

mod follow;
mod lanes;
pub mod poison;
pub mod rebuild;
use lanes::{Pending, Poisoned, Slow};
use poison::{Fault, FaultState, Faults, Policies, STRIKES};

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
    /// Item daily sales since their checkpoint, applied less often when live (`lanes::Slow`).
    slow: Option<Slow>,
    /// Projections left alone: held for a rebuild's swap, or back-filling ([`rebuild`]); read with
    /// the checkpoints.
    excluded: HashSet<&'static str>,
    /// The holds' generation when `excluded` was worked out.
    seen: u64,
    /// How long a rebuild waits after each batch ([`rebuild::Rebuilder::with_pace`]).
    rebuild_pace: Duration,
    /// The store's faults ([`poison`]), read with the checkpoints.
    faults: Faults,
    /// What each projection does with a poison event.
    policies: Policies,
    /// Failed folds so far, by projection and position, before its policy applies.
    strikes: HashMap<(&'static str, u64), u32>,
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
            slow: None,
            excluded: HashSet::new(),
            seen: 0,
            rebuild_pace: Duration::ZERO,
            faults: Faults::default(),
            policies: Policies::default(),
            strikes: HashMap::new(),
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

    /// What each projection does with a poison event once retried (stop, unless it parks).
    pub fn with_policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }

    /// Rebuilds run by this projector's lease holder wait this long after each batch.
    pub fn with_rebuild_pace(mut self, pace: Duration) -> Self {
        self.rebuild_pace = pace;
        self
    }

    /// The rebuilder that runs beside this projector while it holds the lease.
    pub fn rebuilder(&self) -> rebuild::Rebuilder {
        rebuild::Rebuilder::new(
            self.store.clone(),
            self.read.clone(),
            self.signals.rebuilds().clone(),
        )
        .with_pace(self.rebuild_pace)
    }

    async fn checkpoints(&mut self) -> Result<HashMap<String, u64>, Error> {
        if let Some(c) = &self.checkpoints {
            return Ok(c.clone());
        }
        let holds = &self.signals.rebuilds().holds;
        self.seen = holds.generation();
        let c = self.read.checkpoints().await?;
        self.faults = Faults::of(&self.read.faults().await?);
        let mut excluded = holds.held();
        // Back-filling (built beside), or stopped before a poison event until an operator's retry
        // or skip: left alone.
        excluded.extend(
            PROJECTIONS
                .into_iter()
                .filter(|p| shadow::back_filling(&c, p) || self.faults.stopped.contains_key(*p)),
        );
        self.excluded = excluded;
        let sealed = c.get(JOURNAL).copied().unwrap_or(0);
        let heads = if sealed == 0 {
            Vec::new()
        } else {
            self.read.journal_heads(sealed).await?
        };
        self.journal = Some(
            journal::Builder::resume(sealed, self.journal_interval, &heads)
                .map_err(|e| Error::Corrupt(format!("the journal's last heads: {e}")))?,
        );
        self.slow = if self.excluded.contains(ITEM_DAILY) {
            None
        } else {
            Slow::new(&c, &self.faults)
        };
        self.checkpoints = Some(c.clone());
        Ok(c)
    }

    /// Forgets the cached checkpoints and what is folded but not applied (the journal's open
    /// intervals, the slow projection's fold): after a failed apply, all of it is read again.
    fn forget(&mut self) {
        self.checkpoints = None;
        self.journal = None;
        self.slow = None;
    }

    /// Where the next batch starts: the lowest checkpoint, the journal's and the slow projection's
    /// being what they have folded in memory (after a restart, their checkpoints).
    async fn next_from(&mut self) -> Result<u64, Error> {
        if self.checkpoints.is_some() && self.signals.rebuilds().holds.generation() != self.seen {
            // A hold came or went: what is left alone changed, so everything is read again.
            self.forget();
        }
        let c = self.checkpoints().await?;
        let journal = self.journal.as_ref().map_or(0, |j| j.folded());
        let slow = self.slow.as_ref().map_or(0, |s| s.folded());
        Ok(LIVE
            .iter()
            .filter(|p| !self.excluded.contains(*p))
            .map(|p| c.get(*p).copied().unwrap_or(0))
            .chain([journal, slow])
            .min()
            .unwrap_or(0))
    }

    /// An empty update of the projections not left alone, each from its checkpoint.
    async fn pending(&mut self) -> Result<Pending, Error> {
        let c = self.checkpoints().await?;
        Ok(Pending::new(&c, &self.excluded, &self.faults))
    }

    /// Folds the next events into the read models' update, the slow projection and the journal.
    fn fold(&mut self, pending: &mut Pending, events: &[(u64, Event)]) -> Result<(), Poisoned> {
        pending.fold(events)?;
        if let Some(s) = &mut self.slow {
            s.fold(events)?;
        }
        if let Some(j) = &mut self.journal {
            j.fold(events);
        }
        Ok(())
    }

    /// A fold failed on an event: what is folded is dropped (folded again from the checkpoints at
    /// the next step), and each projection that cannot fold the event alone gets a strike; at
    /// [`STRIKES`] its policy applies: it stops before the event, or parks it and goes on. The
    /// others go on either way. Until then the error has the projector retry with back-off.
    async fn poisoned(&mut self, p: Poisoned) -> Result<(), Error> {
        self.forget();
        let mut culprits = poison::culprits(&p.folding, &p.event);
        if culprits.is_empty() {
            // It failed folded together, not alone: each that folded it is suspect.
            culprits = p
                .folding
                .iter()
                .map(|n| {
                    (
                        *n,
                        format!("{n}: its fold panicked (folded with the others)"),
                    )
                })
                .collect();
        }
        let mut dealt = Vec::new();
        for (name, reason) in &culprits {
            let strikes = self.strikes.entry((name, p.position)).or_insert(0);
            *strikes += 1;
            if *strikes < STRIKES {
                continue;
            }
            self.strikes.remove(&(*name, p.position));
            let state = if self.policies.parks(name) {
                FaultState::Parked
            } else {
                FaultState::Stopped
            };
            self.read
                .record_fault(Fault {
                    projection: (*name).to_owned(),
                    position: p.position,
                    state,
                    reason: reason.clone(),
                    at: jiff::Timestamp::now(),
                })
                .await?;
            tracing::error!(
                projection = name,
                position = p.position,
                state = state.as_str(),
                reason = reason.as_str(),
                "poison event: this projection cannot fold it; the others go on \
                 (GET /v1/admin/projections/faults, tally projections parked list)"
            );
            dealt.push(*name);
        }
        if dealt.is_empty() {
            return Err(Error::Unavailable(format!(
                "the event at position {} could not be folded ({}); retrying",
                p.position,
                culprits
                    .iter()
                    .map(|(_, r)| r.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(())
    }

    /// The update's rows; the slow projection's when `slow_now` or when it is due; and the
    /// journal's chunks of every interval it folded to its end.
    fn finish(&mut self, pending: Pending, slow_now: bool) -> Vec<ProjectionUpdate> {
        let mut updates = pending.finish();
        if let Some(update) = self.slow.as_mut().and_then(|s| s.take(slow_now)) {
            updates.push(update);
        }
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
            // Quiet: what the slow projection folded goes in once it is due.
            self.flush_slow().await?;
            self.signals.projected(from);
            return Ok(0);
        };
        let mut pending = self.pending().await?;
        for batch in &batches {
            if let Err(p) = self.fold(&mut pending, batch) {
                return self.poisoned(p).await.map(|()| 0);
            }
        }
        self.apply(pending, false).await?;
        self.signals.projected(last);
        Ok(batches.iter().map(|b| b.len()).sum())
    }

    /// Applies what the slow projection has folded, due or not (at shutdown, and for tests that
    /// step the projector and then read every read model).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.apply_slow(true).await
    }

    /// Applies the slow projection's fold alone, when it is due.
    async fn flush_slow(&mut self) -> Result<(), Error> {
        self.apply_slow(false).await
    }

    async fn apply_slow(&mut self, now: bool) -> Result<(), Error> {
        let Some(update) = self.slow.as_mut().and_then(|s| s.take(now)) else {
            return Ok(());
        };
        let to = update.to;
        match self.read.apply(vec![update]).await {
            Ok(()) => {
                if let Some(c) = &mut self.checkpoints {
                    c.insert(ITEM_DAILY.to_owned(), to);
                }
                Ok(())
            }
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    /// Applies a folded update and moves the cached checkpoints to its end; a failed apply clears the
    /// cache, so the next step reads the checkpoints again.
    async fn apply(&mut self, pending: Pending, slow_now: bool) -> Result<(), Error> {
        let to = pending.to;
        let updates = self.finish(pending, slow_now);
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
        let slow = self.slow.as_ref().map(|s| s.checkpoint());
        if let Some(c) = &mut self.checkpoints {
            // A projection already past `to` was not in the update (after a restart the journal
            // or the slow lane can start the batch before the others' checkpoints): it stays.
            for name in LIVE.iter().filter(|p| !self.excluded.contains(*p)) {
                let at = c.entry((*name).to_owned()).or_insert(0);
                *at = (*at).max(to);
            }
            if let Some(slow) = slow {
                c.insert(ITEM_DAILY.to_owned(), slow);
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
                None => self.pending().await?,
            };
            if let Err(p) = self.fold(&mut update, &events) {
                // What is in flight lands (or not) first; then the fault, and the caller retries.
                if let Some((_, handle)) = applying.take() {
                    let _ = handle.await;
                }
                self.poisoned(p).await?;
                return Err(Error::Unavailable(
                    "a poison event was dealt with; catch up again".into(),
                ));
            }
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
                let updates = self.finish(update, false);
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
        match pending.take() {
            Some(update) => {
                let to = update.to;
                self.apply(update, true).await?;
                self.signals.projected(to);
            }
            None => self.flush().await?,
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
}
#[cfg(test)]
mod tests;
