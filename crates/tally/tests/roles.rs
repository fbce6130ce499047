//! The role matrix of API.md: who may write what, who may read what, 401 for no key, command status
//! visibility, revocation over HTTP and with the `tally keys` CLI while the server runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{App, expect_problem, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn setup(app: &App) {
    for (id, name) in [("acme", "Acme"), ("bolt", "Bolt")] {
        app.run_ok("/v1/suppliers", &json!({"supplier_id": id, "name": name}))
            .await;
    }
    for (id, tz) in [("la", "America/Los_Angeles"), ("ber", "Europe/Berlin")] {
        app.run_ok(
            "/v1/stores",
            &json!({"store_id": id, "name": id, "timezone": tz}),
        )
        .await;
    }
    for (id, sup) in [("a1", "acme"), ("b1", "bolt")] {
        app.run_ok(
            "/v1/items",
            &json!({"item_id": id, "name": id, "supplier_id": sup, "unit_price_cents": 100}),
        )
        .await;
    }
    for (n, (sup, store, item)) in [
        ("acme", "la", "a1"),
        ("bolt", "la", "b1"),
        ("acme", "ber", "a1"),
        ("bolt", "ber", "b1"),
    ]
    .into_iter()
    .enumerate()
    {
        app.run_ok(
            "/v1/deliveries",
            &delivery(&format!("setup-{n}"), sup, store, item),
        )
        .await;
    }
}

fn sale(id: &str, store: &str, item: &str) -> Value {
    json!({"sale_id": id, "store_id": store, "occurred_at": "2026-03-10T12:00:00Z",
           "lines": [{"item_id": item, "quantity": 1, "unit_price_cents": 100}]})
}

fn delivery(id: &str, supplier: &str, store: &str, item: &str) -> Value {
    json!({"delivery_id": id, "supplier_id": supplier, "store_id": store,
           "occurred_at": "2026-03-10T08:00:00Z",
           "lines": [{"item_id": item, "quantity": 10, "unit_cost_cents": 50}]})
}

fn adjustment(id: &str, store: &str) -> Value {
    json!({"adjustment_id": id, "store_id": store, "item_id": "a1", "delta": 1, "reason": "other"})
}

fn ret(id: &str, sale_id: &str, store: &str) -> Value {
    json!({"return_id": id, "sale_id": sale_id, "store_id": store,
           "occurred_at": "2026-03-11T12:00:00Z", "lines": [{"item_id": "a1", "quantity": 1}]})
}

/// Every read endpoint, by what it reads.
const READS: &[(&str, &str)] = &[
    ("inventory la", "/v1/inventory/la"),
    ("inventory ber", "/v1/inventory/ber"),
    ("item la", "/v1/inventory/la/items/a1"),
    ("item ber", "/v1/inventory/ber/items/a1"),
    ("sales la", "/v1/reports/stores/la/daily-sales"),
    ("sales ber", "/v1/reports/stores/ber/daily-sales"),
    ("sales all", "/v1/reports/daily-sales?date=2026-03-10"),
    ("supplier acme", "/v1/reports/suppliers/acme/daily"),
    ("supplier bolt", "/v1/reports/suppliers/bolt/daily"),
    ("events", "/v1/events"),
    ("stream", "/v1/streams/store-la"),
    ("keys", "/v1/admin/api-keys"),
];

/// Asserts which of [`READS`] this key may read (200) and which it may not (403).
async fn check_reads(app: &App, who: &str, key: &str, allowed: &[&str]) {
    for (name, path) in READS {
        let r = app.get_raw(path, Some(key)).await;
        if allowed.contains(name) {
            let (status, body) = common::json_of(r).await;
            assert_eq!(status, StatusCode::OK, "{who} reads {name}: {body}");
        } else {
            expect_problem(r, 403, &format!("{who} may not read {name}")).await;
        }
    }
}

async fn forbidden(app: &App, who: &str, key: &str, path: &str, body: &Value) {
    let r = app.post_raw(path, Some(key), body).await;
    expect_problem(r, 403, &format!("{who} POST {path}")).await;
}

