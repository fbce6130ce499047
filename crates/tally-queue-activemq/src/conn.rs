//! One STOMP connection: a writer task (frames in call order, heart-beats when idle), a reader task
//! (receipts, errors, messages routed to their subscription, the broker's heart-beats watched), and
//! receipts awaited with a bounded time. A connection that breaks stays broken: its owner opens a new
//! one (see `Link` in the queue module).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tally_core::ports::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::codec::{Frame, Item, StompCodec};

/// Largest frame accepted from the broker.
const MAX_FRAME: usize = 64 << 20;
/// Frames queued for the writer before callers wait.
const OUTBOX: usize = 8192;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `host:port`
    pub addr: String,
    /// The STOMP `host` header (virtual host).
    pub host: String,
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// Heart-beat interval offered both ways; zero turns heart-beats off.
    pub heartbeat: Duration,
    /// Bound on connecting and on each awaited receipt.
    pub timeout: Duration,
}

/// Called with every MESSAGE frame of a subscription, on the reader task: must not block.
pub(crate) type Handler = Arc<dyn Fn(Frame) + Send + Sync>;

type Receipt = oneshot::Sender<Result<(), String>>;

struct Shared {
    receipts: Mutex<HashMap<String, Receipt>>,
    handlers: Mutex<HashMap<String, Handler>>,
    /// `Some(reason)` once the connection is broken.
    closed: watch::Sender<Option<String>>,
}

impl Shared {
    fn close(&self, reason: String) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                tracing::debug!(%reason, "STOMP connection closed");
                *c = Some(reason);
                true
            } else {
                false
            }
        });
        // Waiting callers get an error at once.
        lock(&self.receipts).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unavailable(context: &str, cause: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("ActiveMQ: {context}: {cause}"))
}

/// An open STOMP connection. Dropping it closes the socket.
pub(crate) struct Connection {
    out: mpsc::Sender<Item>,
    shared: Arc<Shared>,
    closed: watch::Receiver<Option<String>>,
    timeout: Duration,
    ids: AtomicU64,
    tasks: [JoinHandle<()>; 2],
    socket: std::net::TcpStream,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shut("the connection was dropped");
    }
}

/// A receipt requested by [`Connection::send_receipted`].
pub(crate) struct PendingReceipt {
    rx: oneshot::Receiver<Result<(), String>>,
    closed: watch::Receiver<Option<String>>,
}

impl PendingReceipt {
    /// Waits for the broker's RECEIPT, at most `timeout`.
    pub async fn wait(self, context: &str, timeout: Duration) -> Result<(), Error> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(unavailable(context, format!("broker error: {message}"))),
            Ok(Err(_)) => {
                let reason = self.closed.borrow().clone();
                Err(unavailable(
                    context,
                    reason.unwrap_or_else(|| "connection closed".into()),
                ))
            }
            Err(_) => Err(unavailable(
                context,
                format!("no receipt within {timeout:?}"),
            )),
        }
    }
}

impl Connection {
    pub async fn open(endpoint: &Endpoint) -> Result<Connection, Error> {
        tokio::time::timeout(endpoint.timeout, Self::handshake(endpoint))
            .await
            .map_err(|_| {
                unavailable(
                    &format!("connecting to {}", endpoint.addr),
                    format!("no answer within {:?}", endpoint.timeout),
                )
            })?
    }

