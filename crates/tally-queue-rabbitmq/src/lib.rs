//! tally's command queue on RabbitMQ (AMQP 0-9-1, through lapin), behind the feature `rabbitmq`.
//!
//! Topology, per namespace `ns`: `queues` durable quorum queues `ns.commands.00`, `ns.commands.01`, …
//! with `x-single-active-consumer`, and one durable quorum queue `ns.dead-letters`. A partition key is
//! mapped to one queue by FNV-1a (stable across processes and builds), so a partition's messages are
//! in one queue, in enqueue order.
//!
//! - **Enqueue** publishes persistent messages (`delivery_mode` 2, `message_id`, the partition key in
//!   a header) on confirm-mode channels (four; a queue, hence a partition, always uses the same one),
//!   all of a batch pipelined, and returns once the broker has confirmed every one. A quorum queue
//!   confirms once a majority of its members (here the single node) has the message in its Raft
//!   WAL, written and `fdatasync`ed (RabbitMQ 3.10 runs ra with `wal_sync_method = datasync`).
//! - **Order across processes**: single active consumer gives each queue to one consumer at a time, so
//!   one process holds a partition's messages; when it dies the broker returns its unacked messages
//!   (ahead of the rest, marked redelivered, counted in `x-delivery-count`) before the next consumer
//!   becomes active. Consumers are registered on the first `receive`, so a process that only enqueues
//!   never takes a queue.
//! - **In-flight holding** happens here: deliveries are buffered per partition, and a partition's
//!   messages are handed out only while nothing of it is handed out and unsettled. One `receive` may
//!   hand out several messages of a partition, in order.
//! - **Nack** keeps the message in this process (still unacked at the broker), back at its place at
//!   the head of its partition, which waits until `retry_after`. The count and the due time are also
//!   remembered by message id, so a redelivery after a reconnect keeps both. After `max_deliveries`
//!   deliveries the message is published to `ns.dead-letters` with its reason (confirmed) and then
//!   acked, and its partition moves on. A message the broker has handed back `max_returns` times
//!   (`x-delivery-count`: its consumers' connections ended while holding it) is dead-lettered the
//!   same way; that limit is higher because every prefetched message is counted when a consumer's
//!   connection ends. `redeliveries` is nacks plus returns.
//! - **Depth** is what the broker reports as ready (a passive `queue.declare` per queue, on the
//!   consumer's channel, followed by a second round trip so that deliveries sent before the answer
//!   have arrived) plus what this process holds unacked. Messages held unacked by *another* process
//!   are not counted.
//! - **Reconnection**: any broker or channel error marks the connection broken; the next call opens a
//!   new one (with back-off between failed attempts), declares the topology again and starts fresh.
//!   Messages delivered on the old connection come back from the broker; tags of the old connection
//!   are forgotten, so acking them is a no-op. Every broker call is bounded by `timeout`. A retired
//!   connection is closed before its consumers are dropped: a dropped consumer would send
//!   `basic.cancel`, and RabbitMQ 3.10 then activates the next single active consumer while the
//!   cancelled one still holds its unacked messages (the hand-over test catches that order).
//!
//! Limits: one process is active per queue (the others are hot standbys), so processes share the
//! queues only as registration happens to spread them; a partition held by a nack for a long time
//! keeps up to `prefetch` messages of its queue in this process, which can stall the other
//! partitions of that queue; a message held unacked longer than the broker's `consumer_timeout`
//! (30 minutes by default) makes the broker close the channel (the messages come back, counted as
//! returns); listing dead letters reads them all through `basic.get` (one round trip each), and a
//! listing running in another process at the same moment may hide some of them.

#![cfg(feature = "rabbitmq")]

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use jiff::Timestamp;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tally_core::model::{DeadLetter, Delivery, QueueMessage};
use tally_core::ports::{CommandQueue, Error, Result};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// Deliveries after which a nacked message is dead-lettered.
pub const MAX_DELIVERIES: u32 = 5;
/// Returns by the broker (consumers that stopped holding it) after which a message is dead-lettered.
pub const MAX_RETURNS: u32 = 20;

const PARTITION_HEADER: &str = "tally-partition";
const REASON_HEADER: &str = "tally-reason";
const FAILED_AT_HEADER: &str = "tally-failed-at-us";
/// Set by quorum queues on a message returned to the queue (its consumer died or rejected it).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// How long the close of a retired connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Confirm-mode channels for publishing (the broker runs each channel in one process).
const PUBLISHERS: usize = 4;
/// Remembered nacks kept before stale ones (due more than an hour ago) are forgotten.
const MEMORY_LIMIT: usize = 100_000;