/// The writes that only an admin may make.
async fn no_admin_writes(app: &App, who: &str, key: &str) {
    forbidden(
        app,
        who,
        key,
        "/v1/suppliers",
        &json!({"supplier_id": "x1", "name": "x"}),
    )
    .await;
    forbidden(
        app,
        who,
        key,
        "/v1/stores",
        &json!({"store_id": "x1", "name": "x", "timezone": "Asia/Tokyo"}),
    )
    .await;
    forbidden(
        app,
        who,
        key,
        "/v1/items",
        &json!({"item_id": "x1", "name": "x", "supplier_id": "acme", "unit_price_cents": 1}),
    )
    .await;
    forbidden(
        app,
        who,
        key,
        "/v1/admin/api-keys",
        &json!({"role": "admin"}),
    )
    .await;
}

#[tokio::test]
async fn role_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;
    let admin = app.admin.clone();
    let till_la = app.create_key("store", Some("la")).await;
    let till_la_2 = app.create_key("store", Some("la")).await;
    let till_ber = app.create_key("store", Some("ber")).await;
    let acme = app.create_key("supplier", Some("acme")).await;
    let analyst = app.create_key("analyst", None).await;
    let auditor = app.create_key("auditor", None).await;
    let admin_2 = app.create_key("admin", None).await;

    // Admin: everything.
    check_reads(
        &app,
        "admin",
        &admin,
        &READS.iter().map(|r| r.0).collect::<Vec<_>>(),
    )
    .await;
    let by_admin = app
        .submit_as("/v1/sales", &admin_2, &sale("s-admin", "ber", "b1"))
        .await;
    assert_eq!(
        app.wait_as(&by_admin, &admin_2).await["status"],
        "processed"
    );

    // A store key: writes and reads its own store only.
    let s1 = app
        .submit_as("/v1/sales", &till_la, &sale("s-la-1", "la", "a1"))
        .await;
    assert_eq!(app.wait_as(&s1, &till_la).await["status"], "processed");
    let r1 = app
        .submit_as("/v1/returns", &till_la, &ret("r-la-1", "s-la-1", "la"))
        .await;
    assert_eq!(app.wait_as(&r1, &till_la).await["status"], "processed");
    let s2 = app
        .submit_as("/v1/sales", &till_la, &sale("s-la-2", "la", "a1"))
        .await;
    assert_eq!(app.wait_as(&s2, &till_la).await["status"], "processed");
    let v2 = app
        .submit_as(
            "/v1/sales/s-la-2/void",
            &till_la,
            &json!({"reason": "mistake"}),
        )
        .await;
    assert_eq!(app.wait_as(&v2, &till_la).await["status"], "processed");
    let a1 = app
        .submit_as(
            "/v1/stock-adjustments",
            &till_la,
            &adjustment("adj-la", "la"),
        )
        .await;
    let adjusted = app.wait_as(&a1, &till_la).await;
    assert_eq!(adjusted["status"], "processed");
    // The read models follow the log: reads below that are compared ask for everything so far
    // (`min_position`), or an update still on its way would show up as a change.
    let all_so_far = adjusted["position"]
        .as_u64()
        .expect("a processed command has a position");
    forbidden(
        &app,
        "store la",
        &till_la,
        "/v1/sales",
        &sale("s-x", "ber", "a1"),
    )
    .await;
    forbidden(
        &app,
        "store la",
        &till_la,
        "/v1/returns",
        &ret("r-x", "s-admin", "ber"),
    )
    .await;
    forbidden(
        &app,
        "store la",
        &till_la,
        "/v1/stock-adjustments",
        &adjustment("adj-x", "ber"),
    )
    .await;
    forbidden(
        &app,
        "store la",
        &till_la,
        "/v1/deliveries",
        &delivery("d-x", "acme", "la", "a1"),
    )
    .await;
    no_admin_writes(&app, "store la", &till_la).await;
    // Voiding another store's sale cannot be refused at the gate (the path names no store): the
    // processor must refuse it, and the sale stays.
    let before = app
        .get_ok(
            &format!("/v1/inventory/ber/items/b1?min_position={all_so_far}"),
            &admin,
        )
        .await["on_hand"]
        .clone();
    let v = app
        .submit_as(
            "/v1/sales/s-admin/void",
            &till_la,
            &json!({"reason": "not mine"}),
        )
        .await;
    let outcome = app.wait_as(&v, &till_la).await;
    assert_eq!(
        outcome["status"], "rejected",
        "a la till voids a ber sale: {outcome}"
    );
    let (_, after) = app.get("/v1/inventory/ber/items/b1", &admin).await;
    assert_eq!(after["on_hand"], before, "the ber sale is not voided");
    check_reads(
        &app,
        "store la",
        &till_la,
        &["inventory la", "item la", "sales la"],
    )
    .await;
    // A return naming its own store for another store's sale: refused by the processor, and no
    // stock comes back to either store.
    let la_before = app
        .get_ok(
            &format!("/v1/inventory/la?min_position={all_so_far}"),
            &admin,
        )
        .await["items"]
        .clone();
    let r = app
        .submit_as(
            "/v1/returns",
            &till_la,
            &json!({"return_id": "r-cross", "sale_id": "s-admin", "store_id": "la",
                    "occurred_at": "2026-03-11T12:00:00Z",
                    "lines": [{"item_id": "b1", "quantity": 1}]}),
        )
        .await;
    let outcome = app.wait_as(&r, &till_la).await;
    assert_eq!(
        outcome["status"], "rejected",
        "a la return of a ber sale: {outcome}"
    );
    assert_eq!(
        app.get_ok("/v1/inventory/la", &admin).await["items"],
        la_before
    );
    let (_, after) = app.get("/v1/inventory/ber/items/b1", &admin).await;
    assert_eq!(after["on_hand"], before, "the ber sale is not returned");
    check_reads(
        &app,
        "store ber",
        &till_ber,
        &["inventory ber", "item ber", "sales ber"],
    )
    .await;

    // A supplier key: delivers for its own supplier, reads its own supplier report.
    let d1 = app
        .submit_as(
            "/v1/deliveries",
            &acme,
            &delivery("d-acme-1", "acme", "ber", "a1"),
        )
        .await;
    assert_eq!(app.wait_as(&d1, &acme).await["status"], "processed");
    forbidden(
        &app,
        "supplier acme",
        &acme,
        "/v1/deliveries",
        &delivery("d-x", "bolt", "la", "b1"),
    )
    .await;
    forbidden(
        &app,
        "supplier acme",
        &acme,
        "/v1/sales",
        &sale("s-x", "la", "a1"),
    )
    .await;
    forbidden(
        &app,
        "supplier acme",
        &acme,
        "/v1/stock-adjustments",
        &adjustment("adj-x", "la"),
    )
    .await;
    no_admin_writes(&app, "supplier acme", &acme).await;
    check_reads(&app, "supplier acme", &acme, &["supplier acme"]).await;

    // An analyst reads every report, writes nothing and reads no events.
    for (path, body) in [
        ("/v1/sales", sale("s-x", "la", "a1")),
        ("/v1/deliveries", delivery("d-x", "acme", "la", "a1")),
        ("/v1/returns", ret("r-x", "s-la-1", "la")),
        ("/v1/stock-adjustments", adjustment("adj-x", "la")),
        ("/v1/sales/s-la-1/void", json!({"reason": "x"})),
    ] {
        forbidden(&app, "analyst", &analyst, path, &body).await;
        forbidden(&app, "auditor", &auditor, path, &body).await;
    }
    no_admin_writes(&app, "analyst", &analyst).await;
    no_admin_writes(&app, "auditor", &auditor).await;
    let reports: Vec<&str> = READS
        .iter()
        .map(|r| r.0)
        .filter(|n| !["events", "stream", "keys"].contains(n))
        .collect();
    check_reads(&app, "analyst", &analyst, &reports).await;
    // An auditor reads the event log.
    check_reads(&app, "auditor", &auditor, &["events", "stream"]).await;

    // Without a key, or with a bad one: 401 problem+json, also on writes.
    let garbage = [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer tally_0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer not-a-key"),
        Some("tally_test_admin_secret_0123456789"),
    ];
    for auth in garbage {
        for path in [
            "/v1/inventory/la",
            "/v1/events",
            "/v1/reports/daily-sales?date=2026-03-10",
        ] {
            let mut rb = app.client.get(app.at(path));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            let r = rb.send().await.unwrap();
            expect_problem(r, 401, &format!("GET {path} with {auth:?}")).await;
        }
        let mut rb = app
            .client
            .post(app.at("/v1/sales"))
            .json(&sale("s-anon", "la", "a1"));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        expect_problem(
            rb.send().await.unwrap(),
            401,
            &format!("POST with {auth:?}"),
        )
        .await;
    }
    let (status, _) = common::json_of(app.get_raw("/healthz", None).await).await;
    assert_eq!(status, StatusCode::OK, "/healthz needs no key");

    // Command status: admins, auditors, and keys of the same role and scope; 404 for the others.
    for (who, key) in [
        ("admin", &admin),
        ("admin 2", &admin_2),
        ("auditor", &auditor),
        ("la 2", &till_la_2),
    ] {
        let (status, body) = app.get(&format!("/v1/commands/{s1}"), key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{who} reads a la till's command: {body}"
        );
        assert_eq!(body["status"], "processed");
    }
    for (who, key) in [("ber", &till_ber), ("acme", &acme), ("analyst", &analyst)] {
        let r = app
            .get_raw(&format!("/v1/commands/{s1}?wait_ms=100"), Some(key))
            .await;
        expect_problem(r, 404, &format!("{who} reads a la till's command")).await;
    }
    for (who, key) in [("la", &till_la), ("acme", &acme), ("analyst", &analyst)] {
        let r = app
            .get_raw(&format!("/v1/commands/{by_admin}"), Some(key))
            .await;
        expect_problem(r, 404, &format!("{who} reads an admin's command")).await;
    }
    let unknown = "01a2166f-0000-7000-8000-000000000000";
    let r = app
        .get_raw(&format!("/v1/commands/{unknown}"), Some(&admin))
        .await;
    expect_problem(r, 404, "an unknown command").await;
    let (status, _) = app.get(&format!("/v1/commands/{by_admin}"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get(&format!("/v1/commands/{d1}"), &auditor).await;
    assert_eq!(status, StatusCode::OK);

    // Revocation over HTTP: at once.
    let (key_id, doomed) = app.create_key_with_id("store", Some("la")).await;
    let (status, _) = app.get("/v1/inventory/la", &doomed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.delete(&format!("/v1/admin/api-keys/{key_id}"), &admin)
            .await,
        StatusCode::NO_CONTENT
    );
    expect_problem(
        app.get_raw("/v1/inventory/la", Some(&doomed)).await,
        401,
        "revoked key reads",
    )
    .await;
    let r = app
        .post_raw("/v1/sales", Some(&doomed), &sale("s-doomed", "la", "a1"))
        .await;
    expect_problem(r, 401, "revoked key writes").await;
    // Only an admin may revoke.
    let (other_id, _) = app.create_key_with_id("analyst", None).await;
    let status = app
        .delete(&format!("/v1/admin/api-keys/{other_id}"), &analyst)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an analyst revokes a key");
    // The revoked key's command stays readable to admins.
    let (status, _) = app.get(&format!("/v1/commands/{s1}"), &admin).await;
    assert_eq!(status, StatusCode::OK);

    app.stop();
}

fn tally(args: &[&str], data_dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env_remove("TALLY_ADMIN_KEY")
        .env_remove("TALLY_DATA_DIR")
        .current_dir(data_dir)
        .output()
        .expect("run tally");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `key_id: …` and `key: …` from `tally keys create`.
fn created(stdout: &str) -> (String, String) {
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {stdout:?}"))
    };
    (field("key_id:"), field("key:"))
}

/// `tally keys` on the data dir of a running server: create, list, revoke, effective within the
/// server's key cache TTL (at once for a key it has not cached).
#[tokio::test]
async fn keys_cli_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let d = dir.path().to_str().unwrap();

    let (ok, out, err) = tally(
        &["keys", "--data-dir", d, "create", "--role", "analyst"],
        dir.path(),
    );
    assert!(ok, "keys create: {out}{err}");
    let (key_id, secret) = created(&out);
    assert!(secret.starts_with("tally_"), "{out}");
    let (status, body) = app
        .get("/v1/reports/daily-sales?date=2026-03-10", &secret)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a CLI-made analyst key reads reports: {body}"
    );
    expect_problem(
        app.get_raw("/v1/events", Some(&secret)).await,
        403,
        "analyst reads events",
    )
    .await;

    let (ok, out, err) = tally(
        &[
            "keys",
            "--data-dir",
            d,
            "create",
            "--role",
            "store",
            "--scope",
            "la",
        ],
        dir.path(),
    );
    assert!(ok, "keys create store: {out}{err}");
    let (store_id, _) = created(&out);

    let (ok, listing, err) = tally(&["keys", "--data-dir", d, "list"], dir.path());
    assert!(ok, "keys list: {err}");
    let line = listing
        .lines()
        .find(|l| l.contains(&key_id))
        .unwrap_or_else(|| panic!("{key_id} listed: {listing}"));
    assert!(line.contains("analyst"), "{line}");
    assert!(
        listing
            .lines()
            .any(|l| l.contains(&store_id) && l.contains("la")),
        "{listing}"
    );
    assert!(!listing.contains(&secret), "the list never shows secrets");

    let (ok, out, err) = tally(&["keys", "--data-dir", d, "revoke", &key_id], dir.path());
    assert!(ok, "keys revoke: {out}{err}");
    // The server has this key in its key cache (it was just used): a revocation by another process
    // reaches it within the cache's TTL (1 s).
    let revoked = std::time::Instant::now();
    loop {
        let r = app
            .get_raw("/v1/reports/daily-sales?date=2026-03-10", Some(&secret))
            .await;
        if r.status() == StatusCode::UNAUTHORIZED {
            expect_problem(r, 401, "a key revoked by the CLI").await;
            break;
        }
        assert_eq!(r.status(), StatusCode::OK, "until then the key works");
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(5),
            "a key revoked by the CLI still works after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, _, _) = tally(
        &["keys", "--data-dir", d, "revoke", "key_does_not_exist"],
        dir.path(),
    );
    assert!(!ok, "revoking an unknown key fails");
    let (ok, _, _) = tally(
        &["keys", "--data-dir", d, "create", "--role", "wizard"],
        dir.path(),
    );
    assert!(!ok, "an unknown role is refused");

    // Keys made over HTTP are in the CLI's list, and revoking them there works at once too.
    let (http_id, http_key) = app.create_key_with_id("auditor", None).await;
    let (_, listing, _) = tally(&["keys", "--data-dir", d, "list"], dir.path());
    assert!(listing.contains(&http_id), "{listing}");
    let (ok, _, err) = tally(&["keys", "--data-dir", d, "revoke", &http_id], dir.path());
    assert!(ok, "{err}");
    expect_problem(
        app.get_raw("/v1/events", Some(&http_key)).await,
        401,
        "revoked by CLI",
    )
    .await;

    app.stop();
}

/// The brief's spelling: the data dir given after the `keys` action (`tally keys create --data-dir D`).
#[test]
fn keys_cli_accepts_data_dir_after_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = tally(
        &["keys", "create", "--data-dir", d, "--role", "analyst"],
        dir.path(),
    );
    assert!(
        ok,
        "tally keys create --data-dir D --role analyst: {out}{err}"
    );
    let (key_id, _) = created(&out);
    let (ok, listing, err) = tally(&["keys", "list", "--data-dir", d], dir.path());
    assert!(ok, "tally keys list --data-dir D: {err}");
    assert!(listing.contains(&key_id), "{listing}");
    let (ok, _, err) = tally(&["keys", "revoke", "--data-dir", d, &key_id], dir.path());
    assert!(ok, "tally keys revoke --data-dir D ID: {err}");
}
