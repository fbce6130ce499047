//! A partition's fetch task: it settles in, then keeps one subscription per epoch and sends pull
//! requests on it, and takes what they deliver. The module docs of `queue.rs` ("Fetching") say why
//! it works this way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tally_core::ports::Result;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{BUFFER_CAP, GRACE, HIGH_WATER, Inner, LOW_WATER, bounded, unavailable};
use crate::pulls::{Outstanding, Pulls};
use crate::state::Held;
use crate::wire;

/// How long one pull request stays open at the server.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How often the server sends an idle heartbeat while a pull request waits (at most half its
/// expiry, the server's rule).
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long after its expiry a pull request that no status closed is superseded.
const PULL_MARGIN: Duration = Duration::from_millis(250);
/// A fetch task looks at its partition at least this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Pause after a failure.
const RETRY: Duration = Duration::from_millis(500);
/// Most messages taken off the subscription in one go.
const DRAIN: usize = 256;

/// What a fetch task is to do.
enum Course {
    /// Fetch for this epoch.
    Fetch(u64),
    /// The partition is being given up: no more pull requests; what the live one brings is taken.
    Finish(u64),
    Stop,
}

/// A fetch task's subscription for one epoch. Each pull request of the epoch names a reply subject
/// of its own under the subscription's inbox (`<inbox>.<request id>`): deliveries of any of them
/// arrive here, in the order the server sent them, and each status names its request.
struct Feed {
    epoch: u64,
    /// [`Inner::connection`] when it was opened.
    connection: u64,
    inbox: String,
    sub: Subscriber,
    pulls: Pulls,
}

impl Feed {
    /// The pull request a status or heartbeat came for: the last token of its subject (a delivery
    /// carries its stream subject).
    fn request(&self, subject: &str) -> Option<u64> {
        subject
            .strip_prefix(self.inbox.as_str())?
            .strip_prefix('.')?
            .parse()
            .ok()
    }

    /// Unsubscribes: the server hands nothing more to the epoch's pull requests (it drops a request
    /// whose reply subject has no interest).
    async fn close(mut self, limit: Duration) {
        if let Err(e) = bounded(limit, "unsubscribing", self.sub.unsubscribe()).await {
            tracing::debug!(error = %e, "pull subscription not closed");
        }
    }
}

