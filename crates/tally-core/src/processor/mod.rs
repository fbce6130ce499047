//! The processor: takes commands from the queue, decides them against cached aggregate state, commits
//! the events and outcomes of a whole batch in one transaction (group commit), then acks the batch.
//!
//! Exactly-once effect comes from three things together: the queue delivers at least once; a command
//! id that already has an outcome is acked without being decided again; and the commit that records an
//! outcome is the same transaction that appends the events, guarded by stream versions and the
//! outcome's uniqueness. Aggregate state is cached in memory and only read from the store on a miss or
//! after a failed commit. Other processors may append to the same store, so the cache can be stale: a
//! commit carries the version of every stream its decisions read (not only of those it appends to), and
//! a decision taken on a stale version conflicts and is decided again after reloading.

use std::collections::{HashSet, VecDeque};

type Set<T> = foldhash::HashSet<T>;
type Map<K, V> = foldhash::HashMap<K, V>;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tally_domain::{RejectionCode, State, StockPolicy, StreamId, decide};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::Outcomes;
use crate::model::{
    AcceptedCommand, CommandEnvelope, CommitBatch, Decision, Delivery, EventMetadata, NewEvent,
    OutcomeRecord,
};
use crate::ports::{CommandQueue, Error, EventStore};
use crate::signals::{Cadence, Signals};

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub policy: StockPolicy,
    /// Most commands taken from the queue at once.
    pub batch_size: usize,
    /// Most commands committed in one transaction; the next chunk is decided while one commits.
    pub commit_size: usize,
    /// How long a poison message waits before it is delivered again.
    pub retry_after: Duration,
    /// Most non-reference streams (sales, deliveries, …) whose state stays cached; older ones are
    /// forgotten and read from the store when named again.
    pub cached_streams: usize,
    /// [`Processor::run`] starts a batch at most this often: under a steady stream, what arrives
    /// meanwhile is decided and committed together (one commit, each page of the log and of the
    /// statuses written once) instead of one small commit per handful of commands. A command that
    /// comes after a quiet spell is taken at once. Costs at most this much processing lag.
    pub min_step_interval: Duration,
    /// Added to this process's clock where it stamps events' `recorded_at`. Zero but in tests of
    /// several processes whose clocks disagree (`TALLY_TEST_CLOCK_SKEW_MS`).
    pub clock_skew: SignedDuration,
}

/// The default [`ProcessorConfig::min_step_interval`].
pub const MIN_STEP_INTERVAL: Duration = Duration::from_millis(10);

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            policy: StockPolicy::Reject,
            batch_size: 8192,
            commit_size: 2048,
            retry_after: Duration::from_millis(500),
            cached_streams: CACHED_STREAMS,
            min_step_interval: MIN_STEP_INTERVAL,
            clock_skew: SignedDuration::ZERO,
        }
    }
}

/// What one [`Processor::step`] did.
struct Prepared {
    batch: Option<CommitBatch>,
    /// The batch's events as decided, in its order: once committed, they go to the projector of this
    /// process through [`Signals::events_recorded`].
    events: Vec<tally_domain::Event>,
    touched: Set<StreamId>,
    counts: StepReport,
    outcomes: Outcomes,
}

struct InFlight {
    handle: Option<tokio::task::JoinHandle<Result<Vec<u64>, Error>>>,
    events: Vec<tally_domain::Event>,
    touched: Set<StreamId>,
    counts: StepReport,
    outcomes: Outcomes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub received: usize,
    pub processed: usize,
    pub rejected: usize,
    /// Already decided before (redelivered or resubmitted): acked without effect.
    pub duplicates: usize,
    /// Undecodable: nacked.
    pub poison: usize,
}

impl StepReport {
    fn add(&mut self, o: &StepReport) {
        self.processed += o.processed;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
    }
}

