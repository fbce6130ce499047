//! The write and read paths together on SQLite: processor → event log → projector → read models,
//! checked against books computed independently from the commands (a small W1), then rebuilt.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tally_core::conformance::admin_envelope as envelope;
use tally_core::model::{CommandStatus, QueueMessage};
use tally_core::ports::Submission;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::workload::{W1Size, verify, w1};
use tally_core::{Backend, Signals};
use tally_store_sqlite::Sqlite;
use uuid::Uuid;

async fn submit_all(backend: &Backend, commands: Vec<tally_domain::Command>) {
    let submissions = commands
        .into_iter()
        .map(|c| {
            let envelope = envelope(c);
            let partition_key = envelope.command.partition_key();
            Submission {
                envelope,
                partition_key,
                idempotency: None,
            }
        })
        .collect();
    backend.intake.submit_many(submissions).await.unwrap();
}

async fn drain(processor: &mut Processor, backend: &Backend) -> (u64, u64, u64) {
    let (mut processed, mut rejected, mut duplicates) = (0, 0, 0);
    while backend.queue.depth().await.unwrap() > 0 {
        let r = processor.step(Duration::from_millis(50)).await.unwrap();
        processed += r.processed as u64;
        rejected += r.rejected as u64;
        duplicates += r.duplicates as u64;
    }
    (processed, rejected, duplicates)
}

/// Every projection's checkpoint is at `head`, and the read models hold W1's expected books.
async fn assert_books(
    backend: &Backend,
    head: u64,
    expected: &tally_core::workload::Books,
    processed: u64,
    rejected: u64,
) {
    let checkpoints = backend.read.checkpoints().await.unwrap();
    for name in tally_core::readmodel::PROJECTIONS {
        assert_eq!(checkpoints.get(name), Some(&head), "checkpoint of {name}");
    }
    verify(backend.read.as_ref(), expected, processed, rejected)
        .await
        .unwrap();
}

fn new_processor(backend: &Backend, commit_size: usize) -> Processor {
    Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        Signals::default(),
        ProcessorConfig {
            batch_size: 4 * commit_size,
            commit_size,
            ..ProcessorConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_w1_books_match_and_survive_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let workload = w1(
        7,
        W1Size {
            suppliers: 3,
            stores: 4,
            items: 60,
            sales: 1500,
        },
    );
    assert!(
        workload.expected.rejected > 0,
        "the workload must exercise rejections"
    );
    submit_all(&backend, workload.commands).await;

    // Small chunks, so that many pipelined commits happen.
    let mut processor = new_processor(&backend, 64);
    let (processed, rejected, duplicates) = drain(&mut processor, &backend).await;
    assert_eq!(duplicates, 0);

    let mut projector = Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    )
    .with_batch_size(97);
    let projected = projector.catch_up().await.unwrap();
    let head = backend.events.head().await.unwrap();
    assert_eq!(projected, head, "every event is projected once");
    assert_books(&backend, head, &workload.expected, processed, rejected).await;

    let rebuilt = projector.rebuild().await.unwrap();
    assert_eq!(rebuilt, head);
    verify(
        backend.read.as_ref(),
        &workload.expected,
        processed,
        rejected,
    )
    .await
    .unwrap();
}

