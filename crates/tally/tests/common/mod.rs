//! The one end-to-end helper: `spawn_app` starts the real `tally` binary on port 0 in a data dir and
//! hands back an [`App`] that speaks HTTP to it. Every test file includes this module; each uses a part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// The admin secret every test server starts with (`TALLY_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "tally_test_admin_secret_0123456789";

/// How long a server may take to print its listening line, or to stop after SIGTERM, before the test
/// gives up. A safety net against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `tally serve`.
pub struct App {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The admin key's secret.
    pub admin: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    child: Option<Child>,
}

/// The path of the file that keeps the server's stderr (appended to over restarts).
pub fn stderr_log(data_dir: &Path) -> PathBuf {
    data_dir.join("server-stderr.log")
}

/// Starts `tally serve --data-dir DATA_DIR --listen 127.0.0.1:0` with `TALLY_ADMIN_KEY` set and waits
/// for its listening line.
pub fn spawn_app(data_dir: &Path) -> App {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log(data_dir))
        .expect("open the stderr log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .env_remove("TALLY_DATA_DIR")
        .env_remove("TALLY_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start tally serve");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    // Reads stdout for the whole life of the child, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("tally listening on ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .expect("an address")
                        .to_owned();
                    assert!(
                        rest.contains(&format!("(data in {})", data_dir.display())),
                        "listening line names the data dir: {line}"
                    );
                    break url;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tally serve did not print its listening line; stderr:\n{}",
                    read_log(data_dir)
                );
            }
        }
    };
    App {
        url,
        admin: ADMIN_KEY.to_owned(),
        data_dir: data_dir.to_owned(),
        client: reqwest::Client::new(),
        child: Some(child),
    }
}

fn read_log(data_dir: &Path) -> String {
    std::fs::read_to_string(stderr_log(data_dir)).unwrap_or_default()
}

/// Turns a response into (status, JSON body); a body that is not JSON becomes a JSON string.
pub async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.expect("read the body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts a response is an RFC 9457 problem with this status and returns its body.
pub async fn expect_problem(r: reqwest::Response, status: u16, what: &str) -> Value {
    let got = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (_, body) = json_of(r).await;
    assert_eq!(got, status, "{what}: status (body {body})");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: content-type {ct:?} (body {body})"
    );
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].is_string(),
            "{what}: problem has {field}: {body}"
        );
    }
    assert_eq!(
        body["status"],
        json!(status),
        "{what}: problem status: {body}"
    );
    body
}