/// Where and how to reach RabbitMQ, and the queue's settings.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// `amqp://user:password@host:port/vhost` (the default vhost is `%2f`).
    pub url: String,
    /// Prefix of every queue name, so deployments and tests can share a broker.
    pub namespace: String,
    /// Number of quorum queues partitions are spread over. Every process of a namespace must use the
    /// same number: it decides which queue holds a partition.
    pub queues: u16,
    /// Unacked deliveries the broker sends ahead, per queue (`basic.qos`).
    pub prefetch: u16,
    /// Deliveries after which a nacked message is dead-lettered (nacks by this process, which
    /// remembers them across its reconnects).
    pub max_deliveries: u32,
    /// Times the broker may hand a message back (its consumer's connection ended while holding it,
    /// counted in `x-delivery-count`) before it is dead-lettered, so that a message that kills
    /// every consumer cannot hold its partition forever. Higher than `max_deliveries`, because
    /// every message a consumer had prefetched is counted when its connection ends, handled or not
    /// (so a backlog that outlives this many consumer restarts is dead-lettered too). 0: never.
    pub max_returns: u32,
    /// Bound of every call to the broker (connecting, a batch of confirms, a declare…).
    pub timeout: Duration,
    /// Longest wait between two failed attempts to reconnect.
    pub max_backoff: Duration,
}

impl RabbitOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "tally".to_owned(),
            queues: 16,
            prefetch: 2000,
            max_deliveries: MAX_DELIVERIES,
            max_returns: MAX_RETURNS,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// The queue holding `partition_key`'s messages.
    pub fn queue_name(&self, partition_key: &str) -> String {
        queue_name(&self.namespace, queue_index(partition_key, self.queues))
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.namespace)
    }

    fn queue_names(&self) -> Vec<String> {
        (0..usize::from(self.queues.max(1)))
            .map(|i| queue_name(&self.namespace, i))
            .collect()
    }
}

fn queue_name(namespace: &str, index: usize) -> String {
    format!("{namespace}.commands.{index:02}")
}

/// The queue index of a partition: FNV-1a of its key, modulo the number of queues.
pub fn queue_index(partition_key: &str, queues: u16) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition_key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % u64::from(queues.max(1))).unwrap_or(0)
}

/// Opens the queue: connects, declares the topology and returns it ready for use.
pub async fn connect(options: RabbitOptions) -> Result<Arc<Rabbit>, Error> {
    let rabbit = Arc::new(Rabbit::new(options));
    rabbit.link().await?;
    Ok(rabbit)
}

fn unavailable(context: &str, cause: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("RabbitMQ: {context}: {cause}"))
}

/// The command queue on RabbitMQ. See the crate documentation for how it works.
pub struct Rabbit {
    options: RabbitOptions,
    names: Vec<String>,
    dead_name: String,
    slot: tokio::sync::Mutex<Slot>,
    local: Mutex<Local>,
    /// Woken when a partition may have become deliverable (an ack or a nack).
    settled: Notify,
    /// Dead-letter scans of this process, one at a time (a scan holds the letters it has seen).
    scans: tokio::sync::Mutex<()>,
}

/// The current connection and the reconnect back-off.
#[derive(Default)]
struct Slot {
    current: Option<Arc<Link>>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One connection with its channels. Replaced as a whole when anything on it fails.
struct Link {
    generation: u64,
    connection: Connection,
    /// Confirm mode: enqueues, dead letters, replays. Queue `i` is published to on channel
    /// `i % publishers.len()`, so a partition always goes through one channel, in order.
    publishers: Vec<Channel>,
    /// Dead-letter scans (`basic.get`).
    scan: Channel,
    /// One per queue: its consumer, its acks and its depth queries.
    consumers: Vec<Channel>,
    feed: tokio::sync::Mutex<Feed>,
    broken: AtomicBool,
}

type FeedItem = (usize, Option<lapin::Result<AmqpDelivery>>);

#[derive(Default)]
struct Feed {
    started: bool,
    streams: SelectAll<BoxStream<'static, FeedItem>>,
}

impl Link {
    fn healthy(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
            && self.connection.status().connected()
            && self.publishers.iter().all(|c| c.status().connected())
            && self.scan.status().connected()
            && self.consumers.iter().all(|c| c.status().connected())
    }

    fn publisher(&self, queue: usize) -> &Channel {
        &self.publishers[queue % self.publishers.len()]
    }

