//! `tally report …` as a user runs it, against a real server: a known scenario posted through the
//! API, then each report as a table (checked against the expected text in
//! `tests/fixtures/cli_report/`, at a fixed width through `COLUMNS`), as CSV (the server's own, parsed
//! and compared with the known figures) and as JSON (the server's); `--as-of` before a late sale
//! tells the books as they were; a bad parameter is the server's problem, named, and exit non-zero.
//!
//! `TALLY_UPDATE_EXPECTED=1 cargo test -p tally --test cli_report` writes the expected tables anew
//! (then read them before committing).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::cli::{Checked, client};
use common::{App, spawn_app};
use serde_json::{Value, json};

fn sale(id: &str, store: &str, when: &str, lines: &[(&str, i64, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(i, q, p, d)| json!({"item_id": i, "quantity": q, "unit_price_cents": p, "discount_cents": d}))
        .collect();
    json!({"sale_id": id, "store_id": store, "occurred_at": when, "lines": lines})
}

/// acme supplies i1 (1.50) and i2 (0.99) to berlin and tokyo. On 2026-11-02 berlin sells s1 (2 × i1,
/// 1 × i2: 3.99) and tokyo s4 (1 × i1); on 2026-11-03 berlin sells s2 (1 × i1 less 0.50) and takes
/// back the i2 of s1 (0.99). Returns the instant before the late sale s3 (3 × i1 on 2026-11-02 in
/// berlin: 4.50), which is recorded last.
async fn scenario(app: &App) -> String {
    let stores = [("berlin", "Europe/Berlin"), ("tokyo", "Asia/Tokyo")];
    app.register("acme", &stores, &[("i1", 150), ("i2", 99)])
        .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "berlin",
                "occurred_at": "2026-11-02T08:00:00+01:00",
                "lines": [{"item_id": "i1", "quantity": 100, "unit_cost_cents": 80},
                          {"item_id": "i2", "quantity": 50, "unit_cost_cents": 40}]}),
    )
    .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d2", "supplier_id": "acme", "store_id": "tokyo",
                "occurred_at": "2026-11-02T08:00:00+09:00",
                "lines": [{"item_id": "i1", "quantity": 10, "unit_cost_cents": 80}]}),
    )
    .await;
    let s1 = sale(
        "s1",
        "berlin",
        "2026-11-02T10:00:00+01:00",
        &[("i1", 2, 150, 0), ("i2", 1, 99, 0)],
    );
    app.run_ok("/v1/sales", &s1).await;
    let s4 = sale(
        "s4",
        "tokyo",
        "2026-11-02T09:00:00+09:00",
        &[("i1", 1, 150, 0)],
    );
    app.run_ok("/v1/sales", &s4).await;
    let s2 = sale(
        "s2",
        "berlin",
        "2026-11-03T10:00:00+01:00",
        &[("i1", 1, 150, 50)],
    );
    app.run_ok("/v1/sales", &s2).await;
    app.run_ok(
        "/v1/returns",
        &json!({"return_id": "r1", "sale_id": "s1", "store_id": "berlin",
                "occurred_at": "2026-11-03T11:00:00+01:00",
                "lines": [{"item_id": "i2", "quantity": 1}]}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before = jiff::Timestamp::now().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let late = sale(
        "s3",
        "berlin",
        "2026-11-02T12:00:00+01:00",
        &[("i1", 3, 150, 0)],
    );
    let position = app.run_ok("/v1/sales", &late).await;
    // Every report below reads the read models at the late sale: each projection has reached it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = app.get_ok("/v1/admin/projections", &app.admin).await;
        let models = list["projections"].as_array().unwrap();
        if models
            .iter()
            .all(|m| m["position"].as_u64().unwrap() >= position)
        {
            break before;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections behind: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn report(app: &App, dir: &Path, args: &[&str]) -> Checked {
    report_at(app, dir, args, 100)
}

/// `tally report ARGS` with a terminal `columns` wide.
fn report_at(app: &App, dir: &Path, args: &[&str], columns: u16) -> Checked {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let columns = columns.to_string();
    let out = client(dir, &app.url, &app.admin, &all, &[("COLUMNS", &columns)]);
    assert!(
        out.ok,
        "tally {all:?} failed: {}\n{}",
        out.stdout, out.stderr
    );
    out
}

/// The table printed, compared with `tests/fixtures/cli_report/NAME.txt`.
fn expect_table(name: &str, table: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cli_report")
        .join(format!("{name}.txt"));
    if std::env::var_os("TALLY_UPDATE_EXPECTED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, table).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (TALLY_UPDATE_EXPECTED=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        table,
        expected,
        "the {name} table differs from {}",
        path.display()
    );
}

/// CSV rows as maps from column to cell.
fn csv_rows(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| ((*h).to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn cell<'a>(row: &'a std::collections::BTreeMap<String, String>, column: &str) -> &'a str {
    row.get(column)
        .unwrap_or_else(|| panic!("no {column} in {row:?}"))
}

#[tokio::test]
async fn every_report_prints_as_a_table_the_servers_csv_and_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let before = scenario(&app).await;
    let d = dir.path();
    let month = ["--from", "2026-11-01", "--to", "2026-11-30"];

    // One store's days: 2026-11-02 with the late sale, 2026-11-03 with a discount and a return.
    let mut args = vec!["store-daily", "--store", "berlin"];
    args.extend_from_slice(&month);
    let table = report(&app, d, &args).stdout;
    expect_table("store-daily", &table);
    // On a narrow terminal the columns wrap their headings to fit.
    let narrow = report_at(&app, d, &args, 70).stdout;
    expect_table("store-daily-narrow", &narrow);
    assert!(
        narrow.lines().all(|l| l.chars().count() <= 70),
        "fitted to 70 columns:\n{narrow}"
    );
    assert!(
        table.contains("8.49"),
        "2.49 + 1.50 + 4.50 of 11-02, in units: {table}"
    );
    let mut csv_args = args.clone();
    csv_args.extend_from_slice(&["--format", "csv"]);
    let rows = csv_rows(&report(&app, d, &csv_args).stdout);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (nov2, nov3) = (&rows[0], &rows[1]);
    assert_eq!(cell(nov2, "date"), "2026-11-02");
    assert_eq!(cell(nov2, "transactions"), "2");
    assert_eq!(cell(nov2, "units_sold"), "6");
    assert_eq!(cell(nov2, "gross_cents"), "849");
    assert_eq!(cell(nov2, "net_cents"), "849");
    assert_eq!(cell(nov3, "gross_cents"), "150");
    assert_eq!(cell(nov3, "discount_cents"), "50");
    assert_eq!(cell(nov3, "returned_cents"), "99");
    assert_eq!(cell(nov3, "net_cents"), "1");
    let mut json_args = args.clone();
    json_args.extend_from_slice(&["--format", "json"]);
    let json: Value = serde_json::from_str(&report(&app, d, &json_args).stdout).unwrap();
    let served = app
        .get_ok(
            "/v1/reports/stores/berlin/daily-sales?from=2026-11-01&to=2026-11-30",
            &app.admin,
        )
        .await;
    assert_eq!(json, served, "--format json is the server's answer");

    // As of before the late sale: 11-02 as it was then; now it differs.
    let mut then_args = json_args.clone();
    then_args.extend_from_slice(&["--as-of", before.as_str()]);
    let then: Value = serde_json::from_str(&report(&app, d, &then_args).stdout).unwrap();
    assert_eq!(then["days"][0]["gross_cents"], 399, "{then}");
    assert_eq!(then["days"][0]["transactions"], 1, "{then}");
    assert_ne!(then["days"], json["days"], "the late sale changed 11-02");
    let then_table = report(
        &app,
        d,
        &[&args[..], &["--as-of", before.as_str()]].concat(),
    )
    .stdout;
    assert!(then_table.contains("3.99"), "{then_table}");
    assert!(then_table.contains("as of "), "{then_table}");

    // Every store on one date: berlin and tokyo.
    let all = ["all-stores", "--date", "2026-11-02"];
    expect_table("all-stores", &report(&app, d, &all).stdout);
    let rows = csv_rows(&report(&app, d, &[&all[..], &["--format", "csv"]].concat()).stdout);
    let gross: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (cell(r, "store_id"), cell(r, "gross_cents")))
        .collect();
    assert_eq!(gross, vec![("berlin", "849"), ("tokyo", "150")]);

    // The supplier: both deliveries on 11-02 (8000 + 2000 + 800 cents of cost).
    let sup = [&["supplier-daily", "--supplier", "acme"][..], &month].concat();
    expect_table("supplier-daily", &report(&app, d, &sup).stdout);
    let rows = csv_rows(&report(&app, d, &[&sup[..], &["--format", "csv"]].concat()).stdout);
    assert_eq!(cell(&rows[0], "deliveries"), "2");
    assert_eq!(cell(&rows[0], "units_supplied"), "160");
    assert_eq!(cell(&rows[0], "supply_cost_cents"), "10800");
    assert_eq!(cell(&rows[0], "units_sold"), "7");

    // One item in one store.
    let item = [
        &["item-daily", "--item", "i1", "--store", "berlin"][..],
        &month,
    ]
    .concat();
    expect_table("item-daily", &report(&app, d, &item).stdout);
    let rows = csv_rows(&report(&app, d, &[&item[..], &["--format", "csv"]].concat()).stdout);
    assert_eq!(cell(&rows[0], "units_sold"), "5");
    assert_eq!(cell(&rows[1], "discount_cents"), "50");

    // Stock: i1 100 − 2 − 1 − 3, i2 50 − 1 + 1.
    let inv = ["inventory", "--store", "berlin", "--min-position", "12"];
    expect_table("inventory", &report(&app, d, &inv).stdout);
    let rows = csv_rows(&report(&app, d, &[&inv[..], &["--format", "csv"]].concat()).stdout);
    let stock: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (cell(r, "item_id"), cell(r, "on_hand")))
        .collect();
    assert_eq!(stock, vec![("i1", "94"), ("i2", "50")]);
    let low = ["low-stock", "--store", "berlin", "--threshold", "50"];
    expect_table("low-stock", &report(&app, d, &low).stdout);
    let rows = csv_rows(&report(&app, d, &[&low[..], &["--format", "csv"]].concat()).stdout);
    assert_eq!(rows.len(), 1, "only i2 is at 50 or less: {rows:?}");
    assert_eq!(cell(&rows[0], "item_id"), "i2");

    // The best sellers of 11-02 across the chain.
    let top = ["top-items", "--date", "2026-11-02", "--limit", "5"];
    expect_table("top-items", &report(&app, d, &top).stdout);
    let json: Value =
        serde_json::from_str(&report(&app, d, &[&top[..], &["--format", "json"]].concat()).stdout)
            .unwrap();
    assert_eq!(json["items"][0]["item_id"], "i1", "{json}");
    assert_eq!(json["items"][0]["units_sold"], 6, "{json}");
}

#[tokio::test]
async fn a_refused_query_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let out = client(
        dir.path(),
        &app.url,
        &app.admin,
        &[
            "report",
            "store-daily",
            "--store",
            "berlin",
            "--from",
            "nope",
        ],
        &[],
    );
    assert!(!out.ok, "a refused query fails: {}", out.stdout);
    assert!(out.stderr.contains("422"), "{}", out.stderr);
    assert!(
        out.stderr.contains("from: must be a date"),
        "the field and its message: {}",
        out.stderr
    );
    let out = client(
        dir.path(),
        &app.url,
        "not-a-key",
        &["report", "inventory", "--store", "berlin"],
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
}
