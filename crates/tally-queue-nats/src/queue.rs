//! The adapter: topology, partition leases, fetching, handing out, settling.
//!
//! ## Order across processes
//!
//! JetStream 2.9 has no single-active consumer, so exclusivity is the adapter's: a process fetches
//! from a partition's consumer only while it holds the partition's lease, a record on
//! `<ns>.lease.<p>` written with `Nats-Expected-Last-Subject-Sequence` (compare-and-set) and
//! removed by the stream's `max_age` unless renewed. A process stops handing out a partition's
//! messages a quarter of the lease before it would run out unrenewed, so a new owner never overlaps
//! an old one that is still alive (clocks running at the same rate assumed).
//!
//! A partition whose state this process lost (a new owner, a broken connection, a failed fetch) may
//! have messages that were delivered and never acked. Before fetching it again, the process asks the
//! consumer how many messages are pending; when more are pending than it holds, it waits one ack wait
//! (plus a second): by then JetStream has put them all on its redelivery list, and a pull serves
//! that list, in stream order, before any new message. Held messages are kept alive with progress
//! acks (`+WPI`), all of a partition at once, so their ack deadlines stay in stream order too.
//!
//! ## Fetching
//!
//! Each partition held has a fetch task (`queue/fetch.rs`). For each epoch of the partition it
//! subscribes one inbox, `<inbox>.*`, and sends its pull requests with reply subjects under it
//! (`<inbox>.<request id>`): every delivery of every request of the epoch arrives on that one
//! subscription, in the order the server sent them (stream order), and is taken, however late.
//! Statuses come on the request's own subject and name it. A request asks for what the watermarks
//! leave room for, expires at the server after 2 s and asks for an idle heartbeat every second.
//!
//! One request is live at a time; the next is sent when it is filled, closed by a status (408 at its
//! expiry), or lapses: 250 ms after its expiry with no status at all. nats-server 2.9.10 drops an
//! expired request without a 408 when a message becomes deliverable before its expiry timer has
//! fired (`nextWaiting` in `consumer.go`; fixed upstream in nats-server#3942, after 2.9.10), which
//! happens under load. A lapsed request is only superseded, never a reason to reset: nothing it
//! delivers is lost. What a request may still deliver is counted (`pulls.rs`): the live and closed
//! requests' rest against the watermarks, so a partition's buffer and what is on its way stay within
//! `HIGH_WATER` (`BUFFER_CAP` while it holds back the others); lapsed requests' rest, until forgotten
//! (expiry plus the call limit), against `BUFFER_CAP`, so all of it stays within that.
//!
//! A request with no answer at all by the time it lapses (no delivery, no heartbeat, no status), or
//! a maintenance round that failed, makes the process check its connection with a message to itself;
//! when that does not come back within the call limit, it reconnects (the client's own pings would
//! notice minutes later), and the reconnect resets every partition as any broken connection does.
//! A partition is reset only when deliveries may have been lost: the connection changed (a
//! disconnect or a slow-consumer event), the subscription closed, a request could not be sent, a
//! delivery could not be taken (a dead letter not stored) or an unexpected status came. When an
//! epoch ends, the fetch task unsubscribes its inbox before `settle_in` asks the server anything:
//! the server gives nothing to a request whose reply subject has no interest, so the consumer info
//! `settle_in` reads counts every delivery the old epoch's requests got. A partition being given up
//! sends no more requests; its fetch task takes what the live one brings and ends when it closes or
//! lapses.
//!
//! ## Order across partitions
//!
//! Per partition key order is the contract; beyond it, a receive hands out the lowest stream
//! sequences first across the partitions this process holds, and holds back messages beyond the last
//! one fetched of a partition the server still has more of (that partition then fetches beyond its
//! low-water mark). So one consumer process sees a backlog in enqueue order, as with the database
//! queues (W1's books depend on it: a void of a sale has its own key). This is best effort: a
//! partition whose buffer is full of messages blocked behind a nack, and partitions held by other
//! processes, do not hold anything back.
//!
//! ## Settling
//!
//! Acks are plain `+ACK` publishes followed, per partition, by one acknowledged ack (a request, in the
//! background): the server handles a consumer's acks in order, so when the last one is answered all
//! were applied (and, on a work-queue stream, the messages are deleted); `depth` waits for those
//! answers. Tags are this process's own numbers; when a partition's state is dropped its tags are
//! forgotten, so an ack of a stale tag does nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
    Stream,
};
use async_nats::jetstream::{self, message::StreamMessage};
use async_nats::{Client, HeaderMap, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use tally_core::model::{DeadLetter, Delivery, QueueMessage};
use tally_core::ports::{CommandQueue, Error, Result};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::NatsOptions;
use crate::state::{Held, Lines};
use crate::wire::{self, Names};

mod fetch;

/// A partition is refilled when fewer than this many of its messages are buffered…
const LOW_WATER: usize = 1_000;
/// …up to this many.
const HIGH_WATER: usize = 2_000;
/// A partition that holds back the others fetches up to this many.
const BUFFER_CAP: usize = 8 * HIGH_WATER;
/// JetStream's cap on a consumer's unacked messages (far above what the watermarks let a process hold).
const MAX_ACK_PENDING: i64 = 50_000;
/// Added to the ack wait before a partition with unknown pending messages is fetched again.
const GRACE: Duration = Duration::from_secs(1);
/// Most publishes of one `enqueue` waiting for their acknowledgement at once.
const PUBLISH_WINDOW: usize = 1_024;
/// How long the broker keeps ids for deduplication.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

fn unavailable(context: &str, cause: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("nats: {context}: {cause}"))
}

