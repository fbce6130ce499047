//! `tally verify` as an operator runs it: on a data dir (server running or not) and on PostgreSQL,
//! it passes on books the projector wrote, now and as of a position, and names the row when one is
//! changed behind the projector's back, exiting non-zero.
#![allow(clippy::unwrap_used)]

mod common;

use common::cli::run;
use common::{App, spawn_app};
use serde_json::json;

/// Registrations, a delivery, discounted sales at tills, a void, a return, an adjustment and a
/// correction; the position of the last.
async fn scenario(app: &App) -> u64 {
    app.register(
        "acme",
        &[("ams", "Europe/Amsterdam"), ("akl", "Pacific/Auckland")],
        &[("a1", 250), ("a2", 120)],
    )
    .await;
    for store in ["ams", "akl"] {
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("d-{store}"), "supplier_id": "acme", "store_id": store,
                    "occurred_at": "2026-03-02T08:00:00Z",
                    "lines": [{"item_id": "a1", "quantity": 10, "unit_cost_cents": 100},
                              {"item_id": "a2", "quantity": 5, "unit_cost_cents": 50}]}),
        )
        .await;
    }
    for (n, store) in ["ams", "akl", "ams"].iter().enumerate() {
        app.run_ok(
            "/v1/sales",
            &json!({"sale_id": format!("s{n}"), "store_id": store, "till_id": "t1",
                    "occurred_at": "2026-03-03T10:00:00Z",
                    "lines": [{"item_id": "a1", "quantity": 3, "unit_price_cents": 250, "discount_cents": 100},
                              {"item_id": "a2", "quantity": 1, "unit_price_cents": 120}]}),
        )
        .await;
    }
    app.run_ok("/v1/sales/s2/void", &json!({"reason": "twice"}))
        .await;
    app.run_ok(
        "/v1/returns",
        &json!({"return_id": "r1", "sale_id": "s0", "store_id": "ams",
                "occurred_at": "2026-03-04T10:00:00Z", "lines": [{"item_id": "a1", "quantity": 1}]}),
    )
    .await;
    app.run_ok(
        "/v1/stock-adjustments",
        &json!({"adjustment_id": "j1", "store_id": "akl", "item_id": "a2", "delta": -1, "reason": "damage"}),
    )
    .await;
    app.run_ok(
        "/v1/deliveries/d-ams/corrections",
        &json!({"correction_id": "c1", "reason": "recount",
                "lines": [{"item_id": "a1", "quantity": 9, "unit_cost_cents": 100},
                          {"item_id": "a2", "quantity": 5, "unit_cost_cents": 55}]}),
    )
    .await
}

/// Waits until every read model has reached `position`.
async fn caught_up(app: &App, position: u64) {
    let path = format!("/v1/reports/items/a1/daily-sales?min_position={position}");
    app.get_ok(&path, &app.admin).await;
    let path = format!("/v1/inventory/ams?min_position={position}");
    app.get_ok(&path, &app.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_the_books_and_names_a_row_changed_behind_their_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut app = spawn_app(&data);
    let head = scenario(&app).await;
    caught_up(&app, head).await;
    let data_arg = data.display().to_string();
    let half = (head / 2).to_string();

    // While the server runs, and as of half the log.
    let out = run(
        dir.path(),
        &[
            "verify",
            "--data-dir",
            &data_arg,
            "--as-of-position",
            &half,
            "--json",
        ],
    );
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let report = out.summary();
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["events"], json!(head), "{report}");
    let tables = report["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 12, "{report}");
    assert!(
        tables.iter().any(
            |t| t["table"] == json!("as_of rm_store_daily") && t["position"] == json!(head / 2)
        ),
        "{report}"
    );
    app.stop();

    // A store day changed behind the projector's back.
    let conn = rusqlite::Connection::open(data.join("tally.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE rm_store_daily SET gross_cents = gross_cents + 1 WHERE store_id = 'akl'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let out = run(dir.path(), &["verify", "--data-dir", &data_arg]);
    assert!(!out.ok, "verify passed altered books: {}", out.stdout);
    let named: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rm_store_daily ("))
        .collect();
    assert_eq!(named.len(), 1, "{}", out.stdout);
    assert!(
        named[0].starts_with("rm_store_daily (akl, 2026-03-03): stored "),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("1 of 9 tables differ"),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_refuses_a_data_dir_that_is_not_there_and_a_position_past_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").display().to_string();
    let out = run(dir.path(), &["verify", "--data-dir", &missing]);
    assert!(!out.ok);
    assert!(out.stderr.contains("no data dir"), "{}", out.stderr);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.display().to_string();
    let out = run(
        dir.path(),
        &["verify", "--data-dir", &empty, "--as-of-position", "5"],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("past the log's head (0)"),
        "{}",
        out.stderr
    );
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_postgresql_passes_and_names_a_changed_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::Schema::new("verify");
    let app = common::spawn_role(dir.path(), "all", "all", &db.url, &db.name);
    let head = scenario(&app).await;
    caught_up(&app, head).await;
    let store = db.store_args();
    let half = (head / 2).to_string();
    let out = run(
        dir.path(),
        &[&["verify", "--as-of-position", &half][..], &store].concat(),
    );
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    db.sql(&format!(
        "UPDATE {}.rm_inventory SET on_hand = on_hand - 2 WHERE store_id = 'ams' AND item_id = 'a2'",
        db.name
    ))
    .await;
    let out = run(dir.path(), &[&["verify"][..], &store].concat());
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("rm_inventory (ams, a2): stored ")),
        "{}",
        out.stdout
    );
    drop(app);
}