    fn fail(&self, context: &str, cause: impl std::fmt::Display) -> Error {
        self.broken.store(true, Ordering::SeqCst);
        unavailable(context, cause)
    }
}

/// Closes a connection that is no longer used. The close is queued before anything else can be:
/// the first poll of `close` sends it, and only then may the consumers be dropped (a consumer
/// dropped on a live connection sends `basic.cancel`, and RabbitMQ 3.10 then makes the next single
/// active consumer active while the cancelled one still holds its unacked messages, which would
/// reach the next consumer after later messages of their partitions).
fn retire(link: Arc<Link>) {
    link.broken.store(true, Ordering::SeqCst);
    if tokio::runtime::Handle::try_current().is_ok() {
        let mut closing = Box::pin(async move {
            if link.connection.status().connected() {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    link.connection.close(200, "tally: closing".into()),
                )
                .await;
            }
            drop(link);
        });
        if (&mut closing).now_or_never().is_none() {
            tokio::spawn(closing);
        }
    } else {
        if link.connection.status().connected() {
            let _ = link
                .connection
                .close(200, "tally: closing".into())
                .now_or_never();
        }
        drop(link);
    }
}

/// A message received from the broker and not yet settled.
struct Msg {
    queue: usize,
    broker_tag: u64,
    message_id: Uuid,
    partition: String,
    payload: Vec<u8>,
    /// Nacks by this process (remembered across its reconnects).
    nacks: u32,
    /// Times the broker handed it back (`x-delivery-count`): its consumer's connection ended.
    returns: u32,
}

impl Msg {
    fn redeliveries(&self) -> u32 {
        self.nacks.saturating_add(self.returns)
    }
}

#[derive(Default)]
struct Part {
    /// Received, not handed out, in delivery order (a nacked message goes back to its place).
    pending: VecDeque<Msg>,
    /// Handed out and neither acked nor nacked.
    in_flight: usize,
    /// A nacked message at the head is not due before this.
    held_until: Option<Instant>,
    /// In the ready list.
    queued: bool,
}

impl Part {
    fn deliverable(&self, now: Instant) -> bool {
        self.in_flight == 0
            && !self.pending.is_empty()
            && self.held_until.is_none_or(|due| due <= now)
    }
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.pending.is_empty() && self.held_until.is_none()
    }
}

/// What a nack left behind, kept by message id across reconnects.
struct Memory {
    nacks: u32,
    due: Instant,
}

/// This process's deliveries of the current connection.
struct Local {
    generation: u64,
    parts: HashMap<String, Part>,
    ready: VecDeque<String>,
    held: HashSet<String>,
    /// Handed out, by our tag.
    out: HashMap<u64, Msg>,
    next_tag: u64,
    /// Received and not settled: pending, handed out or held.
    unacked: u64,
    /// Per queue, the broker tags received and not settled.
    outstanding: Vec<BTreeSet<u64>>,
    memory: HashMap<Uuid, Memory>,
}

/// What to acknowledge on one queue's channel.
struct Acks {
    queue: usize,
    /// `basic.ack` with `multiple`: everything up to this tag.
    upto: Option<u64>,
    single: Vec<u64>,
}

/// A message to dead-letter, copied out of the state.
struct Dying {
    tag: u64,
    queue: usize,
    broker_tag: u64,
    message_id: Uuid,
    partition: String,
    payload: Vec<u8>,
}

enum NackOutcome {
    Unknown,
    Requeued,
    Dead(Dying),
}

impl Local {
    fn new(queues: usize) -> Self {
        Self {
            generation: 0,
            parts: HashMap::new(),
            ready: VecDeque::new(),
            held: HashSet::new(),
            out: HashMap::new(),
            next_tag: 1,
            unacked: 0,
            outstanding: vec![BTreeSet::new(); queues],
            memory: HashMap::new(),
        }
    }

    /// Forgets every delivery of the previous connection (the broker gives them back).
    fn reset(&mut self, generation: u64) {
        self.generation = generation;
        self.parts.clear();
        self.ready.clear();
        self.held.clear();
        self.out.clear();
        self.unacked = 0;
        for o in &mut self.outstanding {
            o.clear();
        }
    }

    fn maybe_ready(&mut self, partition: &str, now: Instant) {
        if let Some(part) = self.parts.get_mut(partition)
            && !part.queued
            && part.deliverable(now)
        {
            part.queued = true;
            self.ready.push_back(partition.to_owned());
        }
    }

    fn hold(&mut self, partition: &str, due: Instant, now: Instant) {
        if due <= now {
            return;
        }
        if let Some(part) = self.parts.get_mut(partition) {
            part.held_until = Some(part.held_until.map_or(due, |d| d.max(due)));
            self.held.insert(partition.to_owned());
        }
    }

    fn forget_if_idle(&mut self, partition: &str) {
        if self.parts.get(partition).is_some_and(Part::idle) {
            self.parts.remove(partition);
        }
    }