/// The `errors[].field` names of a validation problem.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl App {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// POST a JSON body with this key (`None`: no Authorization header).
    pub async fn post_raw(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut rb = self.client.post(self.at(path)).json(body);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send().await.expect("POST")
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        json_of(self.post_raw(path, Some(key), body).await).await
    }

    pub async fn get_raw(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut rb = self.client.get(self.at(path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send().await.expect("GET")
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        json_of(self.get_raw(path, Some(key)).await).await
    }

    /// GET that must answer 200; returns the body.
    pub async fn get_ok(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.get(path, key).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn delete(&self, path: &str, key: &str) -> StatusCode {
        self.client
            .delete(self.at(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("DELETE")
            .status()
    }

    /// POST a command that must be accepted (202 with the documented body); returns its command id.
    pub async fn submit_as(&self, path: &str, key: &str, body: &Value) -> String {
        let r = self.post_raw(path, Some(key), body).await;
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, answer) = json_of(r).await;
        assert_eq!(status, StatusCode::ACCEPTED, "POST {path} {body}: {answer}");
        let id = answer["command_id"]
            .as_str()
            .expect("command_id")
            .to_owned();
        assert_eq!(answer["status"], "accepted", "{answer}");
        let url = format!("/v1/commands/{id}");
        assert_eq!(answer["status_url"], json!(url), "{answer}");
        assert_eq!(location.as_deref(), Some(url.as_str()), "Location header");
        id
    }

    pub async fn submit(&self, path: &str, body: &Value) -> String {
        self.submit_as(path, &self.admin, body).await
    }

    /// Long-polls a command (with the admin key) until it leaves `accepted`; returns its status body.
    pub async fn wait(&self, command_id: &str) -> Value {
        self.wait_as(command_id, &self.admin).await
    }

    pub async fn wait_as(&self, command_id: &str, key: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let path = format!("/v1/commands/{command_id}?wait_ms=5000");
            let body = self.get_ok(&path, key).await;
            assert_eq!(body["command_id"], json!(command_id), "{body}");
            match body["status"].as_str() {
                Some("processed") => {
                    assert!(
                        body["position"].is_u64(),
                        "processed has a position: {body}"
                    );
                    return body;
                }
                Some("rejected") => {
                    assert!(body["rejection"]["code"].is_string(), "{body}");
                    return body;
                }
                Some("accepted") => assert!(
                    Instant::now() < deadline,
                    "command {command_id} still accepted after {PATIENCE:?}"
                ),
                _ => panic!("unexpected command status {body}"),
            }
        }
    }

    /// Submits and waits; returns the final status body.
    pub async fn run(&self, path: &str, body: &Value) -> Value {
        let id = self.submit(path, body).await;
        self.wait(&id).await
    }

    /// Submits, waits and asserts the command was processed; returns its position.
    pub async fn run_ok(&self, path: &str, body: &Value) -> u64 {
        let outcome = self.run(path, body).await;
        assert_eq!(outcome["status"], "processed", "{path} {body}: {outcome}");
        outcome["position"].as_u64().expect("position")
    }

    /// Submits, waits and asserts the command was rejected with this code.
    pub async fn run_rejected(&self, path: &str, body: &Value, code: &str) {
        let outcome = self.run(path, body).await;
        assert_eq!(outcome["status"], "rejected", "{path} {body}: {outcome}");
        assert_eq!(
            outcome["rejection"]["code"],
            json!(code),
            "{path} {body}: {outcome}"
        );
    }

    /// Creates an API key over HTTP with the admin key; returns (key_id, secret).
    pub async fn create_key_with_id(&self, role: &str, scope: Option<&str>) -> (String, String) {
        let mut body = json!({ "role": role });
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        let (status, answer) = self.post("/v1/admin/api-keys", &self.admin, &body).await;
        assert_eq!(status, StatusCode::CREATED, "create key {body}: {answer}");
        assert_eq!(answer["role"], json!(role), "{answer}");
        assert_eq!(answer["scope"], json!(scope), "{answer}");
        let secret = answer["key"].as_str().expect("key").to_owned();
        assert!(secret.starts_with("tally_"), "{secret}");
        (
            answer["key_id"].as_str().expect("key_id").to_owned(),
            secret,
        )
    }

    pub async fn create_key(&self, role: &str, scope: Option<&str>) -> String {
        self.create_key_with_id(role, scope).await.1
    }

    /// All events of the global feed, paged through with `after`/`next_after`.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0u64;
        loop {
            let page = self
                .get_ok(&format!("/v1/events?after={after}&limit=1000"), &self.admin)
                .await;
            let events = page["events"].as_array().expect("events").clone();
            if events.is_empty() {
                return out;
            }
            after = page["next_after"].as_u64().expect("next_after");
            assert_eq!(
                Some(after),
                events.last().and_then(|e| e["position"].as_u64()),
                "next_after is the last position of the page"
            );
            out.extend(events);
        }
    }

    /// The global position of the newest event (0 for an empty log).
    pub async fn head(&self) -> u64 {
        self.all_events()
            .await
            .last()
            .and_then(|e| e["position"].as_u64())
            .unwrap_or(0)
    }

    /// SIGTERM, then waits; the server must exit 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM");
        let deadline = Instant::now() + PATIENCE;
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait for the server") {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not stop after SIGTERM; stderr:\n{}",
                    read_log(&self.data_dir)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            exit.success(),
            "server exit after SIGTERM: {exit:?}; stderr:\n{}",
            read_log(&self.data_dir)
        );
    }

    /// SIGKILL: the server dies at once, mid-flight.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
