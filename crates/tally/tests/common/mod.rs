//! The one end-to-end helper: `spawn_app` starts the real `tally` binary on port 0 in a data dir and
//! hands back an [`App`] that speaks HTTP to it ([`cli`] runs its other commands). Every test file
//! includes this module; each uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cli;

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
    /// The file holding the server's stderr.
    pub log: PathBuf,
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
    let dir = data_dir.display().to_string();
    spawn_server(
        data_dir,
        &stderr_log(data_dir),
        &["--data-dir", &dir],
        &[],
        Some(&format!("(data in {dir})")),
    )
}

/// [`spawn_app`] with more arguments to `tally serve` and more environment (TLS files, say).
pub fn spawn_app_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> App {
    let dir = data_dir.display().to_string();
    let mut all = vec!["--data-dir", dir.as_str()];
    all.extend_from_slice(args);
    spawn_server(
        data_dir,
        &stderr_log(data_dir),
        &all,
        envs,
        Some(&format!("(data in {dir})")),
    )
}

/// [`spawn_app`] with more environment (a log format, say).
pub fn spawn_app_env(data_dir: &Path, envs: &[(&str, &str)]) -> App {
    let dir = data_dir.display().to_string();
    spawn_server(
        data_dir,
        &stderr_log(data_dir),
        &["--data-dir", &dir],
        envs,
        Some(&format!("(data in {dir})")),
    )
}

/// The PostgreSQL server the `postgres` suites use.
pub fn test_database_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Starts `tally serve --role ROLE` on PostgreSQL (`url`, `schema`), its stderr in `dir/NAME.log`.
pub fn spawn_role(dir: &Path, name: &str, role: &str, url: &str, schema: &str) -> App {
    spawn_role_env(dir, name, role, url, schema, &[])
}

/// [`spawn_role`] with more environment (a broker queue, say).
pub fn spawn_role_env(
    dir: &Path,
    name: &str,
    role: &str,
    url: &str,
    schema: &str,
    extra: &[(&str, &str)],
) -> App {
    let mut envs = vec![
        ("TALLY_DATABASE_URL", url),
        ("TALLY_DATABASE_SCHEMA", schema),
        ("TALLY_DATABASE_POOL_SIZE", "4"),
        // A processor killed mid-batch gives its partitions back within seconds.
        ("TALLY_QUEUE_LEASE_SECONDS", "3"),
    ];
    envs.extend_from_slice(extra);
    spawn_server(
        dir,
        &dir.join(format!("{name}.log")),
        &["--role", role],
        &envs,
        None,
    )
}

fn spawn_server(
    data_dir: &Path,
    log_path: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    expect_in_line: Option<&str>,
) -> App {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open the stderr log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .arg("serve")
        .args(args)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .current_dir(data_dir);
    for var in [
        "TALLY_DATA_DIR",
        "TALLY_LISTEN",
        "TALLY_DATABASE_URL",
        "TALLY_DATABASE_SCHEMA",
        "TALLY_QUEUE_KIND",
        "TALLY_QUEUE_URL",
        "TALLY_QUEUE_NAMESPACE",
        "TALLY_ROLE",
        "TALLY_CONFIG",
        "TALLY_TLS_CERT",
        "TALLY_TLS_KEY",
    ] {
        command.env_remove(var);
    }
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command
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
                    if let Some(expected) = expect_in_line {
                        assert!(
                            rest.contains(expected),
                            "listening line says {expected}: {line}"
                        );
                    }
                    break url;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tally serve did not print its listening line; stderr:\n{}",
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
        }
    };
    App {
        url,
        admin: ADMIN_KEY.to_owned(),
        data_dir: data_dir.to_owned(),
        log: log_path.to_owned(),
        client: reqwest::Client::new(),
        child: Some(child),
    }
}

impl App {
    /// What the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
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

    /// A query's answer as CSV (`Accept: text/csv`) to the admin key; asserts 200 and the type.
    pub async fn csv_of(&self, path: &str) -> String {
        let r = self
            .client
            .get(self.at(path))
            .bearer_auth(&self.admin)
            .header("accept", "text/csv")
            .send()
            .await
            .expect("the request is answered");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/csv"), "content-type {ct}");
        r.text().await.expect("read the body")
    }

    /// Registers one supplier, its stores (id, time zone) and its items (id, unit price), each
    /// named after its id; returns the position of the last registration.
    pub async fn register(
        &self,
        supplier: &str,
        stores: &[(&str, &str)],
        items: &[(&str, i64)],
    ) -> u64 {
        let mut position = self
            .run_ok(
                "/v1/suppliers",
                &json!({"supplier_id": supplier, "name": supplier}),
            )
            .await;
        for (store, tz) in stores {
            position = self
                .run_ok(
                    "/v1/stores",
                    &json!({"store_id": store, "name": store, "timezone": tz}),
                )
                .await;
        }
        for (item, price) in items {
            position = self
                .run_ok(
                    "/v1/items",
                    &json!({"item_id": item, "name": item, "supplier_id": supplier,
                            "unit_price_cents": price}),
                )
                .await;
        }
        position
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
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            exit.success(),
            "server exit after SIGTERM: {exit:?}; stderr:\n{}",
            self.log_text()
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

/// A scratch PostgreSQL schema for one test, dropped at the end (a test needing PostgreSQL fails
/// when it cannot reach it: these suites never skip).
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub fn new(prefix: &str) -> Self {
        Self {
            url: test_database_url(),
            name: format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// `tally migrate`, twice: the second run must find nothing to do.
    pub fn migrate_with_cli(&self, dir: &Path) {
        for expected in ["migrated from version 0 to", "is up to date"] {
            let out = Command::new(env!("CARGO_BIN_EXE_tally"))
                .arg("migrate")
                .env("TALLY_DATABASE_URL", &self.url)
                .env("TALLY_DATABASE_SCHEMA", &self.name)
                .current_dir(dir)
                .output()
                .expect("run tally migrate");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(expected),
                "tally migrate: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The flags that point a `tally` command at this schema.
    pub fn store_args(&self) -> [&str; 4] {
        [
            "--database-url",
            self.url.as_str(),
            "--database-schema",
            self.name.as_str(),
        ]
    }

    /// Runs SQL on the test database (outside the schema's search path).
    pub async fn sql(&self, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed: {e}", self.url));
        tokio::spawn(conn);
        client.simple_query(sql).await.expect("SQL")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    // The data services' views schema and role go with it (roles are the
                    // cluster's: left behind, every test run would add one).
                    let views = tally_store_postgres::views_schema(&name);
                    let role = tally_store_postgres::query_role(&name);
                    let _ = client
                        .batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {views} CASCADE; DROP SCHEMA IF EXISTS {name} CASCADE; DROP ROLE IF EXISTS {role}"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}