    async fn handshake(endpoint: &Endpoint) -> Result<Connection, Error> {
        let context = format!("connecting to {}", endpoint.addr);
        let stream = TcpStream::connect(&endpoint.addr)
            .await
            .map_err(|e| unavailable(&context, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(&context, e))?;
        // A handle on the same socket, to close it at once when the connection is dropped (the tasks
        // that own the socket may only be dropped later, by their runtime).
        let std_stream = stream.into_std().map_err(|e| unavailable(&context, e))?;
        let socket = std_stream
            .try_clone()
            .map_err(|e| unavailable(&context, e))?;
        let stream = TcpStream::from_std(std_stream).map_err(|e| unavailable(&context, e))?;
        let (r, w) = stream.into_split();
        let mut reader = FramedRead::new(r, StompCodec::new(MAX_FRAME));
        let mut writer = FramedWrite::new(w, StompCodec::new(MAX_FRAME));
        let beat = u64::try_from(endpoint.heartbeat.as_millis()).unwrap_or(u64::MAX);
        let mut connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", endpoint.host.clone())
            .header("heart-beat", format!("{beat},{beat}"));
        if let Some(login) = &endpoint.login {
            connect = connect.header("login", login.clone());
        }
        if let Some(passcode) = &endpoint.passcode {
            connect = connect.header("passcode", passcode.clone());
        }
        writer
            .send(Item::Frame(connect))
            .await
            .map_err(|e| unavailable(&context, e))?;
        let connected = loop {
            match reader.next().await {
                Some(Ok(Item::HeartBeat)) => continue,
                Some(Ok(Item::Frame(f))) => break f,
                Some(Err(e)) => return Err(unavailable(&context, e)),
                None => return Err(unavailable(&context, "the broker closed the connection")),
            }
        };
        if connected.command != "CONNECTED" {
            let message = connected.get("message").unwrap_or_default().to_owned();
            return Err(unavailable(
                &context,
                format!(
                    "{} {message} {}",
                    connected.command,
                    String::from_utf8_lossy(&connected.body)
                ),
            ));
        }
        // heart-beat negotiation: we owe one every max(ours, what it wants) and send twice as often
        // (a late one makes ActiveMQ drop the connection); it sends every max(its own, ours), but
        // ActiveMQ's write check may leave up to two intervals between them, so silence for three
        // intervals (and a margin) means the connection is dead.
        let (server_sends, server_wants) = connected
            .get("heart-beat")
            .and_then(|h| h.split_once(','))
            .map(|(a, b)| {
                (
                    a.trim().parse::<u64>().unwrap_or(0),
                    b.trim().parse::<u64>().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        let send_every = (beat > 0 && server_wants > 0)
            .then(|| Duration::from_millis(beat.max(server_wants) / 2));
        let expect_every = (beat > 0 && server_sends > 0)
            .then(|| Duration::from_millis(beat.max(server_sends).saturating_mul(3) + 2000));

        let (closed_tx, closed) = watch::channel(None);
        let shared = Arc::new(Shared {
            receipts: Mutex::new(HashMap::new()),
            handlers: Mutex::new(HashMap::new()),
            closed: closed_tx,
        });
        let (out, rx) = mpsc::channel(OUTBOX);
        let write_task = tokio::spawn(write_loop(writer, rx, shared.clone(), send_every));
        let read_task = tokio::spawn(read_loop(reader, shared.clone(), expect_every));
        Ok(Connection {
            out,
            shared,
            closed,
            timeout: endpoint.timeout,
            ids: AtomicU64::new(1),
            tasks: [write_task, read_task],
            socket,
        })
    }

    /// A number unique on this connection (receipt, transaction and subscription ids).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_open(&self) -> bool {
        self.closed.borrow().is_none()
    }

    /// Why the connection broke, once it did.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// Resolves when the connection breaks.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| c.is_some()).await;
    }

    /// Breaks the connection on purpose (the broker then redelivers what it had handed out on it).
    pub fn shut(&self, reason: &str) {
        self.shared.close(reason.to_owned());
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        for t in &self.tasks {
            t.abort();
        }
    }

    fn broken(&self, context: &str) -> Error {
        unavailable(
            context,
            self.closed_reason()
                .unwrap_or_else(|| "connection closed".into()),
        )
    }

    /// Queues a frame for the writer (frames go out in the order of these calls).
    pub async fn send(&self, frame: Frame) -> Result<(), Error> {
        if !self.is_open() {
            return Err(self.broken("sending"));
        }
        self.out
            .send(Item::Frame(frame))
            .await
            .map_err(|_| self.broken("sending"))
    }

    /// Sends a frame with a `receipt` header and returns the receipt to wait for.
    pub async fn send_receipted(&self, frame: Frame) -> Result<PendingReceipt, Error> {
        let id = format!("r{}", self.next_id());
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.receipts).insert(id.clone(), tx);
        if let Err(e) = self.send(frame.header("receipt", id.clone())).await {
            lock(&self.shared.receipts).remove(&id);
            return Err(e);
        }
        Ok(PendingReceipt {
            rx,
            closed: self.closed.clone(),
        })
    }

    /// Sends a frame and waits for its receipt (within the endpoint's timeout).
    pub async fn request(&self, frame: Frame, context: &str) -> Result<(), Error> {
        self.send_receipted(frame)
            .await?
            .wait(context, self.timeout)
            .await
    }

    /// Routes MESSAGE frames of subscription `id` to `handler` (before the SUBSCRIBE goes out).
    pub fn on_messages(&self, id: &str, handler: Handler) {
        lock(&self.shared.handlers).insert(id.to_owned(), handler);
    }

    pub fn forget_messages(&self, id: &str) {
        lock(&self.shared.handlers).remove(id);
    }
}

async fn write_loop(
    mut writer: FramedWrite<tokio::net::tcp::OwnedWriteHalf, StompCodec>,
    mut rx: mpsc::Receiver<Item>,
    shared: Arc<Shared>,
    beat: Option<Duration>,
) {
    let mut closed = shared.closed.subscribe();
    // Far enough in the future to mean "never" without overflowing.
    let never = Duration::from_secs(86_400 * 365);
    loop {
        if closed.borrow_and_update().is_some() {
            return;
        }
        let idle = tokio::time::sleep_until(Instant::now() + beat.unwrap_or(never));
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { return };
                let mut result = writer.feed(item).await;
                // Everything already queued goes out in one flush.
                while result.is_ok() {
                    match rx.try_recv() {
                        Ok(next) => result = writer.feed(next).await,
                        Err(_) => break,
                    }
                }
                if let Err(e) = result.and(writer.flush().await) {
                    shared.close(format!("writing to the broker: {e}"));
                    return;
                }
            }
            () = idle => {
                if let Err(e) = writer.send(Item::HeartBeat).await {
                    shared.close(format!("writing a heart-beat: {e}"));
                    return;
                }
            }
            _ = closed.changed() => return,
        }
    }
}