    fn push(&mut self, generation: u64, mut msg: Msg, now: Instant) {
        if generation != self.generation {
            return;
        }
        let mut due = None;
        if let Some(m) = self.memory.get(&msg.message_id) {
            msg.nacks = m.nacks;
            due = Some(m.due);
        }
        if let Some(o) = self.outstanding.get_mut(msg.queue) {
            o.insert(msg.broker_tag);
        }
        self.unacked += 1;
        let partition = msg.partition.clone();
        self.parts
            .entry(partition.clone())
            .or_default()
            .pending
            .push_back(msg);
        if let Some(due) = due {
            self.hold(&partition, due, now);
        }
        self.maybe_ready(&partition, now);
    }

    /// The earliest time a held partition becomes due.
    fn next_due(&self) -> Option<Instant> {
        self.held
            .iter()
            .filter_map(|p| self.parts.get(p).and_then(|part| part.held_until))
            .min()
    }

    /// Hands out up to `max` messages of partitions with nothing in flight; messages the broker
    /// handed back `max_returns` times are set apart to be dead-lettered (they count as in flight
    /// until then).
    fn take(&mut self, max: usize, max_returns: u32, now: Instant) -> (Vec<Delivery>, Vec<Dying>) {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|p| {
                self.parts
                    .get(*p)
                    .and_then(|part| part.held_until)
                    .is_none_or(|d| d <= now)
            })
            .cloned()
            .collect();
        for p in due {
            self.held.remove(&p);
            if let Some(part) = self.parts.get_mut(&p) {
                part.held_until = None;
            }
            self.maybe_ready(&p, now);
        }
        let mut out = Vec::new();
        let mut dying = Vec::new();
        while out.len() < max {
            let Some(p) = self.ready.pop_front() else {
                break;
            };
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            part.queued = false;
            if !part.deliverable(now) {
                continue;
            }
            while out.len() < max {
                let Some(msg) = part.pending.pop_front() else {
                    break;
                };
                let tag = self.next_tag;
                self.next_tag += 1;
                part.in_flight += 1;
                if max_returns > 0 && msg.returns >= max_returns {
                    dying.push(Dying {
                        tag,
                        queue: msg.queue,
                        broker_tag: msg.broker_tag,
                        message_id: msg.message_id,
                        partition: msg.partition.clone(),
                        payload: msg.payload.clone(),
                    });
                } else {
                    out.push(Delivery {
                        tag,
                        message_id: msg.message_id,
                        partition_key: msg.partition.clone(),
                        payload: msg.payload.clone(),
                        redeliveries: msg.redeliveries(),
                    });
                }
                self.out.insert(tag, msg);
            }
        }
        (out, dying)
    }

    /// Removes a handed-out message that is settled at the broker (acked or dead-lettered).
    fn settle(&mut self, tag: u64, now: Instant) -> Option<Msg> {
        let msg = self.out.remove(&tag)?;
        self.unacked = self.unacked.saturating_sub(1);
        if let Some(o) = self.outstanding.get_mut(msg.queue) {
            o.remove(&msg.broker_tag);
        }
        self.memory.remove(&msg.message_id);
        if let Some(part) = self.parts.get_mut(&msg.partition) {
            part.in_flight = part.in_flight.saturating_sub(1);
        }
        self.maybe_ready(&msg.partition, now);
        self.forget_if_idle(&msg.partition);
        Some(msg)
    }

    /// Settles acked tags and says what to send: per queue, one `multiple` ack for the tags below
    /// every other unsettled delivery of that channel, single acks for the rest.
    fn ack(&mut self, tags: &[u64], now: Instant) -> Vec<Acks> {
        let mut by_queue: HashMap<usize, Vec<u64>> = HashMap::new();
        for tag in tags {
            if let Some(msg) = self.settle(*tag, now) {
                by_queue.entry(msg.queue).or_default().push(msg.broker_tag);
            }
        }
        let mut acks = Vec::with_capacity(by_queue.len());
        for (queue, mut broker_tags) in by_queue {
            broker_tags.sort_unstable();
            let floor = self
                .outstanding
                .get(queue)
                .and_then(|o| o.first().copied())
                .unwrap_or(u64::MAX);
            let below = broker_tags.partition_point(|t| *t < floor);
            let upto = below.checked_sub(1).map(|i| broker_tags[i]);
            acks.push(Acks {
                queue,
                upto,
                single: broker_tags.split_off(below),
            });
        }
        acks
    }

    fn nack(
        &mut self,
        tag: u64,
        retry_after: Duration,
        max_deliveries: u32,
        now: Instant,
    ) -> NackOutcome {
        let Some(msg) = self.out.get(&tag) else {
            return NackOutcome::Unknown;
        };
        if msg.nacks.saturating_add(1) >= max_deliveries {
            return NackOutcome::Dead(Dying {
                tag,
                queue: msg.queue,
                broker_tag: msg.broker_tag,
                message_id: msg.message_id,
                partition: msg.partition.clone(),
                payload: msg.payload.clone(),
            });
        }
        let Some(mut msg) = self.out.remove(&tag) else {
            return NackOutcome::Unknown;
        };
        msg.nacks += 1;
        let due = now + retry_after;
        if self.memory.len() >= MEMORY_LIMIT {
            let stale = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
            self.memory.retain(|_, m| m.due > stale);
        }
        self.memory.insert(
            msg.message_id,
            Memory {
                nacks: msg.nacks,
                due,
            },
        );
        let partition = msg.partition.clone();
        let part = self.parts.entry(partition.clone()).or_default();
        part.in_flight = part.in_flight.saturating_sub(1);
        let at = part
            .pending
            .partition_point(|m| m.broker_tag < msg.broker_tag);
        part.pending.insert(at, msg);
        self.hold(&partition, due, now);
        self.maybe_ready(&partition, now);
        NackOutcome::Requeued
    }
}

