//! A clean stop (SIGTERM, exit 0) and a restart on the same data dir: every answer as before, commands
//! accepted just before the stop are not lost, idempotency keys survive, positions continue.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, expect_problem, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn sale(id: &str, store: &str, at: &str, lines: &[(&str, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(i, q, p)| json!({"item_id": i, "quantity": q, "unit_price_cents": p}))
        .collect();
    json!({"sale_id": id, "store_id": store, "occurred_at": at, "lines": lines})
}

async fn scenario(app: &App) -> u64 {
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "acme", "name": "Acme"}),
    )
    .await;
    for (id, tz) in [("ber", "Europe/Berlin"), ("tyo", "Asia/Tokyo")] {
        app.run_ok(
            "/v1/stores",
            &json!({"store_id": id, "name": id, "timezone": tz}),
        )
        .await;
    }
    for (id, price) in [("a1", 250), ("a2", 990)] {
        app.run_ok(
            "/v1/items",
            &json!({"item_id": id, "name": id, "supplier_id": "acme", "unit_price_cents": price}),
        )
        .await;
    }
    for (n, store) in ["ber", "tyo"].iter().enumerate() {
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("d{n}"), "supplier_id": "acme", "store_id": store,
                    "occurred_at": "2026-03-09T23:30:00Z",
                    "lines": [{"item_id": "a1", "quantity": 40, "unit_cost_cents": 120},
                              {"item_id": "a2", "quantity": 10, "unit_cost_cents": 500}]}),
        )
        .await;
    }
    let at = [
        "2026-03-10T22:59:00Z",
        "2026-03-10T23:01:00Z",
        "2026-03-11T15:30:00Z",
    ];
    for (n, at) in at.iter().enumerate() {
        for store in ["ber", "tyo"] {
            let id = format!("s-{store}-{n}");
            app.run_ok(
                "/v1/sales",
                &sale(&id, store, at, &[("a1", 2, 250), ("a2", 1, 990)]),
            )
            .await;
        }
    }
    app.run_ok("/v1/sales/s-ber-1/void", &json!({"reason": "test"}))
        .await;
    app.run_ok(
        "/v1/returns",
        &json!({"return_id": "r1", "sale_id": "s-tyo-0", "store_id": "tyo",
                "occurred_at": "2026-03-12T01:00:00+09:00", "lines": [{"item_id": "a1", "quantity": 1}]}),
    )
    .await;
    app.run_ok(
        "/v1/stock-adjustments",
        &json!({"adjustment_id": "adj1", "store_id": "ber", "item_id": "a2", "delta": -3, "reason": "theft"}),
    )
    .await;
    app.run_rejected(
        "/v1/sales",
        &sale("s-big", "ber", at[0], &[("a2", 100, 990)]),
        "insufficient_stock",
    )
    .await;
    app.head().await
}

/// Everything a client can read, as JSON values, at least at `position`.
async fn snapshot(app: &App, position: u64) -> Vec<(String, Value)> {
    let mut paths = Vec::new();
    for store in ["ber", "tyo"] {
        paths.push(format!("/v1/inventory/{store}"));
        paths.push(format!("/v1/inventory/{store}/items/a1"));
        paths.push(format!("/v1/inventory/{store}/items/a2"));
        paths.push(format!("/v1/reports/stores/{store}/daily-sales"));
    }
    for date in ["2026-03-10", "2026-03-11", "2026-03-12"] {
        paths.push(format!("/v1/reports/daily-sales?date={date}"));
    }
    paths.push("/v1/reports/suppliers/acme/daily".into());
    let mut out = Vec::new();
    for path in paths {
        let sep = if path.contains('?') { '&' } else { '?' };
        let body = app
            .get_ok(&format!("{path}{sep}min_position={position}"), &app.admin)
            .await;
        assert!(
            body["position"].as_u64().is_some_and(|p| p >= position),
            "{path}: {body}"
        );
        out.push((path, body));
    }
    out.push(("events".into(), json!(app.all_events().await)));
    out.push((
        "stream".into(),
        app.get_ok("/v1/streams/store-tyo", &app.admin).await,
    ));
    out
}

