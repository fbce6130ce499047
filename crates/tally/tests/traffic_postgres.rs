//! Traffic management of gateways on PostgreSQL: command POSTs are shed with 503 while the queue is
//! over its high-water mark (a gateway with no processor, so the queue only grows), and per-key
//! usage counted by one gateway is stored and shown by another. Needs `--features postgres` and a
//! server (`TALLY_TEST_DATABASE_URL`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Schema, expect_problem, spawn_role, spawn_role_env};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_posts_are_shed_while_the_queue_is_over_its_high_water_mark() {
    let db = Schema::new("traffic_hw");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nqueue_high_water = 2\n").unwrap();
    // No processor runs: every accepted command stays in the queue.
    let gateway = spawn_role_env(
        dir.path(),
        "gateway",
        "gateway",
        &db.url,
        &db.name,
        &[("TALLY_CONFIG", config.to_str().unwrap())],
    );

    let mut accepted = 0;
    let started = Instant::now();
    let shed = loop {
        let body = json!({"supplier_id": format!("s-{accepted}"), "name": "Supplier"});
        let r = gateway
            .post_raw("/v1/suppliers", Some(&gateway.admin), &body)
            .await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        accepted += 1;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{accepted} commands queued and none shed"
        );
        // The depth is read every 100 ms.
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(
        accepted >= 3,
        "up to the mark commands are taken: {accepted}"
    );
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = expect_problem(shed, 503, "a command over the high-water mark").await;
    assert!(
        body["detail"].as_str().unwrap().contains("high-water"),
        "{body}"
    );
    // Every further command is shed while nothing drains the queue.
    for n in 0..3 {
        let body = json!({"supplier_id": format!("late-{n}"), "name": "Late"});
        let r = gateway
            .post_raw("/v1/suppliers", Some(&gateway.admin), &body)
            .await;
        expect_problem(r, 503, "still over the mark").await;
    }
    // Reads and key administration are not commands: they go on.
    let (status, _) = gateway.get("/v1/admin/api-keys", &gateway.admin).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gateway
        .post(
            "/v1/admin/api-keys",
            &gateway.admin,
            &json!({"role": "analyst"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counted_by_one_gateway_is_shown_by_another() {
    let db = Schema::new("traffic_usage");
    let dir = tempfile::tempdir().unwrap();
    let one = spawn_role(dir.path(), "gateway-1", "gateway", &db.url, &db.name);
    let two = spawn_role(dir.path(), "gateway-2", "gateway", &db.url, &db.name);

    let (status, created) = one
        .post(
            "/v1/admin/api-keys",
            &one.admin,
            &json!({"role": "analyst", "rate_per_second": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    // Five at once on gateway one: a burst of 2 passes, the rest are 429 (rejections).
    let mut refused = 0;
    for _ in 0..5 {
        let r = one
            .get_raw("/v1/reports/daily-sales?date=2026-03-02", Some(&key))
            .await;
        match r.status() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 2, "{refused} of 5 refused at 2/s");

    // Gateway two shows them once gateway one has stored them (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = two.get_ok("/v1/admin/api-keys", &two.admin).await;
        let k = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == json!(key_id))
            .cloned()
            .unwrap();
        if k["requests"] == json!(5) {
            assert_eq!(k["rejections"], json!(refused), "{k}");
            assert!(k["last_used_at"].is_string(), "{k}");
            break;
        }
        assert!(
            k["requests"].as_u64().unwrap() < 5,
            "never more than were made: {k}"
        );
        assert!(
            Instant::now() < deadline,
            "gateway two does not show gateway one's usage: {k}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