async fn read_loop(
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, StompCodec>,
    shared: Arc<Shared>,
    expect: Option<Duration>,
) {
    let never = Duration::from_secs(86_400 * 365);
    loop {
        let next = tokio::time::timeout(expect.unwrap_or(never), reader.next()).await;
        let frame = match next {
            Err(_) => {
                shared.close(format!(
                    "no data or heart-beat from the broker for {:?}",
                    expect.unwrap_or(never)
                ));
                return;
            }
            Ok(None) => {
                shared.close("the broker closed the connection".into());
                return;
            }
            Ok(Some(Err(e))) => {
                shared.close(format!("reading from the broker: {e}"));
                return;
            }
            Ok(Some(Ok(Item::HeartBeat))) => continue,
            Ok(Some(Ok(Item::Frame(f)))) => f,
        };
        match frame.command.as_str() {
            "MESSAGE" => {
                let handler = frame
                    .get("subscription")
                    .and_then(|s| lock(&shared.handlers).get(s).cloned());
                match handler {
                    Some(h) => h(frame),
                    None => tracing::debug!(
                        subscription = ?frame.get("subscription"),
                        "STOMP message for no known subscription"
                    ),
                }
            }
            "RECEIPT" => {
                if let Some(id) = frame.get("receipt-id")
                    && let Some(tx) = lock(&shared.receipts).remove(id)
                {
                    let _ = tx.send(Ok(()));
                }
            }
            "ERROR" => {
                let message = format!(
                    "{} {}",
                    frame.get("message").unwrap_or_default(),
                    String::from_utf8_lossy(&frame.body).trim()
                );
                let waiter = frame
                    .get("receipt-id")
                    .and_then(|id| lock(&shared.receipts).remove(id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(Err(message));
                    }
                    None => {
                        shared.close(format!("broker error: {message}"));
                        return;
                    }
                }
            }
            other => tracing::debug!(command = other, "unexpected STOMP frame"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::future::Future;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn endpoint(addr: std::net::SocketAddr, heartbeat: Duration) -> Endpoint {
        Endpoint {
            addr: addr.to_string(),
            host: "localhost".into(),
            login: None,
            passcode: None,
            heartbeat,
            timeout: Duration::from_secs(2),
        }
    }

    /// Reads one frame (up to its NUL) from a raw socket and returns its text.
    async fn read_frame(sock: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        loop {
            sock.read_exact(&mut b).await.unwrap();
            if b[0] == 0 {
                return String::from_utf8(out).unwrap().trim_start().to_owned();
            }
            out.push(b[0]);
        }
    }

    /// A fake broker: accepts one connection, answers CONNECT with `connected`, then runs `then`.
    async fn fake<F, Fut, T>(connected: &'static str, then: F) -> (Endpoint, JoinHandle<T>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let connect = read_frame(&mut sock).await;
            assert!(connect.starts_with("CONNECT\n"), "{connect}");
            assert!(connect.contains("accept-version:1.2"), "{connect}");
            sock.write_all(connected.as_bytes()).await.unwrap();
            then(sock).await
        });
        (endpoint(addr, Duration::from_millis(100)), server)
    }

    #[tokio::test]
    async fn a_silent_broker_is_noticed_by_its_missing_heart_beats() {
        let (endpoint, server) = fake(
            "CONNECTED\nversion:1.2\nheart-beat:100,100\n\n\0",
            |mut sock| async move {
                // Says nothing more, and counts the client's heart-beats meanwhile.
                let mut got = Vec::new();
                let _ = tokio::time::timeout(Duration::from_millis(4000), async {
                    let mut buf = [0u8; 64];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                got
            },
        )
        .await;
        let conn = Connection::open(&endpoint).await.unwrap();
        assert!(conn.is_open());
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the silence is noticed");
        let reason = conn.closed_reason().unwrap();
        assert!(reason.contains("heart-beat"), "{reason}");
        let sent = server.await.unwrap();
        assert!(
            sent.iter().filter(|b| **b == b'\n').count() >= 5,
            "the client sends heart-beats while idle: {sent:?}"
        );
        assert!(conn.send(Frame::new("SEND")).await.is_err());
    }

    #[tokio::test]
    async fn heart_beats_keep_an_idle_connection_open() {
        let (endpoint, server) = fake(
            "CONNECTED\nversion:1.2\nheart-beat:100,100\n\n\0",
            |mut sock| async move {
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if sock.write_all(b"\n").await.is_err() {
                        return;
                    }
                }
            },
        )
        .await;
        let conn = Connection::open(&endpoint).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(conn.is_open(), "{:?}", conn.closed_reason());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn receipts_errors_and_messages_reach_their_callers() {
        let (endpoint, server) = fake("CONNECTED\nversion:1.2\n\n\0", |mut sock| async move {
            let sub = read_frame(&mut sock).await;
            let receipt = sub
                .lines()
                .find_map(|l| l.strip_prefix("receipt:"))
                .unwrap()
                .to_owned();
            let reply = format!(
                "RECEIPT\nreceipt-id:{receipt}\n\n\0\nMESSAGE\nsubscription:s1\nack:a\\c1\ncontent-length:3\n\na\0b\0\n"
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
            let send = read_frame(&mut sock).await;
            let receipt = send
                .lines()
                .find_map(|l| l.strip_prefix("receipt:"))
                .unwrap()
                .to_owned();
            let reply = format!("ERROR\nreceipt-id:{receipt}\nmessage:refused\n\nno such queue\0");
            sock.write_all(reply.as_bytes()).await.unwrap();
            // An error without a receipt breaks the connection.
            read_frame(&mut sock).await;
            sock.write_all(b"ERROR\nmessage:bye\n\n\0").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;
        let conn = Connection::open(&endpoint).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        conn.on_messages(
            "s1",
            Arc::new(move |f| {
                let _ = tx.send(f);
            }),
        );
        conn.request(Frame::new("SUBSCRIBE").header("id", "s1"), "subscribing")
            .await
            .unwrap();
        let m = rx.recv().await.unwrap();
        assert_eq!((m.get("ack"), &m.body[..]), (Some("a:1"), &b"a\0b"[..]));
        let refused = conn.request(Frame::new("SEND"), "sending").await;
        assert!(
            matches!(&refused, Err(Error::Unavailable(m)) if m.contains("refused")),
            "{refused:?}"
        );
        assert!(
            conn.is_open(),
            "an error with a receipt id fails that call only"
        );
        conn.send(Frame::new("SEND")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .unwrap();
        assert!(conn.closed_reason().unwrap().contains("bye"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connecting_is_bounded() {
        // Nobody listens.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(
            Connection::open(&endpoint(addr, Duration::ZERO))
                .await
                .is_err()
        );
        // Someone listens and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Instant::now();
        let got = Connection::open(&endpoint(addr, Duration::ZERO)).await;
        assert!(matches!(&got, Err(Error::Unavailable(m)) if m.contains("no answer")));
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(listener);
    }
}
