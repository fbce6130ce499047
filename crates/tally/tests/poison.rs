//! Poison events as an operator meets them: a sale one projection cannot fold (planted with the
//! test hook `TALLY_TEST_POISON_PROJECTION`) stops that projection alone by default, says where and
//! why (admin view, `/readyz`, `/metrics`, the faults list), while every other read model goes on;
//! retry and skip work over HTTP and with `tally projections parked`; with the park policy it is
//! parked and the projection goes on; a parked event retried once the bug is gone is applied, and
//! `tally verify` passes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cli::run;
use common::{App, expect_problem, spawn_app, spawn_app_env};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const TILL: &str = "till_daily_sales";

async fn sale(app: &App, id: &str) -> u64 {
    app.run_ok(
        "/v1/sales",
        &json!({"sale_id": id, "store_id": "s1", "till_id": "t1",
                "occurred_at": "2026-03-03T10:00:00Z",
                "lines": [{"item_id": "i1", "quantity": 1, "unit_price_cents": 250}]}),
    )
    .await
}

async fn setup(app: &App) {
    app.register("acme", &[("s1", "UTC")], &[("i1", 250)]).await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "s1",
                "occurred_at": "2026-03-03T08:00:00Z",
                "lines": [{"item_id": "i1", "quantity": 100, "unit_cost_cents": 100}]}),
    )
    .await;
}

async fn till(app: &App) -> Value {
    let list = app.get_ok("/v1/admin/projections", &app.admin).await;
    list["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == TILL)
        .cloned()
        .unwrap()
}

/// Waits until the till projection's view satisfies `done`.
async fn till_until(app: &App, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = till(app).await;
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{what}: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(app: &App, path: &str) -> reqwest::Response {
    app.client
        .post(app.at(path))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_or_parks_its_projection_alone_and_can_be_retried_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let hook = ("TALLY_TEST_POISON_PROJECTION", TILL);
    let mut app = spawn_app_env(dir.path(), &[hook]);
    setup(&app).await;
    sale(&app, "sale-1").await;
    let poison = sale(&app, "poison-1").await;
    let last = sale(&app, "sale-2").await;

    // The default policy: the till projection stops before the event, and says why and where.
    let p = till_until(&app, "the till projection stops", |p| {
        p["status"] == "stopped"
    })
    .await;
    assert_eq!(p["stopped_at"]["position"], json!(poison), "{p}");
    assert!(
        p["stopped_at"]["reason"]
            .as_str()
            .unwrap()
            .contains("planted"),
        "{p}"
    );
    assert!(p["position"].as_u64().unwrap() < poison, "{p}");
    // Nothing else is held up.
    let path = format!("/v1/reports/stores/s1/daily-sales?min_position={last}");
    let day = app.get_ok(&path, &app.admin).await;
    assert_eq!(day["days"][0]["transactions"], json!(3), "{day}");
    let ready = app.get_raw("/readyz", None).await;
    assert_eq!(ready.status(), 200, "the others serve: still ready");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"]["projections"]["stopped"],
        json!([TILL]),
        "{ready}"
    );
    let metrics = app.get_raw("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("tally_projection_stopped{{model=\"{TILL}\"}} 1")),
        "{metrics}"
    );
    let faults = app.get_ok("/v1/admin/projections/faults", &app.admin).await;
    assert_eq!(faults["faults"].as_array().unwrap().len(), 1, "{faults}");
    assert_eq!(faults["faults"][0]["state"], "stopped", "{faults}");

    // Bad asks name what is wrong and change nothing.
    let r = post(
        &app,
        &format!("/v1/admin/projections/{TILL}/faults/abc/retry"),
    )
    .await;
    let problem = expect_problem(r, 422, "a position that is not one").await;
    assert!(problem.to_string().contains("position"), "{problem}");
    let r = post(
        &app,
        &format!("/v1/admin/projections/{TILL}/faults/{last}/retry"),
    )
    .await;
    expect_problem(r, 404, "no fault there").await;
    let r = post(
        &app,
        &format!("/v1/admin/projections/nope/faults/{poison}/skip"),
    )
    .await;
    expect_problem(r, 404, "no such projection").await;

    // A retry with the bug still there: it tries again, and stops again.
    let r = post(
        &app,
        &format!("/v1/admin/projections/{TILL}/faults/{poison}/retry"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let log_before = app.log_text().matches("poison event").count();
    till_until(&app, "stopped again", |p| p["status"] == "stopped").await;
    let deadline = Instant::now() + PATIENCE;
    while app.log_text().matches("poison event").count() <= log_before {
        assert!(Instant::now() < deadline, "the retry tried again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A skip: it goes on without the event, which stays listed as parked.
    let r = post(
        &app,
        &format!("/v1/admin/projections/{TILL}/faults/{poison}/skip"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["was"], "stopped", "{done}");
    let p = till_until(&app, "goes on", |p| {
        p["status"] == "caught_up" && p["position"].as_u64() >= Some(last)
    })
    .await;
    assert_eq!(p["parked"], json!(1), "{p}");
    // Retrying the parked event with the bug still there is refused.
    let r = post(
        &app,
        &format!("/v1/admin/projections/{TILL}/faults/{poison}/retry"),
    )
    .await;
    expect_problem(r, 409, "a parked event that still fails").await;

    // The park policy: the next poison event is parked at once, and the projection goes on.
    app.stop();
    let mut app = spawn_app_env(dir.path(), &[hook, ("TALLY_PARK_POISON", TILL)]);
    let second = sale(&app, "poison-2").await;
    let last = sale(&app, "sale-3").await;
    let p = till_until(&app, "parks and goes on", |p| {
        p["parked"] == json!(2) && p["position"].as_u64() >= Some(last)
    })
    .await;
    assert_eq!(p["status"], "caught_up", "{p}");
    app.stop();

    // With the bug gone (no hook), the operator retries both from the command line.
    let out = run(
        dir.path(),
        &["projections", "parked", "list", "--data-dir", &data],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    for at in [poison, second] {
        let at = at.to_string();
        let out = run(
            dir.path(),
            &[
                "projections",
                "parked",
                "retry",
                TILL,
                &at,
                "--data-dir",
                &data,
            ],
        );
        assert!(out.ok, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("retried"), "{}", out.stdout);
    }
    let out = run(
        dir.path(),
        &["projections", "parked", "list", "--data-dir", &data],
    );
    assert!(out.stdout.contains("no poison events"), "{}", out.stdout);
    let out = run(dir.path(), &["verify", "--data-dir", &data]);
    assert!(
        out.ok,
        "every parked event applied: {}{}",
        out.stdout, out.stderr
    );

    // Without the hook nothing is poison.
    let app = spawn_app(dir.path());
    let last = sale(&app, "poison-3").await;
    till_until(&app, "folds it", |p| p["position"].as_u64() >= Some(last)).await;
    let p = till(&app).await;
    assert_eq!(
        (p["status"].clone(), p["parked"].clone()),
        (json!("caught_up"), json!(0))
    );
}
