//! Delivery corrections over HTTP (API.md, "Time travel"): a corrected delivery note replaces the
//! delivery's lines, stock moves by the difference, and the supplier report counts it on the
//! delivery's own business date. Rejections, the supplier scope, and bad bodies refused with 422.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, error_fields, expect_problem, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Registers acme (items a1, a2) and bolt (item b1), store la; delivers 10 of a1 at 50 to la on
/// 2026-03-10 (d1), and sells 4 of them on 2026-03-11.
async fn setup(app: &App) {
    for (id, name) in [("acme", "Acme"), ("bolt", "Bolt")] {
        app.run_ok("/v1/suppliers", &json!({"supplier_id": id, "name": name}))
            .await;
    }
    app.run_ok(
        "/v1/stores",
        &json!({"store_id": "la", "name": "LA", "timezone": "America/Los_Angeles"}),
    )
    .await;
    for (id, sup) in [("a1", "acme"), ("a2", "acme"), ("b1", "bolt")] {
        app.run_ok(
            "/v1/items",
            &json!({"item_id": id, "name": id, "supplier_id": sup, "unit_price_cents": 100}),
        )
        .await;
    }
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "la",
                "occurred_at": "2026-03-10T11:00:00-07:00",
                "lines": [{"item_id": "a1", "quantity": 10, "unit_cost_cents": 50}]}),
    )
    .await;
    app.run_ok(
        "/v1/sales",
        &json!({"sale_id": "s1", "store_id": "la", "occurred_at": "2026-03-11T11:00:00-07:00",
                "lines": [{"item_id": "a1", "quantity": 4, "unit_price_cents": 100}]}),
    )
    .await;
}

const D1: &str = "/v1/deliveries/d1/corrections";

