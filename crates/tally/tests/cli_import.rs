//! `tally import` against a real server: a file imported twice changes the books once (the second
//! run finds every command already imported); a file with bad rows names them by line and imports
//! nothing, `--skip-bad` imports the good ones only, `--dry-run` sends nothing; NDJSON works as CSV;
//! a command the processor rejects is reported and fails the run.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::cli::{Checked, client};
use common::{App, spawn_app};
use serde_json::Value;

/// acme supplies i1 (1.50) and i2 (0.99) to berlin.
async fn setup(app: &App) {
    app.register(
        "acme",
        &[("berlin", "Europe/Berlin")],
        &[("i1", 150), ("i2", 99)],
    )
    .await;
}

fn import(app: &App, dir: &Path, args: &[&str]) -> Checked {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    client(dir, &app.url, &app.admin, &all, &[])
}

/// The `IMPORT key=value …` summary line's figures.
fn figures(out: &Checked) -> std::collections::BTreeMap<String, String> {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("IMPORT "))
        .unwrap_or_else(|| panic!("no IMPORT line: {}\n{}", out.stdout, out.stderr));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const DELIVERIES: &str =
    "delivery_id,supplier_id,store_id,occurred_at,item_id,quantity,unit_cost_cents
d1,acme,berlin,2026-11-02T08:00:00+01:00,i1,100,80
d1,acme,berlin,2026-11-02T08:00:00+01:00,i2,50,40
";

/// Three sales, s1 of two line items.
const SALES: &str = "sale_id,store_id,occurred_at,item_id,quantity,unit_price_cents,discount_cents
s1,berlin,2026-11-02T10:00:00+01:00,i1,2,150,
s2,berlin,2026-11-02T11:00:00+01:00,i1,1,150,50
s1,berlin,2026-11-02T10:00:00+01:00,i2,1,99,
s3,berlin,2026-11-03T09:00:00+01:00,i2,4,99,
";

async fn store_daily(app: &App) -> Value {
    let head = app.head().await;
    app.get_ok(
        &format!("/v1/reports/stores/berlin/daily-sales?min_position={head}"),
        &app.admin,
    )
    .await
}

#[tokio::test]
async fn importing_a_file_twice_imports_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;
    let d = dir.path();
    let deliveries = write(d, "deliveries.csv", DELIVERIES);
    let sales = write(d, "sales.csv", SALES);

    let out = import(&app, d, &["deliveries", &deliveries]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(figures(&out)["sent"], "1");
    let first = import(&app, d, &["sales", &sales]);
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    let f = figures(&first);
    assert_eq!((f["sent"].as_str(), f["already"].as_str()), ("3", "0"));
    assert_eq!(f["rows"], "4");
    let books = store_daily(&app).await;
    assert_eq!(books["days"][0]["transactions"], 2, "{books}");
    assert_eq!(books["days"][0]["gross_cents"], 300 + 99 + 150, "{books}");
    assert_eq!(books["days"][0]["discount_cents"], 50, "{books}");
    assert_eq!(books["days"][1]["units_sold"], 4, "{books}");
    let head = app.head().await;

    let again = import(&app, d, &["sales", &sales]);
    assert!(again.ok, "{}\n{}", again.stdout, again.stderr);
    let f = figures(&again);
    assert_eq!(
        (
            f["sent"].as_str(),
            f["already"].as_str(),
            f["rejected"].as_str()
        ),
        ("0", "3", "0"),
        "{}",
        again.stdout
    );
    assert_eq!(
        app.head().await,
        head,
        "no event was added by the second run"
    );
    assert_eq!(
        store_daily(&app).await["days"],
        books["days"],
        "the books are unchanged"
    );
    let deliveries_again = import(&app, d, &["deliveries", &deliveries]);
    assert_eq!(figures(&deliveries_again)["already"], "1");
}