fn quorum_arguments(single_active: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if single_active {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from(name)))
}

fn header_string(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    Some(match *header(properties, name)? {
        AMQPValue::ShortShortInt(n) => i64::from(n),
        AMQPValue::ShortShortUInt(n) => i64::from(n),
        AMQPValue::ShortInt(n) => i64::from(n),
        AMQPValue::ShortUInt(n) => i64::from(n),
        AMQPValue::LongInt(n) => i64::from(n),
        AMQPValue::LongUInt(n) => i64::from(n),
        AMQPValue::LongLongInt(n) => n,
        AMQPValue::Timestamp(n) => i64::try_from(n).ok()?,
        _ => return None,
    })
}

fn message_id(properties: &BasicProperties) -> Option<Uuid> {
    properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok())
}

fn properties(
    message_id: Uuid,
    partition_key: &str,
    extra: &[(&str, AMQPValue)],
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        PARTITION_HEADER.into(),
        AMQPValue::LongString(partition_key.into()),
    );
    for (name, value) in extra {
        headers.insert((*name).into(), value.clone());
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(message_id.to_string().into())
        .with_headers(headers)
}

/// Waits for a publish's confirm and insists on a plain ack.
async fn confirmed(link: &Link, confirm: lapin::PublisherConfirm) -> Result<()> {
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(_))) => Err(link.fail(
            "publishing",
            "the message was returned unroutable (its queue is missing)",
        )),
        Ok(Confirmation::Nack(_)) => Err(link.fail("publishing", "the broker refused the message")),
        Ok(Confirmation::NotRequested) => {
            Err(link.fail("publishing", "the channel is not in confirm mode"))
        }
        Err(e) => Err(link.fail("waiting for a publish confirm", e)),
    }
}

impl Rabbit {
    fn new(options: RabbitOptions) -> Self {
        let names = options.queue_names();
        let dead_name = options.dead_letter_queue();
        let local = Local::new(names.len());
        Self {
            options,
            names,
            dead_name,
            slot: tokio::sync::Mutex::new(Slot::default()),
            local: Mutex::new(local),
            settled: Notify::new(),
            scans: tokio::sync::Mutex::new(()),
        }
    }

