//! In-memory ports for the processor's tests: an [`EventStore`] and a [`CommandQueue`] that keep the
//! contracts of [`crate::ports`] (global positions, per-stream versions, the checks of a commit, per
//! partition order, ack and nack), so the processor can be tested without a database or a broker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use tally_domain::{Event, RejectionCode, StreamId};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::model::{
    CommitBatch, DeadLetter, Decision, Delivery, EventMetadata, NewEvent, QueueMessage,
    RecordedEvent,
};
use crate::ports::{CommandQueue, Error, EventStore, Result};

/// No test panics while holding one of these locks, so a poisoned one still holds a whole state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn conflict(stream: &StreamId) -> Error {
    Error::Conflict {
        stream: stream.to_string(),
    }
}

/// How a command ended, as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processed { position: u64 },
    Rejected(RejectionCode),
}

#[derive(Default)]
pub struct MemoryStore {
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    /// The log in global order: the event at position `p` is at index `p - 1`, with its primary
    /// stream and its version there.
    events: Vec<RecordedEvent>,
    /// Each stream's events as positions, in version order: version `v` is at index `v - 1`.
    streams: HashMap<StreamId, Vec<u64>>,
    outcomes: HashMap<Uuid, Outcome>,
}

impl Log {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |p| p.len() as u64)
    }

    /// Everything that makes a batch fail, checked before anything of it is written.
    fn check(&self, batch: &CommitBatch) -> Result<()> {
        for (stream, read_at) in &batch.reads {
            if self.version(stream) != *read_at {
                return Err(conflict(stream));
            }
        }
        let mut next: HashMap<&StreamId, u64> = HashMap::new();
        for event in &batch.events {
            if event.streams.is_empty() {
                return Err(Error::Corrupt("an event must belong to a stream".into()));
            }
            for (stream, version) in &event.streams {
                let current = next.entry(stream).or_insert_with(|| self.version(stream));
                if *version <= *current {
                    return Err(conflict(stream));
                }
                if *version > *current + 1 {
                    return Err(Error::Corrupt(format!(
                        "{stream} is at version {current}, an event skips to {version}"
                    )));
                }
                *current = *version;
            }
        }
        let mut seen = HashSet::new();
        for outcome in &batch.outcomes {
            if self.outcomes.contains_key(&outcome.command_id) || !seen.insert(outcome.command_id) {
                return Err(Error::AlreadyDecided {
                    command_id: outcome.command_id,
                });
            }
            if let Decision::Processed { last_event } = outcome.decision
                && last_event >= batch.events.len()
            {
                return Err(Error::Corrupt(format!(
                    "outcome names event {last_event} of {}",
                    batch.events.len()
                )));
            }
        }
        Ok(())
    }

    /// Writes a batch that [`Log::check`] passed.
    fn append(&mut self, batch: CommitBatch) -> Vec<u64> {
        let mut positions = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            let position = self.events.len() as u64 + 1;
            let recorded_at = self
                .events
                .last()
                .map_or(event.recorded_at, |e| e.recorded_at.max(event.recorded_at));
            for (stream, _) in &event.streams {
                self.streams
                    .entry(stream.clone())
                    .or_default()
                    .push(position);
            }
            let (stream_id, version) = event.streams.into_iter().next().unzip();
            self.events.push(RecordedEvent {
                position,
                stream_id: stream_id.unwrap_or_else(|| StreamId::from_stored("")),
                version: version.unwrap_or(0),
                event_type: event.event_type,
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                recorded_at,
                data: event.data,
                metadata: event.metadata,
            });
            positions.push(position);
        }
        for outcome in batch.outcomes {
            let recorded = match outcome.decision {
                Decision::Processed { last_event } => Outcome::Processed {
                    position: positions[last_event],
                },
                Decision::Rejected(r) => Outcome::Rejected(r.code),
            };
            self.outcomes.insert(outcome.command_id, recorded);
        }
        positions
    }

    fn stream(&self, stream: &StreamId) -> Vec<RecordedEvent> {
        let positions = self.streams.get(stream).map_or(&[][..], Vec::as_slice);
        (1..)
            .zip(positions)
            .map(|(version, p)| RecordedEvent {
                stream_id: stream.clone(),
                version,
                ..self.events[*p as usize - 1].clone()
            })
            .collect()
    }
}

impl MemoryStore {
    /// What the store recorded of a command's outcome.
    pub fn outcome(&self, command_id: Uuid) -> Option<Outcome> {
        lock(&self.log).outcomes.get(&command_id).cloned()
    }

    /// How many events of the log a command appended.
    pub fn events_of(&self, command_id: Uuid) -> usize {
        let log = lock(&self.log);
        log.events
            .iter()
            .filter(|e| e.metadata.command_id == command_id)
            .count()
    }

