//! The [`CommandQueue`] on ActiveMQ. See the crate documentation for the design.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use tally_core::model::{DeadLetter, Delivery, QueueMessage};
use tally_core::ports::{CommandQueue, Error, Result};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::codec::Frame;
use crate::conn::{Connection, Endpoint, unavailable};

/// Deliveries after which a nacked message is dead-lettered (the default of
/// [`ActiveMqOptions::max_deliveries`]).
pub const MAX_DELIVERIES: u32 = 5;

/// Message headers (JMS properties, so they are plain identifiers that selectors can name).
const H_ID: &str = "tally_id";
const H_PARTITION: &str = "tally_partition";
const H_REASON: &str = "tally_reason";
const H_FAILED_AT: &str = "tally_failed_at";
/// ActiveMQ's message group: all messages of a group go to one consumer at a time.
const H_GROUP: &str = "JMSXGroupID";
/// The statistics plugin answers with one more, empty, message after the list when this is set.
const H_STATS_END: &str = "ActiveMQ.Statistics.Destination.List.End.With.Null";
/// The per-connection temporary queue statistics replies come to.
const STATS_REPLIES: &str = "/temp-queue/stats";
/// Acks sent per receipt.
const ACK_STEP: usize = 1024;
/// Longest a replay waits for the dead letter it has just seen in a browse.
const REPLAY_WAIT: Duration = Duration::from_secs(3);

/// How to reach ActiveMQ and how the queue behaves.
#[derive(Debug, Clone)]
pub struct ActiveMqOptions {
    /// `stomp://[login[:passcode]@]host[:port][/virtual-host]`; the port defaults to 61613.
    pub url: String,
    /// Prefixes every destination (`<namespace>.commands`, `<namespace>.dead`), so several deployments
    /// or tests can share a broker. Letters, digits, `_` and `-` only.
    pub namespace: String,
    /// Overrides the login of the URL.
    pub login: Option<String>,
    /// Overrides the passcode of the URL.
    pub passcode: Option<String>,
    /// Messages the broker may push to this consumer ahead of its acks (`activemq.prefetchSize`).
    /// Bounds what one `receive` can return; messages behind a nacked one count against it.
    pub prefetch: u32,
    /// Deliveries after which a nacked message is dead-lettered.
    pub max_deliveries: u32,
    /// Bound on each call's broker round trips (connecting, receipts, statistics, browsing).
    pub timeout: Duration,
    /// STOMP heart-beat interval both ways, so a dead connection is noticed; zero turns them off.
    pub heartbeat: Duration,
    /// Connections `enqueue` spreads its transactions over (the broker works one connection's
    /// frames in order, and syncs concurrent commits together).
    pub producers: usize,
    /// Messages per STOMP transaction when a batch is enqueued; larger batches use several.
    pub max_transaction: usize,
}

impl ActiveMqOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "tally".to_owned(),
            login: None,
            passcode: None,
            prefetch: 16_384,
            max_deliveries: MAX_DELIVERIES,
            timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
            producers: 2,
            max_transaction: 4096,
        }
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let bad = |why: &str| Error::Unavailable(format!("ActiveMQ url {:?}: {why}", self.url));
        let rest = self
            .url
            .strip_prefix("stomp://")
            .or_else(|| self.url.strip_prefix("tcp://"))
            .unwrap_or(&self.url);
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (mut login, mut passcode) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((l, p)) => (Some(l.to_owned()), Some(p.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        if self.login.is_some() {
            login.clone_from(&self.login);
        }
        if self.passcode.is_some() {
            passcode.clone_from(&self.passcode);
        }
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let has_port = match hostport.rsplit_once(':') {
            Some((_, port)) if !hostport.ends_with(']') => {
                port.parse::<u16>().map_err(|_| bad("bad port"))?;
                true
            }
            _ => false,
        };
        let addr = if has_port {
            hostport.to_owned()
        } else {
            format!("{hostport}:61613")
        };
        let host = if vhost.is_empty() {
            "localhost".to_owned()
        } else {
            vhost.to_owned()
        };
        Ok(Endpoint {
            addr,
            host,
            login,
            passcode,
            heartbeat: self.heartbeat,
            timeout: self.timeout,
        })
    }
}

/// The destinations of one namespace.
struct Names {
    commands: String,
    dead: String,
    stats: String,
    dead_stats: String,
}