/// The projector following live takes what its own process's processor committed from the signals'
/// tail, and reads the log where that tail has a gap: here a second processor, whose commits the
/// projector's signals never see, takes every other turn. The books come out right either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_projection_from_the_processors_tail_and_from_the_log_keeps_the_books() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let workload = w1(
        11,
        W1Size {
            suppliers: 3,
            stores: 4,
            items: 60,
            sales: 1200,
        },
    );
    submit_all(&backend, workload.commands).await;

    let signals = Signals::default();
    let config = ProcessorConfig {
        batch_size: 50,
        commit_size: 25,
        ..ProcessorConfig::default()
    };
    let mut ours = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        signals.clone(),
        config.clone(),
    );
    let mut theirs = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        Signals::default(),
        config,
    );
    let mut projector = Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        signals.clone(),
    );
    let (mut processed, mut rejected) = (0u64, 0u64);
    let (mut from_tail, mut from_log) = (0, 0);
    let mut turn = 0usize;
    while backend.queue.depth().await.unwrap() > 0 {
        let processor = if turn.is_multiple_of(2) {
            &mut ours
        } else {
            &mut theirs
        };
        turn += 1;
        let r = processor.step(Duration::from_millis(50)).await.unwrap();
        processed += r.processed as u64;
        rejected += r.rejected as u64;
        loop {
            let checkpoints = backend.read.checkpoints().await.unwrap();
            let at = tally_core::readmodel::LIVE
                .iter()
                .map(|p| checkpoints.get(*p).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            if signals.recent_events(at, 1).is_some() {
                from_tail += 1;
            } else {
                from_log += 1;
            }
            if projector.step().await.unwrap() == 0 {
                break;
            }
        }
    }
    assert!(from_tail > 0, "the tail was used");
    assert!(from_log > 0, "the log was read past the tail's gaps");
    // Item daily sales are applied every few seconds when following live: in now.
    projector.flush().await.unwrap();
    let head = backend.events.head().await.unwrap();
    assert_books(&backend, head, &workload.expected, processed, rejected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_twice_takes_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let register = envelope(tally_domain::Command::RegisterSupplier {
        supplier_id: tally_domain::values::SupplierId::parse("acme").unwrap(),
        name: tally_domain::values::Text::parse("Acme").unwrap(),
    });
    backend
        .intake
        .submit(Submission {
            envelope: register.clone(),
            partition_key: "reference".into(),
            idempotency: None,
        })
        .await
        .unwrap();
    let mut processor = new_processor(&backend, 16);
    let (processed, _, _) = drain(&mut processor, &backend).await;
    assert_eq!(processed, 1);

    // The same command arrives again (a broker redelivery, a replayed dead letter).
    backend
        .queue
        .enqueue(vec![QueueMessage {
            message_id: Uuid::now_v7(),
            partition_key: "reference".into(),
            payload: register.encode(),
        }])
        .await
        .unwrap();
    let mut fresh = new_processor(&backend, 16);
    let (processed, rejected, duplicates) = drain(&mut fresh, &backend).await;
    assert_eq!((processed, rejected, duplicates), (0, 0, 1));
    let events = backend.events.read_all(0, 100).await.unwrap();
    assert_eq!(events.len(), 1, "one event for one command");
    assert_eq!(events[0].metadata.command_id, register.command_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_new_processor_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let workload = w1(
        11,
        W1Size {
            suppliers: 2,
            stores: 2,
            items: 20,
            sales: 300,
        },
    );
    let (reference, rest) = workload.commands.split_at(workload.reference_count + 40);
    {
        let store = Sqlite::open(dir.path()).unwrap();
        let backend = store.backend();
        submit_all(&backend, reference.to_vec()).await;
        drain(&mut new_processor(&backend, 32), &backend).await;
    }
    // A new process: its cache is cold, the stores' stock must be read back from the log.
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    submit_all(&backend, rest.to_vec()).await;
    drain(&mut new_processor(&backend, 32), &backend).await;
    Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    )
    .catch_up()
    .await
    .unwrap();
    let expected = &workload.expected;
    verify(
        backend.read.as_ref(),
        expected,
        expected.accepted,
        expected.rejected,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_retried_then_dead_lettered_and_blocks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let poison = Uuid::now_v7();
    backend
        .queue
        .enqueue(vec![QueueMessage {
            message_id: poison,
            partition_key: "store:x".into(),
            payload: b"not an envelope".to_vec(),
        }])
        .await
        .unwrap();
    submit_all(
        &backend,
        vec![tally_domain::Command::RegisterSupplier {
            supplier_id: tally_domain::values::SupplierId::parse("acme").unwrap(),
            name: tally_domain::values::Text::parse("Acme").unwrap(),
        }],
    )
    .await;
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        Signals::default(),
        ProcessorConfig {
            retry_after: Duration::ZERO,
            ..ProcessorConfig::default()
        },
    );
    let (mut processed, mut poisoned) = (0, 0);
    for _ in 0..20 {
        let r = processor.step(Duration::from_millis(20)).await.unwrap();
        processed += r.processed;
        poisoned += r.poison;
        if backend.queue.depth().await.unwrap() == 0 {
            break;
        }
    }
    assert_eq!(
        processed, 1,
        "the good command is not held up by the poison one"
    );
    assert!(
        poisoned > 1,
        "the poison message is retried before it is dead-lettered"
    );
    let dead = backend.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, poison);
    assert!(
        dead[0].reason.contains("undecodable"),
        "the reason is kept: {}",
        dead[0].reason
    );
    assert_eq!(
        backend.events.head().await.unwrap(),
        1,
        "the poison message wrote nothing"
    );
}

