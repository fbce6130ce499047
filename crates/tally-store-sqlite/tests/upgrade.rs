//! A data dir from before `intake.db` existed: its queue, idempotency keys, dead letters and outbox are
//! in `tally.db`, and each command accepted there has an `accepted` record in `commands`. Opening it
//! moves those rows to `intake.db` once, and nothing is lost: the pending command is delivered and
//! decided, its key still replays, its status reads `accepted` and then its outcome.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};
use tally_core::conformance::{admin_envelope, submission};
use tally_core::model::{CommandEnvelope, CommandStatus};
use tally_core::ports::Submitted;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::{Backend, Signals};
use tally_domain::Command;
use tally_domain::values::{SupplierId, Text};
use tally_store_sqlite::Sqlite;

fn register(supplier: &str) -> CommandEnvelope {
    admin_envelope(Command::RegisterSupplier {
        supplier_id: SupplierId::parse(supplier).unwrap(),
        name: Text::parse(format!("supplier {supplier}")).unwrap(),
    })
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Writes what the intake of an older version left in `tally.db`: `pending` on the queue (with its
/// `accepted` record and idempotency key), `dead` in the dead letters, `unpublished` in the outbox.
fn write_old_intake(
    db: &Path,
    pending: &CommandEnvelope,
    dead: &CommandEnvelope,
    unpublished: &CommandEnvelope,
) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA busy_timeout=5000;").unwrap();
    let id = pending.command_id.as_bytes().to_vec();
    conn.execute(
        "INSERT INTO commands (command_id, kind, key_id, role, scope, accepted_at, status) \
         VALUES (?1, ?2, ?3, 'admin', NULL, 1, 'accepted')",
        params![id, pending.command.kind(), pending.principal.key_id],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO idempotency (key_id, idem_key, request_hash, command_id, created_at) \
         VALUES (?1, 'old-key', ?2, ?3, 1)",
        params![pending.principal.key_id, vec![5u8; 32], id],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO queue (message_id, partition_key, payload) VALUES (?1, ?2, ?3)",
        params![id, pending.command.partition_key(), pending.encode()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO dead_letters (message_id, partition_key, payload, reason, failed_at) \
         VALUES (?1, ?2, ?3, 'poison', 1)",
        params![
            dead.command_id.as_bytes().to_vec(),
            dead.command.partition_key(),
            dead.encode()
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO outbox (message_id, partition_key, payload, created_at) VALUES (?1, ?2, ?3, 1)",
        params![
            unpublished.command_id.as_bytes().to_vec(),
            unpublished.command.partition_key(),
            unpublished.encode()
        ],
    )
    .unwrap();
}

/// Decides everything on the queue.
async fn process_all(backend: &Backend) {
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        Signals::default(),
        ProcessorConfig::default(),
    );
    while backend.queue.depth().await.unwrap() > 0 {
        processor.step(Duration::from_millis(50)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_data_dir_keeps_its_pending_commands_keys_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    // The current version creates `tally.db` with the older tables still in it, empty.
    drop(Sqlite::open(dir.path()).unwrap());
    let (pending, dead, unpublished) = (register("old-1"), register("old-2"), register("old-3"));
    write_old_intake(&dir.path().join("tally.db"), &pending, &dead, &unpublished);

    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let main = Connection::open(dir.path().join("tally.db")).unwrap();
    for table in ["queue", "idempotency", "dead_letters", "outbox"] {
        assert_eq!(count(&main, table), 0, "{table} moved out of tally.db");
    }
    assert_eq!(backend.queue.depth().await.unwrap(), 1);
    let dead_letters = backend.queue.dead_letters().await.unwrap();
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].message_id, dead.command_id);
    let outbox = backend
        .ledger
        .outbox(&[unpublished.command_id])
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].payload, unpublished.encode());

    // The key taken before the move still answers with its command.
    let mut again = register("old-1");
    again.principal = pending.principal.clone();
    let replayed = backend
        .intake
        .submit(submission(again, Some(("old-key", 5))))
        .await
        .unwrap();
    assert_eq!(
        replayed,
        Submitted::Replayed {
            command_id: pending.command_id
        }
    );
    let before = backend
        .commands
        .status(pending.command_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.status, CommandStatus::Accepted);
    assert_eq!(before.kind, pending.command.kind());
    // A dead letter reads as accepted (never decided), as it did before the move.
    let dead_status = backend
        .commands
        .status(dead.command_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead_status.status, CommandStatus::Accepted);

    // Opening again moves nothing twice.
    drop(backend);
    drop(store);
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    assert_eq!(backend.queue.depth().await.unwrap(), 1);
    assert_eq!(backend.queue.dead_letters().await.unwrap().len(), 1);

    // The pending command is delivered from `intake.db` and decided; its old `accepted` record in
    // `tally.db` becomes its outcome, keeping what the intake wrote.
    process_all(&backend).await;
    let after = backend
        .commands
        .status(pending.command_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(after.status, CommandStatus::Processed { .. }),
        "{:?}",
        after.status
    );
    assert_eq!(
        (after.kind, after.principal),
        (before.kind, before.principal)
    );
    assert_eq!(
        count(&main, "commands WHERE status = 'accepted'"),
        0,
        "the old record was decided in place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_reads_as_accepted_until_its_outcome_and_then_as_decided() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).unwrap();
    let backend = store.backend();
    let envelope = register("new-1");
    let id = envelope.command_id;
    let principal = envelope.principal.clone();
    assert_eq!(
        backend.intake.submit(submission(envelope, None)).await,
        Ok(Submitted::Accepted { command_id: id })
    );
    // Nothing in `tally.db` yet: the message on the queue in `intake.db` is the record.
    let main = Connection::open(dir.path().join("tally.db")).unwrap();
    assert_eq!(count(&main, "commands"), 0);
    let accepted = backend.commands.status(id).await.unwrap().unwrap();
    assert_eq!(accepted.status, CommandStatus::Accepted);
    assert_eq!(accepted.kind, "register_supplier");
    assert_eq!(accepted.principal, principal);

    process_all(&backend).await;
    let decided = backend.commands.status(id).await.unwrap().unwrap();
    assert!(matches!(decided.status, CommandStatus::Processed { .. }));
    assert_eq!(
        (decided.kind, decided.principal, decided.accepted_at),
        (accepted.kind, accepted.principal, accepted.accepted_at)
    );
}