impl Names {
    fn new(namespace: &str) -> Result<Self> {
        let valid = !namespace.is_empty()
            && namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::Unavailable(format!(
                "ActiveMQ namespace {namespace:?}: use letters, digits, '_' and '-' only"
            )));
        }
        Ok(Self {
            commands: format!("/queue/{namespace}.commands"),
            dead: format!("/queue/{namespace}.dead"),
            stats: format!("/queue/ActiveMQ.Statistics.Destination.{namespace}.commands"),
            dead_stats: format!("/queue/ActiveMQ.Statistics.Destination.{namespace}.dead"),
        })
    }
}

/// A connection that is opened again, on the next call, after it broke; attempts back off.
struct Reconnecting<T> {
    slot: tokio::sync::Mutex<Slot<T>>,
}

struct Slot<T> {
    current: Option<Arc<T>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

trait Live {
    fn connection(&self) -> &Connection;
}

impl<T: Live> Reconnecting<T> {
    fn new() -> Self {
        Self {
            slot: tokio::sync::Mutex::new(Slot {
                current: None,
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            }),
        }
    }

    async fn get<F, Fut>(&self, open: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(c) = &slot.current {
            if c.connection().is_open() {
                return Ok(c.clone());
            }
            slot.current = None;
        }
        if let Some(at) = slot.retry_at
            && Instant::now() < at
        {
            return Err(Error::Unavailable(format!(
                "ActiveMQ: reconnecting (next attempt in {:?}); last error: {}",
                at - Instant::now(),
                slot.last_error
            )));
        }
        match open().await {
            Ok(c) => {
                let c = Arc::new(c);
                slot.current = Some(c.clone());
                slot.failures = 0;
                slot.retry_at = None;
                Ok(c)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << slot.failures.min(5))
                    .min(Duration::from_secs(2));
                slot.retry_at = Some(Instant::now() + backoff);
                slot.last_error = e.to_string();
                Err(e)
            }
        }
    }

    async fn now_or_wait(&self) -> Option<Arc<T>> {
        self.slot
            .lock()
            .await
            .current
            .clone()
            .filter(|c| c.connection().is_open())
    }
}

/// A connection for enqueues, statistics and browsing, with its statistics replies routed by
/// correlation id.
struct Control {
    conn: Connection,
    replies: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>>,
}

impl Live for Control {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Control {
    async fn open(endpoint: &Endpoint) -> Result<Self> {
        let conn = Connection::open(endpoint).await?;
        let replies: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Frame>>>> = Arc::default();
        let routes = replies.clone();
        conn.on_messages(
            "stats",
            Arc::new(move |frame: Frame| {
                let to = frame
                    .get("correlation-id")
                    .and_then(|c| lock(&routes).get(c).cloned());
                if let Some(to) = to {
                    let _ = to.send(frame);
                }
            }),
        );
        conn.request(
            Frame::new("SUBSCRIBE")
                .header("destination", STATS_REPLIES)
                .header("id", "stats")
                .header("ack", "auto")
                .header("transformation", "jms-map-json"),
            "subscribing to statistics replies",
        )
        .await?;
        Ok(Self { conn, replies })
    }
}

/// The consumer connection and the state epoch its messages belong to.
struct Consumer {
    conn: Connection,
    epoch: u64,
}

impl Live for Consumer {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// A message received from the broker and not yet acked there.
#[derive(Clone)]
struct Msg {
    /// Arrival order on this consumer.
    seq: u64,
    ack_id: String,
    message_id: Uuid,
    partition: Arc<str>,
    payload: Bytes,
    redeliveries: u32,
}

#[derive(Default)]
struct Partition {
    /// Received, never handed out, in order.
    waiting: VecDeque<Msg>,
    /// Nacked and waiting for their time (ordered by `seq`); they go before `waiting`.
    held: Vec<(Instant, Msg)>,
    /// Handed out and not settled.
    in_flight: usize,
}

impl Partition {
    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.held.is_empty() && self.in_flight == 0
    }
}

/// What this process holds of the queue, for the current consumer connection (`epoch`).
#[derive(Default)]
struct State {
    epoch: u64,
    partitions: HashMap<Arc<str>, Partition>,
    /// Every key of `partitions`, in the order receive looks at them (just served ones go last).
    order: VecDeque<Arc<str>>,
    in_flight: HashMap<u64, (u64, Msg)>,
    next_tag: u64,
    next_seq: u64,
    /// Messages handed out (or nacked) on an earlier consumer connection and not settled, with the
    /// deliveries they had and when that connection ended: when the broker sends one again, it is
    /// counted as a redelivery even if the broker does not say so (ActiveMQ forgets that a message was
    /// delivered when it restarts).
    unsettled_before: HashMap<Uuid, (u32, Instant)>,
}

/// How long a message of a broken connection is remembered as delivered.
const REMEMBER_UNSETTLED: Duration = Duration::from_secs(600);

impl State {
    /// Starts over for a new consumer connection: everything of the old one is redelivered by the
    /// broker.
    fn reset(&mut self) -> u64 {
        let now = Instant::now();
        self.unsettled_before
            .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_UNSETTLED);
        let delivered = self
            .in_flight
            .values()
            .map(|(_, m)| (m, m.redeliveries + 1));
        let held = self
            .partitions
            .values()
            .flat_map(|p| p.held.iter().map(|(_, m)| (m, m.redeliveries)));
        let remembered: Vec<(Uuid, u32)> = delivered
            .chain(held)
            .map(|(m, n)| (m.message_id, n))
            .collect();
        for (id, n) in remembered {
            self.unsettled_before.insert(id, (n, now));
        }
        self.epoch += 1;
        self.partitions.clear();
        self.order.clear();
        self.in_flight.clear();
        self.epoch
    }

