//! Rebuilds that never take a read model away, as an operator drives them: asked for over HTTP (or
//! with `tally rebuild`) while commands stream in and queries loop, every answer during the rebuild
//! equals a fold of the log to the answer's own position (never an empty or partial model); a
//! kill -9 in the middle leaves the old version serving and the rebuild resumes after the restart;
//! a read model new to a store is back-filled while the others serve, its queries answering 503.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cli::run;
use common::{App, expect_problem, spawn_app, spawn_app_env};
use serde_json::{Value, json};

const STORES: [&str; 2] = ["s1", "s2"];
const ITEMS: [&str; 4] = ["i1", "i2", "i3", "i4"];
const DATE: &str = "2026-03-03";
/// A safety net against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn sale(n: usize) -> Value {
    let store = STORES[n % STORES.len()];
    let item = ITEMS[n % ITEMS.len()];
    json!({"sale_id": format!("sale-{n}"), "store_id": store, "till_id": "t1",
           "occurred_at": format!("{DATE}T10:00:00Z"),
           "lines": [{"item_id": item, "quantity": 1, "unit_price_cents": 250,
                      "discount_cents": (n % 3) as i64 * 10}]})
}

/// Reference data, a large delivery per store, and `sales` sales; the position of the last.
async fn history(app: &App, sales: usize) -> u64 {
    let items: Vec<(&str, i64)> = ITEMS.iter().map(|i| (*i, 250)).collect();
    app.register("acme", &[("s1", "UTC"), ("s2", "UTC")], &items)
        .await;
    for store in STORES {
        let lines: Vec<Value> = ITEMS
            .iter()
            .map(|i| json!({"item_id": i, "quantity": 100_000, "unit_cost_cents": 100}))
            .collect();
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("d-{store}"), "supplier_id": "acme", "store_id": store,
                    "occurred_at": format!("{DATE}T08:00:00Z"), "lines": lines}),
        )
        .await;
    }
    let mut last = String::new();
    for n in 0..sales {
        last = app.submit("/v1/sales", &sale(n)).await;
    }
    let outcome = app.wait(&last).await;
    assert_eq!(outcome["status"], "processed", "{outcome}");
    outcome["position"].as_u64().unwrap()
}

/// An answer of the read models as they are, and the same query folded from the log to the
/// answer's position: they must agree.
async fn agrees_with_a_replay(app: &App, path: &str, rows: &str) -> Result<usize, String> {
    let (status, now) = app.get(path, &app.admin).await;
    if status != 200 {
        return Err(format!("{path}: {status} {now}"));
    }
    let position = now["position"]
        .as_u64()
        .ok_or(format!("no position: {now}"))?;
    let sep = if path.contains('?') { '&' } else { '?' };
    let then = app
        .get_ok(&format!("{path}{sep}as_of_position={position}"), &app.admin)
        .await;
    if now[rows] != then[rows] {
        return Err(format!(
            "{path} at {position}: {} != replay {}",
            now[rows], then[rows]
        ));
    }
    let n = now[rows].as_array().map_or(0, Vec::len);
    if n == 0 {
        return Err(format!("{path} at {position}: empty"));
    }
    Ok(n)
}

/// An admin request without a body.
async fn ask(app: &App, method: &str, path: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    app.client
        .request(method, app.at(path))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
}

/// Asks for a rebuild: its status and body.
async fn rebuild(app: &App, path: &str) -> (reqwest::StatusCode, Value) {
    app.post(path, &app.admin, &json!({})).await
}

