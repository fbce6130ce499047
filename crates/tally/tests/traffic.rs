//! Traffic management through real HTTP: per-key rate limits (429 with `Retry-After` and
//! `RateLimit-*`) that do not slow other keys, the per-address limit of requests without a known key,
//! load shedding when too many requests are in hand (503 with `Retry-After`), revocation through the
//! key cache, and per-key usage in `GET /v1/admin/api-keys`, kept over a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{App, expect_problem, spawn_app};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const REPORT: &str = "/v1/reports/daily-sales?date=2026-03-02";

/// Creates a key with this request body; returns (key_id, secret).
async fn new_key(app: &App, body: Value) -> (String, String) {
    let (status, answer) = app.post("/v1/admin/api-keys", &app.admin, &body).await;
    assert_eq!(status, StatusCode::CREATED, "create key {body}: {answer}");
    (
        answer["key_id"].as_str().unwrap().to_owned(),
        answer["key"].as_str().unwrap().to_owned(),
    )
}

fn header_u64(h: &HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} is a number: {h:?}"))
}

/// Asserts a 429 with its problem body and headers; returns its Retry-After.
async fn expect_429(r: reqwest::Response, limit: u64, what: &str) -> u64 {
    let h = r.headers().clone();
    let body = expect_problem(r, 429, what).await;
    assert!(
        body["type"].as_str().unwrap().ends_with("/rate-limited"),
        "{body}"
    );
    let retry_after = header_u64(&h, "retry-after");
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert_eq!(header_u64(&h, "ratelimit-limit"), limit, "{what}");
    assert_eq!(header_u64(&h, "ratelimit-remaining"), 0, "{what}");
    assert!(header_u64(&h, "ratelimit-reset") >= 1, "{what}");
    retry_after
}

/// `n` GETs of `path` at once with `key`; their statuses and headers.
async fn burst(app: &App, path: &str, key: &str, n: usize) -> Vec<(StatusCode, HeaderMap)> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, key) = (app.client.clone(), app.at(path), key.to_owned());
            tokio::spawn(async move {
                let r = client.get(url).bearer_auth(key).send().await.unwrap();
                (r.status(), r.headers().clone())
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn key_list(app: &App) -> Vec<Value> {
    let body = app.get_ok("/v1/admin/api-keys", &app.admin).await;
    body["keys"].as_array().unwrap().clone()
}

fn listed<'a>(keys: &'a [Value], key_id: &str) -> &'a Value {
    keys.iter()
        .find(|k| k["key_id"] == json!(key_id))
        .unwrap_or_else(|| panic!("{key_id} is listed: {keys:?}"))
}