pub struct Processor {
    store: Arc<dyn EventStore>,
    queue: Arc<dyn CommandQueue>,
    signals: Signals,
    config: ProcessorConfig,
    state: State,
    /// Streams whose state in `state` is complete (or that are known not to exist).
    loaded: Set<StreamId>,
    /// Loaded streams other than reference data, oldest first: the cache forgets from the front
    /// once it holds more than [`CACHED_STREAMS`], so memory stays bounded however long it runs.
    evictable: VecDeque<StreamId>,
    /// Streams known to exist in the store, taken at the first step. A stream in neither
    /// set is assumed not to exist: creating it is then guarded by its version (a stream someone else
    /// created makes the commit conflict), and a rejection for something unknown is confirmed with the
    /// store before it is final.
    exists: Set<u64>,
    /// Whether `exists` has been taken from the store yet.
    warmed: bool,
}

/// How many times the slow path decides a chunk again after a conflict before it gives the batch back
/// to the queue. With several processors sharing a store, conflicts are an ordinary event (another
/// process appended to a stream this one had cached), not an error: a chunk can meet a few of them in a
/// row, each reloading what it names, and from the second one on everything the chunk read is reloaded
/// (see [`Processor::commit_with_retries`]), so only a competitor committing to the same streams again
/// within each retry's short window can use these up.
const CONFLICT_RETRIES: usize = 16;

impl Processor {
    pub fn new(
        store: Arc<dyn EventStore>,
        queue: Arc<dyn CommandQueue>,
        signals: Signals,
        config: ProcessorConfig,
    ) -> Self {
        Self {
            store,
            queue,
            signals,
            config,
            state: State::default(),
            loaded: Set::default(),
            evictable: VecDeque::new(),
            exists: Set::default(),
            warmed: false,
        }
    }