/// Runs `fut` for at most `limit`; a timeout is `Unavailable`.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    context: &str,
    fut: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(context, e)),
        Err(_) => Err(unavailable(context, format!("no answer within {limit:?}"))),
    }
}

/// The command queue on NATS JetStream. Create it with [`connect`]; dropping it stops its background
/// tasks and closes its connection (what it held unacked is redelivered, as after a crash).
///
/// Guarantees, as they hold with nats-server 2.9:
/// - `enqueue` returns after JetStream acknowledged every message (written to the file store; the
///   crate docs say when that is fsynced). The broker drops a `message_id` published again within
///   its two-minute duplicate window; after it, a re-publish is a second message.
/// - A partition key's messages are handed out in enqueue order, and never while an earlier one is
///   handed out and not settled, in this or any other process sharing the namespace (leases, see
///   the module docs).
/// - `nack` keeps the message in this process until due; its key waits behind it. If the process
///   dies, JetStream redelivers it (after the lease and an ack wait) counted from JetStream's
///   delivery count, which also counts a delivery into a process's buffer that never reached its
///   consumer. A message JetStream delivered `2 × max_deliveries` times without anyone settling it
///   (its consumers kept dying) is dead-lettered when fetched.
/// - `depth` is the stream's message count: every message enqueued and not acked or dead-lettered,
///   whichever process holds it. Exact in this process once its calls have returned (it waits for
///   this process's ack confirmations); another process's acks count once the server has applied
///   them, milliseconds after its `ack` returned.
pub struct Nats {
    inner: Arc<Inner>,
}

impl Nats {
    /// The partitions this process holds the leases of (for diagnostics and tests).
    pub fn partitions_held(&self) -> Vec<usize> {
        let s = self.inner.lock();
        s.partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.lease.is_some())
            .map(|(k, _)| k)
            .collect()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
    }
}

struct Inner {
    options: NatsOptions,
    names: Names,
    /// This process's id in leases and membership.
    owner: String,
    client: Client,
    js: jetstream::Context,
    commands: Stream,
    dead: Stream,
    leases: Stream,
    /// The partition consumers' ack wait (as configured on the server).
    ack_wait: Duration,
    /// The lease stream's `max_age` (as configured on the server).
    lease_ttl: Duration,
    shared: Mutex<Shared>,
    /// Something may have become deliverable.
    changed: Notify,
    /// Buffered messages were handed out or dropped: fetchers may refill.
    room: Notify,
    /// Bumped whenever deliveries or acks may have been lost: a disconnect or a slow-consumer event.
    connection: Arc<AtomicU64>,
    /// Bumped on every (re)connect: the namespace is declared again.
    reconnects: Arc<AtomicU64>,
    /// Set by the first `receive`: from then on this process holds partitions.
    consuming: AtomicBool,
    /// A connection check runs (see [`Inner::suspect`]).
    probing: AtomicBool,
    /// Acks sent and not yet confirmed by the server (see [`Nats::ack`]).
    confirming: AtomicUsize,
    /// An ack confirmation finished.
    confirmed: Notify,
    /// Wakes the maintenance task early (connection events).
    wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
}

struct Shared {
    partitions: Vec<Partition>,
    /// tag → (partition, its epoch when handed out, stream sequence).
    tags: HashMap<u64, (usize, u64, u64)>,
    next_tag: u64,
}

#[derive(Default)]
struct Partition {
    /// Bumped whenever this process drops what it held of the partition.
    epoch: u64,
    lease: Option<Lease>,
    lines: Lines,
    /// A fetch task runs for it.
    fetching: bool,
    /// The highest stream sequence fetched in this epoch.
    fetched_upto: u64,
    /// The server has more of the partition's messages than were fetched (so messages of other
    /// partitions beyond `fetched_upto` wait: see [`Inner::take`]).
    more: bool,
    /// It is what holds back the last receive: its fetcher fetches beyond the low-water mark.
    limits: bool,
}

struct Lease {
    /// Stream sequence of our lease record: the expected last sequence of the next write.
    revision: u64,
    /// Until when this process may hand out the partition's messages without renewing.
    valid_until: Instant,
    /// Given up once nothing of it is held (rebalancing).
    draining: bool,
}

impl Partition {
    /// Drops everything held (it stays unacked on the broker and is redelivered).
    fn reset(&mut self) {
        self.epoch += 1;
        self.lines.clear();
        self.fetched_upto = 0;
        self.more = false;
        self.limits = false;
    }

    /// The stream sequence beyond which other partitions' messages must wait, so that one receive
    /// follows enqueue order across partitions: set while the server has more of this partition's
    /// messages than were fetched. Not for a partition being given up, nor one whose buffer is full
    /// (of messages blocked behind a nack): order across partitions is best effort, progress is not.
    fn horizon(&self, now: Instant) -> Option<u64> {
        let active = self
            .lease
            .as_ref()
            .is_some_and(|l| !l.draining && l.valid_until > now);
        (active && self.more && self.lines.buffered() < BUFFER_CAP).then_some(self.fetched_upto)
    }
}