async fn projection(app: &App, name: &str) -> Value {
    let list = app.get_ok("/v1/admin/projections", &app.admin).await;
    list["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

/// Waits until `name` has no rebuild or back-fill under way.
async fn rebuilt(app: &App, name: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = projection(app, name).await;
        if p.get("rebuild").is_none() && p["status"] != "back_filling" {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild of {name} did not end: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_a_command_stream_never_shows_an_empty_or_partial_model() {
    let dir = tempfile::tempdir().unwrap();
    // A paced rebuild (small batches, a pause after each) spans many query rounds.
    let app = Arc::new(spawn_app_env(
        dir.path(),
        &[("TALLY_REBUILD_PACE_MS", "150")],
    ));
    let head = history(&app, 3000).await;

    // Commands keep coming, and queries loop, for the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 100_000;
            while !stop.load(Ordering::Relaxed) {
                app.submit("/v1/sales", &sale(n)).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n - 100_000
        })
    };
    let answered = Arc::new(AtomicU64::new(0));
    let queries = {
        let (app, stop, answered) = (app.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut wrong = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for store in STORES {
                    let paths = [
                        (format!("/v1/reports/stores/{store}/daily-sales"), "days"),
                        (format!("/v1/inventory/{store}"), "items"),
                    ];
                    for (path, rows) in &paths {
                        match agrees_with_a_replay(&app, path, rows).await {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => wrong.push(e),
                        }
                    }
                }
            }
            wrong
        })
    };

    // Bad asks change nothing.
    let r = ask(&app, "POST", "/v1/admin/projections/nope/rebuild").await;
    let problem = expect_problem(r, 404, "unknown projection").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("store_daily_sales"),
        "{problem}"
    );

    let (status, started) = rebuild(&app, "/v1/admin/projections/store_daily_sales/rebuild").await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "rebuilding", "{started}");
    let (status, _) = rebuild(&app, "/v1/admin/projections/inventory/rebuild").await;
    assert_eq!(status, 202);
    let r = ask(&app, "POST", "/v1/admin/projections/inventory/rebuild").await;
    expect_problem(r, 409, "a second rebuild of one projection").await;
    let during = answered.load(Ordering::Relaxed);
    // While it runs: its progress, in the admin view, the readiness check and the metrics.
    let p = projection(&app, "store_daily_sales").await;
    if let Some(rebuild) = p.get("rebuild") {
        assert_eq!(p["status"], "rebuilding", "{p}");
        assert!(rebuild["lag_events"].as_u64().is_some(), "{p}");
        let ready = app.get_ok("/readyz", &app.admin).await;
        let names = &ready["checks"]["projections"]["rebuilding"];
        assert!(
            names
                .as_array()
                .unwrap()
                .contains(&json!("store_daily_sales")),
            "{ready}"
        );
    }
    let store_daily = rebuilt(&app, "store_daily_sales").await;
    let inventory = rebuilt(&app, "inventory").await;
    assert!(
        store_daily["position"].as_u64().unwrap() >= head,
        "{store_daily}"
    );
    assert!(
        inventory["position"].as_u64().unwrap() >= head,
        "{inventory}"
    );
    let after = answered.load(Ordering::Relaxed);
    // A few more rounds on the new versions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = stream.await.unwrap();
    let wrong = queries.await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} wrong answers, the first: {}",
        wrong.len(),
        wrong[0]
    );
    assert!(sent > 0, "commands streamed");
    assert!(after > during, "queries answered during the rebuild");
    let metrics = app.get_raw("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("tally_projection_rebuilding{model=\"store_daily_sales\"} 0"),
        "{metrics}"
    );

    // A cancel drops a shadow version; the serving one is untouched.
    let (status, _) = rebuild(&app, "/v1/admin/projections/till_daily_sales/rebuild").await;
    assert_eq!(status, 202);
    let r = ask(
        &app,
        "DELETE",
        "/v1/admin/projections/till_daily_sales/rebuild",
    )
    .await;
    // (Unless it was quick enough to be swapped in already: then there is nothing to cancel.)
    assert!([200, 404].contains(&r.status().as_u16()), "{}", r.status());
    let r = ask(
        &app,
        "DELETE",
        "/v1/admin/projections/till_daily_sales/rebuild",
    )
    .await;
    expect_problem(r, 404, "no rebuild to cancel").await;

    let mut app = Arc::into_inner(app).expect("the tasks are done");
    app.stop();
    let data = dir.path().display().to_string();
    let out = run(dir.path(), &["verify", "--data-dir", &data]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}