    /// Runs until `shutdown` turns true, finishing the batch in hand before it returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        let mut cadence = Cadence::new(self.config.min_step_interval);
        while !*shutdown.borrow() {
            let started = cadence.wait(&mut shutdown).await;
            match self.step(Duration::from_millis(200)).await {
                Ok(report) => {
                    backoff = Duration::from_millis(50);
                    cadence.ran(started, report.received, self.config.batch_size);
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "processor step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("processor stopped");
    }

    /// Takes one batch (waiting up to `wait` for the first message) and handles it completely: decided,
    /// committed and acked. On a storage error the batch stays unacked and is redelivered.
    pub async fn step(&mut self, wait: Duration) -> Result<StepReport, Error> {
        if !self.warmed {
            self.exists = self
                .store
                .stream_ids()
                .await?
                .iter()
                .map(stream_key)
                .collect();
            self.warmed = true;
        }
        let deliveries = self.queue.receive(self.config.batch_size, wait).await?;
        if deliveries.is_empty() {
            return Ok(StepReport::default());
        }
        crate::metrics::batch_received(deliveries.len());
        let mut report = StepReport {
            received: deliveries.len(),
            ..StepReport::default()
        };
        let mut settled: HashSet<u64> = HashSet::with_capacity(deliveries.len());
        if let Err(e) = self.run_batch(&deliveries, &mut report, &mut settled).await {
            // Hand back what is neither acked nor nacked, so it is retried (with back-off, and
            // dead-lettered after the queue's bounded number of deliveries) instead of staying in flight.
            for d in deliveries.iter().filter(|d| !settled.contains(&d.tag)) {
                if let Err(nack) = self
                    .queue
                    .nack(
                        d.tag,
                        &format!("processing failed: {e}"),
                        self.config.retry_after,
                    )
                    .await
                {
                    tracing::warn!(error = %nack, message_id = %d.message_id, "could not hand a message back");
                }
            }
            return Err(e);
        }
        Ok(report)
    }

    /// Decides, commits and acks one batch from the queue (see [`Processor::step`]).
    async fn run_batch(
        &mut self,
        deliveries: &[Delivery],
        report: &mut StepReport,
        settled: &mut HashSet<u64>,
    ) -> Result<(), Error> {
        // Pipelined group commit: while chunk k is being committed, chunk k+1 is decoded and decided on
        // top of k's effects; k+1 is only sent once k has committed, and each chunk is acked as soon as
        // it has committed. A failed commit drops both from the cache and the rest of the batch is
        // decided again, one chunk at a time, after reloading.
        let size = self.config.commit_size.max(1);
        let delivered: Vec<&[Delivery]> = deliveries.chunks(size).collect();
        let mut decoded: Vec<Vec<(&Delivery, CommandEnvelope)>> =
            Vec::with_capacity(delivered.len());
        let mut in_flight: Option<(usize, InFlight)> = None;
        let mut failed_at: Option<usize> = None;
        let (mut deciding, mut waiting) = (Duration::ZERO, Duration::ZERO);
        for (k, chunk) in delivered.iter().enumerate() {
            let t = std::time::Instant::now();
            decoded.push(self.decode(chunk, report, settled).await?);
            let prepared = self.prepare(&decoded[k], false).await?;
            deciding += t.elapsed();
            let t = std::time::Instant::now();
            if let Some((j, flight)) = in_flight.take() {
                if !self.land(flight, &prepared.touched, report).await {
                    failed_at = Some(j);
                    break;
                }
                self.ack(&decoded[j], settled).await?;
            }
            waiting += t.elapsed();
            in_flight = Some((k, self.send(prepared)));
        }
        let t = std::time::Instant::now();
        if failed_at.is_none()
            && let Some((j, flight)) = in_flight.take()
        {
            if self.land(flight, &Set::default(), report).await {
                self.ack(&decoded[j], settled).await?;
            } else {
                failed_at = Some(j);
            }
        }
        waiting += t.elapsed();
        tracing::debug!(commands = deliveries.len(), ?deciding, ?waiting, "batch");
        if let Some(first_failed) = failed_at {
            for chunk in &delivered[decoded.len()..] {
                decoded.push(self.decode(chunk, report, settled).await?);
            }
            for chunk in &decoded[first_failed..] {
                self.commit_with_retries(chunk, report).await?;
                self.ack(chunk, settled).await?;
            }
        }
        Ok(())
    }

    /// Decodes a chunk's envelopes; an undecodable message is nacked (and dead-lettered in the end).
    async fn decode<'d>(
        &self,
        deliveries: &'d [Delivery],
        report: &mut StepReport,
        settled: &mut HashSet<u64>,
    ) -> Result<Vec<(&'d Delivery, CommandEnvelope)>, Error> {
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match CommandEnvelope::decode(&d.payload) {
                Ok(envelope) => out.push((d, envelope)),
                Err(e) => {
                    report.poison += 1;
                    tracing::warn!(message_id = %d.message_id, error = %e, "undecodable command message");
                    settled.insert(d.tag);
                    self.queue
                        .nack(
                            d.tag,
                            &format!("undecodable command: {e}"),
                            self.config.retry_after,
                        )
                        .await?;
                }
            }
        }
        Ok(out)
    }

    async fn ack(
        &self,
        chunk: &[(&Delivery, CommandEnvelope)],
        settled: &mut HashSet<u64>,
    ) -> Result<(), Error> {
        let tags: Vec<u64> = chunk.iter().map(|(d, _)| d.tag).collect();
        self.queue.ack(&tags).await?;
        settled.extend(tags);
        Ok(())
    }

