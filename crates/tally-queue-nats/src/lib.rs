//! tally's command queue on NATS JetStream (feature `nats`; without it this crate is empty).
//!
//! One file-backed work-queue stream `<ns>_commands` holds the commands on subjects
//! `<ns>.commands.<p>`, where a partition key maps to partition `p` by FNV-1a (stable across processes
//! and builds). Each partition has one durable pull consumer. A process consumes a partition only while
//! it holds that partition's lease (a compare-and-set record in the stream `<ns>_leases`, which
//! expires unless renewed), so one process at a time has a partition's messages in flight; within the
//! process, a partition key gives out nothing more while one of its messages is handed out. Partitions
//! are shared out evenly among the consuming processes: a process becomes one at its first `receive`
//! and announces itself in `<ns>_leases` from then on (a gateway that only enqueues holds none).
//!
//! Nacked messages wait in the process's memory until due, blocking their key; dead letters go, with
//! their reason, to the stream `<ns>_dead` under `<ns>.dead.<message id>`. See [`Nats`] for the
//! guarantees and the module docs of `queue.rs` for how it fetches and how order survives crashes
//! and reconnects.
//!
//! Durability (nats-server 2.9): a message is acknowledged once it is written to the stream's files,
//! not once it is fsynced; the server fsyncs every two minutes (`sync_interval`, which 2.9.10 does not
//! let one configure). A crash of the server process loses nothing acknowledged; a power loss or an
//! operating-system crash can lose up to about two minutes of acknowledged messages and acks (acks
//! lost mean redeliveries).
#![cfg(feature = "nats")]

mod pulls;
mod queue;
mod state;
mod wire;

use std::time::Duration;

pub use queue::{Nats, connect, remove_namespace};

/// Deliveries after which a nacked message is dead-lettered.
pub const MAX_DELIVERIES: u32 = 5;

/// How to reach the broker and how the queue behaves there.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port`.
    pub url: String,
    /// Prefixes every stream and subject, so tests and deployments can share a server. Letters,
    /// digits, `_` and `-`.
    pub namespace: String,
    /// Partitions (consumers) the command stream is split into. Fixed for a namespace once its stream
    /// exists: connecting with another number fails.
    pub partitions: usize,
    /// JetStream's ack wait on each partition consumer, used when this process creates them. A message
    /// held longer is kept alive with progress acks; after a crash or a lost connection its partition
    /// waits this long (plus a second) so that everything delivered before comes back first.
    pub ack_wait: Duration,
    /// How long a partition lease lasts without renewal (renewed every quarter of it), used when this
    /// process creates the lease stream. A crashed process's partitions are taken over after this.
    pub lease_ttl: Duration,
    /// Upper bound of every single call to the broker.
    pub call_timeout: Duration,
    /// Deliveries (the first one included) after which a nacked message is dead-lettered.
    pub max_deliveries: u32,
}

impl NatsOptions {
    /// Defaults: namespace `tally`, 16 partitions, ack wait 10 s, lease 10 s, calls bounded to 5 s,
    /// [`MAX_DELIVERIES`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "tally".to_owned(),
            partitions: 16,
            ack_wait: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            max_deliveries: MAX_DELIVERIES,
        }
    }
}
