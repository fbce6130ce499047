//! What must hold when several tally processes share one PostgreSQL database. Each "process" here is
//! its own `Postgres` (own connection pool, own queue consumer id), as a separate process would be.
//! Needs `--features postgres` and a server (see `support`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tally_core::model::{
    CommandEnvelope, CommitBatch, Decision, EventMetadata, NewEvent, OutcomeRecord, Principal,
    QueueMessage, Role,
};
use tally_core::ports::Submission;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::projector::{PROJECTOR_LEASE, Projector};
use tally_core::workload::{W1Size, w1};
use tally_core::{Backend, Error, Signals};
use tally_domain::StreamId;
use tokio::sync::Mutex;
use uuid::Uuid;

fn event(stream: &StreamId, version: u64, n: u64) -> NewEvent {
    NewEvent {
        event_type: "store_registered".into(),
        schema_version: 1,
        occurred_at: Timestamp::now(),
        recorded_at: Timestamp::now(),
        data: format!("{{\"n\":{n}}}"),
        metadata: EventMetadata {
            command_id: Uuid::now_v7(),
            correlation_id: None,
            principal: "test".into(),
        },
        streams: vec![(stream.clone(), version)],
    }
}

/// Gap safety. Eight writers append concurrently (each its own pool, like eight processes), some of
/// their transactions deliberately rolled back after taking positions' worth of work, while a reader
/// follows the log live the way the projector does (`read_all` after the last position seen). At the
/// end the reader must have seen every committed event exactly once, in order, with no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_reader_never_skips_or_reorders_events_of_concurrent_writers() {
    const WRITERS: u64 = 8;
    const COMMITS_EACH: u64 = 40;
    let scratch = support::Scratch::new();
    let reader_store = scratch.open().await;
    let done = Arc::new(AtomicBool::new(false));
    let rolled_back = Arc::new(AtomicU64::new(0));

    let reader = {
        let store = reader_store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = tally_core::EventStore::read_all(store.as_ref(), after, 7)
                    .await
                    .expect("read");
                for e in &batch {
                    seen.push(e.position);
                    after = e.position;
                }
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = scratch.open_with(|o| o.pool_size = 2).await;
        let rolled_back = rolled_back.clone();
        writers.push(tokio::spawn(async move {
            let stream = StreamId::from_stored(format!("store-w{w}"));
            let mut version = 0;
            let mut committed = Vec::new();
            for i in 0..COMMITS_EACH {
                let size = 1 + (i % 3);
                let batch = CommitBatch {
                    events: (1..=size).map(|k| event(&stream, version + k, i)).collect(),
                    outcomes: Vec::new(),
                    reads: Vec::new(),
                };
                if i % 5 == 2 {
                    store.append_and_roll_back(batch).await.expect("rollback");
                    rolled_back.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let positions = tally_core::EventStore::commit(store.as_ref(), batch)
                    .await
                    .expect("commit");
                version += size;
                committed.extend(positions);
            }
            committed
        }));
    }
    let mut committed: Vec<u64> = Vec::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");

    assert!(
        rolled_back.load(Ordering::SeqCst) >= WRITERS,
        "some appends were rolled back"
    );
    committed.sort_unstable();
    let expected: Vec<u64> = (1..=committed.len() as u64).collect();
    assert_eq!(
        committed, expected,
        "committed positions are dense: rollbacks leave no holes"
    );
    assert_eq!(
        seen, expected,
        "the live reader saw every committed event once, in order"
    );
    let head = tally_core::EventStore::head(reader_store.as_ref())
        .await
        .expect("head");
    assert_eq!(head, committed.len() as u64);
}

fn principal() -> Principal {
    Principal {
        key_id: "test".into(),
        role: Role::Admin,
        scope: None,
    }
}

async fn submit_all(backend: &Backend, commands: Vec<tally_domain::Command>) {
    let submissions: Vec<Submission> = commands
        .into_iter()
        .map(|command| {
            let partition_key = command.partition_key();
            Submission {
                envelope: CommandEnvelope {
                    command_id: Uuid::now_v7(),
                    received_at: Timestamp::now(),
                    principal: principal(),
                    correlation_id: None,
                    command,
                },
                partition_key,
                idempotency: None,
            }
        })
        .collect();
    for chunk in submissions.chunks(2000) {
        backend
            .intake
            .submit_many(chunk.to_vec())
            .await
            .expect("submit");
    }
}