    /// Decides a chunk sequentially with retries on conflict (the slow path after a failed commit).
    async fn commit_with_retries(
        &mut self,
        chunk: &[(&Delivery, CommandEnvelope)],
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            let prepared = self.prepare(chunk, true).await?;
            let touched = prepared.touched.clone();
            let counts = prepared.counts;
            let outcomes = prepared.outcomes;
            // Kept only on this slow path, in case a second conflict calls for reloading all of them.
            let reads: Vec<StreamId> = prepared
                .batch
                .as_ref()
                .map(|b| b.reads.iter().map(|(s, _)| s.clone()).collect())
                .unwrap_or_default();
            let result = match prepared.batch {
                Some(batch) => timed_commit(self.store.as_ref(), batch).await,
                None => Ok(Vec::new()),
            };
            match result {
                Ok(positions) => {
                    self.committed(&positions, touched);
                    self.signals
                        .events_recorded(positions.into_iter().zip(prepared.events).collect());
                    report.add(&counts);
                    outcomes.record();
                    return Ok(());
                }
                Err(e) => {
                    self.rolled_back(&touched);
                    self.forget_conflicting(&e);
                    if attempt > 0 && matches!(e, Error::Conflict { .. }) {
                        // A conflict names one stream only. If the cache was stale in several places
                        // (another processor served these streams meanwhile), finding them one per
                        // attempt could use up the retries; reloading all the chunk read ends that.
                        for s in &reads {
                            self.forget(s);
                        }
                    }
                    if !matches!(e, Error::Conflict { .. } | Error::AlreadyDecided { .. })
                        || attempt >= CONFLICT_RETRIES
                    {
                        return Err(e);
                    }
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "commit conflict; reloading and deciding again");
                }
            }
        }
    }

    /// Starts committing a prepared chunk in the background.
    fn send(&self, prepared: Prepared) -> InFlight {
        let store = self.store.clone();
        let handle = prepared
            .batch
            .map(|batch| tokio::spawn(async move { timed_commit(store.as_ref(), batch).await }));
        InFlight {
            handle,
            events: prepared.events,
            touched: prepared.touched,
            counts: prepared.counts,
            outcomes: prepared.outcomes,
        }
    }

    /// Waits for a chunk's commit. On failure, forgets what it and `also` (decided on top of it) touched.
    async fn land(
        &mut self,
        flight: InFlight,
        also: &Set<StreamId>,
        report: &mut StepReport,
    ) -> bool {
        let result = match flight.handle {
            None => Ok(Vec::new()),
            Some(handle) => handle
                .await
                .unwrap_or_else(|e| Err(Error::Unavailable(format!("commit task failed: {e}")))),
        };
        match result {
            Ok(positions) => {
                self.committed(&positions, flight.touched);
                self.signals
                    .events_recorded(positions.into_iter().zip(flight.events).collect());
                report.add(&flight.counts);
                flight.outcomes.record();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "pipelined commit failed; deciding the rest again");
                self.rolled_back(&flight.touched);
                self.rolled_back(also);
                self.forget_conflicting(&e);
                false
            }
        }
    }

    fn committed(&mut self, positions: &[u64], touched: Set<StreamId>) {
        if let Some(last) = positions.last() {
            self.signals.events_committed(*last);
        }
        self.signals.outcomes_committed();
        // `prepare` already marked them loaded; now they also exist in the store.
        self.exists.extend(touched.iter().map(stream_key));
        self.evict();
    }

    /// The cache ran ahead of the store: drop what was touched so it is read again.
    fn rolled_back(&mut self, touched: &Set<StreamId>) {
        for s in touched {
            self.forget(s);
        }
    }

    /// A conflict says the cached state of the stream it names is stale: another processor appended to
    /// it (or created it) since it was read. That stream may be one the batch only read, which
    /// `rolled_back` does not cover, so it is dropped too and read again before the next decision.
    fn forget_conflicting(&mut self, e: &Error) {
        if let Error::Conflict { stream } = e {
            self.forget(&StreamId::from_stored(stream.as_str()));
        }
    }

    /// Drops a stream from the cache. It is marked as existing so that the next `load` reads it from
    /// the store rather than assuming it absent (if it is absent after all, the read finds nothing).
    fn forget(&mut self, s: &StreamId) {
        self.state.forget(s);
        self.loaded.remove(s);
        self.exists.insert(stream_key(s));
    }

    /// Marks a stream's cached state complete.
    fn mark_loaded(&mut self, s: &StreamId) {
        if self.loaded.insert(s.clone()) && !is_reference(s) {
            self.evictable.push_back(s.clone());
        }
    }

    /// Forgets the oldest streams when the cache holds too many. A forgotten stream is read from the
    /// store again when next needed; one that a batch still in flight touched is then stale, which
    /// its version check turns into a conflict and a fresh decision, never a wrong one.
    fn evict(&mut self) {
        let cap = self.config.cached_streams.max(1);
        if self.evictable.len() <= cap {
            return;
        }
        while self.evictable.len() > cap * 3 / 4 {
            let Some(s) = self.evictable.pop_front() else {
                break;
            };
            if self.loaded.contains(&s) {
                self.forget(&s);
            }
        }
    }

    /// Decides a chunk against the cache (which then includes its effects) and builds its commit.
    async fn prepare(
        &mut self,
        commands: &[(&Delivery, CommandEnvelope)],
        check_all: bool,
    ) -> Result<Prepared, Error> {
        let mut counts = StepReport::default();
        let mut outcomes = Outcomes::default();
        let to_check: Vec<Uuid> = commands
            .iter()
            .filter(|(d, _)| check_all || d.redeliveries > 0)
            .map(|(_, c)| c.command_id)
            .collect();
        let decided: HashSet<Uuid> = if to_check.is_empty() {
            HashSet::new()
        } else {
            self.store.decided(&to_check).await?.into_iter().collect()
        };
        let mut seen = HashSet::with_capacity(commands.len());
        let todo: Vec<&CommandEnvelope> = commands
            .iter()
            .map(|(_, c)| c)
            .filter(|c| !decided.contains(&c.command_id) && seen.insert(c.command_id))
            .collect();
        counts.duplicates = commands.len() - todo.len();

        let read_by: Vec<Vec<StreamId>> = todo.iter().map(|c| c.command.streams_read()).collect();
        self.load(read_by.iter().flatten(), false).await?;
        let dependent: Vec<StreamId> = todo
            .iter()
            .flat_map(|c| c.command.dependent_streams(&self.state))
            .collect();
        self.load(&dependent, false).await?;

        // Adding a SignedDuration fails only past the end of time, when the clock was wrong anyway.
        let now = Timestamp::now()
            .saturating_add(self.config.clock_skew)
            .unwrap_or_else(|_| Timestamp::now());
        let mut batch = CommitBatch::default();
        let mut decided_events = Vec::new();
        let mut touched: Set<StreamId> = Set::default();
        // Every stream a decision read, at the version it read it at. When several decisions read a
        // stream, the first one's version is kept: a later one sees another version only if the chunk
        // appended to the stream (it is then not checked, see below) or a confirmation read it from the
        // store, in which case the earlier decision was taken on stale state and must not commit.
        let mut reads: Map<StreamId, u64> = Map::default();
        for (envelope, read) in todo.iter().zip(&read_by) {
            let mut decision = decide(&self.state, &envelope.command, self.config.policy);
            if let Err(r) = &decision
                && is_about_absence(r.code)
            {
                // Absence was assumed from the start-up snapshot; ask the store before rejecting.
                if self.load(read, true).await? {
                    let dependent = envelope.command.dependent_streams(&self.state);
                    self.load(&dependent, true).await?;
                    decision = decide(&self.state, &envelope.command, self.config.policy);
                }
            }
            // What the final decision was based on, before its own events move the versions. The cache
            // may be stale (another processor may have appended since), and a rejection or a lookup
            // appends nothing that a version could catch: the commit checks these versions instead.
            for s in read {
                // Cloned only the first time: most commands read streams an earlier one already read.
                if !reads.contains_key(s) {
                    reads.insert(s.clone(), self.state.version(s));
                }
            }
            for s in envelope.command.dependent_streams(&self.state) {
                let version = self.state.version(&s);
                reads.entry(s).or_insert(version);
            }
            let decision = match decision {
                Ok(events) => {
                    let occurred_at = envelope
                        .command
                        .occurred_at()
                        .unwrap_or(envelope.received_at);
                    for event in events {
                        let streams: Vec<(StreamId, u64)> = event
                            .streams()
                            .into_iter()
                            .map(|s| {
                                let v = self.state.version(&s) + 1;
                                (s, v)
                            })
                            .collect();
                        for (s, v) in &streams {
                            self.state.apply_to(s, *v, &event);
                            // Its state here is complete (if it was absent, this event creates it).
                            if !self.loaded.contains(s) {
                                self.mark_loaded(s);
                            }
                            if !touched.contains(s) {
                                touched.insert(s.clone());
                            }
                        }
                        batch.events.push(NewEvent {
                            event_type: event.event_type().to_owned(),
                            schema_version: event.schema_version(),
                            occurred_at,
                            recorded_at: now,
                            data: event.encode(),
                            metadata: EventMetadata {
                                command_id: envelope.command_id,
                                correlation_id: envelope.correlation_id.clone(),
                                principal: envelope.principal.key_id.clone(),
                            },
                            streams,
                        });
                        decided_events.push(event);
                    }
                    counts.processed += 1;
                    outcomes.processed(&envelope.command);
                    Decision::Processed {
                        last_event: batch.events.len() - 1,
                    }
                }
                Err(rejection) => {
                    counts.rejected += 1;
                    outcomes.rejected(&envelope.command, rejection.code);
                    Decision::Rejected(rejection)
                }
            };
            batch.outcomes.push(OutcomeRecord {
                command_id: envelope.command_id,
                decision,
                accepted: Some(AcceptedCommand::of(envelope)),
            });
        }
        // Streams the chunk appends to are guarded by the versions it appends at (which build on what
        // was read), so checking them again would only cost time. Sorted, so that what a commit checks
        // does not depend on hash order: the same stale batch always names the same stream, and a
        // backend that locks the streams it checks takes the locks in one order.
        batch.reads = reads
            .into_iter()
            .filter(|(s, _)| !touched.contains(s))
            .collect();
        batch.reads.sort_unstable();
        Ok(Prepared {
            batch: (!batch.outcomes.is_empty()).then_some(batch),
            events: decided_events,
            touched,
            counts,
            outcomes,
        })
    }

    /// Makes sure the state of every stream is complete. Streams not known to exist are assumed absent
    /// unless `confirm` asks the store. Returns whether anything was read.
    async fn load<'a>(
        &mut self,
        streams: impl IntoIterator<Item = &'a StreamId>,
        confirm: bool,
    ) -> Result<bool, Error> {
        let mut missing: Vec<StreamId> = streams
            .into_iter()
            .filter(|s| {
                !self.loaded.contains(*s) && (confirm || self.exists.contains(&stream_key(s)))
            })
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(false);
        }
        for chunk in missing.chunks(500) {
            let events = self.store.read_streams(chunk).await?;
            for (stream, version, recorded) in events {
                let event = recorded
                    .decode()
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", recorded.position)))?;
                self.state.apply_to(&stream, version, &event);
                self.exists.insert(stream_key(&stream));
            }
        }
        for s in &missing {
            self.mark_loaded(s);
        }
        Ok(true)
    }

    /// The cached aggregate state (for tests and diagnostics).
    pub fn state(&self) -> &State {
        &self.state
    }
}