/// Connects, declares the namespace's streams and consumers and starts the background work. The
/// process takes its share of the partitions at its first `receive` (then renews its leases,
/// rebalances, fetches and keeps held messages alive in the background).
pub async fn connect(options: NatsOptions) -> Result<Arc<Nats>> {
    if !wire::valid_namespace(&options.namespace) {
        return Err(Error::Unavailable(format!(
            "nats: namespace {:?} must be letters, digits, '_' or '-'",
            options.namespace
        )));
    }
    if options.partitions == 0 || options.max_deliveries == 0 {
        return Err(Error::Unavailable(
            "nats: partitions and max_deliveries must be at least 1".into(),
        ));
    }
    let connection = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());
    let client = {
        let connection = connection.clone();
        let reconnects = reconnects.clone();
        let wake = wake.clone();
        let limit = options.call_timeout;
        bounded(
            limit + Duration::from_secs(1),
            "connecting",
            async_nats::ConnectOptions::new()
                .connection_timeout(limit)
                .request_timeout(Some(limit))
                .max_reconnects(None)
                .event_callback(move |event| {
                    let connection = connection.clone();
                    let reconnects = reconnects.clone();
                    let wake = wake.clone();
                    async move {
                        match event {
                            async_nats::Event::Disconnected
                            | async_nats::Event::SlowConsumer(_) => {
                                tracing::info!(%event, "nats connection event");
                                connection.fetch_add(1, Ordering::SeqCst);
                                wake.notify_one();
                            }
                            async_nats::Event::Connected => {
                                tracing::info!(%event, "nats connection event");
                                reconnects.fetch_add(1, Ordering::SeqCst);
                                wake.notify_one();
                            }
                            other => tracing::debug!(event = %other, "nats event"),
                        }
                    }
                })
                .connect(options.url.as_str()),
        )
        .await?
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(options.call_timeout)
        .build(client.clone());
    let names = Names {
        ns: options.namespace.clone(),
        partitions: options.partitions,
    };
    let topology = declare(&js, &names, &options).await?;
    let (shutdown, _) = watch::channel(false);
    let inner = Arc::new(Inner {
        owner: format!("{}", Uuid::now_v7().simple()),
        names,
        client,
        js,
        commands: topology.commands,
        dead: topology.dead,
        leases: topology.leases,
        ack_wait: topology.ack_wait,
        lease_ttl: topology.lease_ttl,
        shared: Mutex::new(Shared {
            partitions: (0..options.partitions)
                .map(|_| Partition::default())
                .collect(),
            tags: HashMap::new(),
            next_tag: 0,
        }),
        options,
        changed: Notify::new(),
        room: Notify::new(),
        consuming: AtomicBool::new(false),
        probing: AtomicBool::new(false),
        confirming: AtomicUsize::new(0),
        confirmed: Notify::new(),
        connection,
        reconnects,
        wake,
        shutdown,
    });
    tokio::spawn(maintain(inner.clone()));
    Ok(Arc::new(Nats { inner }))
}

/// Deletes a namespace's streams (commands, dead letters, leases) and with them its consumers. For
/// tests and for retiring a namespace; processes still using it fail.
pub async fn remove_namespace(url: &str, namespace: &str) -> Result<()> {
    let limit = Duration::from_secs(5);
    let client = bounded(limit, "connecting", async_nats::connect(url)).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(limit)
        .build(client.clone());
    let names = Names {
        ns: namespace.to_owned(),
        partitions: 1,
    };
    for stream in [
        names.commands_stream(),
        names.dead_stream(),
        names.lease_stream(),
    ] {
        match tokio::time::timeout(limit, js.delete_stream(&stream)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.to_string().contains("not found") => {}
            Ok(Err(e)) => return Err(unavailable(&format!("deleting {stream}"), e)),
            Err(_) => return Err(unavailable(&format!("deleting {stream}"), "timed out")),
        }
    }
    Ok(())
}

struct Topology {
    commands: Stream,
    dead: Stream,
    leases: Stream,
    ack_wait: Duration,
    lease_ttl: Duration,
}

