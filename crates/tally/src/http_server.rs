//! The HTTP server loop: one listener serving HTTP/1.1 and HTTP/2, either in plain text (HTTP/2 by
//! prior knowledge) or over TLS with rustls (ALPN `h2` and `http/1.1`).
//!
//! tally owns this loop instead of calling `axum::serve` so that every connection, plain or TLS, is
//! bounded the same way: a client gets [`HEADER_READ_TIMEOUT`] to send a request's headers (which
//! also closes HTTP/1.1 keep-alive connections idle that long), [`TLS_HANDSHAKE_TIMEOUT`] to finish
//! its handshake, and headers larger than [`MAX_HEADER_BYTES`] are refused. A slow client therefore
//! cannot hold a connection open for free. Shutdown is graceful: no new connections, each open one
//! finishes the requests in hand, and [`serve`] returns when all are closed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;

/// How long a client may take to send the headers of a request, counted from the moment the
/// connection is ready for one (so it is also the idle timeout of an HTTP/1.1 keep-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) accepted; larger ones get 431 (HTTP/1.1) or
/// a stream reset (HTTP/2).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most header fields in one HTTP/1.1 request.
const MAX_HEADERS: usize = 100;
/// HTTP/2 pings an idle connection this often and drops it when a ping goes unanswered for
/// [`H2_PING_TIMEOUT`]: dead peers do not hold connections.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files; every error names the setting at fault.
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let certs = read_certs(&self.cert).with_context(|| {
            format!(
                "the TLS certificate (--tls-cert, TALLY_TLS_CERT, server.tls_cert) {}",
                self.cert.display()
            )
        })?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "the TLS private key (--tls-key, TALLY_TLS_KEY, server.tls_key) {}: no PEM private key could be read",
                    self.key.display()
                )
            })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "the TLS private key {} does not fit the certificate {} (server.tls_key, server.tls_cert)",
                    self.key.display(),
                    self.cert.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if certs.is_empty() {
        bail!("the file holds no PEM certificate");
    }
    Ok(certs)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every open connection finish
/// the requests it has in hand and returns once all are closed. With `tls`, every connection must
/// complete a TLS handshake first; without, it speaks plain HTTP/1.1 or HTTP/2 (prior knowledge).
/// Handlers can read the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole (hyper uses vectored writes), so Nagle only adds latency.
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                // Clients that go away, time out or send garbage: theirs to worry about.
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// HTTP/1.1 and HTTP/2 on one connection type, chosen by the client's first bytes (the HTTP/2
/// preface, sent after ALPN `h2` or by prior knowledge).
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Errors of one connection that has gone away before it was accepted; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The scheme clients use to reach a server with or without TLS, for its listening line.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}
