//! The ports: what the processor, projectors, queries and the gateway need from storage and messaging.
//! Each adapter (SQLite, PostgreSQL, a broker) implements them with exactly the behaviour documented
//! here, which the conformance suites in [`crate::conformance`] check.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use tally_domain::StreamId;
use tally_domain::values::{ItemId, StoreId, SupplierId};
use uuid::Uuid;

use crate::model::{
    ApiKey, CommandEnvelope, CommandRecord, CommitBatch, DeadLetter, Delivery, EventPayload,
    KeyUsage, QueueMessage, RecordedEvent,
};
use crate::readmodel::journal::StoredChunk;
use crate::readmodel::{DayFigures, ProjectionUpdate, SupplierDay};
use crate::rows::{
    DateRange, Dated, ItemSales, Positioned, StockRow, StoreSales, TopItem, TopItemsQuery,
};

/// A storage failure, translated into what it means for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An expected stream version was stale: someone appended to `stream` first. Nothing was written.
    #[error("version conflict on stream {stream}")]
    Conflict { stream: String },
    /// A command of the batch already has an outcome. Nothing was written.
    #[error("command {command_id} already has an outcome")]
    AlreadyDecided { command_id: Uuid },
    /// A projection's checkpoint was not where the update expected it. Nothing was written.
    #[error("checkpoint of {projection} is not at {expected}")]
    CheckpointMoved { projection: String, expected: u64 },
    /// The backend cannot be reached or is busy; the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The append-only event log with per-stream versions and one global order.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends the batch's events and records its outcomes atomically, returning the global position of
    /// each event in order. Positions grow strictly with commit order and are never reused.
    ///
    /// The store assigns each event's `recorded_at`: the later of the event's own `recorded_at` (the
    /// appending process's clock) and the `recorded_at` of the event before it in the global order, so
    /// it never decreases along the log, whatever the clocks of several appending processes say.
    ///
    /// Fails with [`Error::Conflict`] naming the stream when any `(stream, version)` an event appends
    /// is already taken (a stale expected version), or when a stream of [`CommitBatch::reads`] is no
    /// longer at the version it was read at (0: it did not exist, so it must still not exist); and with
    /// [`Error::AlreadyDecided`] when a command already has an outcome. In every case nothing of the
    /// batch is written. The read versions must hold atomically with the appends: no other commit may
    /// append to a read stream between the check and this commit.
    async fn commit(&self, batch: CommitBatch) -> Result<Vec<u64>>;

    /// Up to `limit` events with position > `after`, in global order, without gaps in what is committed.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// What [`EventStore::read_all`] returns, as [`EventPayload`]s: the same events, without their
    /// streams and metadata. The projector reads the log this way.
    async fn read_payloads(&self, after: u64, limit: usize) -> Result<Vec<EventPayload>> {
        let events = self.read_all(after, limit).await?;
        Ok(events.into_iter().map(EventPayload::from).collect())
    }

    /// Every event of the given streams: for each, `(stream, version in that stream, event)`, in version
    /// order per stream. Streams that do not exist are simply absent.
    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>>;

    /// The events of one stream in version order, each with its version in that stream.
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>>;

    /// Every stream id that has at least one event. The processor takes this once at start-up, so that
    /// it reads a stream from storage only when the stream exists.
    async fn stream_ids(&self) -> Result<Vec<StreamId>>;

    /// The position of the last committed event (0 when the log is empty).
    async fn head(&self) -> Result<u64>;

    /// The last position whose event was recorded at or before `at` (0 when none was). `recorded_at`
    /// never decreases along the global order (the store assigns it at append: see
    /// [`EventStore::commit`]), so the events at or before the answer are exactly those recorded at or
    /// before `at`: a prefix of the log.
    async fn position_at(&self, at: Timestamp) -> Result<u64>;

    /// The events of one stream after version `after` with a global position at or before `upto`,
    /// in version order (each with its version in that stream, as [`EventStore::read_stream`]).
    /// Time travel reads a store's stream this way, from where the journal's chunks end.
    async fn read_stream_after(
        &self,
        stream: &StreamId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = self.read_stream(stream).await?;
        events.retain(|e| e.version > after && e.position <= upto);
        Ok(events)
    }

    /// The events at these positions, in position order (positions past the head are left out).
    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::with_capacity(positions.len());
        for p in positions {
            out.extend(self.read_all(p.saturating_sub(1), 1).await?);
        }
        out.sort_by_key(|e| e.position);
        out.dedup_by_key(|e| e.position);
        Ok(out)
    }

    /// Which of these commands already have an outcome.
    async fn decided(&self, command_ids: &[Uuid]) -> Result<Vec<Uuid>>;
}

/// What the gateway asks of the intake: make the command durable and record it as accepted.
#[derive(Debug, Clone)]
pub struct Submission {
    pub envelope: CommandEnvelope,
    pub partition_key: String,
    /// `(idempotency key, SHA-256 of the request)`, scoped to the envelope's key id.
    pub idempotency: Option<(String, [u8; 32])>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Durable and queued.
    Accepted { command_id: Uuid },
    /// The same idempotency key with the same request was seen: its first command id.
    Replayed { command_id: Uuid },
    /// The same idempotency key came with a different request.
    KeyReused,
}

