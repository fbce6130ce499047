//! A minimal HTTP/1.1 client for the load generator: one keep-alive connection per worker, requests
//! encoded before the run starts, responses parsed in place. A general client costs tens of
//! microseconds per request, which on a 2-core machine is CPU taken from the server being measured;
//! this one costs a few.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's address, split out of a `http://host:port` URL.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`, to connect to and to send as `Host`.
    pub authority: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("--url {url}: the load generator speaks plain http:// (put TLS in front of it, not between)")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("--url {url}: expected http://host:port");
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self { authority })
    }

    /// A request, encoded once: method, path, the key, an optional idempotency key and JSON body.
    pub fn encode(
        &self,
        method: &str,
        path: &str,
        key: &str,
        idempotency_key: Option<&str>,
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(b"\r\nAuthorization: Bearer ");
        out.extend_from_slice(key.as_bytes());
        if let Some(k) = idempotency_key {
            out.extend_from_slice(b"\r\nIdempotency-Key: ");
            out.extend_from_slice(k.as_bytes());
        }
        match body {
            Some(b) => {
                out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(b"\r\n\r\n"),
        }
        out
    }
}

/// A response: status, `Retry-After` in seconds when given, and the body.
pub struct Response {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// One keep-alive connection, reopened when the server closes it or it fails.
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// How long one request may take before the connection is dropped and the request retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Conn {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one encoded request and reads its response. An error means the connection is gone (it
    /// is dropped; the next call reconnects): whether the server acted on the request is unknown.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                bail!("no answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.target.authority)
                .await
                .with_context(|| format!("connecting to {}", self.target.authority))?;
            s.set_nodelay(true).context("TCP_NODELAY")?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            bail!("not connected");
        };
        stream.write_all(request).await.context("sending")?;
        loop {
            if let Some((response, used, close)) = parse(&self.buf)? {
                self.buf.drain(..used);
                if close {
                    self.stream = None;
                }
                return Ok(response);
            }
            if self.buf.len() > 64 * 1024 * 1024 {
                bail!("response over 64 MiB");
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await.context("receiving")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A whole response at the start of `buf`: it, the bytes it took, and whether the server will close.
fn parse(buf: &[u8]) -> anyhow::Result<Option<(Response, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf).context("a malformed response")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = r.code.context("a response without status")?;
    let mut length = None;
    let mut retry_after = None;
    let mut close = false;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            length = Some(v.context("a bad Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not expected from a command or status endpoint");
        }
    }
    let length = length.unwrap_or(0);
    if buf.len() < head + length {
        return Ok(None);
    }
    let response = Response {
        status,
        retry_after,
        body: buf[head..head + length].to_vec(),
    };
    Ok(Some((response, head + length, close)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_only_with_its_whole_body() {
        let full =
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\nretry-after: 3\r\n\r\nhelloHTTP/1.1";
        assert!(parse(&full[..30]).expect("parses").is_none());
        assert!(parse(&full[..full.len() - 14]).expect("parses").is_none());
        let (r, used, close) = parse(full).expect("parses").expect("complete");
        assert_eq!(
            (r.status, r.retry_after, r.body.as_slice(), close),
            (202, Some(3), &b"hello"[..], false)
        );
        assert_eq!(used, full.len() - 8);
    }

    #[test]
    fn a_request_is_encoded_with_its_headers_and_body() {
        let t = Target::parse("http://127.0.0.1:8080/").expect("a url");
        let r = t.encode("POST", "/v1/sales", "k", Some("i-1"), Some(b"{}"));
        let text = String::from_utf8(r).expect("ascii");
        assert!(text.starts_with("POST /v1/sales HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("Idempotency-Key: i-1\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        assert!(Target::parse("https://x").is_err());
    }
}
