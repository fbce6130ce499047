//! Several `tally serve` processes on one PostgreSQL database, as a site runs them: projector
//! fail-over, and what the gateway does while the database is out of reach. Needs `--features
//! postgres` and a server (`TALLY_TEST_DATABASE_URL`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, App, Schema, spawn_role, spawn_role_env};
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

async fn setup_store(gateway: &App, store: &str) {
    let tz = "Europe/Berlin";
    gateway
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;
    gateway
        .run_ok(
            "/v1/stores",
            &json!({"store_id": store, "name": "Store", "timezone": tz}),
        )
        .await;
    gateway
        .run_ok(
            "/v1/items",
            &json!({"item_id": "apple", "supplier_id": "acme", "name": "Apple", "unit_price_cents": 50}),
        )
        .await;
}

async fn deliver(gateway: &App, store: &str, id: &str, quantity: i64) -> u64 {
    gateway
        .run_ok(
            "/v1/deliveries",
            &json!({
                "delivery_id": id, "supplier_id": "acme", "store_id": store,
                "occurred_at": "2026-03-02T09:00:00Z",
                "lines": [{"item_id": "apple", "quantity": quantity, "unit_cost_cents": 20}]
            }),
        )
        .await
}

/// Waits until the inventory read model shows `position` and returns the on-hand count of apples.
async fn on_hand(app: &App, store: &str, position: u64, patience: Duration) -> i64 {
    let path = format!("/v1/inventory/{store}/items/apple?min_position={position}&wait_ms=2000");
    let deadline = Instant::now() + patience;
    loop {
        let (status, body) = app.get(&path, ADMIN_KEY).await;
        if status == StatusCode::OK {
            return body["on_hand"].as_i64().unwrap_or_else(|| panic!("{body}"));
        }
        assert!(
            Instant::now() < deadline,
            "read model never reached {position}: {status} {body}"
        );
    }
}

/// Two projector processes: one applies, one stands by. Killing the active one (SIGKILL, no goodbye)
/// hands the read models to the other within seconds, from the checkpoint, with nothing applied twice.
#[tokio::test]
async fn a_standby_projector_takes_over_when_the_active_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("failover");
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    let mut gateway = spawn_role(dir.path(), "gateway", "gateway", url, schema);
    let mut processor = spawn_role(dir.path(), "processor", "processor", url, schema);
    let mut first = spawn_role(dir.path(), "projector-1", "projector", url, schema);
    // The first one is given a moment to take the lease, so the roles are known.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first.log_text().contains("projector lease taken") {
        assert!(
            Instant::now() < deadline,
            "projector-1 never took the lease:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = spawn_role(dir.path(), "projector-2", "projector", url, schema);

    setup_store(&gateway, "s-1").await;
    let p = deliver(&gateway, "s-1", "d-1", 10).await;
    assert_eq!(
        on_hand(&gateway, "s-1", p, Duration::from_secs(20)).await,
        10
    );
    assert!(
        !second.log_text().contains("projector lease taken"),
        "only one projector is active:\n{}",
        second.log_text()
    );

    first.kill9();
    let killed_at = Instant::now();
    let p = deliver(&gateway, "s-1", "d-2", 5).await;
    assert_eq!(
        on_hand(&gateway, "s-1", p, Duration::from_secs(30)).await,
        15,
        "the standby carried on from the checkpoint, nothing lost or applied twice"
    );
    let took = killed_at.elapsed();
    assert!(
        second.log_text().contains("projector lease taken"),
        "projector-2 took over:\n{}",
        second.log_text()
    );
    eprintln!("fail-over: the read model caught up {took:?} after the kill");
    let p = deliver(&gateway, "s-1", "d-3", 1).await;
    assert_eq!(
        on_hand(&gateway, "s-1", p, Duration::from_secs(20)).await,
        16
    );

    second.stop();
    processor.stop();
    gateway.stop();
}

