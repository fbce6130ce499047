//! The records that cross the ports: command envelopes, stored events, outcomes, principals.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_domain::{Command, Rejection, StreamId};
use uuid::Uuid;

/// What a key may do. The HTTP layer maps roles to endpoints; the processor only records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Store,
    Supplier,
    Analyst,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Store => "store",
            Role::Supplier => "supplier",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "admin" => Role::Admin,
            "store" => Role::Store,
            "supplier" => Role::Supplier,
            "analyst" => Role::Analyst,
            "auditor" => Role::Auditor,
            _ => return None,
        })
    }
    /// Store and supplier keys are bound to one store or supplier id; the others are not.
    pub fn needs_scope(self) -> bool {
        matches!(self, Role::Store | Role::Supplier)
    }
}

/// Who sent a request: an API key's id, role and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    pub scope: Option<String>,
}

/// A command as it travels through the queue: the command and everything known when it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub received_at: Timestamp,
    pub principal: Principal,
    pub correlation_id: Option<String>,
    pub command: Command,
}

/// A queue payload could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("undecodable command envelope: {0}")]
pub struct EnvelopeError(#[from] postcard::Error);

impl CommandEnvelope {
    /// The queue payload: postcard, a compact binary serde format (the processor decodes every
    /// command, and JSON decoding was a tenth of its time). Payloads are internal to tally; events and
    /// the API stay JSON.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and validated values always serializes.
        postcard::to_allocvec(self).unwrap_or_else(|e| unreachable!("envelopes serialize: {e}"))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// Metadata stored with every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub command_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub correlation_id: Option<String>,
    pub principal: String,
}

/// An event to append: its payload in stored form, and its place in each stream it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub data: String,
    pub metadata: EventMetadata,
    /// `(stream, version)` per stream, the first being the primary. Each version must be the stream's
    /// current version + 1; a version already taken is a conflict.
    pub streams: Vec<(StreamId, u64)>,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: u64,
    /// The primary stream, or the stream being read when read through [`crate::EventStore::read_stream`].
    pub stream_id: StreamId,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub data: String,
    pub metadata: EventMetadata,
}

impl RecordedEvent {
    pub fn decode(&self) -> Result<tally_domain::Event, tally_domain::event::DecodeError> {
        tally_domain::Event::decode(&self.event_type, self.schema_version, &self.data)
    }
}

/// An event as a projection reads it: its place in the log and its payload, without the stream and
/// metadata a projection never looks at (less to read, copy and drop on a rebuild of the whole log).
#[derive(Debug, Clone, PartialEq)]
pub struct EventPayload {
    pub position: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub data: String,
}

impl EventPayload {
    pub fn decode(&self) -> Result<tally_domain::Event, tally_domain::event::DecodeError> {
        tally_domain::Event::decode(&self.event_type, self.schema_version, &self.data)
    }
}

impl From<RecordedEvent> for EventPayload {
    fn from(e: RecordedEvent) -> Self {
        Self {
            position: e.position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Its events were appended; `last_event` indexes the batch's events (the store turns it into a position).
    Processed {
        last_event: usize,
    },
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub command_id: Uuid,
    pub decision: Decision,
    /// What the intake knew of the command, from its envelope: a store whose intake keeps no record of
    /// its own beside the queued message (the embedded one) writes the command's record from this.
    /// `None` for a command that bypassed the intake (benchmarks, tests).
    pub accepted: Option<AcceptedCommand>,
}

/// A command as the intake accepted it: what its record in the command log shows besides the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCommand {
    pub kind: &'static str,
    pub principal: Principal,
    pub accepted_at: Timestamp,
}

impl AcceptedCommand {
    pub fn of(envelope: &CommandEnvelope) -> Self {
        Self {
            kind: envelope.command.kind(),
            principal: envelope.principal.clone(),
            accepted_at: envelope.received_at,
        }
    }
}

/// Events and outcomes committed together: either all of them or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitBatch {
    pub events: Vec<NewEvent>,
    pub outcomes: Vec<OutcomeRecord>,
    /// The streams the batch's decisions read and do not append to, each with the version it had when
    /// read (0 = the stream did not exist). The commit fails with a conflict when any of them is at
    /// another version now: a decision taken on stale state (a rejection, or a lookup of a stream it
    /// does not write) must not be committed. Streams the events append to are already guarded by the
    /// versions they append at and need not be listed.
    pub reads: Vec<(StreamId, u64)>,
}

/// A command's status as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommandStatus {
    Accepted,
    Processed { position: u64 },
    Rejected { code: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub command_id: Uuid,
    pub kind: String,
    pub principal: Principal,
    pub accepted_at: Timestamp,
    pub status: CommandStatus,
}

/// A message taken from the queue, to be acked or nacked by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub tag: u64,
    pub message_id: Uuid,
    pub partition_key: String,
    pub payload: Vec<u8>,
    /// How many times it was delivered before (0 the first time).
    pub redeliveries: u32,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: Uuid,
    pub partition_key: String,
    pub payload: Vec<u8>,
}

/// A message that could not be handled after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: Uuid,
    pub partition_key: String,
    pub payload: Vec<u8>,
    pub reason: String,
    pub failed_at: Timestamp,
}

/// A stored API key (its secret is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub key_id: String,
    pub role: Role,
    pub scope: Option<String>,
    pub rate_per_second: Option<u32>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.key_id.clone(),
            role: self.role,
            scope: self.scope.clone(),
        }
    }
}

/// How much an API key was used: its totals when read from a [`KeyStore`](crate::KeyStore), what to
/// add to them when recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    pub key_id: String,
    /// Requests made with the key.
    pub requests: u64,
    /// Of those, the ones answered with a 4xx status (429, too many requests, included).
    pub rejections: u64,
    /// When the key was last used; `None` if never.
    pub last_used_at: Option<Timestamp>,
}