/// Commits a batch, recording how long the append took.
async fn timed_commit(store: &dyn EventStore, batch: CommitBatch) -> Result<Vec<u64>, Error> {
    let started = std::time::Instant::now();
    let result = store.commit(batch).await;
    crate::metrics::appended(started.elapsed());
    result
}

/// Rejections that say something does not exist: only final once the store has confirmed it.
/// The default of [`ProcessorConfig::cached_streams`]: about 20 MB of sales. A sale older than this is
/// read from the store when a return or void names it.
pub const CACHED_STREAMS: usize = 50_000;

/// Streams known to exist, as 64-bit hashes of their ids: a million streams take 16 MB, not the
/// hundred-odd their ids would. A collision only makes the processor read a stream it could have
/// assumed absent, and the read finds nothing.
fn stream_key(s: &StreamId) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7a11).hash_one(s.as_str())
}

/// Suppliers, stores and items: few, and read by nearly every command, so never evicted.
fn is_reference(s: &StreamId) -> bool {
    let s = s.as_str();
    s.starts_with("item-") || s.starts_with("store-") || s.starts_with("supplier-")
}

fn is_about_absence(code: RejectionCode) -> bool {
    matches!(
        code,
        RejectionCode::UnknownStore
            | RejectionCode::UnknownItem
            | RejectionCode::UnknownSupplier
            | RejectionCode::UnknownSale
            | RejectionCode::UnknownDelivery
    )
}

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;