/// The gateway's single durable step: when [`Intake::submit`] returns `Accepted`, the command is on the
/// queue and its `accepted` record exists, both durably (fsynced); otherwise neither is.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    async fn submit(&self, submission: Submission) -> Result<Submitted>;
    /// Several submissions in one durable step (each one's result in order).
    async fn submit_many(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>>;
}

/// Commands' statuses, written by the intake (accepted) and by [`EventStore::commit`] (outcomes).
#[async_trait]
pub trait CommandLog: Send + Sync + 'static {
    async fn status(&self, command_id: Uuid) -> Result<Option<CommandRecord>>;
}

/// A durable, at-least-once command queue with per-partition order.
///
/// - A message enqueued is durable when `enqueue` returns.
/// - `receive` hands out messages of one partition in enqueue order. One call may return several
///   messages of a partition (in order; the consumer handles them in order), but a later call never
///   returns a message of a partition while an earlier one is delivered and not yet acked.
/// - A message delivered and neither acked nor nacked (its consumer died) is delivered again.
/// - `nack` puts it back for redelivery after `retry_after`, or dead-letters it once it was delivered
///   `max_deliveries` times.
#[async_trait]
pub trait CommandQueue: Send + Sync + 'static {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()>;
    /// Waits up to `wait` for at least one message, then returns up to `max` of them.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;
    async fn ack(&self, tags: &[u64]) -> Result<()>;
    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()>;
    /// Messages waiting or in flight.
    async fn depth(&self) -> Result<u64>;
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>>;
    /// Puts a dead letter back on the queue; false if there is none with that id.
    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool>;
}

/// Where the projector writes: read-model rows and the checkpoints they reflect.
#[async_trait]
pub trait ProjectionSink: Send + Sync + 'static {
    /// The position each projection has reached.
    async fn checkpoints(&self) -> Result<HashMap<String, u64>>;
    /// Applies the updates and moves their checkpoints in one transaction. Fails with
    /// [`Error::CheckpointMoved`] (writing nothing) when a checkpoint is not at the update's `from`.
    async fn apply(&self, updates: Vec<ProjectionUpdate>) -> Result<()>;
    /// Empties a projection's rows and removes its checkpoint (it reads as 0), for a rebuild in place.
    async fn reset(&self, projection: &str) -> Result<()>;
    /// Starts a shadow version of `projection` ([`crate::readmodel::shadow`]): empty shadow tables
    /// shaped as the serving ones and a shadow checkpoint at 0, replacing any shadow version there
    /// was. The serving version is untouched. From then on, an update whose projection is the shadow
    /// checkpoint's name writes the shadow tables (checked against the shadow checkpoint as any
    /// update is against its own).
    async fn start_rebuild(&self, projection: &str) -> Result<()>;
    /// Swaps the shadow version in, in one transaction: when the serving checkpoint is at or before
    /// the shadow's, the serving rows become the shadow's, the serving checkpoint moves to the
    /// shadow's, and the shadow tables and checkpoint go. Returns that position; `None` (writing
    /// nothing) when the serving version has gone past the shadow, which must catch up first (a
    /// query never sees a model go back). Fails with [`Error::Corrupt`] when there is no shadow
    /// version.
    async fn swap_rebuild(&self, projection: &str) -> Result<Option<u64>>;
    /// Drops a shadow version, tables and checkpoint (a cancelled rebuild); false if there was none.
    async fn cancel_rebuild(&self, projection: &str) -> Result<bool>;
    /// Each store's last journal chunk sealed at or before `upto`, head alone ([`Journal::stock_chunks`]
    /// of every store): where the projector's journal resumes from.
    async fn journal_heads(&self, upto: u64) -> Result<Vec<StoredChunk>>;
    /// Every fault recorded ([`crate::projector::poison`]), by projection, then position.
    async fn faults(&self) -> Result<Vec<crate::projector::poison::Fault>>;
    /// Records a fault, replacing any of the same projection and position.
    async fn record_fault(&self, fault: crate::projector::poison::Fault) -> Result<()>;
    /// Removes a fault and, in the same transaction, applies `update` (checked as [`Self::apply`]
    /// checks it); false (nothing applied) when there is no such fault.
    async fn clear_fault(
        &self,
        projection: &str,
        position: u64,
        update: Option<ProjectionUpdate>,
    ) -> Result<bool>;
}

