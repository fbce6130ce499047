//! Operations over real HTTP: `/metrics` (every metric listed from start-up; counters, positions and
//! lags after a scenario), `/readyz`'s body, `X-Request-Id` from the request to the events it causes,
//! and JSON access logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{App, json_of, spawn_app, spawn_app_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every metric the issue asks for; a scrape of a fresh server lists each (API.md).
const METRICS: &[(&str, &str)] = &[
    ("tally_http_requests_total", "counter"),
    ("tally_http_request_duration_seconds", "histogram"),
    ("tally_http_rate_limited_total", "counter"),
    ("tally_http_shed_total", "counter"),
    ("tally_commands_accepted_total", "counter"),
    ("tally_commands_processed_total", "counter"),
    ("tally_commands_rejected_total", "counter"),
    ("tally_queue_depth", "gauge"),
    ("tally_processor_batch_size", "histogram"),
    ("tally_processor_append_duration_seconds", "histogram"),
    ("tally_event_log_head", "gauge"),
    ("tally_projection_position", "gauge"),
    ("tally_projection_lag_events", "gauge"),
    ("tally_projection_lag_seconds", "gauge"),
];

const MODELS: [&str; 6] = [
    "inventory",
    "store_daily_sales",
    "supplier_daily",
    "reference",
    "till_daily_sales",
    "item_daily_sales",
];

/// One scrape: `(name, labels)` → value.
struct Scrape {
    text: String,
    series: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let value: f64 = value.parse().expect("a sample value is a number");
            let (name, labels) = match key.find('{') {
                None => (key.to_owned(), BTreeMap::new()),
                Some(i) => (key[..i].to_owned(), labels(&key[i + 1..key.len() - 1])),
            };
            series.insert((name, labels), value);
        }
        Self { text, series }
    }

    /// The value of the series with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.series.get(&(name.to_owned(), labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    /// The sum over every series of `name` whose labels include these.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// `k="v",k2="v2"` (values here hold no escaped quotes, but may hold braces and commas).