/// The real SQLite store, with its first commits made to fail as if the disk had gone away for a moment,
/// the conflicts it reports counted, and the `reads` of every commit asked of it kept.
struct FailingCommits {
    inner: std::sync::Arc<dyn tally_core::EventStore>,
    failures_left: std::sync::atomic::AtomicU32,
    conflicts: std::sync::atomic::AtomicU32,
    reads: std::sync::Mutex<Vec<Vec<(tally_domain::StreamId, u64)>>>,
}

impl FailingCommits {
    fn new(inner: std::sync::Arc<dyn tally_core::EventStore>, failures: u32) -> Self {
        Self {
            inner,
            failures_left: failures.into(),
            conflicts: 0.into(),
            reads: std::sync::Mutex::default(),
        }
    }
    /// The `reads` of the commits asked since the last call, as `(stream, version)` strings.
    fn take_reads(&self) -> Vec<Vec<(String, u64)>> {
        std::mem::take(&mut *self.reads.lock().unwrap())
            .into_iter()
            .map(|r| r.into_iter().map(|(s, v)| (s.to_string(), v)).collect())
            .collect()
    }
    fn conflicts(&self) -> u32 {
        self.conflicts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl tally_core::EventStore for FailingCommits {
    async fn commit(
        &self,
        batch: tally_core::model::CommitBatch,
    ) -> tally_core::ports::Result<Vec<u64>> {
        let left = self.failures_left.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures_left
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(tally_core::Error::Unavailable(
                "injected: disk went away".into(),
            ));
        }
        self.reads.lock().unwrap().push(batch.reads.clone());
        let result = self.inner.commit(batch).await;
        if let Err(tally_core::Error::Conflict { .. }) = result {
            self.conflicts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> tally_core::ports::Result<Vec<tally_core::model::RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn read_streams(
        &self,
        streams: &[tally_domain::StreamId],
    ) -> tally_core::ports::Result<
        Vec<(
            tally_domain::StreamId,
            u64,
            tally_core::model::RecordedEvent,
        )>,
    > {
        self.inner.read_streams(streams).await
    }
    async fn read_stream(
        &self,
        stream: &tally_domain::StreamId,
    ) -> tally_core::ports::Result<Vec<tally_core::model::RecordedEvent>> {
        self.inner.read_stream(stream).await
    }
    async fn stream_ids(&self) -> tally_core::ports::Result<Vec<tally_domain::StreamId>> {
        self.inner.stream_ids().await
    }
    async fn head(&self) -> tally_core::ports::Result<u64> {
        self.inner.head().await
    }
    async fn position_at(&self, at: jiff::Timestamp) -> tally_core::ports::Result<u64> {
        self.inner.position_at(at).await
    }
    async fn read_stream_after(
        &self,
        stream: &tally_domain::StreamId,
        after: u64,
        upto: u64,
    ) -> tally_core::ports::Result<Vec<tally_core::model::RecordedEvent>> {
        self.inner.read_stream_after(stream, after, upto).await
    }
    async fn read_positions(
        &self,
        positions: &[u64],
    ) -> tally_core::ports::Result<Vec<tally_core::model::RecordedEvent>> {
        self.inner.read_positions(positions).await
    }
    async fn decided(&self, ids: &[Uuid]) -> tally_core::ports::Result<Vec<Uuid>> {
        self.inner.decided(ids).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_hands_the_batch_back_and_it_is_processed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let workload = w1(
        3,
        W1Size {
            suppliers: 2,
            stores: 2,
            items: 10,
            sales: 200,
        },
    );
    submit_all(&backend, workload.commands).await;
    // Two failures: the pipelined commit, then the step's own retry of it; the step gives up.
    let events = std::sync::Arc::new(FailingCommits::new(backend.events.clone(), 2));
    let mut processor = Processor::new(
        events,
        backend.queue.clone(),
        Signals::default(),
        ProcessorConfig {
            commit_size: 50,
            retry_after: Duration::ZERO,
            ..ProcessorConfig::default()
        },
    );
    let first = processor.step(Duration::from_millis(50)).await;
    assert!(first.is_err(), "the injected failure surfaces");
    assert_eq!(
        backend.events.head().await.unwrap(),
        0,
        "nothing of the failed batch was written"
    );
    let (mut processed, mut rejected) = (0, 0);
    for _ in 0..50 {
        if backend.queue.depth().await.unwrap() == 0 {
            break;
        }
        let r = processor.step(Duration::from_millis(50)).await.unwrap();
        processed += r.processed as u64;
        rejected += r.rejected as u64;
    }
    assert_eq!(
        backend.queue.depth().await.unwrap(),
        0,
        "the handed-back batch was processed"
    );
    assert!(backend.queue.dead_letters().await.unwrap().is_empty());
    Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    )
    .catch_up()
    .await
    .unwrap();
    verify(
        backend.read.as_ref(),
        &workload.expected,
        processed,
        rejected,
    )
    .await
    .unwrap();
}

mod ids {
    use tally_domain::values::{
        Cents, DeliveryId, ItemId, Quantity, SaleId, StoreId, SupplierId, Text, TimeZoneName,
    };

    pub fn supplier() -> SupplierId {
        SupplierId::parse("acme").unwrap()
    }
    pub fn store() -> StoreId {
        StoreId::parse("s1").unwrap()
    }
    pub fn item() -> ItemId {
        ItemId::parse("i1").unwrap()
    }
    pub fn text(raw: &str) -> Text {
        Text::parse(raw).unwrap()
    }
    pub fn zone() -> TimeZoneName {
        TimeZoneName::parse("Europe/Berlin").unwrap()
    }
    pub fn cents(value: i64) -> Cents {
        Cents::new(value).unwrap()
    }
    pub fn quantity(value: i64) -> Quantity {
        Quantity::new(value).unwrap()
    }
    pub fn delivery(raw: &str) -> DeliveryId {
        DeliveryId::parse(raw).unwrap()
    }
    pub fn sale(raw: &str) -> SaleId {
        SaleId::parse(raw).unwrap()
    }
}

fn delivery(id: &str, units: i64) -> tally_domain::Command {
    tally_domain::Command::RecordDelivery {
        delivery_id: ids::delivery(id),
        supplier_id: ids::supplier(),
        store_id: ids::store(),
        occurred_at: jiff::Timestamp::now(),
        lines: vec![tally_domain::command::DeliveryLine {
            item_id: ids::item(),
            quantity: ids::quantity(units),
            unit_cost_cents: ids::cents(100),
        }],
    }
}

/// The supplier, store and item the single-store tests use.
fn reference() -> Vec<tally_domain::Command> {
    vec![
        tally_domain::Command::RegisterSupplier {
            supplier_id: ids::supplier(),
            name: ids::text("Acme"),
        },
        tally_domain::Command::RegisterStore {
            store_id: ids::store(),
            name: ids::text("Store one"),
            timezone: ids::zone(),
        },
        tally_domain::Command::RegisterItem {
            item_id: ids::item(),
            name: ids::text("Widget"),
            supplier_id: ids::supplier(),
            unit_price_cents: ids::cents(250),
        },
    ]
}

fn sale(id: &str, units: i64) -> tally_domain::Command {
    tally_domain::Command::RecordSale {
        sale_id: ids::sale(id),
        store_id: ids::store(),
        occurred_at: jiff::Timestamp::now(),
        lines: vec![tally_domain::command::SaleLine {
            item_id: ids::item(),
            quantity: ids::quantity(units),
            unit_price_cents: ids::cents(250),
            discount_cents: ids::cents(0),
        }],
        till_id: None,
    }
}

/// Two processors on one store, each with its own cache, as two processes sharing a database would
/// be: each one's cache of a stream goes stale whenever the other appends to it. A decision taken on
/// the stale cache must not commit, whether it appends (caught by the version it appends at) or not (a
/// rejection, caught by the version it read at); either way the conflict is retried after reloading,
/// and never reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_stale_cache_is_decided_again_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let events = std::sync::Arc::new(FailingCommits::new(backend.events.clone(), 0));
    let processor = |events: std::sync::Arc<FailingCommits>| {
        Processor::new(
            events,
            backend.queue.clone(),
            Signals::default(),
            ProcessorConfig {
                policy: tally_domain::StockPolicy::Reject,
                ..ProcessorConfig::default()
            },
        )
    };
    let mut a = processor(events.clone());
    let mut b = processor(events.clone());
    let on_hand = |p: &Processor| {
        p.state()
            .store(&ids::store())
            .map(|s| s.on_hand(&ids::item()))
    };

    // A registers everything and takes a delivery of 5: its cache holds the store with 5 on hand.
    submit_all(&backend, [reference(), vec![delivery("d1", 5)]].concat()).await;
    assert_eq!(drain(&mut a, &backend).await, (4, 0, 0));
    assert_eq!(on_hand(&a), Some(5));

    // B takes a delivery of 10 to the same store: A's cache now says 5 where the store has 15.
    submit_all(&backend, vec![delivery("d2", 10)]).await;
    assert_eq!(drain(&mut b, &backend).await, (1, 0, 0));
    assert_eq!(on_hand(&b), Some(15));
    assert_eq!(on_hand(&a), Some(5), "A has not heard of B's delivery");
    assert_eq!(events.conflicts(), 0);
    events.take_reads();

    // A sale of 12 handed to A: on its stale cache it would be rejected for insufficient stock, a
    // decision that appends nothing. The store's version it read at makes the commit conflict, and A
    // decides again on the reloaded store.
    let sale_command = envelope(sale("x1", 12));
    let sale_id = sale_command.command_id;
    backend
        .intake
        .submit(Submission {
            partition_key: sale_command.command.partition_key(),
            envelope: sale_command,
            idempotency: None,
        })
        .await
        .unwrap();
    assert_eq!(
        drain(&mut a, &backend).await,
        (1, 0, 0),
        "the sale is processed, not rejected on stale stock"
    );
    assert_eq!(events.conflicts(), 1, "the stale read conflicted once");
    let owned = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()
    };
    assert_eq!(
        events.take_reads(),
        [
            // The rejection read everything at the versions in A's cache: the sale did not exist.
            owned(&[("item-i1", 1), ("sale-x1", 0), ("store-s1", 2)]),
            // The sale appends to its own stream and the store, which its versions guard.
            owned(&[("item-i1", 1)]),
        ]
    );
    assert_eq!(on_hand(&a), Some(3));
    let status = backend.commands.status(sale_id).await.unwrap().unwrap();
    assert!(
        matches!(status.status, CommandStatus::Processed { .. }),
        "{status:?}"
    );

    // Now B's cache is stale: its delivery of 2 appends to the store at a version A's sale took. The
    // conflict is retried inside the step (which succeeds), not surfaced.
    submit_all(&backend, vec![delivery("d3", 2)]).await;
    let report = b.step(Duration::from_millis(50)).await.unwrap();
    assert_eq!((report.processed, report.rejected), (1, 0));
    assert_eq!(backend.queue.depth().await.unwrap(), 0);
    assert_eq!(events.conflicts(), 2, "the stale append conflicted once");
    assert_eq!(on_hand(&b), Some(5));
    assert!(backend.queue.dead_letters().await.unwrap().is_empty());

    // The log agrees: 5 + 10 - 12 + 2 on hand, each command once.
    Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    )
    .catch_up()
    .await
    .unwrap();
    let store = tally_domain::values::StoreId::parse("s1").unwrap();
    let item = tally_domain::values::ItemId::parse("i1").unwrap();
    let stock = backend.read.inventory_item(&store, &item).await.unwrap();
    assert_eq!(stock.rows, 5);
    assert_eq!(backend.events.read_all(0, 100).await.unwrap().len(), 7);
}