    pub fn options(&self) -> &RabbitOptions {
        &self.options
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a broker call within the timeout.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        context: &str,
        call: impl Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(context, e)),
            Err(_) => Err(unavailable(
                context,
                format!("no answer within {:?}", self.options.timeout),
            )),
        }
    }

    /// The current connection, opening a new one when there is none or it broke.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut slot = self
            .bounded("waiting for the connection", async {
                Ok::<_, Error>(self.slot.lock().await)
            })
            .await?;
        if let Some(link) = &slot.current {
            if link.healthy() {
                return Ok(link.clone());
            }
            if let Some(old) = slot.current.take() {
                tracing::warn!(
                    generation = old.generation,
                    "RabbitMQ connection lost; reconnecting"
                );
                retire(old);
            }
            self.local().reset(0);
        }
        let now = Instant::now();
        if let Some(at) = slot.retry_at
            && now < at
        {
            return Err(Error::Unavailable(format!(
                "RabbitMQ: not connected; next attempt in {:?}",
                at - now
            )));
        }
        slot.generation += 1;
        let generation = slot.generation;
        match self.bounded("connecting", self.open(generation)).await {
            Ok(link) => {
                slot.failures = 0;
                slot.retry_at = None;
                self.local().reset(generation);
                slot.current = Some(link.clone());
                tracing::info!(generation, namespace = %self.options.namespace, "connected to RabbitMQ");
                Ok(link)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << slot.failures.min(10))
                    .min(self.options.max_backoff);
                slot.retry_at = Some(Instant::now() + backoff);
                Err(e)
            }
        }
    }

    /// Connects, opens the channels and declares the topology.
    async fn open(&self, generation: u64) -> lapin::Result<Arc<Link>> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("tally {}", self.options.namespace).into());
        let connection = Connection::connect(&self.options.url, properties).await?;
        let mut publishers = Vec::with_capacity(PUBLISHERS);
        for _ in 0..PUBLISHERS.min(self.names.len()) {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publishers.push(channel);
        }
        let scan = connection.create_channel().await?;
        scan.queue_declare(
            self.dead_name.as_str().into(),
            durable(),
            quorum_arguments(false),
        )
        .await?;
        let mut consumers = Vec::with_capacity(self.names.len());
        for _ in &self.names {
            consumers.push(connection.create_channel().await?);
        }
        let declared = futures_util::future::join_all(consumers.iter().zip(&self.names).map(
            |(channel, name)| {
                channel.queue_declare(name.as_str().into(), durable(), quorum_arguments(true))
            },
        ))
        .await;
        for d in declared {
            d?;
        }
        Ok(Arc::new(Link {
            generation,
            connection,
            publishers,
            scan,
            consumers,
            feed: tokio::sync::Mutex::new(Feed::default()),
            broken: AtomicBool::new(false),
        }))
    }

    /// Registers this process's consumers (single active consumer: the broker picks one per queue),
    /// starting at a random queue so that processes starting together spread over the queues.
    async fn start_consumers(&self, link: &Link, feed: &mut Feed) -> Result<()> {
        let n = link.consumers.len();
        let offset = usize::try_from(
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                % (n.max(1) as u64),
        )
        .unwrap_or(0);
        for k in 0..n {
            let i = (offset + k) % n;
            let channel = &link.consumers[i];
            self.bounded(
                "setting the prefetch",
                channel.basic_qos(self.options.prefetch, BasicQosOptions::default()),
            )
            .await
            .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
            let consumer = self
                .bounded(
                    "starting a consumer",
                    channel.basic_consume(
                        self.names[i].as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await
                .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
            feed.streams.push(
                consumer
                    .map(move |d| (i, Some(d)))
                    .chain(stream::once(async move { (i, None) }))
                    .boxed(),
            );
        }
        feed.started = true;
        Ok(())
    }

    /// Takes one item of the consumer streams into the local state.
    fn accept(&self, link: &Link, item: FeedItem) -> Result<()> {
        let (queue, delivery) = item;
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(link.fail(&format!("consuming {}", self.names[queue]), e)),
            None => {
                return Err(link.fail(
                    &format!("consuming {}", self.names[queue]),
                    "the broker cancelled the consumer",
                ));
            }
        };
        let props = &delivery.properties;
        let broker_returns = header_i64(props, DELIVERY_COUNT_HEADER)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::from(delivery.redelivered));
        let msg = Msg {
            queue,
            broker_tag: delivery.delivery_tag,
            // A message not published by tally: an id of its own, so it can be dead-lettered.
            message_id: message_id(props).unwrap_or_else(Uuid::now_v7),
            partition: header_string(props, PARTITION_HEADER).unwrap_or_default(),
            payload: delivery.data,
            nacks: 0,
            returns: broker_returns,
        };
        self.local().push(link.generation, msg, Instant::now());
        Ok(())
    }

    /// Takes everything the consumers have already received, without waiting.
    fn drain(&self, link: &Link, feed: &mut Feed) -> Result<()> {
        if !feed.started {
            return Ok(());
        }
        loop {
            match feed.streams.next().now_or_never() {
                None => return Ok(()),
                Some(Some(item)) => self.accept(link, item)?,
                Some(None) => return Err(link.fail("consuming", "every consumer has ended")),
            }
        }
    }

    /// Publishes a dead letter with its reason, then acks the original; its partition moves on.
    async fn dead_letter(&self, link: &Link, dying: Dying, reason: &str) -> Result<()> {
        let failed_at = Timestamp::now().as_microsecond();
        let props = properties(
            dying.message_id,
            &dying.partition,
            &[
                (REASON_HEADER, AMQPValue::LongString(reason.into())),
                (FAILED_AT_HEADER, AMQPValue::LongLongInt(failed_at)),
            ],
        );
        let confirm = self
            .bounded(
                "publishing a dead letter",
                link.publisher(dying.queue).basic_publish(
                    "".into(),
                    self.dead_name.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &dying.payload,
                    props,
                ),
            )
            .await
            .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
        self.bounded("confirming a dead letter", confirmed(link, confirm))
            .await
            .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
        let channel = &link.consumers[dying.queue];
        self.bounded(
            "acking a dead-lettered message",
            channel.basic_ack(dying.broker_tag, BasicAckOptions { multiple: false }),
        )
        .await
        .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
        {
            let mut local = self.local();
            if local.generation == link.generation {
                local.settle(dying.tag, Instant::now());
            }
        }
        tracing::warn!(message_id = %dying.message_id, partition = %dying.partition, reason, "dead-lettered");
        self.settled.notify_waiters();
        Ok(())
    }

    /// Reads every dead letter, holding them unacked on the scan channel; `take` picks one to
    /// remove. The others are put back (`basic.nack` with requeue) before returning.
    async fn scan(
        &self,
        link: &Link,
        take: Option<Uuid>,
    ) -> Result<(Vec<DeadLetter>, Option<u64>)> {
        let mut letters = Vec::new();
        let mut taken = None;
        let result: Result<()> = async {
            loop {
                let got = self
                    .bounded(
                        "reading dead letters",
                        link.scan.basic_get(
                            self.dead_name.as_str().into(),
                            BasicGetOptions { no_ack: false },
                        ),
                    )
                    .await?;
                let Some(got) = got else {
                    return Ok(());
                };
                let d = got.delivery;
                let props = &d.properties;
                let letter = DeadLetter {
                    message_id: message_id(props).unwrap_or(Uuid::nil()),
                    partition_key: header_string(props, PARTITION_HEADER).unwrap_or_default(),
                    payload: d.data,
                    reason: header_string(props, REASON_HEADER).unwrap_or_default(),
                    failed_at: header_i64(props, FAILED_AT_HEADER)
                        .and_then(|us| Timestamp::from_microsecond(us).ok())
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                };
                if take == Some(letter.message_id) {
                    taken = Some(d.delivery_tag);
                    letters.push(letter);
                    return Ok(());
                }
                letters.push(letter);
                if got.message_count == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            link.broken.store(true, Ordering::SeqCst);
            return Err(e);
        }
        Ok((letters, taken))
    }

    /// Puts back what a scan holds.
    async fn unscan(&self, link: &Link, held: bool) -> Result<()> {
        if !held {
            return Ok(());
        }
        self.bounded(
            "putting dead letters back",
            link.scan.basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            ),
        )
        .await
        .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))
    }

    /// Publishes messages pipelined on the confirm channels and waits for every confirm.
    async fn publish(&self, link: &Link, messages: &[QueueMessage]) -> Result<()> {
        let run = async {
            // The first poll of a publish queues its frames (a later one only waits for the I/O
            // thread to have written them): polling each once, in order, keeps the enqueue order on
            // each channel without a round trip to the I/O thread per message.
            let mut sends = Vec::with_capacity(messages.len());
            for m in messages {
                let queue = queue_index(&m.partition_key, self.options.queues);
                let mut send = Box::pin(link.publisher(queue).basic_publish(
                    "".into(),
                    self.names[queue].as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &m.payload,
                    properties(m.message_id, &m.partition_key, &[]),
                ));
                let first = futures_util::poll!(send.as_mut());
                sends.push((first, send));
            }
            let mut confirms = Vec::with_capacity(sends.len());
            for (first, send) in sends {
                let sent = match first {
                    Poll::Ready(sent) => sent,
                    Poll::Pending => send.await,
                };
                confirms.push(sent.map_err(|e| link.fail("publishing", e))?);
            }
            for confirm in confirms {
                confirmed(link, confirm).await?;
            }
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(self.options.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(link.fail(
                "enqueueing",
                format!("not confirmed within {:?}", self.options.timeout),
            )),
        }
    }

    /// Closes the connection (the broker gives back every unacked message). The queue reconnects if
    /// it is used again.
    pub async fn close(&self) {
        let link = self.slot.lock().await.current.take();
        self.local().reset(0);
        if let Some(link) = link {
            link.broken.store(true, Ordering::SeqCst);
            if link.connection.status().connected() {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    link.connection.close(200, "tally: closing".into()),
                )
                .await;
            }
        }
    }

    /// Deletes the namespace's queues with every message in them, dead letters included (for tests
    /// and for retiring a namespace).
    pub async fn delete_queues(&self) -> Result<()> {
        let link = self.link().await?;
        for name in self.names.iter().chain(std::iter::once(&self.dead_name)) {
            self.bounded(
                "deleting a queue",
                link.scan
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default()),
            )
            .await
            .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
        }
        drop(link);
        self.close().await;
        Ok(())
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if let Some(link) = self.slot.get_mut().current.take() {
            retire(link);
        }
    }
}