fn write_config(dir: &Path, toml: &str) {
    std::fs::write(dir.join("tally.toml"), toml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_while_another_key_is_not_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let (slow_id, slow) = new_key(&app, json!({"role": "analyst", "rate_per_second": 5})).await;
    let (busy_id, busy) = new_key(&app, json!({"role": "analyst"})).await;
    let (idle_id, _) = new_key(&app, json!({"role": "auditor"})).await;

    // 20 quick requests from each key, all at the same time.
    let (slow_answers, busy_answers) = tokio::join!(
        burst(&app, REPORT, &slow, 20),
        burst(&app, REPORT, &busy, 20)
    );

    let limited: Vec<_> = slow_answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let passed: Vec<_> = slow_answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(limited.len() + passed.len(), 20, "{slow_answers:?}");
    assert!(passed.len() >= 5, "the burst of 5 passes: {slow_answers:?}");
    assert!(
        limited.len() >= 10,
        "most of 20 requests at once are over a rate of 5/s: {slow_answers:?}"
    );
    for (_, h) in &passed {
        assert_eq!(header_u64(h, "ratelimit-limit"), 5);
        assert!(header_u64(h, "ratelimit-remaining") < 5, "{h:?}");
        assert!(h.contains_key("ratelimit-reset"), "{h:?}");
    }
    for (_, h) in &limited {
        assert!(header_u64(h, "retry-after") >= 1, "{h:?}");
        assert_eq!(header_u64(h, "ratelimit-remaining"), 0, "{h:?}");
    }
    for (status, h) in &busy_answers {
        assert_eq!(*status, StatusCode::OK, "the other key is never limited");
        assert_eq!(header_u64(h, "ratelimit-limit"), 50, "an analyst's default");
    }

    // One more is refused with the full problem; after its Retry-After the key works again.
    let retry_after = expect_429(app.get_raw(REPORT, Some(&slow)).await, 5, "slow key").await;
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = app.get(REPORT, &slow).await;
    assert_eq!(status, StatusCode::OK, "after Retry-After: {body}");

    // Usage: every request counts, a 429 as a rejection; a key never used shows none.
    let refused = limited.len() as u64 + 1;
    let check = |keys: &[Value]| {
        let s = listed(keys, &slow_id);
        assert_eq!(s["requests"], json!(22), "{s}");
        assert_eq!(s["rejections"], json!(refused), "{s}");
        assert_eq!(s["rate_per_second"], json!(5), "{s}");
        assert!(s["last_used_at"].is_string(), "{s}");
        let b = listed(keys, &busy_id);
        assert_eq!(
            (&b["requests"], &b["rejections"]),
            (&json!(20), &json!(0)),
            "{b}"
        );
        let i = listed(keys, &idle_id);
        assert_eq!(
            (&i["requests"], &i["rejections"]),
            (&json!(0), &json!(0)),
            "{i}"
        );
        assert!(i["last_used_at"].is_null(), "{i}");
    };
    check(&key_list(&app).await);
    // A 403 is a rejection too.
    expect_problem(
        app.get_raw("/v1/events", Some(&busy)).await,
        403,
        "analyst reads events",
    )
    .await;
    let b = key_list(&app).await;
    assert_eq!(listed(&b, &busy_id)["rejections"], json!(1));
    assert_eq!(listed(&b, &busy_id)["requests"], json!(21));

    // The counts are stored (at the latest when the server stops) and shown after a restart.
    app.stop();
    let app = spawn_app(dir.path());
    let keys = key_list(&app).await;
    let s = listed(&keys, &slow_id);
    assert_eq!(s["requests"], json!(22), "stored over a restart: {s}");
    assert_eq!(s["rejections"], json!(refused), "{s}");
    assert_eq!(listed(&keys, &busy_id)["rejections"], json!(1));
}

/// `tally` on the command line against a data dir.
fn tally(args: &[&str], data_dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env_remove("TALLY_DATABASE_URL")
        .env_remove("TALLY_CONFIG")
        .current_dir(data_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn revoked_keys_stop_working_at_once_here_and_within_the_ttl_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());

    // Revoked over HTTP in this process: the cached key stops working at once.
    let (id, key) = new_key(&app, json!({"role": "analyst"})).await;
    for _ in 0..3 {
        assert_eq!(app.get(REPORT, &key).await.0, StatusCode::OK);
    }
    assert_eq!(
        app.delete(&format!("/v1/admin/api-keys/{id}"), &app.admin)
            .await,
        StatusCode::NO_CONTENT
    );
    expect_problem(app.get_raw(REPORT, Some(&key)).await, 401, "revoked here").await;

    // Revoked by another process (`tally keys revoke`): within the cache's TTL (1 s).
    let (id, key) = new_key(&app, json!({"role": "analyst"})).await;
    assert_eq!(app.get(REPORT, &key).await.0, StatusCode::OK);
    let d = dir.path().to_str().unwrap();
    let (ok, out) = tally(&["keys", "--data-dir", d, "revoke", &id], dir.path());
    assert!(ok, "tally keys revoke: {out}");
    let revoked = Instant::now();
    loop {
        let r = app.get_raw(REPORT, Some(&key)).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            expect_problem(r, 401, "revoked elsewhere").await;
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "a key revoked by another process still works after 5 s (TTL 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = key_list(&app).await;
    assert!(listed(&keys, &id)["revoked_at"].is_string());
    assert!(
        listed(&keys, &id)["requests"].as_u64().unwrap() >= 2,
        "its requests before the revocation count"
    );
}

/// A client bound to another loopback address (Linux routes all of 127/8 to lo).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_known_key_are_limited_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[limits]\nip_rate_per_second = 1\nip_burst = 10\n",
    );
    let app = spawn_app(dir.path());
    // The admin key is known (cached) before the flood.
    assert_eq!(app.get(REPORT, &app.admin).await.0, StatusCode::OK);

    // 30 requests from 127.0.0.1: no key, a malformed header, or keys that do not exist.
    let mut unauthenticated = 0;
    let mut limited = 0;
    for n in 0..30 {
        let mut rb = app.client.get(app.at(REPORT));
        rb = match n % 3 {
            0 => rb,
            1 => rb.header("authorization", "Basic Zm9vOmJhcg=="),
            _ => rb.bearer_auth(format!("tally_{n:064x}")),
        };
        let r = rb.send().await.unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => unauthenticated += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                expect_429(r, 10, "unauthenticated flood").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (10..=13).contains(&unauthenticated),
        "a burst of 10 and 1/s: {unauthenticated} answered 401"
    );
    assert_eq!(unauthenticated + limited, 30);

    // A forwarding header does not get around it: the limit is keyed on the TCP peer.
    let r = app
        .client
        .get(app.at(REPORT))
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .send()
        .await
        .unwrap();
    expect_429(r, 10, "forged forwarding headers").await;
    // Another address has its own allowance.
    let other = client_from("127.0.0.2");
    let r = other.get(app.at(REPORT)).send().await.unwrap();
    expect_problem(r, 401, "another client address").await;
    // A known key from the flooded address is limited only by its own rate.
    assert_eq!(app.get(REPORT, &app.admin).await.0, StatusCode::OK);
    // Probes always get through.
    let r = app.client.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_cap_are_shed_with_503() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[limits]\nmax_in_flight = 2\n");
    let app = spawn_app(dir.path());

    // Two requests that wait (a read model position that is never reached holds one up to 10 s).
    let hold = "/v1/inventory/s1?min_position=1000000000";
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (client, url, key) = (app.client.clone(), app.at(hold), app.admin.clone());
        holders.push(tokio::spawn(async move {
            client.get(url).bearer_auth(key).send().await
        }));
        // One at a time, and nothing else meanwhile: both must get in.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let started = Instant::now();
    let shed = loop {
        let r = app.get_raw(REPORT, Some(&app.admin)).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert_eq!(r.status(), StatusCode::OK, "until both wait, requests pass");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no 503 while two requests are in hand with max_in_flight = 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(header_u64(shed.headers(), "retry-after"), 1);
    let body = expect_problem(shed, 503, "over max_in_flight").await;
    assert!(
        body["detail"].as_str().unwrap().contains("in hand"),
        "{body}"
    );
    // Shed before anything else: a command is not taken either.
    let r = app
        .post_raw(
            "/v1/suppliers",
            Some(&app.admin),
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;
    expect_problem(r, 503, "a command over max_in_flight").await;
    // Probes are exempt.
    let r = app.client.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "readyz is not shed");

    // The waiting requests end (their clients give up): their places are free again.
    for h in holders {
        h.abort();
    }
    let freed = Instant::now();
    loop {
        let r = app.get_raw(REPORT, Some(&app.admin)).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(15),
            "requests are still shed after the waits ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