/// Fetches one partition for as long as this process holds it (and is not giving it up).
pub(super) async fn fetch(inner: Arc<Inner>, partition: usize) {
    let mut settled: Option<u64> = None;
    let mut feed: Option<Feed> = None;
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let room = inner.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        let (epoch, fetching) = match inner.course(partition) {
            Course::Fetch(epoch) => (epoch, true),
            Course::Finish(epoch) => (epoch, false),
            Course::Stop => break,
        };
        if let Some(old) = feed.take_if(|f| f.epoch != epoch) {
            // Before `settle_in` asks the server anything: the consumer info it reads then counts
            // every delivery made to the old epoch's requests.
            old.close(inner.limit()).await;
        }
        if !fetching && feed.as_ref().is_none_or(|f| !f.pulls.live()) {
            break;
        }
        if settled != Some(epoch) {
            if inner.settle_in(partition, epoch).await {
                settled = Some(epoch);
            }
            continue;
        }
        if feed.is_none() {
            match inner.open_feed(epoch).await {
                Ok(f) => feed = Some(f),
                Err(e) => {
                    tracing::warn!(partition, error = %e, "could not subscribe for pulls");
                    if !pause(&mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some(f) = feed.as_mut() else {
            continue;
        };
        if inner.connection.load(Ordering::SeqCst) != f.connection {
            inner.reset(partition, epoch, "the connection to NATS was interrupted");
            continue;
        }
        let now = Instant::now();
        if let Some(lapsed) = f.pulls.tick(now) {
            if lapsed.answered {
                tracing::debug!(
                    partition,
                    "a pull request was not closed in time: superseded"
                );
            } else {
                tracing::info!(
                    partition,
                    "a pull request got no answer at all: checking the connection"
                );
                inner.suspect();
            }
        }
        if fetching && !f.pulls.live() {
            let want = inner.want(partition, epoch, f.pulls.outstanding());
            if want > 0
                && let Err(e) = inner.send_pull(partition, f, want).await
            {
                tracing::warn!(partition, error = %e, "pull request not sent");
                inner.reset(partition, epoch, "a pull request could not be sent");
                if !pause(&mut shutdown).await {
                    break;
                }
                continue;
            }
        }
        let wake = f
            .pulls
            .next_deadline()
            .map_or(now + IDLE_POLL, |d| d.min(now + IDLE_POLL));
        let next = tokio::select! {
            m = f.sub.next() => m,
            _ = tokio::time::sleep_until(wake) => continue,
            _ = &mut room => continue,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(message) = next else {
            inner.reset(partition, epoch, "its pull subscription closed");
            continue;
        };
        let mut outcome = inner.received(partition, f, message).await;
        let mut taken = 1;
        while outcome.is_ok()
            && taken < DRAIN
            && let Some(Some(message)) = f.sub.next().now_or_never()
        {
            outcome = inner.received(partition, f, message).await;
            taken += 1;
        }
        if let Err(e) = outcome {
            tracing::warn!(partition, error = %e, "pull failed");
            inner.reset(partition, epoch, "a pull failed");
            if !pause(&mut shutdown).await {
                break;
            }
        }
    }
    if let Some(f) = feed
        && !inner.stopped()
    {
        f.close(inner.limit()).await;
    }
    inner.lock().partitions[partition].fetching = false;
}

/// Waits a moment after a failure; false when the queue is shutting down.
async fn pause(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

impl Inner {
    fn course(&self, partition: usize) -> Course {
        if self.stopped() {
            return Course::Stop;
        }
        let s = self.lock();
        let p = &s.partitions[partition];
        match &p.lease {
            Some(l) if l.draining => Course::Finish(p.epoch),
            Some(_) => Course::Fetch(p.epoch),
            None => Course::Stop,
        }
    }

    /// How many messages the next pull request of `partition` asks for (0: none now), given what the
    /// earlier ones may still deliver: the buffer and the live and closed requests' rest stay within
    /// the high-water mark (the cap when the partition holds back the others), and with the lapsed
    /// requests' rest within the cap.
    fn want(&self, partition: usize, epoch: u64, out: Outstanding) -> usize {
        let s = self.lock();
        let p = &s.partitions[partition];
        if p.epoch != epoch {
            return 0;
        }
        let ahead = p.lines.buffered() + out.in_flight;
        let want = if ahead < LOW_WATER {
            HIGH_WATER - ahead
        } else if p.limits && p.more && ahead < BUFFER_CAP {
            HIGH_WATER.min(BUFFER_CAP - ahead)
        } else {
            0
        };
        want.min(BUFFER_CAP.saturating_sub(ahead + out.lapsed))
    }

    /// Before fetching a partition whose state was (re)started: if JetStream has more of its messages
    /// delivered and unacked than this process holds, waits until their ack wait ran out, so they are
    /// redelivered ahead of anything new.
    async fn settle_in(&self, partition: usize, epoch: u64) -> bool {
        loop {
            if !matches!(self.course(partition), Course::Fetch(e) if e == epoch) {
                return false;
            }
            let info = tokio::time::timeout(
                self.limit(),
                self.commands.consumer_info(self.names.consumer(partition)),
            )
            .await;
            match info {
                Ok(Ok(info)) => {
                    let held = self.lock().partitions[partition].lines.len();
                    let waits = info.num_ack_pending > held;
                    if waits {
                        tracing::info!(
                            partition,
                            pending = info.num_ack_pending,
                            held,
                            "waiting for unacked deliveries to come back first"
                        );
                        // Counted from now, not from when this process lost track of them: a
                        // server that restarted meanwhile starts their ack timers anew.
                        let until = Instant::now() + self.ack_wait + GRACE;
                        let mut shutdown = self.shutdown.subscribe();
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => {}
                            _ = shutdown.wait_for(|s| *s) => return false,
                        }
                    }
                    let mut s = self.lock();
                    let p = &mut s.partitions[partition];
                    if p.epoch != epoch || p.lease.as_ref().is_none_or(|l| l.draining) {
                        return false;
                    }
                    // Until its first pull says otherwise, what the server has of it comes first.
                    p.more = waits || info.num_pending > 0;
                    return true;
                }
                Ok(Err(e)) => tracing::warn!(partition, error = %e, "reading a consumer"),
                Err(_) => tracing::warn!(partition, "reading a consumer timed out"),
            }
            let mut shutdown = self.shutdown.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Subscribes a fresh inbox for the pull requests of `epoch`.
    async fn open_feed(&self, epoch: u64) -> Result<Feed> {
        let connection = self.connection.load(Ordering::SeqCst);
        let inbox = self.client.new_inbox();
        let sub = bounded(
            self.limit(),
            "subscribing for pulls",
            self.client.subscribe(format!("{inbox}.*")),
        )
        .await?;
        Ok(Feed {
            epoch,
            connection,
            inbox,
            sub,
            pulls: Pulls::new(PULL_EXPIRES + PULL_MARGIN, PULL_EXPIRES + self.limit()),
        })
    }

    /// Sends one pull request of `batch` messages, answered on the feed's subscription.
    async fn send_pull(&self, partition: usize, feed: &mut Feed, batch: usize) -> Result<()> {
        let id = feed.pulls.sent(batch, Instant::now());
        let request = format!(
            r#"{{"batch":{batch},"expires":{},"idle_heartbeat":{}}}"#,
            PULL_EXPIRES.as_nanos(),
            PULL_HEARTBEAT.as_nanos()
        );
        bounded(
            self.limit(),
            "sending a pull request",
            self.client.publish_with_reply(
                self.names.next_subject(partition),
                format!("{}.{id}", feed.inbox),
                Bytes::from(request),
            ),
        )
        .await
    }

    /// Takes one message of a feed: a delivery (whichever request it came for) or a status or
    /// heartbeat of one of its pull requests. An error means deliveries may have been lost.
    async fn received(
        &self,
        partition: usize,
        feed: &mut Feed,
        message: async_nats::Message,
    ) -> Result<()> {
        if self.connection.load(Ordering::SeqCst) != feed.connection {
            // Deliveries may have been lost on the way: the fetch task resets the partition.
            return Ok(());
        }
        match message.status {
            None | Some(StatusCode::OK) => {
                feed.pulls.delivered();
                self.accept(partition, feed.epoch, message).await
            }
            Some(StatusCode::IDLE_HEARTBEAT) => {
                if let Some(id) = feed.request(message.subject.as_str()) {
                    feed.pulls.heartbeat(id);
                }
                Ok(())
            }
            Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                let pending = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(wire::PENDING_MESSAGES))
                    .and_then(|v| v.as_str().parse().ok());
                if let Some(id) = feed.request(message.subject.as_str())
                    && feed.pulls.closed(id, pending)
                {
                    // The server had nothing more for the latest request.
                    let mut s = self.lock();
                    let p = &mut s.partitions[partition];
                    if p.epoch == feed.epoch {
                        p.more = false;
                    }
                }
                Ok(())
            }
            Some(status) => Err(unavailable(
                "pulling",
                format!("status {status}: {:?}", message.description),
            )),
        }
    }

    /// Adds one delivered message to its partition's lines, or dead-letters it when it was delivered
    /// too often without being settled (its consumers kept dying) or is not a tally message.
    async fn accept(
        &self,
        partition: usize,
        epoch: u64,
        message: async_nats::Message,
    ) -> Result<()> {
        let Some(reply) = message.reply.clone() else {
            return Err(unavailable("pulling", "a message without an ack subject"));
        };
        let Some(ack) = wire::parse_ack_subject(reply.as_str()) else {
            return Err(unavailable(
                "pulling",
                format!("unexpected ack subject {reply}"),
            ));
        };
        let headers = message.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let message_id = header(wire::ID).and_then(|v| Uuid::parse_str(v).ok());
        let key = header(wire::KEY).and_then(wire::decode_header);
        let redeliveries = u32::try_from(ack.delivered.saturating_sub(1)).unwrap_or(u32::MAX);
        let tally_message = message_id.is_some() && key.is_some();
        let held = Held {
            reply,
            message_id: message_id.unwrap_or_else(Uuid::now_v7),
            key: key.unwrap_or_default(),
            payload: message.payload,
            redeliveries,
            due: None,
            out: false,
            settled: false,
            touched: Instant::now(),
        };
        if !tally_message {
            tracing::warn!(
                seq = ack.stream_seq,
                "dead-lettering a message that is not tally's"
            );
            return self
                .dead_letter(
                    &held,
                    "not a tally queue message (no Tally-Id or Tally-Key header)",
                )
                .await;
        }
        let message_id = held.message_id;
        let abandoned = self.options.max_deliveries.saturating_mul(2);
        if redeliveries >= abandoned {
            tracing::warn!(%message_id, redeliveries, "dead-lettering a message never settled");
            return self
                .dead_letter(
                    &held,
                    &format!(
                        "delivered {} times without being acked or nacked (its consumers stopped \
                         or lost their connection each time)",
                        redeliveries + 1
                    ),
                )
                .await;
        }
        let mut s = self.lock();
        let p = &mut s.partitions[partition];
        if p.epoch != epoch {
            return Ok(());
        }
        p.fetched_upto = p.fetched_upto.max(ack.stream_seq);
        p.more = ack.pending > 0;
        p.lines.push(ack.stream_seq, held);
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Something suggests that the connection is dead though the client still counts it as up (a pull
    /// request with no answer at all, a maintenance round that failed): checks it with a message to
    /// itself, and reconnects when even that does not come back within the call limit. The client's
    /// own pings would notice minutes later.
    pub(super) fn suspect(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let connection = inner.connection.load(Ordering::SeqCst);
            if inner.connected()
                && let Err(e) = inner.echo().await
                && inner.connected()
                && inner.connection.load(Ordering::SeqCst) == connection
                && !inner.stopped()
            {
                tracing::warn!(error = %e, "nats connection answers nothing; reconnecting");
                if let Err(e) = inner.client.force_reconnect().await {
                    tracing::warn!(error = %e, "could not reconnect");
                }
            }
            inner.probing.store(false, Ordering::SeqCst);
        });
    }

    /// Publishes a message to a fresh inbox of this client and waits for it.
    async fn echo(&self) -> Result<()> {
        let client = &self.client;
        let inbox = client.new_inbox();
        bounded(self.limit(), "checking the connection", async move {
            let mut sub = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| e.to_string())?;
            client
                .publish(inbox, Bytes::new())
                .await
                .map_err(|e| e.to_string())?;
            sub.next()
                .await
                .map(|_| ())
                .ok_or_else(|| "subscription closed".to_owned())
        })
        .await
    }
}