/// What queries read: the read models as they are now. Every answer comes with the position its
/// read model reflects, read in the same snapshot as its rows; rows whose figures are all zero (a
/// day whose only sale was voided) are left out. Answers as of an earlier moment are folds of the
/// log ([`crate::timetravel`]), not reads of these tables.
#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// The position each projection has reached (what `min_position` waits for).
    async fn checkpoints(&self) -> Result<HashMap<String, u64>>;
    /// A store's stock, by item id.
    async fn inventory(&self, store: &StoreId) -> Result<Positioned<Vec<StockRow>>>;
    /// One item's stock in a store (0 when it never moved).
    async fn inventory_item(&self, store: &StoreId, item: &ItemId) -> Result<Positioned<i64>>;
    /// A store's items with at most `threshold` on hand, by on hand, then item id.
    async fn low_stock(&self, store: &StoreId, threshold: i64)
    -> Result<Positioned<Vec<StockRow>>>;
    /// A store's daily sales over a range of business dates, by date.
    async fn store_daily(
        &self,
        store: &StoreId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<DayFigures>>>>;
    /// Every store's sales on one business date, by store id.
    async fn daily_sales(&self, date: Date) -> Result<Positioned<Vec<StoreSales>>>;
    /// A supplier's daily report over a range of business dates, by date.
    async fn supplier_daily(
        &self,
        supplier: &SupplierId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<SupplierDay>>>>;
    /// One item's daily sales, in one store or summed over every store, by date; with the item's
    /// supplier when it has sold anywhere.
    async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
    ) -> Result<Positioned<ItemSales>>;
    /// The items sold most over a range (in one store, or every store), by units sold, then item id;
    /// with `supplier`, only that supplier's items.
    async fn top_items(&self, query: &TopItemsQuery) -> Result<Positioned<Vec<TopItem>>>;
    /// Every registered store, supplier and item, each by id (the reference read model).
    async fn catalog(&self) -> Result<Positioned<crate::rows::Catalog>>;
}

/// Every row of the read models' tables, for `tally verify` ([`crate::verify`]).
#[async_trait]
pub trait ReadModelRows: Send + Sync + 'static {
    /// Every row of one table (its columns in the table's order: keys, texts, figures), with its
    /// projection's checkpoint read in the same snapshot.
    async fn table_rows(
        &self,
        table: &crate::verify::Table,
    ) -> Result<Positioned<Vec<crate::verify::Row>>>;
}

/// The journal's sealed chunks ([`crate::readmodel::journal`]), which time travel folds.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// The chunks of one store (or every store) whose interval starts before `upto`, by store and
    /// then interval, with the journal's checkpoint (the end of its last sealed interval) read in
    /// the same snapshot. The moves of chunks whose interval ends at or before `heads_upto` are left
    /// out (empty): a reader that needs only their heads does not read them.
    async fn chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
        heads_upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>>;
    /// What a store's stock as of `upto` needs: for each store (or the one), its last chunk whose
    /// interval ends at or before `upto`, head alone (its moves empty), and the chunk whose interval
    /// holds `upto`, with its moves; by store, then interval, with the journal's checkpoint read in
    /// the same snapshot.
    async fn stock_chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>>;
}

/// API keys, stored by the SHA-256 of their secret.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn create(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<()>;
    /// The live (not revoked) key with this hash.
    async fn find(&self, secret_hash: [u8; 32]) -> Result<Option<ApiKey>>;
    async fn list(&self) -> Result<Vec<ApiKey>>;
    /// Revokes a key at once; false if there is no live key with that id.
    async fn revoke(&self, key_id: &str, at: Timestamp) -> Result<bool>;
    /// Adds each record's `requests` and `rejections` to its key's totals and moves the key's
    /// `last_used_at` to the record's when that is later (never back), all in one durable step.
    /// Several records may name one key, and several processes may record for one key: the totals
    /// are the sums. Records of unknown keys are ignored; revoked keys are still counted.
    async fn record_usage(&self, usage: &[KeyUsage]) -> Result<()>;
    /// The usage totals of every stored key, revoked ones included (a key never used: zero counts
    /// and no `last_used_at`).
    async fn usage(&self) -> Result<Vec<KeyUsage>>;
}

/// What the intake needs from the database when the command queue is a separate broker: a command's
/// `accepted` record and idempotency key, made durable together with an outbox row holding its queue
/// message. The row stays until the broker has confirmed the message, so a command recorded as
/// accepted is never lost, even when the broker is down or the gateway dies between the two steps.
#[async_trait]
pub trait IntakeLedger: Send + Sync + 'static {
    /// Records the submissions in one durable step, with idempotency exactly as [`Intake::submit_many`]
    /// (the first submission of a key wins); each accepted one also gets its outbox row.
    async fn record(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>>;
    /// The broker has confirmed these messages: their outbox rows go.
    async fn published(&self, message_ids: &[Uuid]) -> Result<()>;
    /// Outbox rows recorded at least `older_than` ago, oldest first: messages whose publish failed or
    /// was never confirmed.
    async fn unpublished(&self, older_than: Duration, limit: usize) -> Result<Vec<QueueMessage>>;
    /// The outbox rows of these commands (those not confirmed yet), in the order of `message_ids`.
    async fn outbox(&self, message_ids: &[Uuid]) -> Result<Vec<QueueMessage>>;
}
