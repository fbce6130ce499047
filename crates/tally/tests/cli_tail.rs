//! `tally events tail` against a real server: started from position 0, it prints the log so far and
//! then each event as it commits, one line each; `--type` keeps only the types asked for; when the
//! connection drops (a TCP relay in front of the server cuts it) it connects again from the last
//! position it printed, missing nothing and printing nothing twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cli::client_command;
use common::{App, spawn_app};
use serde_json::json;

/// A running `tally events tail ARGS`, its stdout lines sent to a channel.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(app: &App, dir: &std::path::Path, args: &[&str]) -> Self {
        let mut all = vec!["events", "tail"];
        all.extend_from_slice(args);
        let mut child = client_command(dir, &app.url, &app.admin, &all, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one contains `wanted` (all of them, that one last); panics after 20 s.
    fn until(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(wanted);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {wanted:?} within 20 s; saw {seen:#?}"),
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tail_prints_each_event_as_it_commits_and_filters_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    app.register("acme", &[("berlin", "Europe/Berlin")], &[("i1", 150)])
        .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "berlin",
                "lines": [{"item_id": "i1", "quantity": 10, "unit_cost_cents": 80}]}),
    )
    .await;

    let all = Tail::start(&app, dir.path(), &["--after", "0"]);
    let sales = Tail::start(
        &app,
        dir.path(),
        &["--after", "0", "--type", "SaleRecorded"],
    );
    // The log so far: the first line is position 1, the supplier.
    let history = all.until("GoodsDelivered");
    assert!(history[0].trim_start().starts_with("1 "), "{history:#?}");
    assert!(history[0].contains("SupplierRegistered"), "{history:#?}");
    assert!(history[0].contains("supplier_id=acme"), "{history:#?}");

    // Posted after the tails started: each must show it as it commits.
    let position = app
        .run_ok(
            "/v1/sales",
            &json!({"sale_id": "s1", "store_id": "berlin",
                    "lines": [{"item_id": "i1", "quantity": 2, "unit_price_cents": 150}]}),
        )
        .await;
    let live = all.until("sale_id=s1");
    let line = live.last().unwrap();
    assert!(
        line.trim_start().starts_with(&format!("{position} ")),
        "{line}"
    );
    assert!(line.contains("SaleRecorded"), "{line}");
    assert!(line.contains("units=2"), "{line}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields[1].parse::<jiff::Timestamp>().is_ok(),
        "recorded_at second: {line}"
    );

    let filtered = sales.until("sale_id=s1");
    assert_eq!(
        filtered.len(),
        1,
        "only the sale passes --type: {filtered:#?}"
    );
}

/// A TCP relay to `upstream` on a port of its own; `cut` closes every connection it relays (new
/// ones are relayed again).
struct Relay {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { url, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_connects_again_from_the_last_position_when_the_connection_drops() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    app.register("acme", &[("berlin", "Europe/Berlin")], &[("i1", 150)])
        .await;
    let relay = Relay::start(&app.url).await;
    let mut command = client_command(dir.path(), &relay.url, &app.admin, &["events", "tail"], &[]);
    let log_path = dir.path().join("tail-stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let tail = Tail { child, lines };
    tail.until("ItemRegistered");
    relay.cut();
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "bolt", "name": "bolt"}),
    )
    .await;
    let after = tail.until("supplier_id=bolt");
    assert_eq!(after.len(), 1, "the event after the cut, once: {after:#?}");
    assert!(after[0].trim_start().starts_with("4 "), "{after:#?}");
    relay.cut();
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "cask", "name": "cask"}),
    )
    .await;
    let after = tail.until("supplier_id=cask");
    assert_eq!(after.len(), 1, "{after:#?}");
    let said = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        said.matches("connecting again after").count(),
        2,
        "it noticed both cuts: {said}"
    );
    assert!(said.contains("connecting again after 3"), "{said}");
}