    fn arrived(&mut self, mut msg: Msg) {
        if let Some((n, _)) = self.unsettled_before.remove(&msg.message_id) {
            msg.redeliveries = msg.redeliveries.max(n);
        }
        msg.seq = self.next_seq;
        self.next_seq += 1;
        let key = msg.partition.clone();
        let p = self.partitions.entry(key.clone()).or_insert_with(|| {
            self.order.push_back(key);
            Partition::default()
        });
        p.waiting.push_back(msg);
    }

    /// Up to `max` deliverable messages, and when the next held message is due.
    fn take(&mut self, max: usize, now: Instant) -> (Vec<Delivery>, Option<Instant>) {
        let mut out = Vec::new();
        let mut next_due: Option<Instant> = None;
        let mut served = Vec::new();
        let mut rest = VecDeque::with_capacity(self.order.len());
        while let Some(key) = self.order.pop_front() {
            let Some(p) = self.partitions.get_mut(&key) else {
                continue;
            };
            let mut took = false;
            if p.in_flight == 0 {
                while out.len() < max {
                    let msg = if let Some((due, _)) = p.held.first() {
                        if *due > now {
                            next_due = Some(next_due.map_or(*due, |n| n.min(*due)));
                            break;
                        }
                        p.held.remove(0).1
                    } else if let Some(m) = p.waiting.pop_front() {
                        m
                    } else {
                        break;
                    };
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    p.in_flight += 1;
                    out.push(Delivery {
                        tag,
                        message_id: msg.message_id,
                        partition_key: msg.partition.to_string(),
                        payload: msg.payload.to_vec(),
                        redeliveries: msg.redeliveries,
                    });
                    self.in_flight.insert(tag, (self.epoch, msg));
                    took = true;
                }
            }
            if took {
                served.push(key);
            } else {
                rest.push_back(key);
            }
        }
        rest.extend(served);
        self.order = rest;
        (out, next_due)
    }

    /// A partition's message is settled (acked, dead-lettered or held again).
    fn settled(&mut self, partition: &Arc<str>) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.idle() {
                self.partitions.remove(partition);
                self.order.retain(|k| k != partition);
            }
        }
    }
}

/// The consumer state and the signal that it changed.
#[derive(Default)]
struct Inbox {
    state: Mutex<State>,
    changed: Notify,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The command queue on ActiveMQ.
pub struct ActiveMq {
    options: ActiveMqOptions,
    endpoint: Endpoint,
    names: Names,
    controls: Vec<Reconnecting<Control>>,
    next_control: std::sync::atomic::AtomicUsize,
    consumer: Reconnecting<Consumer>,
    inbox: Arc<Inbox>,
}

/// The same type under the name the other adapters use.
pub type ActiveMqQueue = ActiveMq;

/// Connects to the broker (one connection now; the consumer's on the first `receive`).
pub async fn connect(options: ActiveMqOptions) -> Result<Arc<ActiveMq>> {
    let names = Names::new(&options.namespace)?;
    let endpoint = options.endpoint()?;
    let controls = (0..options.producers.max(1))
        .map(|_| Reconnecting::new())
        .collect();
    let queue = Arc::new(ActiveMq {
        options,
        endpoint,
        names,
        controls,
        next_control: std::sync::atomic::AtomicUsize::new(0),
        consumer: Reconnecting::new(),
        inbox: Arc::default(),
    });
    queue.control(0).await?;
    Ok(queue)
}

impl ActiveMq {
    async fn control(&self, i: usize) -> Result<Arc<Control>> {
        let endpoint = &self.endpoint;
        self.controls[i % self.controls.len()]
            .get(|| Control::open(endpoint))
            .await
    }

