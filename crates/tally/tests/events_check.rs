//! `tally events check` on a log a real server wrote: the counts per event type and schema version
//! when every event decodes, and each failing event named by its position (a schema version from
//! the future, a malformed payload) with a non-zero exit. On SQLite here; on PostgreSQL with
//! `--features postgres` (`TALLY_TEST_DATABASE_URL`; the test fails when the server is missing).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::cli::{Checked, counts, events_check};
use common::{App, spawn_app};
use serde_json::{Value, json};

/// A store's small day: every event type once or more. Returns the head.
async fn scenario(app: &App) -> u64 {
    app.register(
        "acme",
        &[("ams", "Europe/Amsterdam")],
        &[("a1", 250), ("a2", 120)],
    )
    .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "ams",
                "occurred_at": "2026-03-02T08:00:00+01:00",
                "lines": [{"item_id": "a1", "quantity": 10, "unit_cost_cents": 100},
                          {"item_id": "a2", "quantity": 5, "unit_cost_cents": 50}]}),
    )
    .await;
    for (id, item, quantity, at) in [
        ("s1", "a1", 2, "2026-03-02T10:00:00+01:00"),
        ("s2", "a2", 1, "2026-03-02T11:00:00+01:00"),
        ("s3", "a1", 1, "2026-03-03T09:00:00+01:00"),
    ] {
        app.run_ok(
            "/v1/sales",
            &json!({"sale_id": id, "store_id": "ams", "occurred_at": at,
                    "lines": [{"item_id": item, "quantity": quantity, "unit_price_cents": 250}]}),
        )
        .await;
    }
    app.run_ok("/v1/sales/s3/void", &json!({"reason": "mistake"}))
        .await;
    app.run_ok(
        "/v1/returns",
        &json!({"return_id": "r1", "sale_id": "s1", "store_id": "ams",
                "occurred_at": "2026-03-03T12:00:00+01:00",
                "lines": [{"item_id": "a1", "quantity": 1}]}),
    )
    .await;
    app.run_ok(
        "/v1/stock-adjustments",
        &json!({"adjustment_id": "adj1", "store_id": "ams", "item_id": "a2", "delta": -1,
                "reason": "damage"}),
    )
    .await;
    app.run_ok(
        "/v1/deliveries/d1/corrections",
        &json!({"correction_id": "c1", "reason": "recounted",
                "lines": [{"item_id": "a1", "quantity": 9, "unit_cost_cents": 100},
                          {"item_id": "a2", "quantity": 5, "unit_cost_cents": 50}]}),
    )
    .await
}

/// What [`scenario`] stores: (type, schema version) → events.
fn scenario_counts() -> BTreeMap<(String, u64), u64> {
    [
        ("DeliveryCorrected", 1),
        ("GoodsDelivered", 1),
        ("ItemRegistered", 2),
        ("ReturnRecorded", 1),
        ("SaleRecorded", 3),
        ("SaleVoided", 1),
        ("StockAdjusted", 1),
        ("StoreRegistered", 1),
        ("SupplierRegistered", 1),
    ]
    .into_iter()
    // Each written in its type's current version (sales, voids and returns: 2).
    .map(|(t, n)| {
        let version = tally_domain::Event::current_version(t).expect("a known type");
        ((t.to_owned(), u64::from(version)), n)
    })
    .collect()
}

/// A sale as a build of the future might write it (a version this build cannot know).
const FUTURE_SALE: &str = r#"{"sale_id":"s-future","store_id":"ams","business_date":"2026-03-04","till_id":"t9","lines":[{"item_id":"a1","supplier_id":"acme","quantity":1,"unit_price_cents":250,"discount_cents":25,"tax":{"rate":"21%"}}]}"#;
/// A registration cut short.
const MALFORMED: &str = r#"{"supplier_id":"zz","name":"#;

/// Asserts the check of a clean scenario log: exit 0, the table and the JSON summary.
fn assert_clean(dir: &Path, store_args: &[&str], head: u64) {
    let text = events_check(dir, store_args);
    assert!(
        text.ok,
        "events check failed: {}{}",
        text.stdout, text.stderr
    );
    let rows: BTreeMap<(String, u64), u64> = text
        .stdout
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let [kind, version, events, failed] = cells[..] else {
                return None;
            };
            let version = version.strip_prefix('v')?.parse().ok()?;
            assert_eq!(failed, "0", "{l}");
            Some(((kind.to_owned(), version), events.parse().ok()?))
        })
        .collect();
    assert_eq!(rows, scenario_counts(), "{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("{head} events checked (head {head})")),
        "{}",
        text.stdout
    );

    let json = events_check(dir, &[store_args, &["--json"]].concat());
    assert!(json.ok, "events check --json failed: {}", json.stderr);
    let summary = json.summary();
    assert_eq!(counts(&summary), scenario_counts(), "{summary}");
    assert_eq!(summary["total"], json!(head), "{summary}");
    assert_eq!(summary["head"], json!(head), "{summary}");
    assert_eq!(summary["failed"], json!(0), "{summary}");
    assert_eq!(summary["failures"], json!([]), "{summary}");
    assert!(summary["seconds"].as_f64().is_some(), "{summary}");
}

