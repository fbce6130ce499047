//! Fixtures shared by the suites: records built from valid domain values, and queue helpers that wait
//! for what must arrive without asserting how fast it does.

use std::time::Duration;

use jiff::Timestamp;
use tally_domain::event::SupplierRegistered;
use tally_domain::values::{SupplierId, Text};
use tally_domain::{Command, Event, StreamId};
use uuid::Uuid;

use crate::Backend;
use crate::model::{
    AcceptedCommand, CommandEnvelope, CommitBatch, Decision, Delivery, EventMetadata, NewEvent,
    OutcomeRecord, Principal, QueueMessage, Role,
};
use crate::ports::{CommandQueue, Submission, Submitted};

/// Timestamps with microsecond precision: what PostgreSQL keeps, so every backend can round-trip them.
pub fn ts(raw: &str) -> Timestamp {
    raw.parse()
        .unwrap_or_else(|e| panic!("fixture timestamp {raw}: {e}"))
}

pub fn stream(raw: &str) -> StreamId {
    StreamId::from_stored(raw)
}

/// A real event payload, so what an adapter stores is what the processor would give it.
pub fn payload(tag: &str) -> String {
    Event::SupplierRegistered(SupplierRegistered {
        supplier_id: SupplierId::parse(format!("sup-{tag}")).expect("valid supplier id"),
        name: Text::parse(format!("Müller & \"Söhne\" {tag}")).expect("valid name"),
    })
    .encode()
}

/// An event for `stream` at `version`; `tag` makes its payload and correlation id its own.
pub fn event(stream_id: &str, version: u64, tag: &str) -> NewEvent {
    NewEvent {
        event_type: "SupplierRegistered".to_owned(),
        schema_version: 1,
        occurred_at: ts("2026-03-14T09:26:53.123456Z"),
        recorded_at: ts("2026-03-15T10:00:00.654321Z"),
        data: payload(tag),
        metadata: EventMetadata {
            command_id: Uuid::now_v7(),
            correlation_id: Some(format!("corr-{tag}")),
            principal: "key-writer".to_owned(),
        },
        streams: vec![(stream(stream_id), version)],
    }
}

/// A batch of events without outcomes.
pub fn batch(events: Vec<NewEvent>) -> CommitBatch {
    CommitBatch {
        events,
        outcomes: Vec::new(),
        reads: Vec::new(),
    }
}

pub fn processed(command_id: Uuid, last_event: usize) -> OutcomeRecord {
    OutcomeRecord {
        command_id,
        decision: Decision::Processed { last_event },
        accepted: Some(as_accepted()),
    }
}

/// What the processor passes on of a command that [`accept`] submitted (they differ only in id).
pub fn as_accepted() -> AcceptedCommand {
    AcceptedCommand::of(&envelope("key-writer", "sup-0"))
}

pub fn principal(key_id: &str) -> Principal {
    Principal {
        key_id: key_id.to_owned(),
        role: Role::Supplier,
        scope: Some("sup-1".to_owned()),
    }
}

/// `command` as an admin key (`test`) sends it, now, with a fresh id: for tests outside the suites
/// that need commands through an intake or a queue.
pub fn admin_envelope(command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::now_v7(),
        received_at: Timestamp::now(),
        principal: Principal {
            key_id: "test".into(),
            role: Role::Admin,
            scope: None,
        },
        correlation_id: None,
        command,
    }
}

/// A `RegisterSupplier` command sent with the key `key_id`.
pub fn envelope(key_id: &str, supplier: &str) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::now_v7(),
        received_at: ts("2026-03-14T08:00:00.000001Z"),
        principal: principal(key_id),
        correlation_id: Some(format!("corr-{supplier}")),
        command: Command::RegisterSupplier {
            supplier_id: SupplierId::parse(supplier).expect("valid supplier id"),
            name: Text::parse(format!("supplier {supplier}")).expect("valid name"),
        },
    }
}

pub fn submission(envelope: CommandEnvelope, idempotency: Option<(&str, u8)>) -> Submission {
    Submission {
        partition_key: envelope.command.partition_key(),
        envelope,
        idempotency: idempotency.map(|(key, hash)| (key.to_owned(), [hash; 32])),
    }
}

/// Submits `n` fresh commands and returns their ids; each must be accepted.
pub async fn accept(backend: &Backend, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let env = envelope("key-writer", &format!("sup-{i}"));
        let id = env.command_id;
        let got = backend.intake.submit(submission(env, None)).await;
        assert_eq!(got, Ok(Submitted::Accepted { command_id: id }));
        ids.push(id);
    }
    ids
}

pub fn message(partition: &str, payload: &[u8]) -> QueueMessage {
    QueueMessage {
        message_id: Uuid::now_v7(),
        partition_key: partition.to_owned(),
        payload: payload.to_vec(),
    }
}

/// How long a receive may wait when a message is expected; generous, since it only bounds a hang.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long a receive waits to conclude that nothing (more) is deliverable.
pub const SHORT: Duration = Duration::from_millis(200);

/// Receives until at least one message arrives, within [`PATIENCE`] per attempt and a few attempts.
pub async fn receive_some(queue: &dyn CommandQueue, max: usize) -> Vec<Delivery> {
    for _ in 0..5 {
        let got = queue.receive(max, PATIENCE).await.expect("receive");
        assert!(got.len() <= max, "receive({max}) returned {}", got.len());
        if !got.is_empty() {
            return got;
        }
    }
    panic!("no message was delivered although one was deliverable");
}

/// Receives one message, which must be deliverable.
pub async fn receive_one(queue: &dyn CommandQueue) -> Delivery {
    let mut got = receive_some(queue, 1).await;
    got.pop().expect("one message")
}

/// Receives one message at a time (without acking) until a receive comes back empty: everything a
/// second, third, … receive may hand out while the earlier deliveries are still in flight.
///
/// One at a time, because whether a single receive may hand out several messages of one partition
/// (as brokers with a prefetch do, in order, to one consumer) is left to the adapter.
pub async fn receive_all(queue: &dyn CommandQueue) -> Vec<Delivery> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let got = queue.receive(1, SHORT).await.expect("receive");
        assert!(got.len() <= 1, "receive(1) returned {}", got.len());
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
    panic!("receive kept returning messages: {} so far", all.len());
}

/// Receives and acks until `n` messages were seen, returning them in the order they were delivered.
pub async fn consume(queue: &dyn CommandQueue, n: usize) -> Vec<Delivery> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let got = receive_some(queue, 16).await;
        let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
        queue.ack(&tags).await.expect("ack");
        seen.extend(got);
    }
    assert_eq!(seen.len(), n, "more messages than were enqueued");
    seen
}

pub fn ids(deliveries: &[Delivery]) -> Vec<Uuid> {
    deliveries.iter().map(|d| d.message_id).collect()
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
