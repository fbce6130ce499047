//! Time travel over HTTP (API.md, "Additions", "Time travel"): a day's report before and after a
//! late sale and a delivery correction, asked as of before and after; business-time inventory; the
//! history of a day naming each event; the new item reports; CSV equal to JSON; and every bad
//! parameter refused with a 422 naming it, changing nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, error_fields, expect_problem, spawn_app};
use serde_json::{Value, json};

/// acme supplies a1 and a2 to store la (Los Angeles); 10 of a1 and 4 of a2 delivered on 2026-03-10.
async fn setup(app: &App) {
    let stores = [("la", "America/Los_Angeles"), ("ny", "America/New_York")];
    app.register("acme", &stores, &[("a1", 100), ("a2", 250)])
        .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "la",
                "occurred_at": "2026-03-10T09:00:00-07:00",
                "lines": [{"item_id": "a1", "quantity": 10, "unit_cost_cents": 50},
                          {"item_id": "a2", "quantity": 4, "unit_cost_cents": 120}]}),
    )
    .await;
}

fn sale(id: &str, when: &str, lines: &[(&str, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(i, q, p)| json!({"item_id": i, "quantity": q, "unit_price_cents": p}))
        .collect();
    json!({"sale_id": id, "store_id": "la", "occurred_at": when, "lines": lines})
}

/// The recorded_at of the event at `position`, as the log serves it.
async fn recorded_at(app: &App, position: u64) -> String {
    let page = app
        .get_ok(
            &format!("/v1/events?after={}&limit=1", position - 1),
            &app.admin,
        )
        .await;
    page["events"][0]["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn enc(t: &str) -> String {
    t.replace('+', "%2B")
}

async fn day(app: &App, query: &str) -> Value {
    let path = format!("/v1/reports/stores/la/daily-sales?from=2026-03-11&to=2026-03-11&{query}");
    let answer = app.get_ok(&path, &app.admin).await;
    answer["days"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_as_known_then_and_as_known_now() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;
    let first = app
        .run_ok(
            "/v1/sales",
            &sale("s1", "2026-03-11T10:00:00-07:00", &[("a1", 2, 100)]),
        )
        .await;
    let then = recorded_at(&app, first).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // A late sale of the same business day, then the delivery note corrected (10 → 8 of a1).
    let late_id = app
        .submit(
            "/v1/sales",
            &sale(
                "s2",
                "2026-03-11T18:00:00-07:00",
                &[("a1", 3, 100), ("a2", 1, 250)],
            ),
        )
        .await;
    let late = app.wait(&late_id).await["position"].as_u64().unwrap();
    let corrected = app
        .run_ok(
            "/v1/deliveries/d1/corrections",
            &json!({"correction_id": "c1", "reason": "recount",
                    "lines": [{"item_id": "a1", "quantity": 8, "unit_cost_cents": 50},
                              {"item_id": "a2", "quantity": 4, "unit_cost_cents": 120}]}),
        )
        .await;
    let now = format!("min_position={corrected}");

    // The store's day: as known now, as known then (by instant and by position).
    let known_now = day(&app, &now).await;
    assert_eq!(known_now["transactions"], 2);
    assert_eq!(known_now["units_sold"], 6);
    assert_eq!(known_now["gross_cents"], 750);
    let by_instant = format!("as_of={}", enc(&then));
    let known_then = day(&app, &by_instant).await;
    assert_eq!(
        (
            known_then["transactions"].clone(),
            known_then["units_sold"].clone()
        ),
        (json!(1), json!(2))
    );
    assert_eq!(
        day(&app, &format!("as_of_position={first}")).await,
        known_then
    );
    let answer = app
        .get_ok(
            &format!("/v1/reports/stores/la/daily-sales?{by_instant}"),
            &app.admin,
        )
        .await;
    assert_eq!(
        answer["position"],
        json!(first),
        "the prefix's last position"
    );
    let utc: jiff::Timestamp = then.parse().unwrap();
    assert_eq!(
        answer["as_of"],
        json!(utc.to_string()),
        "the instant, in UTC"
    );

    // Before the first event: an empty answer at position 0.
    let empty = app
        .get_ok(
            "/v1/reports/stores/la/daily-sales?as_of=2001-01-01T00:00:00Z",
            &app.admin,
        )
        .await;
    assert_eq!(
        (empty["position"].clone(), empty["days"].clone()),
        (json!(0), json!([]))
    );

    // The supplier's delivery day moved with the correction; as known then it had not.
    let supplier =
        |q: String| format!("/v1/reports/suppliers/acme/daily?from=2026-03-10&to=2026-03-10&{q}");
    let report = app.get_ok(&supplier(now.clone()), &app.admin).await;
    assert_eq!(report["days"][0]["units_supplied"], 12);
    assert_eq!(report["days"][0]["supply_cost_cents"], 8 * 50 + 4 * 120);
    assert_eq!(report["days"][0]["deliveries"], 1);
    let report = app.get_ok(&supplier(by_instant.clone()), &app.admin).await;
    assert_eq!(report["days"][0]["units_supplied"], 14);

    // Stock: now, then, and in business time (the correction counts at the delivery's time).
    let stock = |q: &str| format!("/v1/inventory/la/items/a1?{q}");
    let on_hand = |v: Value| v["on_hand"].as_i64().unwrap();
    assert_eq!(on_hand(app.get_ok(&stock(&now), &app.admin).await), 8 - 5);
    assert_eq!(
        on_hand(app.get_ok(&stock(&by_instant), &app.admin).await),
        10 - 2
    );
    let before_sales = "at=2026-03-10T23:00:00-07:00";
    assert_eq!(
        on_hand(app.get_ok(&stock(before_sales), &app.admin).await),
        8
    );
    let both = format!("{before_sales}&{by_instant}");
    assert_eq!(on_hand(app.get_ok(&stock(&both), &app.admin).await), 10);
    let at_answer = app.get_ok(&stock(before_sales), &app.admin).await;
    assert_eq!(at_answer["at"], json!("2026-03-11T06:00:00Z"));

    // The day's history names each event that changed it, in the order the log learned them.
    let history = app
        .get_ok(
            "/v1/reports/stores/la/daily-sales/2026-03-11/history",
            &app.admin,
        )
        .await;
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(versions[0]["position"], json!(first));
    assert_eq!(versions[0]["event_type"], "SaleRecorded");
    assert_eq!(versions[0]["transactions"], 1);
    assert_eq!(versions[0]["recorded_at"], json!(then));
    assert_eq!(versions[1]["position"], json!(late));
    assert_eq!(versions[1]["command_id"], json!(late_id));
    assert_eq!(versions[1]["units_sold"], 6);
    let supplier_history = app
        .get_ok(
            "/v1/reports/suppliers/acme/daily/2026-03-10/history",
            &app.admin,
        )
        .await;
    let kinds: Vec<_> = supplier_history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["event_type"].clone(), v["units_supplied"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (json!("GoodsDelivered"), json!(14)),
            (json!("DeliveryCorrected"), json!(12))
        ]
    );

    // CSV says what JSON says.
    let path = format!("/v1/reports/stores/la/daily-sales?from=2026-03-11&{by_instant}");
    let csv = app.csv_of(&path).await;
    assert_eq!(
        csv,
        "store_id,date,transactions,units_sold,gross_cents,returned_units,returned_cents,net_cents,discount_cents\n\
         la,2026-03-11,1,2,200,0,0,200,0\n"
    );
    let csv = app
        .csv_of("/v1/reports/stores/la/daily-sales/2026-03-11/history")
        .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[2].starts_with(&format!("la,2026-03-11,{late},")),
        "{csv}"
    );
    assert!(
        lines[2].ends_with(",SaleRecorded,2,6,750,0,0,750,0"),
        "{csv}"
    );
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_reports_top_items_and_low_stock() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;
    app.run_ok(
        "/v1/sales",
        &sale(
            "s1",
            "2026-03-11T10:00:00-07:00",
            &[("a1", 2, 100), ("a2", 3, 250)],
        ),
    )
    .await;
    let last = app
        .run_ok(
            "/v1/sales",
            &sale("s2", "2026-03-12T10:00:00-07:00", &[("a1", 1, 100)]),
        )
        .await;
    let q = format!("min_position={last}");
    let item = app
        .get_ok(&format!("/v1/reports/items/a1/daily-sales?{q}"), &app.admin)
        .await;
    assert_eq!(item["supplier_id"], "acme");
    let days: Vec<_> = item["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].clone(),
                d["units_sold"].clone(),
                d["net_cents"].clone(),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            (json!("2026-03-11"), json!(2), json!(200)),
            (json!("2026-03-12"), json!(1), json!(100))
        ]
    );
    let top = app
        .get_ok(
            &format!("/v1/reports/top-items?from=2026-03-01&to=2026-03-31&{q}"),
            &app.admin,
        )
        .await;
    let ranked: Vec<_> = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].clone())
        .collect();
    assert_eq!(
        ranked,
        vec![json!("a1"), json!("a2")],
        "3 units each: by item id"
    );
    let one_day = app
        .get_ok(
            &format!("/v1/reports/top-items?date=2026-03-12&{q}"),
            &app.admin,
        )
        .await;
    assert_eq!(
        one_day["items"],
        json!([{"item_id": "a1", "units_sold": 1, "net_cents": 100}])
    );
    let low = app
        .get_ok(
            &format!("/v1/inventory/la/low-stock?threshold=2&{q}"),
            &app.admin,
        )
        .await;
    assert_eq!(low["items"], json!([{"item_id": "a2", "on_hand": 1}]));
    let before = app
        .get_ok(
            "/v1/inventory/la/low-stock?threshold=2&as_of_position=1",
            &app.admin,
        )
        .await;
    assert_eq!(
        before["items"],
        json!([]),
        "nothing delivered at position 1"
    );

    // A store key reads its own store only; a supplier key only its own items.
    let ny = app.create_key("store", Some("ny")).await;
    let r = app
        .get_raw(
            "/v1/reports/stores/la/daily-sales/2026-03-11/history",
            Some(&ny),
        )
        .await;
    expect_problem(r, 403, "another store's history").await;
    let r = app
        .get_raw("/v1/reports/items/a1/daily-sales?store_id=la", Some(&ny))
        .await;
    expect_problem(r, 403, "another store's item report").await;
    let own = app.get_ok("/v1/reports/items/a1/daily-sales", &ny).await;
    assert_eq!(own["store_id"], "ny");
    assert_eq!(own["days"], json!([]));
    let other = app.create_key("supplier", Some("zeta")).await;
    let r = app
        .get_raw("/v1/reports/items/a1/daily-sales", Some(&other))
        .await;
    expect_problem(r, 403, "another supplier's item").await;
    let theirs = app.get_ok("/v1/reports/top-items", &other).await;
    assert_eq!(theirs["items"], json!([]), "zeta sold nothing");
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_time_parameters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;
    let head = app.head().await;
    let report = "/v1/reports/stores/la/daily-sales";
    let cases: Vec<(String, &str)> = vec![
        (format!("{report}?as_of=yesterday"), "as_of"),
        (format!("{report}?as_of=2026-03-10"), "as_of"),
        (format!("{report}?as_of=2026-03-10T10:00:00"), "as_of"),
        (format!("{report}?as_of=2999-01-01T00:00:00Z"), "as_of"),
        (
            format!("{report}?as_of=2026-03-10T10:00:00Z&as_of_position=1"),
            "as_of_position",
        ),
        (format!("{report}?as_of_position=-1"), "as_of_position"),
        (format!("{report}?as_of_position=x"), "as_of_position"),
        (
            format!("{report}?as_of_position={}", head + 1),
            "as_of_position",
        ),
        (
            format!("{report}?as_of_position=1&min_position=2"),
            "min_position",
        ),
        ("/v1/inventory/la?at=noon".into(), "at"),
        ("/v1/inventory/la/items/a1?at=2026-03-10".into(), "at"),
        (
            "/v1/inventory/la/low-stock?threshold=-1".into(),
            "threshold",
        ),
        (
            "/v1/inventory/la/low-stock?threshold=1000001".into(),
            "threshold",
        ),
        ("/v1/reports/top-items?limit=0".into(), "limit"),
        ("/v1/reports/top-items?limit=101".into(), "limit"),
        (
            "/v1/reports/top-items?date=2026-03-10&from=2026-03-01".into(),
            "date",
        ),
        ("/v1/reports/top-items?date=tuesday".into(), "date"),
        ("/v1/reports/items/a1/daily-sales?from=march".into(), "from"),
        ("/v1/reports/items/a%20b/daily-sales".into(), "item_id"),
        ("/v1/inventory/no%20such".into(), "store_id"),
        (
            "/v1/reports/stores/la/daily-sales/2026-02-30/history".into(),
            "date",
        ),
        (
            "/v1/reports/suppliers/acme/daily/2026-03-10/history?as_of=soon".into(),
            "as_of",
        ),
    ];
    for (path, field) in cases {
        let r = app.get_raw(&path, Some(&app.admin)).await;
        let problem = expect_problem(r, 422, &path).await;
        assert_eq!(
            error_fields(&problem),
            vec![field.to_owned()],
            "{path}: {problem}"
        );
    }
    assert_eq!(app.head().await, head, "nothing changed");
    app.stop();
}
