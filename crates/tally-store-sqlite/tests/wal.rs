//! The WAL under a steady stream of commits: it must start over from its beginning again and again,
//! not grow for as long as the stream lasts.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_core::conformance::admin_envelope;
use tally_core::ports::Submission;
use tally_core::workload::{W1Size, w1};
use tally_store_sqlite::Sqlite;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_a_steady_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let commands = w1(
        11,
        W1Size {
            suppliers: 3,
            stores: 8,
            items: 200,
            sales: 100_000,
        },
    )
    .commands;
    let commands = Arc::new(commands);
    let next = Arc::new(AtomicU64::new(0));
    let largest_wal = Arc::new(AtomicU64::new(0));
    // The intake commits go to `intake.db`; its WAL is checkpointed as `tally.db`'s is.
    let wal = dir.path().join("intake.db-wal");

    // Many submitters, each waiting for its own commit: a commit every few hundred microseconds, as
    // under HTTP load, and never a quiet moment for a checkpoint to catch up on its own.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (backend, commands, next, largest_wal, wal) = (
            backend.clone(),
            commands.clone(),
            next.clone(),
            largest_wal.clone(),
            wal.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(command) = commands.get(i) else {
                    break;
                };
                let envelope = admin_envelope(command.clone());
                let partition_key = envelope.command.partition_key();
                backend
                    .intake
                    .submit(Submission {
                        envelope,
                        partition_key,
                        idempotency: Some((format!("key-{i}"), [7u8; 32])),
                    })
                    .await
                    .unwrap();
                largest_wal.fetch_max(size(&wal), Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(backend.queue.depth().await.unwrap(), commands.len() as u64);

    // The WAL's header counts the times it started over (its checkpoint sequence number, bytes 12–15,
    // big-endian). A checkpoint thread that copies every 200 ms had many chances during the stream.
    let header = std::fs::read(&wal).unwrap();
    let restarts = u32::from_be_bytes(header[12..16].try_into().unwrap());
    let largest = largest_wal.load(Ordering::Relaxed);
    let database = size(&dir.path().join("tally.db"));
    eprintln!(
        "WAL started over {restarts} times; largest {largest} bytes; database {database} bytes"
    );
    assert!(
        restarts >= 3,
        "the WAL started over {restarts} times under a steady stream of commits (largest {largest} bytes)"
    );
}

/// A clean close leaves every commit in the database files: a backup of `intake.db` and `tally.db`
/// alone (no `-wal`) holds all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_leaves_every_commit_in_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let commands = w1(
        3,
        W1Size {
            suppliers: 1,
            stores: 2,
            items: 10,
            sales: 200,
        },
    )
    .commands;
    let submitted = commands.len() as u64;
    for command in commands {
        let envelope = admin_envelope(command);
        let partition_key = envelope.command.partition_key();
        backend
            .intake
            .submit(Submission {
                envelope,
                partition_key,
                idempotency: None,
            })
            .await
            .unwrap();
    }
    // And a commit to tally.db.
    let key = tally_core::model::ApiKey {
        key_id: "key-wal".to_owned(),
        role: tally_core::model::Role::Admin,
        scope: None,
        rate_per_second: None,
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    };
    backend.keys.create(key, [9u8; 32]).await.unwrap();
    drop(backend);
    drop(store);
    for wal in ["tally.db-wal", "intake.db-wal"] {
        assert_eq!(
            size(&dir.path().join(wal)),
            0,
            "{wal} holds commits after a clean close"
        );
    }
    let copy = tempfile::tempdir().unwrap();
    for file in ["tally.db", "intake.db"] {
        std::fs::copy(dir.path().join(file), copy.path().join(file)).unwrap();
    }
    let reopened = Sqlite::open(copy.path()).unwrap().backend();
    assert_eq!(reopened.queue.depth().await.unwrap(), submitted);
    assert_eq!(reopened.keys.list().await.unwrap().len(), 1);
}