    /// A control connection for an enqueue, taking turns.
    async fn producer(&self) -> Result<Arc<Control>> {
        let i = self
            .next_control
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.control(i).await
    }

    /// The consumer connection, opened and subscribed when there is none.
    async fn consumer(&self) -> Result<Arc<Consumer>> {
        self.consumer.get(|| self.open_consumer()).await
    }

    async fn open_consumer(&self) -> Result<Consumer> {
        let conn = Connection::open(&self.endpoint).await?;
        let epoch = self.inbox.lock().reset();
        let inbox = self.inbox.clone();
        conn.on_messages(
            "commands",
            Arc::new(move |frame: Frame| {
                let Some(ack_id) = frame.get("ack") else {
                    tracing::warn!("ActiveMQ message without an ack header");
                    return;
                };
                let message_id = frame
                    .get(H_ID)
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .unwrap_or_else(|| {
                        tracing::warn!(
                            broker_id = ?frame.get("message-id"),
                            "ActiveMQ message without a tally id"
                        );
                        Uuid::nil()
                    });
                let msg = Msg {
                    seq: 0,
                    ack_id: ack_id.to_owned(),
                    message_id,
                    partition: Arc::from(frame.get(H_PARTITION).unwrap_or_default()),
                    redeliveries: u32::from(frame.get("redelivered") == Some("true")),
                    payload: frame.body,
                };
                let mut state = inbox.lock();
                if state.epoch == epoch {
                    state.arrived(msg);
                    drop(state);
                    inbox.changed.notify_waiters();
                }
            }),
        );
        conn.request(
            Frame::new("SUBSCRIBE")
                .header("destination", self.names.commands.clone())
                .header("id", "commands")
                .header("ack", "client-individual")
                .header("activemq.prefetchSize", self.options.prefetch.to_string()),
            "subscribing to the command queue",
        )
        .await?;
        Ok(Consumer { conn, epoch })
    }

    /// Drops the consumer connection after a failure whose outcome is unknown: the broker redelivers
    /// everything it had handed out on it, and this process starts over.
    fn reset_consumer(&self, consumer: &Consumer, why: &str) {
        tracing::warn!(why, "ActiveMQ: dropping the consumer connection");
        consumer.conn.shut(why);
        let mut state = self.inbox.lock();
        if state.epoch == consumer.epoch {
            state.reset();
        }
        drop(state);
        self.inbox.changed.notify_waiters();
    }

    /// Messages whose ack or dead-lettering failed: if they come back, they were delivered before
    /// (`later` deliveries more than their count says).
    fn remember(&self, msgs: &[Msg], later: u32) {
        let now = Instant::now();
        let mut state = self.inbox.lock();
        for m in msgs {
            state
                .unsettled_before
                .insert(m.message_id, (m.redeliveries.saturating_add(later), now));
        }
    }

    fn bounded<'a, T: Send + 'a>(
        &'a self,
        context: &'a str,
        work: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        self.bounded_for(context, 1, work)
    }

    /// Like [`Self::bounded`] for work of `steps` broker round trips (each confirmed by a receipt
    /// within the timeout): the whole is bounded by the timeout once per step.
    fn bounded_for<'a, T: Send + 'a>(
        &'a self,
        context: &'a str,
        steps: usize,
        work: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a {
        let timeout = self
            .options
            .timeout
            .saturating_mul(u32::try_from(steps.max(1)).unwrap_or(u32::MAX));
        async move {
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| unavailable(context, format!("no answer within {timeout:?}")))?
        }
    }

    fn send_frame(&self, destination: &str, transaction: &str, m: &QueueMessage) -> Frame {
        Frame::new("SEND")
            .header("destination", destination.to_owned())
            .header("transaction", transaction.to_owned())
            .header("persistent", "true")
            .header(H_GROUP, m.partition_key.clone())
            .header(H_ID, m.message_id.to_string())
            .header(H_PARTITION, m.partition_key.clone())
            .body(Bytes::copy_from_slice(&m.payload))
    }