    /// Appends `event` at the next version of each of its streams, as another processor would.
    pub fn append(&self, event: &Event) -> Result<()> {
        let mut log = lock(&self.log);
        let streams = event
            .streams()
            .into_iter()
            .map(|s| {
                let version = log.version(&s) + 1;
                (s, version)
            })
            .collect();
        let batch = CommitBatch {
            events: vec![NewEvent {
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                occurred_at: Timestamp::now(),
                recorded_at: Timestamp::now(),
                data: event.encode(),
                metadata: EventMetadata {
                    command_id: Uuid::now_v7(),
                    correlation_id: None,
                    principal: "another-processor".to_owned(),
                },
                streams,
            }],
            ..CommitBatch::default()
        };
        log.check(&batch)?;
        log.append(batch);
        Ok(())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn commit(&self, batch: CommitBatch) -> Result<Vec<u64>> {
        let mut log = lock(&self.log);
        log.check(&batch)?;
        Ok(log.append(batch))
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let log = lock(&self.log);
        let from = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(log.events.iter().skip(from).take(limit).cloned().collect())
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>> {
        let log = lock(&self.log);
        Ok(streams
            .iter()
            .flat_map(|s| log.stream(s))
            .map(|e| (e.stream_id.clone(), e.version, e))
            .collect())
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        Ok(lock(&self.log).stream(stream))
    }

    async fn stream_ids(&self) -> Result<Vec<StreamId>> {
        Ok(lock(&self.log).streams.keys().cloned().collect())
    }

    async fn head(&self) -> Result<u64> {
        Ok(lock(&self.log).events.len() as u64)
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64> {
        let log = lock(&self.log);
        Ok(log.events.partition_point(|e| e.recorded_at <= at) as u64)
    }

    async fn decided(&self, command_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let log = lock(&self.log);
        Ok(command_ids
            .iter()
            .filter(|id| log.outcomes.contains_key(id))
            .copied()
            .collect())
    }
}

/// A message waiting on the queue (or, with its tag, in flight).
#[derive(Debug, Clone)]
struct Waiting {
    /// Enqueue order: a nacked message goes back to its place in it.
    seq: u64,
    message: QueueMessage,
    redeliveries: u32,
    due: Instant,
}

#[derive(Default)]
struct Messages {
    next_seq: u64,
    next_tag: u64,
    /// By `seq`.
    waiting: Vec<Waiting>,
    in_flight: HashMap<u64, Waiting>,
    dead: Vec<DeadLetter>,
}

impl Messages {
    fn put_back(&mut self, w: Waiting) {
        let at = self.waiting.partition_point(|o| o.seq < w.seq);
        self.waiting.insert(at, w);
    }

    /// Hands out up to `max` due messages, in order, from partitions with nothing in flight; with the
    /// earliest time a message not yet due becomes due.
    fn take(&mut self, max: usize, now: Instant) -> (Vec<Delivery>, Option<Instant>) {
        let mut blocked: HashSet<String> = self
            .in_flight
            .values()
            .map(|w| w.message.partition_key.clone())
            .collect();
        let (mut out, mut next_due, mut i) = (Vec::new(), None::<Instant>, 0);
        while i < self.waiting.len() && out.len() < max {
            let (w, partition) = (&self.waiting[i], &self.waiting[i].message.partition_key);
            if blocked.contains(partition) || w.due > now {
                if w.due > now {
                    next_due = Some(next_due.map_or(w.due, |d| d.min(w.due)));
                    // What comes after it in its partition waits for it.
                    blocked.insert(partition.clone());
                }
                i += 1;
                continue;
            }
            let w = self.waiting.remove(i);
            self.next_tag += 1;
            out.push(Delivery {
                tag: self.next_tag,
                message_id: w.message.message_id,
                partition_key: w.message.partition_key.clone(),
                payload: w.message.payload.clone(),
                redeliveries: w.redeliveries,
            });
            self.in_flight.insert(self.next_tag, w);
        }
        (out, next_due)
    }
}

#[derive(Default)]
pub struct MemoryQueue {
    messages: Mutex<Messages>,
    /// Something may have become deliverable.
    wake: Notify,
    /// A message nacked after this many deliveries is dead-lettered.
    max_deliveries: u32,
    /// Messages acked so far.
    acked: AtomicUsize,
    /// How many of the next acks fail (acking nothing), as when the broker went away.
    failing_acks: AtomicUsize,
}

impl MemoryQueue {
    pub fn new(max_deliveries: u32) -> Self {
        Self {
            max_deliveries,
            ..Self::default()
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    pub fn fail_acks(&self, n: usize) {
        self.failing_acks.store(n, Ordering::SeqCst);
    }

    fn push(&self, message: QueueMessage) {
        let mut m = lock(&self.messages);
        m.next_seq += 1;
        let (seq, redeliveries, due) = (m.next_seq, 0, Instant::now());
        m.waiting.push(Waiting {
            seq,
            message,
            redeliveries,
            due,
        });
    }
}

#[async_trait]
impl CommandQueue for MemoryQueue {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        for message in messages {
            self.push(message);
        }
        self.wake.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            // Woken by any `notify_waiters` from its creation on, polled or not.
            let notified = self.wake.notified();
            let now = Instant::now();
            let (got, next_due) = lock(&self.messages).take(max, now);
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let until = next_due.map_or(deadline, |d| d.min(deadline));
            let _woken_or_due = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn ack(&self, tags: &[u64]) -> Result<()> {
        let failing = self
            .failing_acks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Error::Unavailable("the broker went away".into()));
        }
        let mut m = lock(&self.messages);
        let acked = tags.iter().filter(|t| m.in_flight.remove(t).is_some());
        self.acked.fetch_add(acked.count(), Ordering::SeqCst);
        drop(m);
        self.wake.notify_waiters();
        Ok(())
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let mut m = lock(&self.messages);
        let Some(w) = m.in_flight.remove(&tag) else {
            return Ok(());
        };
        if w.redeliveries + 1 >= self.max_deliveries {
            m.dead.push(DeadLetter {
                message_id: w.message.message_id,
                partition_key: w.message.partition_key,
                payload: w.message.payload,
                reason: reason.to_owned(),
                failed_at: Timestamp::now(),
            });
        } else {
            m.put_back(Waiting {
                redeliveries: w.redeliveries + 1,
                due: Instant::now() + retry_after,
                ..w
            });
        }
        drop(m);
        self.wake.notify_waiters();
        Ok(())
    }

    async fn depth(&self) -> Result<u64> {
        let m = lock(&self.messages);
        Ok((m.waiting.len() + m.in_flight.len()) as u64)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.messages).dead.clone())
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let mut m = lock(&self.messages);
        let Some(at) = m.dead.iter().position(|d| d.message_id == message_id) else {
            return Ok(false);
        };
        let letter = m.dead.remove(at);
        drop(m);
        self.push(QueueMessage {
            message_id: letter.message_id,
            partition_key: letter.partition_key,
            payload: letter.payload,
        });
        self.wake.notify_waiters();
        Ok(true)
    }
}

/// What [`Watched`] saw, in order: the streams of each read, and each commit's start and end with
/// how many messages the queue had acked by then.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Read(Vec<StreamId>),
    CommitStarted { commit: usize, acked: usize },
    CommitEnded { commit: usize, acked: usize },
}