/// A TCP relay to PostgreSQL that can be cut and restored, to take the database away from one
/// process without stopping the server every test shares.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (target, up2, cut2) = (target.to_owned(), up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (target, cut) = (target.clone(), cut2.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// While the gateway cannot reach the database it answers 503 with Retry-After (never 202: nothing
/// was made durable), and /readyz says so; once the database is back, it accepts again by itself.
// Multi-threaded: the relay must keep running while the test blocks waiting for a server to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_503_while_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("outage");
    db.migrate_with_cli(dir.path());
    let relay = Relay::start("127.0.0.1:5432").await;
    let url = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port), 1);
    assert_ne!(
        url, db.url,
        "the test database URL must name 127.0.0.1:5432"
    );
    let mut gateway = spawn_role(dir.path(), "gateway", "gateway", &url, &db.name);
    let mut processor = spawn_role(dir.path(), "processor", "processor", &db.url, &db.name);
    let supplier = json!({"supplier_id": "acme", "name": "Acme"});
    gateway.run_ok("/v1/suppliers", &supplier).await;
    assert_eq!(
        gateway.get_raw("/readyz", None).await.status(),
        StatusCode::OK
    );

    relay.down();
    let body = json!({"supplier_id": "other", "name": "Other"});
    let r = gateway
        .post_raw("/v1/suppliers", Some(ADMIN_KEY), &body)
        .await;
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let problem: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(problem["status"], json!(503), "{problem}");
    let ready = gateway.get_raw("/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gateway
            .post_raw("/v1/suppliers", Some(ADMIN_KEY), &body)
            .await;
        if r.status() == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the gateway never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gateway.get_raw("/readyz", None).await.status(),
        StatusCode::OK
    );
    gateway.stop();
    processor.stop();
}

fn tally_cli(db: &Schema, dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("TALLY_DATABASE_URL", &db.url)
        .env("TALLY_DATABASE_SCHEMA", &db.name)
        .env_remove("TALLY_QUEUE_KIND")
        .current_dir(dir)
        .output()
        .expect("run tally");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A message the processor cannot decode is retried a bounded number of times, then dead-lettered
/// with its reason; `tally dlq list` shows it and `tally dlq replay` puts it back on the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_command_is_dead_lettered_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("dlq");
    db.migrate_with_cli(dir.path());
    let mut processor = spawn_role(dir.path(), "processor", "processor", &db.url, &db.name);
    let poison = uuid::Uuid::now_v7();
    db.sql(&format!(
        "INSERT INTO {s}.queue_partitions (partition_key) VALUES ('store:x') ON CONFLICT DO NOTHING;
         INSERT INTO {s}.queue (message_id, partition_key, payload) VALUES ('{poison}', 'store:x', '\\x00ff')",
        s = db.name
    ))
    .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let (ok, out, err) = tally_cli(&db, dir.path(), &["dlq", "list", "--json"]);
        assert!(ok, "tally dlq list: {err}");
        if let Some(line) = out.lines().find(|l| l.contains(&poison.to_string())) {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "never dead-lettered:\n{}",
            processor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(listed["partition_key"], json!("store:x"));
    assert!(
        listed["reason"].as_str().unwrap().contains("undecodable"),
        "the reason is kept: {listed}"
    );
    processor.stop();

    let (ok, out, err) = tally_cli(&db, dir.path(), &["dlq", "replay", &poison.to_string()]);
    assert!(ok && out.contains("replayed"), "{out} {err}");
    let (_, out, _) = tally_cli(&db, dir.path(), &["dlq", "list"]);
    assert!(out.contains("no dead letters"), "{out}");
    let rows = db
        .sql(&format!(
            "SELECT count(*) FROM {}.queue WHERE message_id = '{poison}'",
            db.name
        ))
        .await;
    let back = rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("1")));
    assert!(back, "replayed onto the queue");
    let (ok, _, err) = tally_cli(
        &db,
        dir.path(),
        &["dlq", "replay", &uuid::Uuid::now_v7().to_string()],
    );
    assert!(!ok && err.contains("no dead letter"), "{err}");
}