    async fn enqueue_on(&self, control: &Control, messages: &[QueueMessage]) -> Result<()> {
        let conn = &control.conn;
        let mut receipts = Vec::new();
        let mut opened = Vec::new();
        let result = async {
            for chunk in messages.chunks(self.options.max_transaction.max(1)) {
                let tx = format!("tx{}", conn.next_id());
                conn.send(Frame::new("BEGIN").header("transaction", tx.clone()))
                    .await?;
                opened.push(tx.clone());
                for m in chunk {
                    conn.send(self.send_frame(&self.names.commands, &tx, m))
                        .await?;
                }
                receipts.push(
                    conn.send_receipted(Frame::new("COMMIT").header("transaction", tx))
                        .await?,
                );
            }
            for r in receipts {
                r.wait("committing an enqueue", self.options.timeout)
                    .await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() && conn.is_open() {
            // Best effort: an unfinished transaction is dropped with its connection anyway.
            for tx in opened {
                let _ = conn
                    .send(Frame::new("ABORT").header("transaction", tx))
                    .await;
            }
        }
        result
    }

    /// How many messages a queue holds (0 when it does not exist), from the statistics plugin;
    /// `stats` is the queue's statistics destination.
    async fn queue_size(&self, control: &Control, stats: &str) -> Result<u64> {
        let correlation = format!("d{}", control.conn.next_id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&control.replies).insert(correlation.clone(), tx);
        let result = async {
            control
                .conn
                .send(
                    Frame::new("SEND")
                        .header("destination", stats.to_owned())
                        .header("reply-to", STATS_REPLIES)
                        .header("correlation-id", correlation.clone())
                        .header(H_STATS_END, "true"),
                )
                .await?;
            let mut size = 0;
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => f,
                    () = control.conn.closed() => None,
                }
                .ok_or_else(|| {
                    unavailable(
                        "reading queue statistics",
                        control
                            .conn
                            .closed_reason()
                            .unwrap_or_else(|| "no reply".into()),
                    )
                })?;
                match parse_stats(&frame.body)? {
                    None => return Ok(size),
                    Some(n) => size += n,
                }
            }
        }
        .await;
        lock(&control.replies).remove(&correlation);
        result
    }