/// A store day changed behind the projector's back: the old version shows it, a rebuilt one not.
fn alter_a_day(dir: &std::path::Path) {
    let conn = rusqlite::Connection::open(dir.join("tally.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE rm_store_daily SET transactions = transactions + 1000 WHERE store_id = 's1'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

async fn transactions(app: &App) -> i64 {
    let path = format!("/v1/reports/stores/s1/daily-sales?from={DATE}&to={DATE}");
    app.get_ok(&path, &app.admin).await["days"][0]["transactions"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_rebuild_leaves_the_old_version_serving_and_the_rebuild_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    history(&app, 3000).await;
    app.stop();
    alter_a_day(dir.path());
    // Paced so that the shadow applies (after 2 s) well before it reaches the head.
    let mut app = spawn_app_env(dir.path(), &[("TALLY_REBUILD_PACE_MS", "1500")]);
    let wrong = transactions(&app).await;
    assert!(wrong > 1000, "the altered day is served: {wrong}");
    let (status, _) = rebuild(&app, "/v1/admin/projections/store_daily_sales/rebuild").await;
    assert_eq!(status, 202);
    // Killed once the shadow has applied something (it applies every 2 s).
    let deadline = Instant::now() + PATIENCE;
    let conn = rusqlite::Connection::open(dir.path().join("tally.db")).unwrap();
    loop {
        let at: Option<i64> = conn
            .query_row(
                "SELECT position FROM checkpoints WHERE projection = 'rebuild:store_daily_sales'",
                [],
                |r| r.get(0),
            )
            .ok();
        if at.is_some_and(|at| at > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the shadow never moved");
        assert_eq!(transactions(&app).await, wrong, "the old version serves");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conn);
    app.kill9();

    // What the crash left: the old version, whole, and the shadow at its checkpoint.
    let conn = rusqlite::Connection::open(dir.path().join("tally.db")).unwrap();
    let (stored, shadow): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT transactions FROM rm_store_daily WHERE store_id = 's1'), \
             (SELECT position FROM checkpoints WHERE projection = 'rebuild:store_daily_sales')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        stored, wrong,
        "the old version is what the crash left serving"
    );
    assert!(shadow > 0, "the shadow kept its checkpoint");
    drop(conn);

    // After the restart the rebuild resumes from there and ends by itself.
    let mut app = spawn_app_env(dir.path(), &[("TALLY_REBUILD_PACE_MS", "20")]);
    rebuilt(&app, "store_daily_sales").await;
    assert_eq!(
        transactions(&app).await,
        wrong - 1000,
        "the rebuilt version is the log's"
    );
    app.stop();
    let data = dir.path().display().to_string();
    let out = run(dir.path(), &["verify", "--data-dir", &data]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_new_to_a_store_is_back_filled_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let head = history(&app, 3000).await;
    app.stop();
    // As a store built before item daily sales existed would be.
    let conn = rusqlite::Connection::open(dir.path().join("tally.db")).unwrap();
    conn.execute_batch(
        "DELETE FROM rm_item_daily; DELETE FROM rm_item_totals; DELETE FROM checkpoints WHERE projection = 'item_daily_sales';",
    )
    .unwrap();
    drop(conn);
    let app = spawn_app_env(dir.path(), &[("TALLY_REBUILD_PACE_MS", "600")]);
    let item = format!("/v1/reports/items/i1/daily-sales?store_id=s1&from={DATE}&to={DATE}");
    let r = app.get_raw(&item, Some(&app.admin)).await;
    assert!(
        r.headers().get("retry-after").is_some(),
        "{:?}",
        r.headers()
    );
    let problem = expect_problem(r, 503, "a back-filling model").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("item_daily_sales"),
        "{problem}"
    );
    // The others serve meanwhile, and the operators' views say what is going on.
    assert!(
        agrees_with_a_replay(&app, "/v1/inventory/s1", "items")
            .await
            .is_ok()
    );
    let ready = app.get_ok("/readyz", &app.admin).await;
    assert_eq!(
        ready["checks"]["projections"]["back_filling"],
        json!(["item_daily_sales"]),
        "{ready}"
    );
    let p = projection(&app, "item_daily_sales").await;
    assert_eq!(p["status"], "back_filling", "{p}");
    let r = ask(
        &app,
        "DELETE",
        "/v1/admin/projections/item_daily_sales/rebuild",
    )
    .await;
    expect_problem(r, 409, "cancelling a back-fill").await;
    // With time travel the log answers anyway.
    let then = app
        .get_ok(&format!("{item}&as_of_position={head}"), &app.admin)
        .await;
    let p = rebuilt(&app, "item_daily_sales").await;
    assert!(p["position"].as_u64().unwrap() >= head, "{p}");
    let now = app.get_ok(&item, &app.admin).await;
    assert_eq!(now["days"], then["days"], "{now} {then}");
    assert!(!now["days"].as_array().unwrap().is_empty(), "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_rebuild_runs_alone_or_asks_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let mut app = spawn_app(dir.path());
    history(&app, 200).await;

    // A server runs: its projector does the work and the command follows it to the swap.
    let out = run(
        dir.path(),
        &["rebuild", "--data-dir", &data, "--projection", "inventory"],
    );
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("a projector is running"),
        "{}",
        out.stderr
    );
    let out = run(
        dir.path(),
        &["rebuild", "--data-dir", &data, "--projection", "nope"],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("store_daily_sales"), "{}", out.stderr);
    app.stop();

    // None runs: it rebuilds everything itself, the journal too.
    alter_a_day(dir.path());
    let out = run(dir.path(), &["rebuild", "--data-dir", &data]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("rebuilt and swapped in"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("journal"), "{}", out.stdout);
    let out = run(dir.path(), &["verify", "--data-dir", &data]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}

/// On PostgreSQL with a standby projector: the active one is killed in the middle of a rebuild, the
/// standby takes the lease and finishes it from the shadow checkpoint, and nothing is lost.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_over_during_a_rebuild_on_postgres_loses_nothing() {
    use common::{Schema, spawn_role, spawn_role_env};

    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("rebuild");
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    let gateway = spawn_role(dir.path(), "gateway", "gateway", url, schema);
    let _processor = spawn_role(dir.path(), "processor", "processor", url, schema);
    let paced = [("TALLY_REBUILD_PACE_MS", "1500")];
    let mut first = spawn_role_env(dir.path(), "projector-1", "projector", url, schema, &paced);
    let deadline = Instant::now() + PATIENCE;
    while !first.log_text().contains("projector lease taken") {
        assert!(
            Instant::now() < deadline,
            "projector-1 never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fast = [("TALLY_REBUILD_PACE_MS", "20")];
    let mut second = spawn_role_env(dir.path(), "projector-2", "projector", url, schema, &fast);
    let head = history(&gateway, 3000).await;
    let path =
        format!("/v1/reports/stores/s1/daily-sales?from={DATE}&to={DATE}&min_position={head}");
    gateway.get_ok(&path, &gateway.admin).await;
    db.sql(&format!(
        "UPDATE \"{schema}\".rm_store_daily SET transactions = transactions + 1000 WHERE store_id = 's1'"
    ))
    .await;
    let wrong = transactions(&gateway).await;

    let (status, _) = rebuild(&gateway, "/v1/admin/projections/store_daily_sales/rebuild").await;
    assert_eq!(status, 202);
    let shadow = format!(
        "SELECT position FROM \"{schema}\".checkpoints WHERE projection = 'rebuild:store_daily_sales'"
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at = db.sql(&shadow).await.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                r.get(0).and_then(|v| v.parse::<u64>().ok())
            }
            _ => None,
        });
        if at.is_some_and(|at| at > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the shadow never moved");
        assert_eq!(
            transactions(&gateway).await,
            wrong,
            "the old version serves"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (The standby takes the lease within about a second and resumes from the shadow checkpoint.)
    first.kill9();
    rebuilt(&gateway, "store_daily_sales").await;
    assert!(
        second.log_text().contains("rebuilt read model swapped in"),
        "the standby finished the rebuild:\n{}",
        second.log_text()
    );
    assert_eq!(transactions(&gateway).await, wrong - 1000);
    second.stop();
    let mut args = vec!["verify"];
    args.extend_from_slice(&db.store_args());
    let out = run(dir.path(), &args);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}