fn labels(raw: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = raw;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_owned();
        let after = &rest[eq + 2..];
        let end = after.find('"').expect("a closing quote");
        out.insert(key, after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

async fn scrape(app: &App) -> Scrape {
    let r = app.get_raw("/metrics", None).await;
    assert_eq!(r.status(), StatusCode::OK, "/metrics needs no key");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    Scrape::parse(r.text().await.unwrap())
}

#[tokio::test]
async fn a_fresh_server_lists_every_metric_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let m = scrape(&app).await;
    for (name, kind) in METRICS {
        assert!(
            m.text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) is listed from start-up:\n{}",
            m.text
        );
        assert!(
            m.text.contains(&format!("# HELP {name} ")),
            "{name} is described"
        );
    }
    for kind in ["register_supplier", "record_sale", "adjust_stock"] {
        assert_eq!(
            m.value("tally_commands_accepted_total", &[("type", kind)]),
            0.0
        );
        assert_eq!(
            m.value("tally_commands_processed_total", &[("type", kind)]),
            0.0
        );
    }
    assert_eq!(
        m.value(
            "tally_commands_rejected_total",
            &[("type", "record_sale"), ("reason", "insufficient_stock")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "tally_http_requests_total",
            &[
                ("route", "/v1/sales"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        0.0,
        "documented answers are listed at zero"
    );
    assert_eq!(m.value("tally_queue_depth", &[]), 0.0);
    assert_eq!(m.value("tally_event_log_head", &[]), 0.0);
    for model in MODELS {
        for gauge in [
            "tally_projection_position",
            "tally_projection_lag_events",
            "tally_projection_lag_seconds",
        ] {
            assert_eq!(m.value(gauge, &[("model", model)]), 0.0, "{gauge} {model}");
        }
    }
    assert_eq!(
        m.value("tally_http_rate_limited_total", &[("scope", "key")]),
        0.0
    );
    assert_eq!(
        m.value("tally_http_shed_total", &[("reason", "queue_depth")]),
        0.0
    );
    app.stop();
}

#[tokio::test]
async fn after_a_scenario_the_counters_and_lags_hold_the_expected_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "acme", "name": "Acme"}),
    )
    .await;
    app.run_ok(
        "/v1/stores",
        &json!({"store_id": "ber", "name": "Mitte", "timezone": "Europe/Berlin"}),
    )
    .await;
    app.run_ok(
        "/v1/items",
        &json!({"item_id": "coffee", "name": "Coffee", "supplier_id": "acme", "unit_price_cents": 1299}),
    )
    .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d-1", "supplier_id": "acme", "store_id": "ber",
            "lines": [{"item_id": "coffee", "quantity": 10, "unit_cost_cents": 700}]}),
    )
    .await;
    let sale = |id: &str, quantity: u32| {
        json!({"sale_id": id, "store_id": "ber",
            "lines": [{"item_id": "coffee", "quantity": quantity, "unit_price_cents": 1299}]})
    };
    app.run_ok("/v1/sales", &sale("s-1", 3)).await;
    app.run_ok("/v1/sales", &sale("s-2", 4)).await;
    app.run_rejected("/v1/sales", &sale("s-3", 50), "insufficient_stock")
        .await;
    // Refused at the door: counted by status, never accepted.
    let (status, _) = app.post("/v1/sales", &app.admin, &sale("s-4", 0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post_raw("/v1/sales", None, &sale("s-5", 1)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/v1/no-such-thing", &app.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let head = app.head().await;
    assert!(head >= 6, "head {head}");

    // The read models catch up, and the queue is emptied once the last batch is acked.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = scrape(&app).await;
        let caught_up = MODELS.iter().all(|model| {
            m.get("tally_projection_position", &[("model", model)]) == Some(head as f64)
        });
        if caught_up && m.get("tally_queue_depth", &[]) == Some(0.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for model in MODELS {
        assert_eq!(
            m.value("tally_projection_lag_events", &[("model", model)]),
            0.0
        );
        assert_eq!(
            m.value("tally_projection_lag_seconds", &[("model", model)]),
            0.0
        );
    }
    assert_eq!(m.value("tally_event_log_head", &[]), head as f64);

    let accepted = |kind| m.value("tally_commands_accepted_total", &[("type", kind)]);
    let processed = |kind| m.value("tally_commands_processed_total", &[("type", kind)]);
    for kind in [
        "register_supplier",
        "register_store",
        "register_item",
        "record_delivery",
    ] {
        assert_eq!(accepted(kind), 1.0, "{kind}");
        assert_eq!(processed(kind), 1.0, "{kind}");
    }
    assert_eq!(accepted("record_sale"), 3.0);
    assert_eq!(processed("record_sale"), 2.0);
    assert_eq!(accepted("void_sale"), 0.0);
    assert_eq!(
        m.value(
            "tally_commands_rejected_total",
            &[("type", "record_sale"), ("reason", "insufficient_stock")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("tally_commands_rejected_total", &[]),
        1.0,
        "nothing else was rejected"
    );

    let requests = |route, method, status| {
        m.value(
            "tally_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("/v1/sales", "POST", "202"), 3.0);
    assert_eq!(requests("/v1/sales", "POST", "422"), 1.0);
    assert_eq!(requests("/v1/sales", "POST", "401"), 1.0);
    assert_eq!(requests("/v1/suppliers", "POST", "202"), 1.0);
    assert_eq!(requests("unmatched", "GET", "404"), 1.0);
    assert!(requests("/v1/commands/{command_id}", "GET", "200") >= 7.0);
    assert_eq!(
        m.value(
            "tally_http_request_duration_seconds_count",
            &[("route", "/v1/sales"), ("method", "POST")]
        ),
        5.0,
        "every answered sale request is timed"
    );

    // Seven commands were decided, in batches; each batch was appended at least once.
    let batches = m.value("tally_processor_batch_size_count", &[]);
    let commands = m.value("tally_processor_batch_size_sum", &[]);
    assert!(batches >= 1.0, "{batches}");
    assert_eq!(commands, 7.0, "every command was taken from the queue once");
    assert!(m.value("tally_processor_append_duration_seconds_count", &[]) >= batches);
    app.stop();
}

#[tokio::test]
async fn admin_projections_say_where_each_read_model_stands() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let position = app
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = app.get_ok("/v1/admin/projections", &app.admin).await;
        let statuses: Vec<&Value> = body["projections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["status"])
            .collect();
        if statuses.iter().all(|s| **s == json!("caught_up")) {
            break body;
        }
        assert!(Instant::now() < deadline, "never caught up: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["head"], json!(position), "{body}");
    let projections = body["projections"].as_array().unwrap();
    let names: Vec<&str> = projections
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, MODELS, "{body}");
    for p in projections {
        assert_eq!(
            (&p["position"], &p["lag_events"], &p["lag_seconds"]),
            (&json!(position), &json!(0), &json!(0.0)),
            "{body}"
        );
    }
    // Operators only.
    let store = app.create_key("store", Some("s1")).await;
    let (status, _) = app.get("/v1/admin/projections", &store).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let r = app.get_raw("/v1/admin/projections", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.stop();
}

#[tokio::test]
async fn readyz_says_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let position = app
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = json_of(app.get_raw("/readyz", None).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["checks"]["projections"]["lag_events"] == json!(0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "projections never caught up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "ready", "{body}");
    let checks = &body["checks"];
    assert_eq!(
        checks["store"],
        json!({"ok": true, "head": position}),
        "{body}"
    );
    assert_eq!(checks["queue"]["ok"], json!(true), "{body}");
    assert!(checks["queue"]["depth"].is_u64(), "{body}");
    assert_eq!(checks["server"], json!({"ok": true}), "{body}");
    let projections = &checks["projections"];
    assert_eq!(projections["ok"], json!(true), "{body}");
    assert_eq!(projections["lag_seconds"], json!(0.0), "{body}");
    let models = projections["models"].as_array().expect("models");
    let names: Vec<&str> = models.iter().filter_map(|m| m["model"].as_str()).collect();
    assert_eq!(names, MODELS, "{body}");
    for m in models {
        assert_eq!(m["position"], json!(position), "{body}");
        assert_eq!(m["lag_events"], json!(0), "{body}");
    }
    app.stop();
}

/// Posts a supplier with these `X-Request-Id` values; returns the response's id and the command id.
async fn post_with_request_id(app: &App, ids: &[&str], supplier: &str) -> (String, String) {
    let mut rb = app
        .client
        .post(app.at("/v1/suppliers"))
        .bearer_auth(&app.admin)
        .json(&json!({"supplier_id": supplier, "name": "Someone"}));
    for id in ids {
        rb = rb.header("x-request-id", *id);
    }
    let r = rb.send().await.unwrap();
    let echoed: Vec<String> = r
        .headers()
        .get_all("x-request-id")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(echoed.len(), 1, "one X-Request-Id comes back: {echoed:?}");
    (
        echoed[0].clone(),
        body["command_id"].as_str().unwrap().to_owned(),
    )
}

/// The correlation id in the metadata of the events a command caused (each must carry it).
async fn correlation_of(app: &App, command_id: &str) -> String {
    app.wait(command_id).await;
    let events: Vec<Value> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["metadata"]["command_id"] == json!(command_id))
        .collect();
    assert!(!events.is_empty(), "command {command_id} caused events");
    let ids: Vec<&Value> = events
        .iter()
        .map(|e| &e["metadata"]["correlation_id"])
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{events:?}");
    ids[0].as_str().expect("a correlation id").to_owned()
}

#[tokio::test]
async fn the_request_id_comes_back_and_is_the_events_correlation_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());

    let (echoed, command) = post_with_request_id(&app, &["abc-123"], "s1").await;
    assert_eq!(echoed, "abc-123");
    assert_eq!(correlation_of(&app, &command).await, "abc-123");

    let (made, command) = post_with_request_id(&app, &[], "s2").await;
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "a fresh id: {made}");
    assert_eq!(correlation_of(&app, &command).await, made);

    let long = "x".repeat(129);
    let insane: [(&[&str], &str); 3] = [
        (&[long.as_str()], "s-long"),
        (&["has spaces"], "s-space"),
        (&["one", "two"], "s-twice"),
    ];
    for (ids, supplier) in insane {
        let (fresh, command) = post_with_request_id(&app, ids, supplier).await;
        assert!(
            uuid::Uuid::parse_str(&fresh).is_ok(),
            "{ids:?} is replaced by a fresh id, got {fresh}"
        );
        assert_eq!(correlation_of(&app, &command).await, fresh);
    }
    app.stop();
}

#[tokio::test]
async fn json_logs_carry_the_request_span_status_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    // Access lines are off by default (a line per request is ≈10 % of the CPU at 10k requests/s);
    // `TALLY_LOG=info` turns them on.
    let mut app = spawn_app_env(
        dir.path(),
        &[("TALLY_LOG_FORMAT", "json"), ("TALLY_LOG", "info")],
    );
    let (_, command) = post_with_request_id(&app, &["log-test-7"], "acme").await;
    app.wait(&command).await;
    app.stop();
    let log = app.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "tally_http::access" && l["span"]["request_id"] == "log-test-7")
        .unwrap_or_else(|| panic!("no access line for the request in:\n{log}"));
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(access["span"]["method"], "POST", "{access}");
    assert_eq!(access["span"]["path"], "/v1/suppliers", "{access}");
    assert_eq!(access["fields"]["status"], json!(202), "{access}");
    assert!(access["fields"]["latency_us"].is_u64(), "{access}");
}

/// With one process per role on PostgreSQL, each counts what it does itself, and the processes that
/// serve no API still serve `/metrics` and `/readyz`.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn each_role_serves_its_own_metrics() {
    use common::{Schema, spawn_role};
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("ops_metrics");
    db.migrate_with_cli(dir.path());
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    let mut gateway = spawn_role(dir.path(), "gateway", "gateway", url, schema);
    let mut processor = spawn_role(dir.path(), "processor", "processor", url, schema);
    let mut projector = spawn_role(dir.path(), "projector", "projector", url, schema);
    let position = gateway
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme"}),
        )
        .await;

    let g = scrape(&gateway).await;
    assert_eq!(
        g.value(
            "tally_commands_accepted_total",
            &[("type", "register_supplier")]
        ),
        1.0
    );
    assert_eq!(
        g.value(
            "tally_commands_processed_total",
            &[("type", "register_supplier")]
        ),
        0.0,
        "the gateway decides nothing"
    );
    let p = scrape(&processor).await;
    assert_eq!(
        p.value(
            "tally_commands_processed_total",
            &[("type", "register_supplier")]
        ),
        1.0
    );
    assert_eq!(
        p.value(
            "tally_commands_accepted_total",
            &[("type", "register_supplier")]
        ),
        0.0
    );
    assert!(p.value("tally_processor_append_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        p.value(
            "tally_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        0.0,
        "a scrape is counted once it is answered"
    );
    // Every process sees the shared log and read models.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&projector).await;
        if MODELS.iter().all(|model| {
            m.get("tally_projection_position", &[("model", model)]) == Some(position as f64)
        }) {
            assert_eq!(m.value("tally_event_log_head", &[]), position as f64);
            break;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for app in [&processor, &projector] {
        let (status, body) = json_of(app.get_raw("/readyz", None).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["checks"]["store"]["head"], json!(position), "{body}");
    }
    gateway.stop();
    processor.stop();
    projector.stop();
}