    /// Empties this namespace's command and dead-letter queues, for tests and benchmarks that leave
    /// messages behind: consumes with automatic acks until both are empty (messages still held by
    /// another live consumer keep it waiting, up to the timeout).
    #[doc(hidden)]
    pub async fn purge(&self) -> Result<()> {
        self.bounded("purging", async {
            let control = Control::open(&self.endpoint).await?;
            for (id, destination) in [
                ("purge-c", &self.names.commands),
                ("purge-d", &self.names.dead),
            ] {
                control.conn.on_messages(id, Arc::new(|_| {}));
                control
                    .conn
                    .request(
                        Frame::new("SUBSCRIBE")
                            .header("destination", destination.clone())
                            .header("id", id)
                            .header("ack", "auto"),
                        "purging",
                    )
                    .await?;
            }
            loop {
                let left = self.queue_size(&control, &self.names.stats).await?
                    + self.queue_size(&control, &self.names.dead_stats).await?;
                if left == 0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Every message of the dead-letter queue matching `selector` (all with `None`), by browsing.
    async fn browse_dead(&self, selector: Option<&str>) -> Result<Vec<Frame>> {
        let control = self.control(0).await?;
        let conn = &control.conn;
        let sub = format!("browse{}", conn.next_id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        conn.on_messages(
            &sub,
            Arc::new(move |f| {
                let _ = tx.send(f);
            }),
        );
        let result = async {
            let mut subscribe = Frame::new("SUBSCRIBE")
                .header("destination", self.names.dead.clone())
                .header("id", sub.clone())
                .header("browser", "true");
            if let Some(s) = selector {
                subscribe = subscribe.header("selector", s.to_owned());
            }
            conn.send(subscribe).await?;
            let mut out = Vec::new();
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => f,
                    () = conn.closed() => None,
                }
                .ok_or_else(|| {
                    unavailable(
                        "browsing dead letters",
                        conn.closed_reason()
                            .unwrap_or_else(|| "browse ended".into()),
                    )
                })?;
                if frame.get("browser") == Some("end") {
                    return Ok(out);
                }
                out.push(frame);
            }
        }
        .await;
        conn.forget_messages(&sub);
        if conn.is_open() {
            let _ = conn.send(Frame::new("UNSUBSCRIBE").header("id", sub)).await;
        }
        result
    }

    /// Takes the dead letter `message_id` off the dead-letter queue and enqueues it again, in one
    /// transaction; false if it is not there (any more).
    async fn take_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let selector = format!("{H_ID} = '{message_id}'");
        if self.browse_dead(Some(&selector)).await?.is_empty() {
            return Ok(false);
        }
        let control = self.control(0).await?;
        let conn = &control.conn;
        let sub = format!("replay{}", conn.next_id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        conn.on_messages(
            &sub,
            Arc::new(move |f| {
                let _ = tx.send(f);
            }),
        );
        let result = async {
            conn.request(
                Frame::new("SUBSCRIBE")
                    .header("destination", self.names.dead.clone())
                    .header("id", sub.clone())
                    .header("ack", "client-individual")
                    .header("activemq.prefetchSize", "1")
                    .header("selector", selector.clone()),
                "subscribing to a dead letter",
            )
            .await?;
            let frame = tokio::select! {
                f = rx.recv() => f,
                () = tokio::time::sleep(REPLAY_WAIT) => None,
                () = conn.closed() => None,
            };
            let Some(frame) = frame else {
                // Someone else replayed it meanwhile.
                return Ok(false);
            };
            let ack = frame
                .get("ack")
                .ok_or_else(|| Error::Corrupt("ActiveMQ dead letter without an ack id".into()))?
                .to_owned();
            let message = QueueMessage {
                message_id,
                partition_key: frame.get(H_PARTITION).unwrap_or_default().to_owned(),
                payload: frame.body.to_vec(),
            };
            let tx = format!("tx{}", conn.next_id());
            conn.send(Frame::new("BEGIN").header("transaction", tx.clone()))
                .await?;
            conn.send(self.send_frame(&self.names.commands, &tx, &message))
                .await?;
            conn.send(
                Frame::new("ACK")
                    .header("id", ack)
                    .header("transaction", tx.clone()),
            )
            .await?;
            conn.request(
                Frame::new("COMMIT").header("transaction", tx),
                "replaying a dead letter",
            )
            .await?;
            Ok(true)
        }
        .await;
        conn.forget_messages(&sub);
        if conn.is_open() {
            let _ = conn.send(Frame::new("UNSUBSCRIBE").header("id", sub)).await;
        }
        result
    }

    /// Sends a message to the dead-letter queue with its reason and acks it, in one transaction.
    async fn dead_letter(&self, consumer: &Consumer, msg: &Msg, reason: &str) -> Result<()> {
        let conn = &consumer.conn;
        let tx = format!("tx{}", conn.next_id());
        conn.send(Frame::new("BEGIN").header("transaction", tx.clone()))
            .await?;
        conn.send(
            Frame::new("SEND")
                .header("destination", self.names.dead.clone())
                .header("transaction", tx.clone())
                .header("persistent", "true")
                .header(H_ID, msg.message_id.to_string())
                .header(H_PARTITION, msg.partition.to_string())
                .header(H_REASON, reason.to_owned())
                .header(H_FAILED_AT, Timestamp::now().to_string())
                .body(msg.payload.clone()),
        )
        .await?;
        conn.send(
            Frame::new("ACK")
                .header("id", msg.ack_id.clone())
                .header("transaction", tx.clone()),
        )
        .await?;
        conn.request(
            Frame::new("COMMIT").header("transaction", tx),
            "dead-lettering a message",
        )
        .await
    }
}

/// The queue size in a statistics reply (`jms-map-json`), or `None` for the end-of-list marker.
fn parse_stats(body: &[u8]) -> Result<Option<u64>> {
    let bad = |why: &str| {
        Error::Corrupt(format!(
            "ActiveMQ statistics reply ({why}): {}",
            String::from_utf8_lossy(body)
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let Some(entries) = value
        .get("map")
        .and_then(|m| m.as_object())
        .and_then(|m| m.get("entry"))
        .and_then(|e| e.as_array())
    else {
        return Ok(None);
    };
    entries
        .iter()
        .find(|e| e.get("string").and_then(|s| s.as_str()) == Some("size"))
        .and_then(|e| e.get("long").and_then(|n| n.as_u64()))
        .map(Some)
        .ok_or_else(|| bad("no size"))
}

#[async_trait]
impl CommandQueue for ActiveMq {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let transactions = messages.len().div_ceil(self.options.max_transaction.max(1));
        self.bounded_for("enqueueing", 1 + transactions, async {
            let control = self.producer().await?;
            self.enqueue_on(&control, &messages).await
        })
        .await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let consumer = self
            .bounded("connecting the consumer", self.consumer())
            .await?;
        let max = max.max(1);
        loop {
            let changed = self.inbox.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !consumer.conn.is_open() {
                let why = consumer.conn.closed_reason().unwrap_or_default();
                self.reset_consumer(&consumer, &why);
                return Err(unavailable("receiving", why));
            }
            let now = Instant::now();
            let (got, next_due) = {
                let mut state = self.inbox.lock();
                if state.epoch != consumer.epoch {
                    return Err(unavailable(
                        "receiving",
                        "the consumer connection was reset",
                    ));
                }
                state.take(max, now)
            };
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let until = next_due.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(until) => {}
                () = consumer.conn.closed() => {}
            }
        }
    }

    async fn ack(&self, tags: &[u64]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let Some(consumer) = self.consumer.now_or_wait().await else {
            // No live consumer connection: every tag is from a broken one, and the broker
            // redelivers those messages.
            return Ok(());
        };
        let taken: Vec<Msg> = {
            let mut state = self.inbox.lock();
            tags.iter()
                .filter_map(|t| state.in_flight.remove(t))
                .filter(|(epoch, _)| *epoch == consumer.epoch)
                .map(|(_, m)| m)
                .collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        // A receipt every ACK_STEP acks: the broker's progress is checked as it goes, each step
        // within the timeout.
        let steps = taken.len().div_ceil(ACK_STEP);
        let result = self
            .bounded_for("acking", steps, async {
                let mut receipts = Vec::with_capacity(steps);
                for chunk in taken.chunks(ACK_STEP) {
                    let last = chunk.len() - 1;
                    for (i, m) in chunk.iter().enumerate() {
                        let frame = Frame::new("ACK").header("id", m.ack_id.clone());
                        if i == last {
                            receipts.push(consumer.conn.send_receipted(frame).await?);
                        } else {
                            consumer.conn.send(frame).await?;
                        }
                    }
                }
                for r in receipts {
                    r.wait("acking", self.options.timeout).await?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                let mut state = self.inbox.lock();
                if state.epoch == consumer.epoch {
                    for m in &taken {
                        state.settled(&m.partition);
                    }
                }
                drop(state);
                self.inbox.changed.notify_waiters();
                Ok(())
            }
            Err(e) => {
                self.remember(&taken, 1);
                self.reset_consumer(&consumer, &e.to_string());
                Err(e)
            }
        }
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let Some(consumer) = self.consumer.now_or_wait().await else {
            return Ok(());
        };
        let mut msg = {
            let mut state = self.inbox.lock();
            match state.in_flight.remove(&tag) {
                Some((epoch, m)) if epoch == consumer.epoch => m,
                _ => return Ok(()),
            }
        };
        msg.redeliveries = msg.redeliveries.saturating_add(1);
        if msg.redeliveries >= self.options.max_deliveries {
            let result = self
                .bounded("dead-lettering", self.dead_letter(&consumer, &msg, reason))
                .await;
            if let Err(e) = result {
                self.remember(std::slice::from_ref(&msg), 0);
                self.reset_consumer(&consumer, &e.to_string());
                return Err(e);
            }
            let mut state = self.inbox.lock();
            if state.epoch == consumer.epoch {
                state.settled(&msg.partition);
            }
        } else {
            let mut state = self.inbox.lock();
            if state.epoch == consumer.epoch {
                let key = msg.partition.clone();
                if let Some(p) = state.partitions.get_mut(&key) {
                    let at = p.held.partition_point(|(_, h)| h.seq < msg.seq);
                    p.held.insert(at, (Instant::now() + retry_after, msg));
                }
                state.settled(&key);
            }
        }
        self.inbox.changed.notify_waiters();
        Ok(())
    }

    async fn depth(&self) -> Result<u64> {
        self.bounded("reading the queue depth", async {
            let control = self.control(0).await?;
            self.queue_size(&control, &self.names.stats).await
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let frames = self
            .bounded("listing dead letters", self.browse_dead(None))
            .await?;
        let mut letters: Vec<DeadLetter> = frames
            .into_iter()
            .filter_map(|f| {
                let message_id = f.get(H_ID).and_then(|id| Uuid::parse_str(id).ok());
                let Some(message_id) = message_id else {
                    tracing::warn!(broker_id = ?f.get("message-id"), "dead letter without a tally id");
                    return None;
                };
                Some(DeadLetter {
                    message_id,
                    partition_key: f.get(H_PARTITION).unwrap_or_default().to_owned(),
                    reason: f.get(H_REASON).unwrap_or_default().to_owned(),
                    failed_at: f
                        .get(H_FAILED_AT)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default(),
                    payload: f.body.to_vec(),
                })
            })
            .collect();
        letters.sort_by_key(|a| (a.failed_at, a.message_id));
        Ok(letters)
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        self.bounded("replaying a dead letter", self.take_dead_letter(message_id))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(partition: &str, id: u8) -> Msg {
        Msg {
            seq: 0,
            ack_id: format!("ack-{id}"),
            message_id: Uuid::from_bytes([id; 16]),
            partition: Arc::from(partition),
            payload: Bytes::from(vec![id]),
            redeliveries: 0,
        }
    }

    fn ids(d: &[Delivery]) -> Vec<u8> {
        d.iter().map(|d| d.payload[0]).collect()
    }

    #[test]
    fn a_partition_is_held_while_one_of_it_is_in_flight() {
        let mut s = State::default();
        for (p, id) in [("a", 1), ("b", 2), ("a", 3), ("b", 4)] {
            s.arrived(msg(p, id));
        }
        let now = Instant::now();
        let (first, _) = s.take(1, now);
        let (second, _) = s.take(1, now);
        assert_eq!(ids(&first), [1]);
        assert_eq!(ids(&second), [2]);
        assert!(
            s.take(10, now).0.is_empty(),
            "both partitions are in flight"
        );
        let (_, m) = s.in_flight.remove(&first[0].tag).unwrap();
        s.settled(&m.partition);
        assert_eq!(ids(&s.take(10, now).0), [3]);
    }

    #[test]
    fn one_take_hands_out_runs_of_free_partitions_in_order() {
        let mut s = State::default();
        for (p, id) in [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)] {
            s.arrived(msg(p, id));
        }
        let (got, _) = s.take(10, Instant::now());
        assert_eq!(ids(&got), [1, 3, 2, 4, 5]);
    }

    #[test]
    fn held_messages_go_first_once_due_and_block_their_partition_until_then() {
        let mut s = State::default();
        for (p, id) in [("a", 1), ("a", 2), ("b", 3)] {
            s.arrived(msg(p, id));
        }
        let now = Instant::now();
        let (got, _) = s.take(1, now);
        assert_eq!(ids(&got), [1]);
        let (_, mut m) = s.in_flight.remove(&got[0].tag).unwrap();
        m.redeliveries += 1;
        let due = now + Duration::from_secs(5);
        let key = m.partition.clone();
        s.partitions.get_mut(&key).unwrap().held.push((due, m));
        s.settled(&key);
        let (got, next) = s.take(10, now);
        assert_eq!(ids(&got), [3], "a waits behind its held message");
        assert_eq!(next, Some(due));
        let (got, _) = s.take(10, due);
        assert_eq!(ids(&got), [1, 2]);
        assert_eq!(got[0].redeliveries, 1);
    }

    #[test]
    fn what_a_broken_connection_had_handed_out_counts_as_redelivered() {
        let mut s = State::default();
        for (p, id) in [("a", 1), ("a", 2), ("b", 3), ("c", 4)] {
            s.arrived(msg(p, id));
        }
        let now = Instant::now();
        let got = s.take(10, now).0;
        // 1 and 2 in flight, 3 nacked once (held), 4 never handed out... all of a, b, c taken:
        let (_, mut m3) = s.in_flight.remove(&got[2].tag).unwrap();
        m3.redeliveries = 1;
        let key = m3.partition.clone();
        s.partitions.get_mut(&key).unwrap().held.push((now, m3));
        s.settled(&key);
        let (_, m4) = s.in_flight.remove(&got[3].tag).unwrap();
        s.settled(&m4.partition);
        s.reset();
        assert!(s.in_flight.is_empty() && s.partitions.is_empty());
        for (p, id) in [("a", 1), ("a", 2), ("b", 3), ("c", 4)] {
            s.arrived(msg(p, id));
        }
        let again: Vec<(u8, u32)> = s
            .take(10, now)
            .0
            .iter()
            .map(|d| (d.payload[0], d.redeliveries))
            .collect();
        assert_eq!(again, [(1, 1), (2, 1), (3, 1), (4, 0)]);
    }

    #[test]
    fn options_parse_urls() {
        let e = ActiveMqOptions::new("stomp://127.0.0.1:61613")
            .endpoint()
            .unwrap();
        assert_eq!(
            (e.addr.as_str(), e.host.as_str()),
            ("127.0.0.1:61613", "localhost")
        );
        assert_eq!(e.login, None);
        let e = ActiveMqOptions::new("stomp://admin:secret@mq.example/vh")
            .endpoint()
            .unwrap();
        assert_eq!(e.addr, "mq.example:61613");
        assert_eq!(e.host, "vh");
        assert_eq!(
            (e.login.as_deref(), e.passcode.as_deref()),
            (Some("admin"), Some("secret"))
        );
        assert!(
            ActiveMqOptions::new("stomp://host:port")
                .endpoint()
                .is_err()
        );
        assert!(Names::new("ok_name-1").is_ok());
        assert!(Names::new("a.b").is_err() && Names::new("a>").is_err() && Names::new("").is_err());
    }

    #[test]
    fn statistics_replies() {
        let reply = br#"{"map":{"entry":[{"string":"dequeueCount","long":0},{"string":["brokerId","ID:x"]},{"string":"size","long":7}]}}"#;
        assert_eq!(parse_stats(reply).unwrap(), Some(7));
        assert_eq!(parse_stats(br#"{"map":""}"#).unwrap(), None);
        assert!(parse_stats(b"nope").is_err());
    }
}