/// Runs processors, each on its own backend, until the queue is empty; returns (accepted, rejected)
/// and how many commands each processor received.
async fn drain(processors: &[Arc<Mutex<Processor>>], queue: &Backend) -> (u64, u64, Vec<u64>) {
    let totals = Arc::new(Mutex::new((0u64, 0u64)));
    let received: Arc<Vec<AtomicU64>> =
        Arc::new(processors.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, p) in processors.iter().enumerate() {
        let (p, totals, stop, received) =
            (p.clone(), totals.clone(), stop.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = p.lock().await;
            while !stop.load(Ordering::SeqCst) {
                match p.step(Duration::from_millis(50)).await {
                    Ok(r) => {
                        received[i].fetch_add(r.received as u64, Ordering::SeqCst);
                        let mut t = totals.lock().await;
                        t.0 += r.processed as u64;
                        t.1 += r.rejected as u64;
                        assert_eq!(r.poison, 0);
                    }
                    Err(e) => panic!("a processor step failed (conflicts must be retried): {e}"),
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while queue.queue.depth().await.expect("depth") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("processor task");
    }
    let t = *totals.lock().await;
    (
        t.0,
        t.1,
        received.iter().map(|r| r.load(Ordering::SeqCst)).collect(),
    )
}

/// Two processors (separate backends, as two processes) work the same queue on the same database at
/// once: partitions move between them all the time, so each one's cache goes stale and their commits
/// conflict. No command may be lost or applied twice, conflicts must be retried rather than surfaced,
/// and the books must come out exactly as W1 defines them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_processors_keep_the_books_exact() {
    let scratch = support::Scratch::new();
    let a = scratch.open().await;
    let b = scratch.open().await;
    // A receive leases every free partition its messages come from, so there are more partitions
    // (stores) than one small batch spans: whichever processor is faster, the other finds free ones.
    let workload = w1(
        7,
        W1Size {
            suppliers: 3,
            stores: 16,
            items: 40,
            sales: 3000,
        },
    );
    let config = || ProcessorConfig {
        batch_size: 8,
        commit_size: 8,
        ..ProcessorConfig::default()
    };
    let processors = [
        Arc::new(Mutex::new(Processor::new(
            a.backend().events,
            a.backend().queue,
            Signals::default(),
            config(),
        ))),
        Arc::new(Mutex::new(Processor::new(
            b.backend().events,
            b.backend().queue,
            Signals::default(),
            config(),
        ))),
    ];
    let mut commands = workload.commands.clone();
    let rest = commands.split_off(workload.reference_count);
    submit_all(&a.backend(), commands).await;
    let (acc1, rej1, _) = drain(&processors, &a.backend()).await;
    submit_all(&a.backend(), rest).await;
    let (acc2, rej2, received) = drain(&processors, &a.backend()).await;
    eprintln!("commands received per processor: {received:?}");
    assert!(
        received.iter().all(|n| *n > 100),
        "both processors took a real share of the work: {received:?}"
    );

    let backend = a.backend();
    let mut projector = Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        Signals::default(),
    );
    projector.catch_up().await.expect("catch up");
    tally_core::workload::verify(
        backend.read.as_ref(),
        &workload.expected,
        acc1 + acc2,
        rej1 + rej2,
    )
    .await
    .expect("the books match W1's");

    // Exactly one outcome per command, and no command's events appended twice.
    let client_events = backend.events.read_all(0, 1_000_000).await.expect("log");
    let mut commands_with_events = HashSet::new();
    let mut last_command = None;
    for e in &client_events {
        if last_command != Some(e.metadata.command_id) {
            assert!(
                commands_with_events.insert(e.metadata.command_id),
                "command {} appended twice",
                e.metadata.command_id
            );
        }
        last_command = Some(e.metadata.command_id);
    }
    assert_eq!(
        commands_with_events.len() as u64,
        acc1 + acc2,
        "every accepted command has its events once"
    );
}

/// A consumer that dies holding a partition (no ack, no nack) loses it when its lease runs out; the
/// messages go to another consumer, in order, marked as redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_partition_goes_to_another_after_its_lease() {
    let scratch = support::Scratch::new();
    let lease = |o: &mut tally_store_postgres::PgOptions| o.queue_lease = Duration::from_secs(1);
    let dead = scratch.open_with(lease).await;
    let alive = scratch.open_with(lease).await;
    let messages: Vec<QueueMessage> = (0..3)
        .map(|i| QueueMessage {
            message_id: Uuid::now_v7(),
            partition_key: "store:s-1".into(),
            payload: vec![i],
        })
        .collect();
    dead.backend()
        .queue
        .enqueue(messages.clone())
        .await
        .expect("enqueue");
    let got = dead
        .backend()
        .queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(got.len(), 3);
    drop(dead); // dies without settling

    let none = alive
        .backend()
        .queue
        .receive(10, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(none.is_empty(), "the partition is still leased: {none:?}");
    let again = alive
        .backend()
        .queue
        .receive(10, Duration::from_secs(5))
        .await
        .expect("receive");
    let ids: Vec<Uuid> = again.iter().map(|d| d.message_id).collect();
    let sent: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, sent, "redelivered in order");
    assert!(again.iter().all(|d| d.redeliveries == 1), "{again:?}");
    let tags: Vec<u64> = again.iter().map(|d| d.tag).collect();
    alive.backend().queue.ack(&tags).await.expect("ack");
    assert_eq!(alive.backend().queue.depth().await.expect("depth"), 0);
}

