//! A TCP proxy between the adapter and the real NATS server that misbehaves on request, so tests can
//! give the adapter what a loaded or broken server and network give it: pull requests whose closing
//! 408 never comes, deliveries that arrive after the status that closed their request, a connection
//! that stays open and carries nothing.
//!
//! It reads the server's side frame by frame (`INFO`, `MSG`, `HMSG`, `PING`, … each ends at its line,
//! or after the payload its line announces) and forwards the client's side as it comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Default)]
struct Faults {
    drop_timeouts: AtomicBool,
    hold_deliveries_ms: AtomicU64,
    /// Connections numbered below this forward nothing any more, either way.
    silent_below: AtomicU64,
    connections: AtomicU64,
    dropped_timeouts: AtomicUsize,
    held_deliveries: AtomicUsize,
}

impl Faults {
    fn silent(&self, connection: u64) -> bool {
        connection < self.silent_below.load(Ordering::SeqCst)
    }
}

pub struct Proxy {
    address: String,
    faults: Arc<Faults>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to the server under test.
    pub async fn start() -> Proxy {
        let upstream = super::url()
            .trim_start_matches("nats://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let faults = Arc::new(Faults::default());
        let accepting = {
            let faults = faults.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let number = faults.connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(upstream_copy(
                        client_read,
                        server_write,
                        faults.clone(),
                        number,
                    ));
                    tokio::spawn(downstream(
                        server_read,
                        client_write,
                        faults.clone(),
                        number,
                    ));
                }
            })
        };
        Proxy {
            address,
            faults,
            accepting,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Drops every status `408` (what closes an expired pull request) from now on.
    pub fn drop_timeouts(&self) {
        self.faults.drop_timeouts.store(true, Ordering::SeqCst);
    }

    /// Holds every delivery of a stream message (a message whose reply is a `$JS.ACK.` subject) this
    /// long, in order; everything else passes at once, so a pull request's closing status overtakes
    /// its deliveries.
    pub fn hold_deliveries(&self, hold: Duration) {
        let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        self.faults.hold_deliveries_ms.store(ms, Ordering::SeqCst);
    }

    /// The connections open now carry nothing more either way, and stay open; later ones work.
    pub fn silence(&self) {
        let next = self.faults.connections.load(Ordering::SeqCst);
        self.faults.silent_below.store(next, Ordering::SeqCst);
    }

    pub fn dropped_timeouts(&self) -> usize {
        self.faults.dropped_timeouts.load(Ordering::SeqCst)
    }

    pub fn held_deliveries(&self) -> usize {
        self.faults.held_deliveries.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.faults.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Client to server: bytes as they come, unless the connection was silenced.
async fn upstream_copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: Arc<Faults>,
    number: u64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if faults.silent(number) {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Server to client, frame by frame, with the faults applied.
async fn downstream(from: OwnedReadHalf, mut to: OwnedWriteHalf, faults: Arc<Faults>, number: u64) {
    let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let (held, mut releases) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = {
        let faults = faults.clone();
        tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if faults.silent(number) {
                    continue;
                }
                if to.write_all(&frame).await.is_err() {
                    return;
                }
            }
        })
    };
    let delay_line = {
        let frames = frames.clone();
        tokio::spawn(async move {
            while let Some((at, frame)) = releases.recv().await {
                tokio::time::sleep_until(at).await;
                if frames.send(frame).is_err() {
                    return;
                }
            }
        })
    };
    let mut from = BufReader::new(from);
    while let Some((frame, reply, status)) = read_frame(&mut from).await {
        if status.as_deref() == Some("408") && faults.drop_timeouts.load(Ordering::SeqCst) {
            faults.dropped_timeouts.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let hold = Duration::from_millis(faults.hold_deliveries_ms.load(Ordering::SeqCst));
        if !hold.is_zero() && reply.as_deref().is_some_and(|r| r.starts_with("$JS.ACK.")) {
            faults.held_deliveries.fetch_add(1, Ordering::SeqCst);
            if held.send((Instant::now() + hold, frame)).is_err() {
                break;
            }
            continue;
        }
        if frames.send(frame).is_err() {
            break;
        }
    }
    // Whatever is held still goes out, then the client sees the connection close.
    drop(held);
    let _ = delay_line.await;
    drop(frames);
    let _ = writer.await;
}

/// One frame of the server's side: its bytes, the reply subject of a message and the status code of
/// a message with headers (`NATS/1.0 408 …`). `None` at the end of the stream.
async fn read_frame(
    from: &mut BufReader<OwnedReadHalf>,
) -> Option<(Vec<u8>, Option<String>, Option<String>)> {
    let mut frame = Vec::new();
    if from.read_until(b'\n', &mut frame).await.ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&frame).into_owned();
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let op = tokens.first().map(|t| t.to_ascii_uppercase());
    // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <header size> <total size>.
    let (reply, size) = match (op.as_deref(), tokens.len()) {
        (Some("MSG"), 4) => (None, tokens[3]),
        (Some("MSG"), 5) => (Some(tokens[3]), tokens[4]),
        (Some("HMSG"), 5) => (None, tokens[4]),
        (Some("HMSG"), 6) => (Some(tokens[3]), tokens[5]),
        _ => return Some((frame, None, None)),
    };
    let size: usize = size.parse().ok()?;
    let start = frame.len();
    frame.resize(start + size + 2, 0);
    from.read_exact(&mut frame[start..]).await.ok()?;
    let status = (op.as_deref() == Some("HMSG"))
        .then(|| {
            let body = String::from_utf8_lossy(&frame[start..]).into_owned();
            body.strip_prefix("NATS/1.0 ")
                .and_then(|rest| rest.get(..3))
                .map(str::to_owned)
        })
        .flatten();
    Some((frame, reply.map(str::to_owned), status))
}