async fn post_idempotent(app: &App, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.at("/v1/sales"))
        .bearer_auth(&app.admin)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let head = scenario(&app).await;
    let idem_body = sale("s-idem", "tyo", "2026-03-11T02:00:00Z", &[("a2", 1, 990)]);
    let (status, first) = json_of(post_idempotent(&app, "restart-key-1", &idem_body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let idem_id = first["command_id"].as_str().unwrap().to_owned();
    let idem_position = app.wait(&idem_id).await["position"].as_u64().unwrap();
    assert!(idem_position > head);
    let before = snapshot(&app, idem_position).await;

    app.stop();
    let mut app = spawn_app(dir.path());
    let after = snapshot(&app, idem_position).await;
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{path} after a restart");
    }

    // Idempotency keys survive the restart.
    let (status, again) = json_of(post_idempotent(&app, "restart-key-1", &idem_body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        again["command_id"],
        json!(idem_id),
        "the first answer, after a restart"
    );
    let other = sale("s-idem-2", "tyo", "2026-03-11T02:00:00Z", &[("a2", 1, 990)]);
    expect_problem(
        post_idempotent(&app, "restart-key-1", &other).await,
        409,
        "reused key",
    )
    .await;
    let status = app.wait(&idem_id).await;
    assert_eq!(status["position"], json!(idem_position), "{status}");

    // New commands keep working; positions continue.
    let on_hand = app.get_ok("/v1/inventory/ber/items/a1", &app.admin).await["on_hand"]
        .as_i64()
        .unwrap();
    let position = app
        .run_ok(
            "/v1/sales",
            &sale("s-new", "ber", "2026-03-12T10:00:00Z", &[("a1", 3, 250)]),
        )
        .await;
    assert!(
        position > idem_position,
        "positions continue: {position} after {idem_position}"
    );
    let item = app
        .get_ok(
            &format!("/v1/inventory/ber/items/a1?min_position={position}"),
            &app.admin,
        )
        .await;
    assert_eq!(item["on_hand"], json!(on_hand - 3), "{item}");
    app.run_rejected(
        "/v1/sales",
        &sale("s-ber-0", "ber", "2026-03-12T10:00:00Z", &[("a1", 1, 250)]),
        "duplicate_id",
    )
    .await;

    // A position the read models will not reach: 503 with Retry-After once the wait is over.
    let r = app
        .get_raw(
            &format!("/v1/inventory/ber?min_position={}", position + 1000),
            Some(&app.admin),
        )
        .await;
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    expect_problem(r, 503, "min_position beyond the log").await;

    // Commands accepted just before a SIGTERM are not lost: each is processed once after the restart.
    let tyo_before = app
        .get_ok(
            &format!("/v1/inventory/tyo/items/a1?min_position={position}"),
            &app.admin,
        )
        .await["on_hand"]
        .as_i64()
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let body = sale(
            &format!("s-late-{n}"),
            "tyo",
            "2026-03-12T10:00:00Z",
            &[("a1", 1, 250)],
        );
        ids.push(app.submit("/v1/sales", &body).await);
    }
    app.stop();
    let mut app = spawn_app(dir.path());
    let mut last = 0;
    for id in &ids {
        let outcome = app.wait(id).await;
        assert_eq!(outcome["status"], "processed", "{outcome}");
        last = last.max(outcome["position"].as_u64().unwrap());
    }
    assert!(last > position);
    let tyo = app
        .get_ok(
            &format!("/v1/inventory/tyo/items/a1?min_position={last}"),
            &app.admin,
        )
        .await;
    assert_eq!(tyo["on_hand"], json!(tyo_before - 20), "{tyo}");
    let events = app.all_events().await;
    for id in &ids {
        let n = events
            .iter()
            .filter(|e| e["metadata"]["command_id"] == json!(id))
            .count();
        assert_eq!(n, 1, "command {id} has one event");
    }
    app.stop();
}