/// Creates what is missing (idempotent) and reads back what exists, so every process of a namespace
/// uses the server's settings.
async fn declare(
    js: &jetstream::Context,
    names: &Names,
    options: &NatsOptions,
) -> Result<Topology> {
    let limit = options.call_timeout;
    let description = format!("tally commands; partitions={}", names.partitions);
    let mut commands = bounded(
        limit,
        "declaring the command stream",
        js.get_or_create_stream(StreamConfig {
            name: names.commands_stream(),
            description: Some(description.clone()),
            subjects: vec![names.commands_subjects()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }),
    )
    .await?;
    let existing = bounded(limit, "reading the command stream", commands.info())
        .await?
        .config
        .description
        .clone();
    if existing.as_deref() != Some(description.as_str()) {
        return Err(Error::Unavailable(format!(
            "nats: stream {} was made with another partition count ({existing:?}); use the same \
             `partitions` for a namespace",
            names.commands_stream()
        )));
    }
    let dead = bounded(
        limit,
        "declaring the dead-letter stream",
        js.get_or_create_stream(StreamConfig {
            name: names.dead_stream(),
            description: Some("tally dead letters, one per message id".into()),
            subjects: vec![names.dead_subjects()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_messages_per_subject: 1,
            ..Default::default()
        }),
    )
    .await?;
    let mut leases = bounded(
        limit,
        "declaring the lease stream",
        js.get_or_create_stream(StreamConfig {
            name: names.lease_stream(),
            description: Some("tally partition leases and live processes".into()),
            subjects: vec![
                format!("{}.lease.*", names.ns),
                format!("{}.member.*", names.ns),
            ],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_messages_per_subject: 1,
            max_age: options.lease_ttl,
            ..Default::default()
        }),
    )
    .await?;
    let lease_ttl = bounded(limit, "reading the lease stream", leases.info())
        .await?
        .config
        .max_age;
    let consumers = futures_util::future::join_all((0..names.partitions).map(|p| {
        let commands = commands.clone();
        async move {
            let config = pull::Config {
                durable_name: Some(names.consumer(p)),
                filter_subject: names.command_subject(p),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_deliver: -1,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            };
            let mut consumer = bounded(
                limit,
                "declaring a partition consumer",
                commands.get_or_create_consumer::<pull::Config>(&names.consumer(p), config),
            )
            .await?;
            let info = bounded(limit, "reading a partition consumer", consumer.info()).await?;
            Ok::<_, Error>(info.config.ack_wait)
        }
    }))
    .await;
    let mut ack_wait = Duration::ZERO;
    for c in consumers {
        ack_wait = ack_wait.max(c?);
    }
    Ok(Topology {
        commands,
        dead,
        leases,
        ack_wait,
        lease_ttl: if lease_ttl.is_zero() {
            options.lease_ttl
        } else {
            lease_ttl
        },
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit(&self) -> Duration {
        self.options.call_timeout
    }

    fn stopped(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// How long a renewed lease may be used: three quarters of its life, leaving a quarter for
    /// clock drift and the time the renewal took to be stored.
    fn lease_use(&self) -> Duration {
        self.lease_ttl.mul_f64(0.75)
    }

    fn period(&self) -> Duration {
        (self.lease_ttl / 4)
            .min(self.ack_wait / 4)
            .max(Duration::from_millis(50))
    }

    /// Drops what this process holds of `partition` if it is still at `epoch`.
    fn reset(&self, partition: usize, epoch: u64, why: &str) {
        let mut s = self.lock();
        let Shared {
            partitions, tags, ..
        } = &mut *s;
        let p = &mut partitions[partition];
        if p.epoch != epoch {
            return;
        }
        tracing::info!(
            partition,
            why,
            "dropping what this process holds of a partition"
        );
        p.reset();
        tags.retain(|_, (k, _, _)| *k != partition);
        drop(s);
        self.changed.notify_waiters();
        self.room.notify_waiters();
    }

    fn reset_all(&self, why: &str) {
        let epochs: Vec<u64> = self.lock().partitions.iter().map(|p| p.epoch).collect();
        for (k, e) in epochs.into_iter().enumerate() {
            self.reset(k, e, why);
        }
    }

    /// One round of background work: announce this process, renew leases, take or give up partitions
    /// to reach an even share, and make sure each partition held has a fetch task.
    async fn tick(self: &Arc<Self>) -> Result<()> {
        self.renew().await;
        let limit = self.limit();
        let js = &self.js;
        let me = self.names.member_subject(&self.owner);
        bounded(limit, "announcing this process", async move {
            js.publish(me, Bytes::new()).await?.await
        })
        .await?;

        let members = {
            let mut count = 0usize;
            let mut subjects = bounded(
                limit,
                "listing processes",
                self.leases.info_with_subjects(self.names.member_subjects()),
            )
            .await?;
            while bounded(limit, "listing processes", subjects.try_next())
                .await?
                .is_some()
            {
                count += 1;
            }
            count.max(1)
        };
        let total = self.options.partitions;
        let share = total.div_ceil(members);
        let (mut held, draining, free): (usize, Vec<usize>, Vec<usize>) = {
            let s = self.lock();
            let mut held = 0;
            let mut draining = Vec::new();
            let mut free = Vec::new();
            for (k, p) in s.partitions.iter().enumerate() {
                match &p.lease {
                    Some(l) if l.draining => draining.push(k),
                    Some(_) => held += 1,
                    None => free.push(k),
                }
            }
            (held, draining, free)
        };
        if held < share {
            let mut s = self.lock();
            for k in draining {
                if held >= share {
                    break;
                }
                if let Some(l) = s.partitions[k].lease.as_mut() {
                    l.draining = false;
                    held += 1;
                }
            }
        }
        if held < share {
            // Start at a place of our own, so processes starting together try different partitions.
            let start =
                usize::try_from(wire::fnv1a(self.owner.as_bytes()) % total as u64).unwrap_or(0);
            let mut order: Vec<usize> = free;
            order.sort_by_key(|k| (k + total - start) % total);
            for k in order {
                if held >= share || self.stopped() {
                    break;
                }
                match self.claim(k).await {
                    Ok(true) => held += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(partition = k, error = %e, "could not claim a partition");
                        break;
                    }
                }
            }
        } else if held > share {
            let mut s = self.lock();
            let mut mine: Vec<(usize, usize)> = s
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.lease.as_ref().is_some_and(|l| !l.draining))
                .map(|(k, p)| (p.lines.buffered(), k))
                .collect();
            mine.sort();
            for (_, k) in mine.into_iter().take(held - share) {
                if let Some(l) = s.partitions[k].lease.as_mut() {
                    tracing::info!(partition = k, "giving up a partition to another process");
                    l.draining = true;
                }
            }
        }
        self.release_drained().await;
        self.start_fetchers();
        Ok(())
    }

    /// Renews every lease held. A lease someone else overwrote is lost at once; one that could not be
    /// renewed is given up locally once it may no longer be used.
    async fn renew(&self) {
        let held: Vec<(usize, u64)> = {
            let s = self.lock();
            s.partitions
                .iter()
                .enumerate()
                .filter_map(|(k, p)| p.lease.as_ref().map(|l| (k, l.revision)))
                .collect()
        };
        let results = futures_util::future::join_all(held.into_iter().map(|(k, rev)| async move {
            let sent = Instant::now();
            (
                k,
                rev,
                sent,
                self.write_lease(k, rev, self.owner.as_bytes()).await,
            )
        }))
        .await;
        for (k, rev, sent, result) in results {
            let lost = {
                let mut s = self.lock();
                let p = &mut s.partitions[k];
                let Some(lease) = p.lease.as_mut().filter(|l| l.revision == rev) else {
                    continue;
                };
                match result {
                    Ok(Some(revision)) => {
                        lease.revision = revision;
                        lease.valid_until = sent + self.lease_use();
                        None
                    }
                    Ok(None) => Some((p.epoch, "another process took over its lease")),
                    Err(e) if Instant::now() >= lease.valid_until => {
                        tracing::warn!(partition = k, error = %e, "lease not renewed in time");
                        Some((p.epoch, "its lease could not be renewed in time"))
                    }
                    Err(e) => {
                        tracing::warn!(partition = k, error = %e, "lease renewal failed; retrying");
                        None
                    }
                }
            };
            if let Some((epoch, why)) = lost {
                self.reset(k, epoch, why);
                self.lock().partitions[k].lease = None;
            }
        }
    }

    /// Writes the lease record of `partition` if its last sequence is `expected` (0: none). `Ok(None)`
    /// when someone else wrote it since.
    async fn write_lease(
        &self,
        partition: usize,
        expected: u64,
        owner: &[u8],
    ) -> Result<Option<u64>> {
        let mut headers = HeaderMap::new();
        headers.insert(
            wire::EXPECTED_LAST_SUBJECT_SEQ,
            expected.to_string().as_str(),
        );
        let subject = self.names.lease_subject(partition);
        let payload = Bytes::copy_from_slice(owner);
        let js = &self.js;
        let outcome = tokio::time::timeout(self.limit(), async move {
            js.publish_with_headers(subject, headers, payload)
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(ack)) => Ok(Some(ack.sequence)),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Ok(Err(e)) => Err(unavailable("writing a partition lease", e)),
            Err(_) => Err(unavailable("writing a partition lease", "timed out")),
        }
    }

    /// Takes the lease of a partition nobody holds (or that this process held before and lost track
    /// of). False if another process holds it.
    async fn claim(&self, partition: usize) -> Result<bool> {
        let subject = self.names.lease_subject(partition);
        let current = tokio::time::timeout(
            self.limit(),
            self.leases.get_last_raw_message_by_subject(&subject),
        )
        .await;
        let expected = match current {
            Ok(Ok(record)) if record.payload.is_empty() => record.sequence,
            Ok(Ok(record)) if record.payload.as_ref() == self.owner.as_bytes() => record.sequence,
            Ok(Ok(_)) => return Ok(false),
            Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
            Ok(Err(e)) => return Err(unavailable("reading a partition lease", e)),
            Err(_) => return Err(unavailable("reading a partition lease", "timed out")),
        };
        let sent = Instant::now();
        let Some(revision) = self
            .write_lease(partition, expected, self.owner.as_bytes())
            .await?
        else {
            return Ok(false);
        };
        let mut s = self.lock();
        let p = &mut s.partitions[partition];
        p.lease = Some(Lease {
            revision,
            valid_until: sent + self.lease_use(),
            draining: false,
        });
        tracing::info!(partition, "took a partition");
        Ok(true)
    }

    /// Gives back the leases of draining partitions of which nothing is held any more.
    async fn release_drained(&self) {
        let done: Vec<(usize, u64)> = {
            let s = self.lock();
            s.partitions
                .iter()
                .enumerate()
                .filter_map(|(k, p)| match &p.lease {
                    Some(l) if l.draining && !p.fetching && p.lines.is_empty() => {
                        Some((k, l.revision))
                    }
                    _ => None,
                })
                .collect()
        };
        for (k, rev) in done {
            // An empty record marks the lease free.
            let result = self.write_lease(k, rev, b"").await;
            let mut s = self.lock();
            let p = &mut s.partitions[k];
            if p.lease.as_ref().is_some_and(|l| l.revision == rev) {
                match result {
                    Ok(_) => {
                        p.lease = None;
                        tracing::info!(partition = k, "gave up a partition");
                    }
                    Err(e) => {
                        tracing::warn!(partition = k, error = %e, "could not give up a lease")
                    }
                }
            }
        }
    }

    fn start_fetchers(self: &Arc<Self>) {
        let mut s = self.lock();
        for (k, p) in s.partitions.iter_mut().enumerate() {
            if p.lease.as_ref().is_some_and(|l| !l.draining) && !p.fetching {
                p.fetching = true;
                tokio::spawn(fetch::fetch(self.clone(), k));
            }
        }
    }

    /// Sends progress acks for every held message of a partition where one would otherwise come close
    /// to its ack wait.
    async fn keep_alive(&self) {
        let now = Instant::now();
        let Some(before) = now.checked_sub(self.ack_wait / 3) else {
            return;
        };
        let replies: Vec<Subject> = {
            let mut s = self.lock();
            s.partitions
                .iter_mut()
                .filter(|p| p.lines.touched_before(before))
                .flat_map(|p| p.lines.touch_all(now))
                .collect()
        };
        for reply in replies {
            if let Err(e) = self
                .client
                .publish(reply, Bytes::from_static(b"+WPI"))
                .await
            {
                tracing::debug!(error = %e, "progress ack not sent");
            }
        }
    }

    /// Stores the message in the dead-letter stream with its reason, then acks it (removing it from
    /// the command stream).
    async fn dead_letter(&self, held: &Held, reason: &str) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(wire::ID, held.message_id.to_string().as_str());
        headers.insert(wire::KEY, wire::encode_header(&held.key).as_str());
        headers.insert(wire::REASON, wire::encode_header(reason).as_str());
        headers.insert(wire::FAILED_AT, Timestamp::now().to_string().as_str());
        let subject = self.names.dead_subject(held.message_id);
        let payload = held.payload.clone();
        let js = &self.js;
        bounded(self.limit(), "storing a dead letter", async move {
            js.publish_with_headers(subject, headers, payload)
                .await?
                .await
        })
        .await?;
        bounded(
            self.limit(),
            "acking a dead-lettered message",
            self.client
                .request(held.reply.clone(), Bytes::from_static(b"+ACK")),
        )
        .await?;
        Ok(())
    }

    /// Hands out what is deliverable now, lowest stream sequence first across all partitions held (so
    /// a receive follows enqueue order as far as the buffers reach); also returns when the earliest
    /// held-back message is due.
    fn take(&self, max: usize) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let mut s = self.lock();
        let Shared {
            partitions,
            tags,
            next_tag,
        } = &mut *s;
        let mut next_due: Option<Instant> = None;
        let mut heap: BinaryHeap<Reverse<(u64, usize, String)>> = BinaryHeap::new();
        let mut horizon: Option<(u64, usize)> = None;
        for (k, p) in partitions.iter_mut().enumerate() {
            p.limits = false;
            if let Some(h) = p.horizon(now)
                && horizon.is_none_or(|(min, _)| h < min)
            {
                horizon = Some((h, k));
            }
            if p.lease.as_ref().is_none_or(|l| l.valid_until <= now) {
                continue;
            }
            let (heads, due) = p.lines.heads(now);
            if let Some(d) = due {
                next_due = Some(next_due.map_or(d, |x| x.min(d)));
            }
            heap.extend(heads.into_iter().map(|(seq, key)| Reverse((seq, k, key))));
        }
        let mut out = Vec::new();
        let mut held_back = false;
        while out.len() < max
            && let Some(Reverse((seq, k, key))) = heap.pop()
        {
            if let Some((h, limiting)) = horizon
                && seq > h
            {
                // An earlier message of another partition may still be on the server.
                partitions[limiting].limits = true;
                held_back = true;
                break;
            }
            let p = &mut partitions[k];
            *next_tag += 1;
            let Some((taken, next)) = p.lines.take_head(&key, now, *next_tag) else {
                continue;
            };
            tags.insert(taken.delivery.tag, (k, p.epoch, taken.seq));
            out.push(taken.delivery);
            if let Some(seq) = next {
                heap.push(Reverse((seq, k, key)));
            }
        }
        drop(s);
        if held_back {
            self.room.notify_waiters();
        }
        (out, next_due)
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Waits for the server's answer to the last ack of a group (see [`Nats::ack`]).
async fn confirm(inner: Arc<Inner>, partition: usize, epoch: u64, seqs: Vec<u64>, last: Subject) {
    let answer = bounded(
        inner.limit(),
        "confirming acks",
        inner.client.request(last, Bytes::from_static(b"+ACK")),
    )
    .await;
    match answer {
        Ok(_) => {
            let mut s = inner.lock();
            let p = &mut s.partitions[partition];
            if p.epoch == epoch {
                for seq in seqs {
                    p.lines.forget(seq);
                }
            }
        }
        Err(e) => {
            tracing::warn!(partition, error = %e, "acks not confirmed");
            inner.reset(partition, epoch, "its acks were not confirmed");
        }
    }
    inner.confirming.fetch_sub(1, Ordering::SeqCst);
    inner.confirmed.notify_waiters();
}

/// The background loop: connection changes, leases, rebalancing, keep-alives.
async fn maintain(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut seen = inner.connection.load(Ordering::SeqCst);
    let mut seen_reconnects = inner.reconnects.load(Ordering::SeqCst);
    let mut declared = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.period()) => {}
            _ = inner.wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = inner.connection.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            // Deliveries, acks or progress acks may have been lost: start every partition afresh.
            inner.reset_all("the connection to NATS was interrupted");
            declared = false;
        }
        let reconnects = inner.reconnects.load(Ordering::SeqCst);
        if reconnects != seen_reconnects {
            seen_reconnects = reconnects;
            declared = false;
        }
        if !inner.connected() {
            continue;
        }
        if !declared {
            match declare(&inner.js, &inner.names, &inner.options).await {
                Ok(_) => declared = true,
                Err(e) => {
                    tracing::warn!(error = %e, "re-declaring the namespace after a reconnect");
                    continue;
                }
            }
        }
        if !inner.consuming.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = inner.tick().await {
            tracing::warn!(error = %e, "queue maintenance");
            inner.suspect();
        }
        inner.keep_alive().await;
    }
}