#[async_trait]
impl CommandQueue for Rabbit {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let link = self.link().await?;
        self.publish(&link, &messages).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let link = self.link().await?;
        let mut feed =
            match tokio::time::timeout(wait + self.options.timeout, link.feed.lock()).await {
                Ok(feed) => feed,
                Err(_) => return Ok(Vec::new()),
            };
        if !feed.started {
            self.start_consumers(&link, &mut feed).await?;
        }
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.drain(&link, &mut feed)?;
            let now = Instant::now();
            let (out, dying) = {
                let mut local = self.local();
                if local.generation != link.generation {
                    return Err(link.fail("receiving", "the connection was replaced"));
                }
                local.take(max, self.options.max_returns, now)
            };
            let died = !dying.is_empty();
            for d in dying {
                let reason = format!(
                    "handed back by the broker {} times: its consumers stopped while holding it",
                    self.options.max_returns
                );
                self.dead_letter(&link, d, &reason).await?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if died {
                continue;
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = self
                .local()
                .next_due()
                .map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                item = feed.streams.next() => match item {
                    Some(item) => self.accept(&link, item)?,
                    None => return Err(link.fail("consuming", "every consumer has ended")),
                },
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, tags: &[u64]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let link = {
            let slot = self.slot.lock().await;
            match &slot.current {
                Some(link) => link.clone(),
                // No connection: nothing of these tags is held any more.
                None => return Ok(()),
            }
        };
        let acks = {
            let mut local = self.local();
            if local.generation != link.generation {
                return Ok(());
            }
            local.ack(tags, Instant::now())
        };
        self.settled.notify_waiters();
        for a in acks {
            let channel = &link.consumers[a.queue];
            if let Some(upto) = a.upto {
                self.bounded(
                    "acking",
                    channel.basic_ack(upto, BasicAckOptions { multiple: true }),
                )
                .await
                .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
            }
            for tag in a.single {
                self.bounded(
                    "acking",
                    channel.basic_ack(tag, BasicAckOptions { multiple: false }),
                )
                .await
                .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
            }
        }
        Ok(())
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let link = {
            let slot = self.slot.lock().await;
            match &slot.current {
                Some(link) => link.clone(),
                None => return Ok(()),
            }
        };
        let outcome = {
            let mut local = self.local();
            if local.generation != link.generation {
                return Ok(());
            }
            local.nack(
                tag,
                retry_after,
                self.options.max_deliveries,
                Instant::now(),
            )
        };
        match outcome {
            NackOutcome::Unknown => Ok(()),
            NackOutcome::Requeued => {
                self.settled.notify_waiters();
                Ok(())
            }
            NackOutcome::Dead(dying) => self.dead_letter(&link, dying, reason).await,
        }
    }

    async fn depth(&self) -> Result<u64> {
        let link = self.link().await?;
        let counts = futures_util::future::join_all(link.consumers.iter().zip(&self.names).map(
            |(channel, name)| async move {
                let queue = channel
                    .queue_declare(name.as_str().into(), passive(), FieldTable::default())
                    .await?;
                // A second round trip on the consumer's channel: deliveries the broker made before
                // answering the first are on the wire before this answer.
                channel
                    .queue_declare(name.as_str().into(), passive(), FieldTable::default())
                    .await?;
                Ok::<_, lapin::Error>(u64::from(queue.message_count()))
            },
        ));
        let counts = self
            .bounded("counting messages", async { Ok::<_, Error>(counts.await) })
            .await?;
        let mut ready = 0u64;
        for c in counts {
            ready += c.map_err(|e| link.fail("counting messages", e))?;
        }
        {
            let mut feed = self
                .bounded("waiting for a receive", async {
                    Ok::<_, Error>(link.feed.lock().await)
                })
                .await?;
            self.drain(&link, &mut feed)?;
        }
        let local = self.local();
        let held = if local.generation == link.generation {
            local.unacked
        } else {
            0
        };
        Ok(ready + held)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let _scan = self.scans.lock().await;
        let link = self.link().await?;
        let (mut letters, _) = self.scan(&link, None).await?;
        self.unscan(&link, !letters.is_empty()).await?;
        letters.sort_by(|a, b| {
            a.failed_at
                .cmp(&b.failed_at)
                .then(a.message_id.cmp(&b.message_id))
        });
        Ok(letters)
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let _scan = self.scans.lock().await;
        let link = self.link().await?;
        let (letters, taken) = self.scan(&link, Some(message_id)).await?;
        let Some(broker_tag) = taken else {
            self.unscan(&link, !letters.is_empty()).await?;
            return Ok(false);
        };
        let letter = letters
            .iter()
            .find(|l| l.message_id == message_id)
            .ok_or_else(|| Error::Corrupt("a scanned dead letter vanished".into()))?;
        let message = QueueMessage {
            message_id,
            partition_key: letter.partition_key.clone(),
            payload: letter.payload.clone(),
        };
        self.publish(&link, std::slice::from_ref(&message)).await?;
        self.bounded(
            "removing a replayed dead letter",
            link.scan
                .basic_ack(broker_tag, BasicAckOptions { multiple: false }),
        )
        .await
        .inspect_err(|_| link.broken.store(true, Ordering::SeqCst))?;
        self.unscan(&link, letters.len() > 1).await?;
        Ok(true)
    }
}
