//! The write and read paths together on SQLite: processor → event log → projector → read models,
//! checked against books computed independently from the commands (a small W1), then rebuilt.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tally_core::model::{CommandEnvelope, Principal, QueueMessage, Role};
use tally_core::ports::Submission;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::Projector;
use tally_core::workload::{W1Size, verify, w1};
use tally_core::{Backend, Signals};
use tally_store_sqlite::Sqlite;
use uuid::Uuid;

fn envelope(command: tally_domain::Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::now_v7(),
        received_at: jiff::Timestamp::now(),
        principal: Principal {
            key_id: "test".into(),
            role: Role::Admin,
            scope: None,
        },
        correlation_id: None,
        command,
    }
}

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
        backend.read.clone(),
        Signals::default(),
    )
    .with_batch_size(97);
    let projected = projector.catch_up().await.unwrap();
    let head = backend.events.head().await.unwrap();
    assert_eq!(projected, head, "every event is projected once");
    for (name, position) in backend.read.checkpoints().await.unwrap() {
        assert_eq!(position, head, "checkpoint of {name}");
    }
    verify(
        backend.read.as_ref(),
        &workload.expected,
        processed,
        rejected,
    )
    .await
    .unwrap();

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
        backend.read.clone(),
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

/// The real SQLite store, with its first commits made to fail as if the disk had gone away for a moment.
struct FailingCommits {
    inner: std::sync::Arc<dyn tally_core::EventStore>,
    failures_left: std::sync::atomic::AtomicU32,
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
        self.inner.commit(batch).await
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
    let events = std::sync::Arc::new(FailingCommits {
        inner: backend.events.clone(),
        failures_left: 2.into(),
    });
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
        backend.read.clone(),
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
