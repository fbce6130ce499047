//! Discounts and tills over HTTP (API.md, "Discounts and tills"; sales' schema version 2): a sale's
//! lines carry discounts and the sale a till, the reports net them out, returns refund the paid
//! share, the views show them, and bad discounts or tills are refused with 422 changing nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, error_fields, expect_problem, spawn_app_with};
use serde_json::{Value, json};

const TILLS: &str = r#"
[[queries]]
name = "tills"
description = "Sales per till"
roles = ["admin"]
sql = "select store_id, till_id, date, transactions, gross_cents, discount_cents from till_daily_sales order by store_id, till_id, date"
"#;

/// acme supplies a1 (250) and a2 (100) to store la; 20 of each delivered on 2026-03-10.
async fn setup(app: &App) -> u64 {
    app.register(
        "acme",
        &[("la", "America/Los_Angeles")],
        &[("a1", 250), ("a2", 100)],
    )
    .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "la",
                "occurred_at": "2026-03-10T09:00:00-07:00",
                "lines": [{"item_id": "a1", "quantity": 20, "unit_cost_cents": 90},
                          {"item_id": "a2", "quantity": 20, "unit_cost_cents": 40}]}),
    )
    .await
}

fn sale(id: &str, till: Option<&str>, lines: &[(&str, i64, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(item, n, price, discount)| {
            json!({"item_id": item, "quantity": n, "unit_price_cents": price, "discount_cents": discount})
        })
        .collect();
    let mut body = json!({"sale_id": id, "store_id": "la",
                          "occurred_at": "2026-03-11T12:00:00-07:00", "lines": lines});
    if let Some(t) = till {
        body["till_id"] = json!(t);
    }
    body
}

fn give_back(id: &str, sale: &str, item: &str, n: i64) -> Value {
    json!({"return_id": id, "sale_id": sale, "store_id": "la",
           "occurred_at": "2026-03-12T12:00:00-07:00",
           "lines": [{"item_id": item, "quantity": n}]})
}

fn day(report: &Value, date: &str) -> Value {
    report["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == json!(date))
        .cloned()
        .unwrap_or_else(|| panic!("no {date} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discounts_net_out_of_every_report_and_returns_refund_what_was_paid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, TILLS).unwrap();
    let app = spawn_app_with(dir.path(), &["--config", path.to_str().unwrap()], &[]);
    setup(&app).await;

    // s1 at till t1: 3 × a1 at 250 with 100 off (650 paid), 2 × a2 at 100 with none.
    app.run_ok(
        "/v1/sales",
        &sale("s1", Some("t1"), &[("a1", 3, 250, 100), ("a2", 2, 100, 0)]),
    )
    .await;
    // s2 at till t2, voided: its figures leave the day (and the till).
    app.run_ok("/v1/sales", &sale("s2", Some("t2"), &[("a1", 1, 250, 50)]))
        .await;
    app.run_ok("/v1/sales/s2/void", &json!({"reason": "rung up twice"}))
        .await;
    // s3 without a till, wholly free.
    app.run_ok("/v1/sales", &sale("s3", None, &[("a2", 1, 100, 100)]))
        .await;
    // Two of s1's three a1 come back in two returns: refunds floor(650 × 1/3) = 216, then
    // floor(650 × 2/3) − 216 = 217.
    app.run_ok("/v1/returns", &give_back("r1", "s1", "a1", 1))
        .await;
    let last = app
        .run_ok("/v1/returns", &give_back("r2", "s1", "a1", 1))
        .await;

    let admin = app.admin.clone();
    let store = app
        .get_ok(
            &format!("/v1/reports/stores/la/daily-sales?min_position={last}"),
            &admin,
        )
        .await;
    let sold = day(&store, "2026-03-11");
    assert_eq!(
        (
            &sold["transactions"],
            &sold["units_sold"],
            &sold["gross_cents"],
            &sold["discount_cents"],
            &sold["net_cents"],
        ),
        (&json!(2), &json!(6), &json!(1050), &json!(200), &json!(850)),
        "{sold}"
    );
    let returned = day(&store, "2026-03-12");
    assert_eq!(returned["returned_units"], json!(2), "{returned}");
    assert_eq!(returned["returned_cents"], json!(433), "{returned}");
    assert_eq!(returned["net_cents"], json!(-433), "{returned}");

    // The supplier's sales are after discounts (voids out, returns not counted there).
    let supplier = app
        .get_ok(
            &format!("/v1/reports/suppliers/acme/daily?min_position={last}"),
            &admin,
        )
        .await;
    assert_eq!(day(&supplier, "2026-03-11")["sales_cents"], json!(850));

    // Item daily sales carry the discount too (they follow the slow lane: wait for them).
    let item = app
        .get_ok(
            &format!("/v1/reports/items/a1/daily-sales?store_id=la&min_position={last}"),
            &admin,
        )
        .await;
    let a1 = day(&item, "2026-03-11");
    assert_eq!(
        (&a1["gross_cents"], &a1["discount_cents"], &a1["net_cents"]),
        (&json!(750), &json!(100), &json!(650)),
        "{a1}"
    );

    // CSV says what JSON says, discount last.
    let csv = app
        .csv_of(&format!(
            "/v1/reports/stores/la/daily-sales?to=2026-03-11&min_position={last}"
        ))
        .await;
    assert_eq!(
        csv,
        "store_id,date,transactions,units_sold,gross_cents,returned_units,returned_cents,net_cents,discount_cents\n\
         la,2026-03-11,2,6,1050,0,0,850,200\n"
    );

    // Per till, through the data services' view; the till-less sale under NULL.
    let tills = app
        .get_ok(&format!("/v1/queries/tills?min_position={last}"), &admin)
        .await;
    // Rows in the columns' order: store, till, date, transactions, gross, discount.
    let rows: Vec<Value> = tills["rows"].as_array().unwrap().clone();
    assert_eq!(
        rows,
        [
            json!(["la", null, "2026-03-11", 1, 100, 100]),
            json!(["la", "t1", "2026-03-11", 1, 950, 100]),
        ],
        "t2's only sale was voided: {tills}"
    );

    // The stored sale is version 2 with its discounts and till; returns carry the unrefunded share.
    let events = app.all_events().await;
    let s1 = events
        .iter()
        .find(|e| e["type"] == json!("SaleRecorded") && e["data"]["sale_id"] == json!("s1"))
        .unwrap();
    assert_eq!(s1["schema_version"], json!(2), "{s1}");
    assert_eq!(s1["data"]["till_id"], json!("t1"), "{s1}");
    assert_eq!(s1["data"]["lines"][0]["discount_cents"], json!(100), "{s1}");
    let r1 = events
        .iter()
        .find(|e| e["type"] == json!("ReturnRecorded") && e["data"]["return_id"] == json!("r1"))
        .unwrap();
    assert_eq!(r1["data"]["lines"][0]["discount_cents"], json!(34), "{r1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_discounts_and_tills_are_refused_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[], &[]);
    setup(&app).await;
    let head = app.head().await;
    let cases = [
        (
            sale("x1", None, &[("a1", 2, 250, 501)]),
            "lines[0].discount_cents",
        ),
        (
            sale("x2", None, &[("a1", 1, 250, -1)]),
            "lines[0].discount_cents",
        ),
        (
            sale("x3", None, &[("a1", 1, 250, 0), ("a2", 1, 100, 101)]),
            "lines[1].discount_cents",
        ),
        (sale("x4", Some("till 7"), &[("a1", 1, 250, 0)]), "till_id"),
        (sale("x5", Some(""), &[("a1", 1, 250, 0)]), "till_id"),
    ];
    for (body, field) in cases {
        let r = app.post_raw("/v1/sales", Some(&app.admin), &body).await;
        let problem = expect_problem(r, 422, field).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    // A discount of exactly the line's value is a free line, not an error.
    app.run_ok(
        "/v1/sales",
        &sale("ok", Some("t-9"), &[("a1", 2, 250, 500)]),
    )
    .await;
    assert_eq!(
        app.head().await,
        head + 1,
        "only the valid sale was recorded"
    );
}