#[async_trait]
impl CommandQueue for Nats {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        let inner = &self.inner;
        // Publishes are pipelined; at most PUBLISH_WINDOW await their acknowledgement at a time (each
        // holds one of the client's in-flight permits until awaited).
        let mut pending: VecDeque<PublishAckFuture> = VecDeque::new();
        let confirm = |ack: PublishAckFuture| {
            bounded(
                inner.limit(),
                "waiting for the broker to confirm a command",
                ack.into_future(),
            )
        };
        for m in messages {
            if pending.len() >= PUBLISH_WINDOW
                && let Some(ack) = pending.pop_front()
            {
                confirm(ack).await?;
            }
            let mut headers = HeaderMap::new();
            headers.insert(wire::MSG_ID, m.message_id.to_string().as_str());
            headers.insert(wire::ID, m.message_id.to_string().as_str());
            headers.insert(wire::KEY, wire::encode_header(&m.partition_key).as_str());
            let subject = inner
                .names
                .command_subject(inner.names.partition_of(&m.partition_key));
            let ack = bounded(
                inner.limit(),
                "publishing a command",
                inner
                    .js
                    .publish_with_headers(subject, headers, Bytes::from(m.payload)),
            )
            .await?;
            pending.push_back(ack);
        }
        while let Some(ack) = pending.pop_front() {
            confirm(ack).await?;
        }
        Ok(())
    }

    /// The first call makes this process a consumer: it announces itself and takes its share of the
    /// partitions (a process that only enqueues, such as a gateway, never holds any).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let inner = &self.inner;
        if !inner.consuming.swap(true, Ordering::SeqCst) {
            // Background maintenance retries if this first round fails.
            inner.tick().await?;
        }
        let deadline = Instant::now() + wait;
        let max = max.max(1);
        loop {
            let changed = inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (got, next_due) = inner.take(max);
            if !got.is_empty() {
                inner.room.notify_waiters();
                return Ok(got);
            }
            if !inner.connected() {
                return Err(Error::Unavailable(
                    "nats: not connected to the broker".into(),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_due.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Acks are plain `+ACK` publishes; per partition, the last one of the call is a request, sent in
    /// the background, whose answer says that the server applied it and every ack before it. The keys
    /// move on as soon as the acks are sent (the processor has committed their outcomes; if an ack is
    /// lost with a broken connection, the message comes back and is found decided). `depth` waits for
    /// the confirmations, so it stays exact. An ack that is not confirmed drops the partition's state
    /// here, so nothing is taken for acked that was not.
    async fn ack(&self, tags: &[u64]) -> Result<()> {
        let inner = &self.inner;
        let mut groups: BTreeMap<(usize, u64), Vec<(u64, u64, Subject)>> = BTreeMap::new();
        {
            let s = inner.lock();
            for tag in tags {
                let Some(&(k, epoch, seq)) = s.tags.get(tag) else {
                    continue;
                };
                let p = &s.partitions[k];
                if p.epoch != epoch {
                    continue;
                }
                if let Some(h) = p.lines.get(seq).filter(|h| h.out) {
                    groups
                        .entry((k, epoch))
                        .or_default()
                        .push((*tag, seq, h.reply.clone()));
                }
            }
        }
        for list in groups.values() {
            let Some((_, rest)) = list.split_last() else {
                continue;
            };
            for (_, _, reply) in rest {
                bounded(
                    inner.limit(),
                    "acking",
                    inner
                        .client
                        .publish(reply.clone(), Bytes::from_static(b"+ACK")),
                )
                .await?;
            }
        }
        {
            let mut s = inner.lock();
            let Shared {
                partitions, tags, ..
            } = &mut *s;
            for ((k, epoch), list) in &groups {
                let p = &mut partitions[*k];
                if p.epoch != *epoch {
                    continue;
                }
                for (tag, seq, _) in list {
                    tags.remove(tag);
                    p.lines.acked(*seq);
                }
            }
        }
        inner.changed.notify_waiters();
        for ((k, epoch), list) in groups {
            let Some((_, _, last)) = list.last().cloned() else {
                continue;
            };
            let seqs: Vec<u64> = list.iter().map(|(_, seq, _)| *seq).collect();
            inner.confirming.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(confirm(inner.clone(), k, epoch, seqs, last));
        }
        Ok(())
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let inner = &self.inner;
        let (k, epoch, seq, held) = {
            let s = inner.lock();
            let Some(&(k, epoch, seq)) = s.tags.get(&tag) else {
                return Ok(());
            };
            let p = &s.partitions[k];
            if p.epoch != epoch {
                return Ok(());
            }
            let Some(h) = p.lines.get(seq).filter(|h| h.out) else {
                return Ok(());
            };
            (k, epoch, seq, h.clone())
        };
        let result = if held.redeliveries.saturating_add(1) >= inner.options.max_deliveries {
            inner.dead_letter(&held, reason).await.map(|()| true)
        } else {
            Ok(false)
        };
        {
            let mut s = inner.lock();
            let Shared {
                partitions, tags, ..
            } = &mut *s;
            let p = &mut partitions[k];
            if p.epoch == epoch {
                tags.remove(&tag);
                match result {
                    Ok(true) => {
                        p.lines.acked(seq);
                        p.lines.forget(seq);
                    }
                    _ => p.lines.nacked(seq, Instant::now() + retry_after),
                }
            }
        }
        inner.changed.notify_waiters();
        result.map(|_| ())
    }

    async fn depth(&self) -> Result<u64> {
        let inner = &self.inner;
        // Acks this process sent count once the server has applied them.
        let deadline = Instant::now() + inner.limit();
        loop {
            let confirmed = inner.confirmed.notified();
            tokio::pin!(confirmed);
            confirmed.as_mut().enable();
            if inner.confirming.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, confirmed).await.is_err() {
                return Err(unavailable(
                    "counting the queue",
                    "acks not confirmed in time",
                ));
            }
        }
        let info = bounded(
            inner.limit(),
            "reading the command stream",
            inner.commands.get_info(),
        )
        .await?;
        Ok(info.state.messages)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let inner = &self.inner;
        let limit = inner.limit();
        let mut subjects = Vec::new();
        let mut listing = bounded(
            limit,
            "listing dead letters",
            inner.dead.info_with_subjects(inner.names.dead_subjects()),
        )
        .await?;
        while let Some((subject, _)) =
            bounded(limit, "listing dead letters", listing.try_next()).await?
        {
            subjects.push(subject);
        }
        let dead = &inner.dead;
        let mut letters: Vec<DeadLetter> = futures_util::stream::iter(subjects)
            .map(|subject| async move {
                match tokio::time::timeout(limit, dead.get_last_raw_message_by_subject(&subject))
                    .await
                {
                    Ok(Ok(m)) => Ok(Some(read_dead_letter(&m)?)),
                    // Replayed between the listing and now.
                    Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Ok(Err(e)) => Err(unavailable("reading a dead letter", e)),
                    Err(_) => Err(unavailable("reading a dead letter", "timed out")),
                }
            })
            .buffered(32)
            .try_filter_map(|l| async move { Ok(l) })
            .try_collect()
            .await?;
        letters.sort_by_key(|l| (l.failed_at, l.message_id));
        Ok(letters)
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let inner = &self.inner;
        let limit = inner.limit();
        let subject = inner.names.dead_subject(message_id);
        let stored =
            match tokio::time::timeout(limit, inner.dead.get_last_raw_message_by_subject(&subject))
                .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(false);
                }
                Ok(Err(e)) => return Err(unavailable("reading a dead letter", e)),
                Err(_) => return Err(unavailable("reading a dead letter", "timed out")),
            };
        let letter = read_dead_letter(&stored)?;
        let mut headers = HeaderMap::new();
        // Not the message id itself: the broker would drop it as a duplicate within its window. Tied
        // to this dead letter, so a retried replay is still deduplicated.
        headers.insert(
            wire::MSG_ID,
            format!("{message_id}:replay:{}", stored.sequence).as_str(),
        );
        headers.insert(wire::ID, message_id.to_string().as_str());
        headers.insert(
            wire::KEY,
            wire::encode_header(&letter.partition_key).as_str(),
        );
        let target = inner
            .names
            .command_subject(inner.names.partition_of(&letter.partition_key));
        let js = &inner.js;
        bounded(limit, "replaying a dead letter", async move {
            js.publish_with_headers(target, headers, Bytes::from(letter.payload))
                .await?
                .await
        })
        .await?;
        bounded(limit, "removing a replayed dead letter", async move {
            inner.dead.purge().filter(subject).await
        })
        .await?;
        Ok(true)
    }
}

