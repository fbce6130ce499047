//! tally's command queue on Apache ActiveMQ 5 (Debian's 5.17), spoken to over STOMP 1.2 with a small
//! codec of its own ([`codec`]). Behind the `activemq` feature; without it this crate is empty.
//!
//! How the [`CommandQueue`](tally_core::CommandQueue) contract is kept on ActiveMQ:
//!
//! - **Durable enqueue.** A batch is sent as persistent messages inside STOMP transactions (at most
//!   [`ActiveMqOptions::max_transaction`] messages each, all pipelined) and `enqueue` returns after the
//!   broker's receipt for every `COMMIT`; KahaDB syncs its journal before it answers. ActiveMQ has no
//!   deduplication by an id of ours: an enqueue retried after an unknown outcome may enqueue twice.
//! - **Per-partition order across processes.** Every message carries its partition as its
//!   `JMSXGroupID`: ActiveMQ hands all messages of a group to one consumer until that consumer goes
//!   away (then its unacked messages go, in order, to another). The broker must keep every group's
//!   owner (`simpleMessageGroupMapFactory`; the default map forgets groups beyond 1024): see `ci.sh`.
//!   Inside a process, a partition's next messages are held back while one of it is delivered and
//!   not settled.
//! - **Acks** are `client-individual`, confirmed by receipts. **Nack** keeps the message in this
//!   consumer's memory until its `retry_after` is due, its partition blocked behind it (a STOMP NACK
//!   would send it straight to `ActiveMQ.DLQ`). After [`ActiveMqOptions::max_deliveries`] deliveries
//!   it is dead-lettered: sent to `<namespace>.dead` with its reason and acked, in one transaction.
//! - **Depth** comes from the broker's statistics plugin (`ActiveMQ.Statistics.Destination.*`): the
//!   messages in the command queue, delivered or not, of every process.
//! - **Reconnection.** A connection that broke (or whose heart-beats stopped) is opened again by the
//!   next call that needs it, with a back-off; calls meanwhile fail with `Unavailable`. The broker
//!   redelivers what it had handed out on a broken connection; tags from it are ignored by `ack` and
//!   `nack`. Messages this process had handed out count as redelivered when they come back, even
//!   after a broker restart (which makes ActiveMQ forget that it delivered them).

#![cfg(feature = "activemq")]

pub mod codec;
mod conn;
mod queue;

pub use queue::{ActiveMq, ActiveMqOptions, ActiveMqQueue, MAX_DELIVERIES, connect};