/// A processor whose cache holds only a few sales still decides returns, voids and duplicates of old
/// sales correctly: a forgotten sale is read back from the log when a command names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_forgotten_by_a_small_cache_is_read_back_when_named() {
    use tally_domain::values::ReturnId;
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        Signals::default(),
        ProcessorConfig {
            batch_size: 4,
            commit_size: 4,
            cached_streams: 4,
            ..ProcessorConfig::default()
        },
    );
    let mut setup = reference();
    setup.push(delivery("d1", 1000));
    setup.extend((0..40).map(|n| sale(&format!("old-{n}"), 2)));
    submit_all(&backend, setup).await;
    assert_eq!(drain(&mut processor, &backend).await, (44, 0, 0));

    let return_of = |id: &str, sale_id: &str, units: i64| tally_domain::Command::RecordReturn {
        return_id: ReturnId::parse(id).unwrap(),
        sale_id: ids::sale(sale_id),
        store_id: ids::store(),
        occurred_at: jiff::Timestamp::now(),
        lines: vec![tally_domain::command::ReturnLine {
            item_id: ids::item(),
            quantity: ids::quantity(units),
        }],
    };
    let void_of = |sale_id: &str| tally_domain::Command::VoidSale {
        sale_id: ids::sale(sale_id),
        reason: ids::text("till error"),
        occurred_at: jiff::Timestamp::now(),
        only_store: None,
    };
    let commands = vec![
        // Within what old-0 sold: accepted.
        envelope(return_of("r1", "old-0", 1)),
        // More than old-1 sold: only its state, read back, can say so.
        envelope(return_of("r2", "old-1", 3)),
        // A sale id used long ago.
        envelope(sale("old-2", 1)),
        // old-0 has a return now: it cannot be voided.
        envelope(void_of("old-0")),
        envelope(void_of("old-3")),
    ];
    let ids: Vec<Uuid> = commands.iter().map(|c| c.command_id).collect();
    for c in commands {
        let partition_key = c.command.partition_key();
        backend
            .intake
            .submit(Submission {
                envelope: c,
                partition_key,
                idempotency: None,
            })
            .await
            .unwrap();
    }
    drain(&mut processor, &backend).await;
    let mut outcomes = Vec::new();
    for id in ids {
        let record = backend.commands.status(id).await.unwrap().unwrap();
        outcomes.push(match record.status {
            CommandStatus::Processed { .. } => "processed".to_owned(),
            CommandStatus::Rejected { code, .. } => code,
            CommandStatus::Accepted => "accepted".to_owned(),
        });
    }
    assert_eq!(
        outcomes,
        [
            "processed",
            "return_exceeds_sale",
            "duplicate_id",
            "sale_has_returns",
            "processed"
        ]
    );
}