fn read_dead_letter(m: &StreamMessage) -> Result<DeadLetter> {
    let header = |name: &str| m.headers.get(name).map(|v| v.as_str());
    let corrupt = |what: &str| Error::Corrupt(format!("nats: dead letter {}: {what}", m.subject));
    let message_id = header(wire::ID)
        .and_then(|v| Uuid::parse_str(v).ok())
        .or_else(|| {
            m.subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|v| Uuid::parse_str(v).ok())
        })
        .ok_or_else(|| corrupt("no message id"))?;
    let partition_key = header(wire::KEY)
        .and_then(wire::decode_header)
        .ok_or_else(|| corrupt("no partition key"))?;
    let reason = header(wire::REASON)
        .and_then(wire::decode_header)
        .unwrap_or_default();
    let failed_at = header(wire::FAILED_AT)
        .and_then(|v| v.parse::<Timestamp>().ok())
        .or_else(|| {
            i64::try_from(m.time.unix_timestamp_nanos() / 1_000)
                .ok()
                .and_then(|us| Timestamp::from_microsecond(us).ok())
        })
        .ok_or_else(|| corrupt("no time"))?;
    Ok(DeadLetter {
        message_id,
        partition_key,
        payload: m.payload.to_vec(),
        reason,
        failed_at,
    })
}