fn correction(id: &str, lines: &[(&str, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(item, n, cost)| json!({"item_id": item, "quantity": n, "unit_cost_cents": cost}))
        .collect();
    json!({"correction_id": id, "reason": "recounted", "lines": lines})
}

async fn on_hand(app: &App, item: &str, position: u64) -> i64 {
    let path = format!("/v1/inventory/la/items/{item}?min_position={position}");
    app.get_ok(&path, &app.admin).await["on_hand"]
        .as_i64()
        .unwrap()
}

/// acme's report for one date: (deliveries, units_supplied, supply_cost_cents).
async fn supplied(app: &App, date: &str, position: u64) -> (i64, i64, i64) {
    let path =
        format!("/v1/reports/suppliers/acme/daily?from={date}&to={date}&min_position={position}");
    let report = app.get_ok(&path, &app.admin).await;
    let days = report["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{report}");
    assert_eq!(days[0]["date"], json!(date), "{report}");
    let field = |f: &str| days[0][f].as_i64().unwrap();
    (
        field("deliveries"),
        field("units_supplied"),
        field("supply_cost_cents"),
    )
}

#[tokio::test]
async fn a_correction_moves_stock_and_the_delivery_date_by_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;

    // 10 delivered, 4 sold; the note says 7 came: 3 on hand, 7 supplied on the delivery's date.
    let p = app.run_ok(D1, &correction("c1", &[("a1", 7, 50)])).await;
    assert_eq!(on_hand(&app, "a1", p).await, 3);
    assert_eq!(supplied(&app, "2026-03-10", p).await, (1, 7, 350));
    let (_, sales_day) = app
        .get(
            &format!(
                "/v1/reports/suppliers/acme/daily?from=2026-03-11&to=2026-03-11&min_position={p}"
            ),
            &app.admin,
        )
        .await;
    assert_eq!(
        sales_day["days"][0]["units_supplied"],
        json!(0),
        "{sales_day}"
    );

    // Down to 2 would need 5 of the 3 on hand.
    app.run_rejected(
        D1,
        &correction("c2", &[("a1", 2, 50)]),
        "insufficient_stock",
    )
    .await;

    // Relative to the lines as last corrected: a cost fix, then a line added and removed again.
    let p = app.run_ok(D1, &correction("c3", &[("a1", 7, 60)])).await;
    assert_eq!(supplied(&app, "2026-03-10", p).await, (1, 7, 420));
    assert_eq!(on_hand(&app, "a1", p).await, 3);
    let p = app
        .run_ok(D1, &correction("c4", &[("a1", 7, 60), ("a2", 5, 30)]))
        .await;
    assert_eq!(on_hand(&app, "a2", p).await, 5);
    assert_eq!(supplied(&app, "2026-03-10", p).await, (1, 12, 570));
    let p = app
        .run_ok(D1, &correction("c5", &[("a1", 7, 60), ("a2", 0, 30)]))
        .await;
    assert_eq!(on_hand(&app, "a2", p).await, 0);
    assert_eq!(supplied(&app, "2026-03-10", p).await, (1, 7, 420));

    // The event carries the delivery's date and the changes, in the delivery's stream too.
    let stream = app.get_ok("/v1/streams/delivery-d1", &app.admin).await;
    let events = stream["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "GoodsDelivered",
            "DeliveryCorrected",
            "DeliveryCorrected",
            "DeliveryCorrected",
            "DeliveryCorrected"
        ],
        "{stream}"
    );
    let first = &events[1]["data"];
    assert_eq!(
        first,
        &json!({"correction_id": "c1", "delivery_id": "d1", "supplier_id": "acme", "store_id": "la",
                "business_date": "2026-03-10", "reason": "recounted",
                "lines": [{"item_id": "a1", "quantity": 7, "unit_cost_cents": 50}],
                "changes": [{"item_id": "a1", "quantity_change": -3, "cost_change_cents": -150}]}),
        "{stream}"
    );

    // Unknown delivery, reused correction id (even for another delivery), another supplier's item.
    app.run_rejected(
        "/v1/deliveries/nope/corrections",
        &correction("c6", &[("a1", 1, 50)]),
        "unknown_delivery",
    )
    .await;
    app.run_rejected(D1, &correction("c1", &[("a1", 8, 50)]), "duplicate_id")
        .await;
    app.run_rejected(
        "/v1/deliveries/nope/corrections",
        &correction("c1", &[("a1", 8, 50)]),
        "duplicate_id",
    )
    .await;
    app.run_rejected(
        D1,
        &correction("c7", &[("a1", 7, 60), ("b1", 1, 50)]),
        "item_not_from_supplier",
    )
    .await;
    app.run_rejected(D1, &correction("c7", &[("zz", 1, 50)]), "unknown_item")
        .await;
    assert_eq!(on_hand(&app, "a1", app.head().await).await, 3);

    // Counted under their own command type.
    let metrics = app.get_raw("/metrics", None).await.text().await.unwrap();
    let value = |prefix: &str, labels: &[&str]| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let kind = r#"type="correct_delivery""#;
    assert_eq!(value("tally_commands_accepted_total", &[kind]), Some(10.0));
    assert_eq!(value("tally_commands_processed_total", &[kind]), Some(4.0));
    let unknown = r#"reason="unknown_delivery""#;
    assert_eq!(
        value("tally_commands_rejected_total", &[kind, unknown]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_supplier_key_corrects_only_its_own_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;
    let acme = app.create_key("supplier", Some("acme")).await;
    let bolt = app.create_key("supplier", Some("bolt")).await;
    let till = app.create_key("store", Some("la")).await;
    let analyst = app.create_key("analyst", None).await;

    // The path names no supplier: the gate lets bolt's key through, the processor refuses it as it
    // refuses a store key's void of another store's sale, and nothing moves.
    let before = app.head().await;
    let id = app
        .submit_as(D1, &bolt, &correction("c-bolt", &[("a1", 1, 50)]))
        .await;
    let outcome = app.wait_as(&id, &bolt).await;
    assert_eq!(outcome["status"], "rejected", "{outcome}");
    assert_eq!(
        outcome["rejection"]["code"], "unknown_delivery",
        "{outcome}"
    );
    assert_eq!(app.head().await, before, "no event");
    assert_eq!(on_hand(&app, "a1", before).await, 6);

    let id = app
        .submit_as(D1, &acme, &correction("c-acme", &[("a1", 9, 50)]))
        .await;
    let outcome = app.wait_as(&id, &acme).await;
    assert_eq!(outcome["status"], "processed", "{outcome}");
    let p = outcome["position"].as_u64().unwrap();
    assert_eq!(on_hand(&app, "a1", p).await, 5);

    for (who, key) in [("store", &till), ("analyst", &analyst)] {
        let r = app
            .post_raw(D1, Some(key), &correction("c-x", &[("a1", 9, 50)]))
            .await;
        expect_problem(r, 403, &format!("a {who} key corrects a delivery")).await;
    }
}

#[tokio::test]
async fn bad_corrections_are_refused_naming_the_field_and_enqueue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;
    let good = |lines: Value| json!({"correction_id": "c1", "reason": "recounted", "lines": lines});
    let line =
        |q: Value, cost: Value| json!([{"item_id": "a1", "quantity": q, "unit_cost_cents": cost}]);
    let two = json!([{"item_id": "a1", "quantity": 1, "unit_cost_cents": 5},
                     {"item_id": "a1", "quantity": 2, "unit_cost_cents": 5}]);
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "negative quantity",
            D1.into(),
            good(line(json!(-1), json!(50))),
            "lines[0].quantity",
        ),
        (
            "huge quantity",
            D1.into(),
            good(line(json!(1_000_001), json!(50))),
            "lines[0].quantity",
        ),
        (
            "negative cost",
            D1.into(),
            good(line(json!(1), json!(-1))),
            "lines[0].unit_cost_cents",
        ),
        ("no lines", D1.into(), good(json!([])), "lines"),
        ("repeated item", D1.into(), good(two), "lines[1].item_id"),
        (
            "bad item id",
            D1.into(),
            good(json!([{"item_id": "a 1", "quantity": 1, "unit_cost_cents": 5}])),
            "lines[0].item_id",
        ),
        (
            "bad correction id",
            D1.into(),
            json!({"correction_id": "-c", "reason": "x", "lines": line(json!(1), json!(5))}),
            "correction_id",
        ),
        (
            "empty reason",
            D1.into(),
            json!({"correction_id": "c1", "reason": "", "lines": line(json!(1), json!(5))}),
            "reason",
        ),
        (
            "no correction id",
            D1.into(),
            json!({"reason": "x", "lines": line(json!(1), json!(5))}),
            "correction_id",
        ),
        (
            "quantity as text",
            D1.into(),
            good(line(json!("1"), json!(5))),
            "lines[0].quantity",
        ),
        (
            "bad delivery id",
            "/v1/deliveries/-d1/corrections".into(),
            good(line(json!(1), json!(5))),
            "delivery_id",
        ),
        (
            "long delivery id",
            format!("/v1/deliveries/{}/corrections", "d".repeat(65)),
            good(line(json!(1), json!(5))),
            "delivery_id",
        ),
    ];
    let head = app.head().await;
    for (n, (what, path, body, field)) in cases.into_iter().enumerate() {
        let key = format!("bad-{n}");
        let r = app
            .client
            .post(app.at(&path))
            .bearer_auth(&app.admin)
            .header("idempotency-key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(r, 422, what).await;
        assert!(
            error_fields(&problem).iter().any(|f| f == field),
            "{what}: errors should name {field}: {problem}"
        );
        // Had the refused request been enqueued, its key would be taken now (409).
        let r = app
            .client
            .post(app.at("/v1/suppliers"))
            .bearer_auth(&app.admin)
            .header("idempotency-key", &key)
            .json(&json!({"supplier_id": "acme", "name": format!("probe {key}")}))
            .send()
            .await
            .unwrap();
        let (status, answer) = json_of(r).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{what}: the key is free: {answer}"
        );
    }
    assert_eq!(
        app.head().await,
        head,
        "no refused correction made an event"
    );
    // The edges that are allowed: 1,000,000 at cost 0, and 0 (here more than is on hand).
    app.run_ok(D1, &good(line(json!(1_000_000), json!(0))))
        .await;
    let zero =
        json!({"correction_id": "c2", "reason": "none came", "lines": line(json!(0), json!(50))});
    app.run_rejected(D1, &zero, "insufficient_stock").await;
}
