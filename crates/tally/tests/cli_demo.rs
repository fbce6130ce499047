//! `tally demo`: it starts a server on a temporary data dir, prints the dashboard's URL and an admin
//! key, serves `/healthz` and that URL, its simulated traffic makes events appear (sales among
//! them, and the chain's stores on both sides of the date line), and Ctrl-C (SIGINT) stops it with
//! exit 0, its data dir removed.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_demo_serves_traffic_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TALLY_") {
            command.env_remove(var);
        }
    }
    let log = std::fs::File::create(dir.path().join("demo-stderr.log")).unwrap();
    let mut child = command
        .args(["demo", "--rate", "20"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let stderr = || std::fs::read_to_string(dir.path().join("demo-stderr.log")).unwrap_or_default();
    let (mut url, mut key, mut data) = (None, None, None);
    let deadline = Instant::now() + PATIENCE;
    while url.is_none() || key.is_none() || data.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo printed no URL and key; stderr:\n{}", stderr()));
        if let Some(u) = line.strip_prefix("dashboard: ") {
            url = Some(u.to_owned());
        } else if let Some(k) = line.strip_prefix("admin key: ") {
            key = Some(k.to_owned());
        } else if let Some(rest) = line.strip_prefix("data in ") {
            data = rest.split_whitespace().next().map(std::path::PathBuf::from);
        }
    }
    let (url, key, data) = (url.unwrap(), key.unwrap(), data.unwrap());
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert!(
        data.is_dir(),
        "the data dir {} exists while it runs",
        data.display()
    );

    let http = reqwest::Client::new();
    let health = http.get(format!("{url}healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // The printed URL is the dashboard.
    let root = http.get(&url).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 200, "{url}");
    let page = root.text().await.unwrap();
    assert!(
        page.contains("/dashboard/app.js"),
        "{url} serves the dashboard"
    );

    // The simulated traffic: sales appear in the log, in stores on both sides of the date line.
    let deadline = Instant::now() + PATIENCE;
    let mut after = 0u64;
    let mut types = std::collections::BTreeSet::new();
    let mut zones = std::collections::BTreeSet::new();
    while !types.contains("SaleRecorded") {
        assert!(
            Instant::now() < deadline,
            "no sale in the log: {types:?}; stderr:\n{}",
            stderr()
        );
        let page: Value = http
            .get(format!("{url}v1/events?after={after}&limit=1000"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            types.insert(e["type"].as_str().unwrap().to_owned());
            if let Some(tz) = e["data"]["timezone"].as_str() {
                zones.insert(tz.to_owned());
            }
        }
        after = page["next_after"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        zones.contains("Pacific/Kiritimati") && zones.contains("Pacific/Pago_Pago"),
        "{zones:?}"
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT");
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not stop on SIGINT; stderr:\n{}", stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit {exit:?}; stderr:\n{}", stderr());
    assert!(!data.exists(), "the data dir {} is removed", data.display());
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.starts_with("demo stopped")),
        "{rest:?}"
    );
}