#[tokio::test]
async fn bad_rows_are_named_by_line_and_stop_the_import_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;
    let d = dir.path();
    let deliveries = write(d, "deliveries.csv", DELIVERIES);
    assert!(import(&app, d, &["deliveries", &deliveries]).ok);
    let head = app.head().await;
    // Line 3: a quantity of 0; line 4: no offset on the time; line 5: not a number; line 6: the
    // same item twice in s5 (whose line 7 is good, but s5 is not imported without it).
    let bad = write(
        d,
        "bad.csv",
        "sale_id,store_id,occurred_at,item_id,quantity,unit_price_cents
g1,berlin,2026-11-02T10:00:00+01:00,i1,1,150
b1,berlin,2026-11-02T10:00:00+01:00,i1,0,150
b2,berlin,2026-11-02T10:00:00,i1,1,150
b3,berlin,2026-11-02T10:00:00+01:00,i1,two,150
s5,berlin,2026-11-02T10:00:00+01:00,i2,1,99
s5,berlin,2026-11-02T10:00:00+01:00,i2,1,99
g2,berlin,2026-11-02T12:00:00+01:00,i2,2,99
",
    );

    let dry = import(&app, d, &["sales", &bad, "--dry-run"]);
    assert!(!dry.ok, "a dry run of a bad file fails");
    let refused = import(&app, d, &["sales", &bad]);
    assert!(!refused.ok, "a bad file fails: {}", refused.stdout);
    for (line, what) in [
        (3, "quantity"),
        (4, "occurred_at"),
        (5, "quantity"),
        (7, "item_id"),
    ] {
        let named = format!("bad.csv:{line}: {what}");
        assert!(
            refused.stderr.contains(&named),
            "{named} in:\n{}",
            refused.stderr
        );
    }
    assert!(!refused.stderr.contains("bad.csv:2:"), "line 2 is good");
    assert!(
        refused.stderr.contains("nothing imported"),
        "{}",
        refused.stderr
    );
    assert_eq!(figures(&refused)["bad_lines"], "4");
    assert_eq!(app.head().await, head, "nothing was imported");

    let skipped = import(&app, d, &["sales", &bad, "--skip-bad"]);
    assert!(skipped.ok, "{}\n{}", skipped.stdout, skipped.stderr);
    let f = figures(&skipped);
    assert_eq!(
        (f["sent"].as_str(), f["skipped_commands"].as_str()),
        ("2", "4")
    );
    let books = store_daily(&app).await;
    assert_eq!(
        books["days"][0]["transactions"], 2,
        "g1 and g2 only: {books}"
    );
    assert_eq!(books["days"][0]["gross_cents"], 150 + 198, "{books}");
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_ndjson_imports_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    setup(&app).await;
    let d = dir.path();
    let deliveries = write(
        d,
        "deliveries.ndjson",
        r#"{"delivery_id":"d1","supplier_id":"acme","store_id":"berlin","lines":[{"item_id":"i1","quantity":10,"unit_cost_cents":80}]}
"#,
    );
    let head = app.head().await;
    let dry = import(&app, d, &["deliveries", &deliveries, "--dry-run"]);
    assert!(dry.ok, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("dry run: 1 deliveries"),
        "{}",
        dry.stdout
    );
    assert_eq!(app.head().await, head, "a dry run sends nothing");

    let out = import(&app, d, &["deliveries", &deliveries]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(figures(&out)["sent"], "1");
    let head = app.head().await;
    let stock = app
        .get_ok(
            &format!("/v1/inventory/berlin/items/i1?min_position={head}"),
            &app.admin,
        )
        .await;
    assert_eq!(stock["on_hand"], 10, "{stock}");

    // A sale of an item nobody registered passes the checks and is rejected by the processor.
    let unknown = write(
        d,
        "unknown.jsonl",
        r#"{"sale_id":"u1","store_id":"berlin","lines":[{"item_id":"nope","quantity":1,"unit_price_cents":5}]}
"#,
    );
    let out = import(&app, d, &["sales", &unknown]);
    assert!(!out.ok, "a rejected command fails the run");
    assert_eq!(figures(&out)["rejected"], "1");
    assert!(
        out.stderr.contains("sale_id u1: unknown_item"),
        "{}",
        out.stderr
    );
}