/// The projector lease is held by one process at a time and passes on when its holder's session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_lease_passes_on_when_its_holder_dies() {
    let scratch = support::Scratch::new();
    let one = scratch.open().await.backend();
    let two = scratch.open().await.backend();
    let held = one
        .leases
        .try_acquire(PROJECTOR_LEASE)
        .await
        .expect("acquire");
    assert!(held.is_some());
    assert!(
        two.leases
            .try_acquire(PROJECTOR_LEASE)
            .await
            .expect("acquire")
            .is_none()
    );
    // Another deployment (schema) on the same database is not excluded.
    let other = support::Scratch::new();
    let elsewhere = other.open().await.backend();
    assert!(
        elsewhere
            .leases
            .try_acquire(PROJECTOR_LEASE)
            .await
            .expect("acquire")
            .is_some()
    );
    drop(held); // the holder's session ends
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if two
            .leases
            .try_acquire(PROJECTOR_LEASE)
            .await
            .expect("acquire")
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never passed on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exactly-once effect across processes: a command committed by one process cannot be committed by
/// another (stale caches, redelivery after a lease ran out).
#[tokio::test]
async fn a_command_decided_by_one_process_cannot_be_decided_by_another() {
    let scratch = support::Scratch::new();
    let one = scratch.open().await;
    let two = scratch.open().await;
    let command_id = Uuid::now_v7();
    let batch = |stream: &str| {
        let mut e = event(&StreamId::from_stored(stream.to_owned()), 1, 0);
        e.metadata.command_id = command_id;
        CommitBatch {
            events: vec![e],
            outcomes: vec![OutcomeRecord {
                command_id,
                accepted: None,
                decision: Decision::Processed { last_event: 0 },
            }],
            reads: Vec::new(),
        }
    };
    tally_core::EventStore::commit(one.as_ref(), batch("store-a"))
        .await
        .expect("first");
    let second = tally_core::EventStore::commit(two.as_ref(), batch("store-b")).await;
    assert_eq!(second, Err(Error::AlreadyDecided { command_id }));
    assert_eq!(
        tally_core::EventStore::head(two.as_ref())
            .await
            .expect("head"),
        1
    );
}

/// Several processes starting at once on an empty database all migrate it: each migration is
/// applied once, nobody fails, and a later run finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_each_step_once() {
    let scratch = support::Scratch::new();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let options = scratch.options();
            tokio::spawn(async move { tally_store_postgres::Postgres::connect(options).await })
        })
        .collect();
    let mut opened = Vec::new();
    for s in starts {
        opened.push(
            s.await
                .expect("task")
                .expect("every concurrent start succeeds"),
        );
    }
    let again = opened[0].migrate().await.expect("migrate again");
    let latest = tally_store_postgres::schema::MIGRATIONS.len();
    assert_eq!(
        (again.from, again.to),
        (latest, latest),
        "nothing left to do"
    );
    assert_eq!(
        tally_core::EventStore::head(opened[1].as_ref())
            .await
            .expect("head"),
        0
    );
}
