//! The one HTTP client layer of the commands that talk to a running server (`report`, `import`,
//! `events tail`, `demo`'s traffic, and `load`'s reads): the base URL, the bearer key, problem+json
//! errors decoded into [`Problem`] (with their field names), and 503/429 answers retried after their
//! `Retry-After`. `load`'s own HTTP/1.1 connection (`load/http1.rs`) stays beside it for the write
//! path it measures, where a general client's cost per request would be taken from the server.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;

/// Attempts of one request answered 503 or 429 before its answer is taken as final.
const ATTEMPTS: u32 = 8;
/// The longest wait between two attempts, whatever `Retry-After` says.
const MOST_WAIT: Duration = Duration::from_secs(5);

/// `--url` and `--key` of every command that talks to a running server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "TALLY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An API key of that server (its role must allow what the command does).
    #[arg(long, env = "TALLY_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
}

/// A running tally server, as one API key sees it.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Tries of a request answered 503 or 429.
    attempts: u32,
}

/// One `{field, message}` of a validation problem.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem the server answered (or a non-2xx answer that was not one).
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    pub title: String,
    pub detail: Option<String>,
    pub errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
}

impl Problem {
    pub fn decode(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ProblemBody>(body) {
            Ok(p) => Self {
                status: status.as_u16(),
                title: p
                    .title
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
                detail: p.detail,
                errors: p.errors,
            },
            Err(_) => Self {
                status: status.as_u16(),
                title: status.canonical_reason().unwrap_or("error").to_owned(),
                detail: Some(String::from_utf8_lossy(body).trim().to_owned())
                    .filter(|d| !d.is_empty()),
                errors: Vec::new(),
            },
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server answered {} {}", self.status, self.title)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        for e in &self.errors {
            write!(f, "\n  {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// A 2xx answer: headers and body.
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the server's answer is not JSON")
    }
    pub fn text(&self) -> anyhow::Result<String> {
        String::from_utf8(self.body.clone()).context("the server's answer is not UTF-8")
    }
}

/// How long `Retry-After` asks to wait (seconds only; a date is taken as one second).
fn retry_after(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs).clamp(Duration::from_millis(100), MOST_WAIT)
}

impl Client {
    pub fn new(url: &str, key: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--url {url}: expected http://host:port");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            key: key.to_owned(),
            attempts: ATTEMPTS,
        })
    }

    /// This client, taking a 503 or 429 as the final answer (for a caller that counts them).
    pub fn without_retries(mut self) -> Self {
        self.attempts = 1;
        self
    }

    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Self> {
        let key = args
            .key
            .as_deref()
            .context("an API key is needed: pass --key or set TALLY_KEY")?;
        Self::new(&args.url, key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with the bearer key, for what the helpers below do not cover.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    /// Sends what `build` makes until it gets an answer other than 503 or 429 (at most
    /// [`ATTEMPTS`] tries, each after the answer's `Retry-After`); a non-2xx answer is a [`Problem`].
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<Answer> {
        let mut attempt = 1;
        loop {
            let r = build()
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .with_context(|| format!("{what}: could not reach {}", self.base))?;
            let status = r.status();
            let headers = r.headers().clone();
            let body = r
                .bytes()
                .await
                .with_context(|| format!("{what}: reading the answer"))?
                .to_vec();
            let busy = status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS;
            if busy && attempt < self.attempts {
                attempt += 1;
                tokio::time::sleep(retry_after(&headers)).await;
                continue;
            }
            if !status.is_success() {
                return Err(
                    anyhow::Error::new(Problem::decode(status, &body)).context(what.to_owned())
                );
            }
            return Ok(Answer { headers, body });
        }
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("GET {path}");
        self.send(&what, || self.request(reqwest::Method::GET, path))
            .await?
            .json()
            .with_context(|| what.clone())
    }

    /// `GET path` with `Accept: accept`, as text.
    pub async fn get_text(&self, path: &str, accept: &str) -> anyhow::Result<String> {
        let what = format!("GET {path}");
        self.send(&what, || {
            self.request(reqwest::Method::GET, path)
                .header(reqwest::header::ACCEPT, accept)
        })
        .await?
        .text()
        .with_context(|| what.clone())
    }

    /// `POST path` with a JSON body (already encoded, so a retry and a re-run send the same
    /// bytes an idempotency key was first used with).
    pub async fn post(
        &self,
        path: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let what = format!("POST {path}");
        self.send(&what, || {
            let r = self
                .request(reqwest::Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            match idempotency_key {
                Some(k) => r.header("Idempotency-Key", k),
                None => r,
            }
        })
        .await
    }

    /// A command's status, waiting up to `wait_ms` for it to be decided.
    pub async fn command(&self, command_id: &str, wait_ms: u32) -> anyhow::Result<Value> {
        self.get_json(&format!("/v1/commands/{command_id}?wait_ms={wait_ms}"))
            .await
    }
}

/// The problem behind an error of this client, if the server answered one.
pub fn problem_of(e: &anyhow::Error) -> Option<&Problem> {
    e.downcast_ref::<Problem>()
}

/// Percent-encodes one query-string value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_problem_names_its_fields() {
        let body = br#"{"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"the body is invalid","errors":[{"field":"lines[0].quantity","message":"must be at least 1"}]}"#;
        let p = Problem::decode(StatusCode::UNPROCESSABLE_ENTITY, body);
        let shown = p.to_string();
        assert!(shown.contains("422"), "{shown}");
        assert!(
            shown.contains("lines[0].quantity: must be at least 1"),
            "{shown}"
        );
    }

    #[test]
    fn an_answer_that_is_no_problem_still_reads() {
        let p = Problem::decode(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(p.status, 502);
        assert_eq!(p.detail.as_deref(), Some("upstream down"));
    }

    #[test]
    fn retry_after_is_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Duration::from_secs(3));
        h.insert(RETRY_AFTER, "3600".parse().expect("header"));
        assert_eq!(retry_after(&h), MOST_WAIT);
    }
}