/// Commands processed by this process, from its `/metrics`.
async fn processed_by(app: &App) -> f64 {
    let text = app.get_raw("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("tally_commands_processed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Submits every command, then waits for each: the processors get them all at once.
async fn run_all(gateway: &App, commands: &[(&str, Value)]) {
    let mut ids = Vec::with_capacity(commands.len());
    for (path, body) in commands {
        ids.push(gateway.submit(path, body).await);
    }
    for id in ids {
        let outcome = gateway.wait(&id).await;
        assert_eq!(outcome["status"], "processed", "{outcome}");
    }
}

fn deliveries(stores: &[&str], round: &str, per_store: usize) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for i in 0..per_store {
        for store in stores {
            out.push((
                "/v1/deliveries",
                json!({
                    "delivery_id": format!("d-{store}-{round}-{i}"), "supplier_id": "acme",
                    "store_id": store, "occurred_at": "2026-03-02T09:00:00Z",
                    "lines": [{"item_id": "apple", "quantity": 1, "unit_cost_cents": 20}]
                }),
            ));
        }
    }
    out
}

/// Two processors whose clocks are two minutes apart append to one log: `recorded_at`, which the
/// event store assigns, still never decreases along the global order, so every instant selects a
/// prefix of the log (what `as_of` answers from). First the processor ahead decides alone, then
/// the one behind alone (each of its events would otherwise be recorded two minutes before the log's
/// last one), then both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_at_never_decreases_across_processors_whose_clocks_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("skew");
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    let processor = |name: &str, skew_ms: &str| {
        spawn_role_env(
            dir.path(),
            name,
            "processor",
            url,
            schema,
            &[("TALLY_TEST_CLOCK_SKEW_MS", skew_ms)],
        )
    };
    let mut gateway = spawn_role(dir.path(), "gateway", "gateway", url, schema);
    let started = Timestamp::now();
    let stores = ["s-1", "s-2", "s-3", "s-4"];

    let mut ahead = processor("processor-ahead", "60000");
    gateway
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;
    gateway
        .run_ok(
            "/v1/items",
            &json!({"item_id": "apple", "supplier_id": "acme", "name": "Apple", "unit_price_cents": 50}),
        )
        .await;
    let register: Vec<(&str, Value)> = stores
        .iter()
        .map(|s| {
            (
                "/v1/stores",
                json!({"store_id": s, "name": "Store", "timezone": "Europe/Berlin"}),
            )
        })
        .collect();
    run_all(&gateway, &register).await;
    run_all(&gateway, &deliveries(&stores, "ahead", 2)).await;

    let mut behind = processor("processor-behind", "-60000");
    ahead.stop();
    run_all(&gateway, &deliveries(&stores, "behind", 2)).await;
    assert!(
        processed_by(&behind).await >= 8.0,
        "the processor behind decided the second round"
    );

    let mut ahead = processor("processor-ahead-again", "60000");
    run_all(&gateway, &deliveries(&stores, "both", 10)).await;

    eprintln!(
        "last round: {} commands decided by the processor behind, {} by the one ahead",
        processed_by(&behind).await - 8.0,
        processed_by(&ahead).await
    );

    let events = gateway.all_events().await;
    assert_eq!(events.len(), 2 + stores.len() * (1 + 2 + 2 + 10));
    let log: Vec<(u64, Timestamp)> = events
        .iter()
        .map(|e| {
            let at = e["recorded_at"].as_str().unwrap_or_else(|| panic!("{e}"));
            (
                e["position"].as_u64().unwrap(),
                at.parse()
                    .unwrap_or_else(|err| panic!("recorded_at {at}: {err}")),
            )
        })
        .collect();
    assert!(
        log[0].1 >= started + SignedDuration::from_secs(30),
        "the first events were recorded by the clock ahead: {:?}",
        log[0]
    );
    for pair in log.windows(2) {
        assert!(
            pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1,
            "recorded_at decreases along the log: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    // Every instant selects a prefix: each event's own, one just before it and one just after it,
    // before the first and after the last.
    let mut instants = vec![
        log[0].1 - SignedDuration::from_secs(1),
        log[log.len() - 1].1 + SignedDuration::from_secs(1),
    ];
    for (_, at) in &log {
        let tick = SignedDuration::from_micros(1);
        instants.extend([*at - tick, *at, *at + tick]);
    }
    for t in instants {
        let selected: Vec<u64> = log
            .iter()
            .filter(|(_, at)| *at <= t)
            .map(|(p, _)| *p)
            .collect();
        let prefix: Vec<u64> = log.iter().take(selected.len()).map(|(p, _)| *p).collect();
        assert_eq!(selected, prefix, "the events recorded by {t} are a prefix");
    }

    ahead.stop();
    behind.stop();
    gateway.stop();
}