/// Asserts the check after the two bad events were appended at `head + 1` and `head + 2`.
fn assert_both_named(dir: &Path, store_args: &[&str], head: u64) {
    let (future, malformed) = (head + 1, head + 2);
    let text: Checked = events_check(dir, store_args);
    assert!(!text.ok, "events check passed a bad log: {}", text.stdout);
    let failures: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.starts_with("position "))
        .collect();
    assert_eq!(failures.len(), 2, "{}", text.stdout);
    assert!(
        failures[0].starts_with(&format!("position {future}: SaleRecorded v99: ")),
        "{}",
        text.stdout
    );
    assert!(
        failures[1].starts_with(&format!("position {malformed}: SupplierRegistered v1: ")),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr
            .contains(&format!("2 of {malformed} events do not decode")),
        "{}",
        text.stderr
    );

    let json = events_check(dir, &[store_args, &["--json"]].concat());
    assert!(!json.ok, "events check --json passed a bad log");
    let summary = json.summary();
    assert_eq!(summary["total"], json!(malformed), "{summary}");
    assert_eq!(summary["failed"], json!(2), "{summary}");
    let failures = summary["failures"].as_array().unwrap();
    let named: Vec<(u64, &str, u64)> = failures
        .iter()
        .map(|f| {
            assert!(
                f["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{summary}"
            );
            (
                f["position"].as_u64().unwrap(),
                f["type"].as_str().unwrap(),
                f["schema_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            (future, "SaleRecorded", 99),
            (malformed, "SupplierRegistered", 1)
        ],
        "{summary}"
    );
    let mut expected = scenario_counts();
    expected.insert(("SaleRecorded".into(), 99), 1);
    *expected
        .get_mut(&("SupplierRegistered".to_owned(), 1))
        .unwrap() += 1;
    assert_eq!(counts(&summary), expected, "{summary}");
}

/// An event to append by hand: its position, type, schema version, payload and streams.
struct Bad {
    position: i64,
    kind: &'static str,
    schema_version: u32,
    data: &'static str,
    streams: Vec<(&'static str, i64)>,
}

/// Appends the two bad events to a stopped server's `tally.db`, as the writer would have: the next
/// positions, each stream at its next version, recorded when the last event was.
fn append_bad_events_sqlite(data_dir: &Path, head: u64) {
    let mut conn = rusqlite::Connection::open(data_dir.join("tally.db")).unwrap();
    let tx = conn.transaction().unwrap();
    let stored: i64 = tx
        .query_row("SELECT max(position) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as u64, head, "the scenario's head");
    let store_version: i64 = tx
        .query_row(
            "SELECT max(version) FROM stream_index WHERE stream_id = 'store-ams'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let head = head as i64;
    let bad = [
        Bad {
            position: head + 1,
            kind: "SaleRecorded",
            schema_version: 99,
            data: FUTURE_SALE,
            streams: vec![("sale-s-future", 1), ("store-ams", store_version + 1)],
        },
        Bad {
            position: head + 2,
            kind: "SupplierRegistered",
            schema_version: 1,
            data: MALFORMED,
            streams: vec![("supplier-zz", 1)],
        },
    ];
    for b in bad {
        let (stream, version) = b.streams[0];
        let inserted = tx
            .execute(
                "INSERT INTO events (position, stream_id, version, event_type, schema_version, \
                 occurred_at, recorded_at, data, command_id, correlation_id, principal) \
                 SELECT ?1, ?2, ?3, ?4, ?5, occurred_at, recorded_at, ?6, randomblob(16), NULL, \
                 principal FROM events WHERE position = ?7",
                rusqlite::params![
                    b.position,
                    stream,
                    version,
                    b.kind,
                    b.schema_version,
                    b.data,
                    head
                ],
            )
            .unwrap();
        assert_eq!(inserted, 1);
        for (stream, version) in b.streams {
            tx.execute(
                "INSERT INTO stream_index (stream_id, version, position) VALUES (?1, ?2, ?3)",
                rusqlite::params![stream, version, b.position],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[tokio::test]
async fn events_check_counts_a_clean_log_and_names_each_event_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut app = spawn_app(&data);
    let head = scenario(&app).await;
    assert_eq!(head, 12, "the scenario's events");
    app.stop();

    let data_arg = data.display().to_string();
    let store_args = ["--data-dir", data_arg.as_str()];
    assert_clean(dir.path(), &store_args, head);

    append_bad_events_sqlite(&data, head);
    assert_both_named(dir.path(), &store_args, head);

    // The server starts, but its projector stops before the future event, says why, and skips
    // nothing: every read model stays at the head before it.
    let mut app = spawn_app(&data);
    let future = head + 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !app.log_text().contains("cannot go past this event") {
        assert!(
            std::time::Instant::now() < deadline,
            "no error in the log: {}",
            app.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = app.log_text();
    assert!(
        log.contains(&format!("event {future}: SaleRecorded version 99 is newer")),
        "{log}"
    );
    let (_, ready) = common::json_of(app.get_raw("/readyz", None).await).await;
    let models = ready["checks"]["projections"]["models"].as_array().unwrap();
    assert!(!models.is_empty(), "{ready}");
    for m in models {
        assert_eq!(m["position"], json!(head), "{ready}");
    }
    // The feed serves it as stored, saying why it cannot be read.
    let events = app.all_events().await;
    let served = events
        .iter()
        .find(|e| e["position"] == json!(future))
        .unwrap();
    assert_eq!(served["stored_schema_version"], json!(99), "{served}");
    assert!(
        served["decode_error"]
            .as_str()
            .is_some_and(|e| e.contains("newer than this build")),
        "{served}"
    );
    app.stop();
}

#[test]
fn events_check_refuses_a_data_dir_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = events_check(dir.path(), &["--data-dir", &missing.display().to_string()]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("no data dir at"), "{}", out.stderr);
    assert!(!missing.exists(), "the check created the data dir");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn events_check_on_postgresql_names_each_event_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::Schema::new("events_check");
    let mut app = common::spawn_role(dir.path(), "all", "all", &db.url, &db.name);
    let head = scenario(&app).await;
    app.stop();
    let store_args = db.store_args();
    assert_clean(dir.path(), &store_args, head);

    // The same two events, as the appender writes them: under the head's row, which moves.
    let s = &db.name;
    let stream_rows = format!(
        "('sale-s-future', 1, {f}), ('store-ams', store_version + 1, {f}), ('supplier-zz', 1, {m})",
        f = head + 1,
        m = head + 2
    );
    db.sql(&format!(
        "DO $do$ DECLARE store_version bigint; BEGIN
           PERFORM 1 FROM {s}.log_head WHERE position = {head} FOR UPDATE;
           IF NOT FOUND THEN RAISE 'the head is not {head}'; END IF;
           SELECT max(version) INTO store_version FROM {s}.stream_index WHERE stream_id = 'store-ams';
           INSERT INTO {s}.events SELECT {f}, 'sale-s-future', 1, 'SaleRecorded', 99, occurred_at,
             recorded_at, $j${FUTURE_SALE}$j$, gen_random_uuid(), NULL, principal
             FROM {s}.events WHERE position = {head};
           INSERT INTO {s}.events SELECT {m}, 'supplier-zz', 1, 'SupplierRegistered', 1,
             occurred_at, recorded_at, $j${MALFORMED}$j$, gen_random_uuid(), NULL, principal
             FROM {s}.events WHERE position = {head};
           INSERT INTO {s}.stream_index (stream_id, version, position) VALUES {stream_rows};
           UPDATE {s}.log_head SET position = {m};
         END $do$",
        f = head + 1,
        m = head + 2
    ))
    .await;
    assert_both_named(dir.path(), &store_args, head);
}

/// The JSON summary's field names are what CI scripts read.
#[test]
fn the_summary_of_an_empty_data_dir_has_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let out = events_check(
        dir.path(),
        &["--data-dir", &data.display().to_string(), "--json"],
    );
    assert!(out.ok, "{}", out.stderr);
    let summary: Value = out.summary();
    for field in [
        "head",
        "total",
        "failed",
        "counts",
        "failures",
        "failures_left_out",
        "seconds",
        "events_per_second",
    ] {
        assert!(summary.get(field).is_some(), "{field} in {summary}");
    }
    assert_eq!(summary["total"], json!(0), "{summary}");
}