/// The in-memory store as a processor under test sees it. It traces reads and commits ([`Seen`]),
/// can hold the `n`-th commit until a stream is read, can let another writer append just before the
/// `n`-th commit, and keeps what each commit came to: the command ids it decided, or its error.
#[derive(Default)]
pub struct Watched {
    pub inner: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    trace: Mutex<Vec<Seen>>,
    commits: AtomicUsize,
    holds: Mutex<HashMap<usize, (StreamId, Arc<Notify>)>>,
    others: Mutex<HashMap<usize, Event>>,
    results: Mutex<Vec<Result<Vec<Uuid>>>>,
}

impl Watched {
    pub fn new(inner: Arc<MemoryStore>, queue: Arc<MemoryQueue>) -> Self {
        Self {
            inner,
            queue,
            ..Self::default()
        }
    }
    /// Commit `n` (counted from 0) does not start writing before `stream` was read.
    pub fn hold(&self, n: usize, stream: StreamId) {
        lock(&self.holds).insert(n, (stream, Arc::new(Notify::new())));
    }
    /// Another processor commits `event` just before commit `n` (counted from 0).
    pub fn another_writer_first(&self, n: usize, event: Event) {
        lock(&self.others).insert(n, event);
    }
    pub fn results(&self) -> Vec<Result<Vec<Uuid>>> {
        lock(&self.results).clone()
    }
    pub fn trace(&self) -> Vec<Seen> {
        lock(&self.trace).clone()
    }
}

#[async_trait]
impl EventStore for Watched {
    async fn commit(&self, batch: CommitBatch) -> Result<Vec<u64>> {
        let commit = self.commits.fetch_add(1, Ordering::SeqCst);
        let acked = self.queue.acked();
        lock(&self.trace).push(Seen::CommitStarted { commit, acked });
        let gate = lock(&self.holds).get(&commit).map(|(_, g)| g.clone());
        if let Some(gate) = gate {
            gate.notified().await;
        }
        let other = lock(&self.others).remove(&commit);
        if let Some(event) = other {
            self.inner.append(&event)?;
        }
        let ids = batch.outcomes.iter().map(|o| o.command_id).collect();
        let result = self.inner.commit(batch).await;
        lock(&self.results).push(result.as_ref().map(|_| ids).map_err(Clone::clone));
        let acked = self.queue.acked();
        lock(&self.trace).push(Seen::CommitEnded { commit, acked });
        result
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>> {
        lock(&self.trace).push(Seen::Read(streams.to_vec()));
        for (stream, gate) in lock(&self.holds).values() {
            if streams.contains(stream) {
                gate.notify_one();
            }
        }
        self.inner.read_streams(streams).await
    }
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream).await
    }
    async fn stream_ids(&self) -> Result<Vec<StreamId>> {
        self.inner.stream_ids().await
    }
    async fn head(&self) -> Result<u64> {
        self.inner.head().await
    }
    async fn position_at(&self, at: Timestamp) -> Result<u64> {
        self.inner.position_at(at).await
    }
    async fn decided(&self, command_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        self.inner.decided(command_ids).await
    }
}
