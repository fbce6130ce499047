//! Every rule under "Conventions" in API.md: a bad request gets a 4xx problem+json at once, naming the
//! field, and enqueues nothing. Random bytes never make a 5xx.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, error_fields, expect_problem, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STOCK: i64 = 100;

async fn setup(app: &App) {
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "acme", "name": "Acme"}),
    )
    .await;
    app.run_ok(
        "/v1/stores",
        &json!({"store_id": "la", "name": "LA", "timezone": "America/Los_Angeles"}),
    )
    .await;
    app.run_ok(
        "/v1/items",
        &json!({"item_id": "a1", "name": "A1", "supplier_id": "acme", "unit_price_cents": 250}),
    )
    .await;
    app.run_ok(
        "/v1/deliveries",
        &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "la",
                "lines": [{"item_id": "a1", "quantity": STOCK, "unit_cost_cents": 100}]}),
    )
    .await;
}

/// A sale that would be processed if it were accepted: any event it made would show.
fn sale_with(id: &str, lines: Value) -> Value {
    json!({"sale_id": id, "store_id": "la", "occurred_at": "2026-03-10T12:00:00Z", "lines": lines})
}

fn sale_line(quantity: Value, price: Value) -> Value {
    json!([{"item_id": "a1", "quantity": quantity, "unit_price_cents": price}])
}

fn adjustment(delta: Value, reason: &str) -> Value {
    json!({"adjustment_id": "adj-bad", "store_id": "la", "item_id": "a1", "delta": delta,
           "reason": reason})
}

/// (what, path, body, the field `errors` must name)
fn invalid_commands() -> Vec<(String, &'static str, Value, &'static str)> {
    let good_line = sale_line(json!(1), json!(250));
    let mut cases: Vec<(String, &'static str, Value, &'static str)> = Vec::new();
    let long = "x".repeat(65);
    for bad_id in [
        "",
        long.as_str(),
        "-abc",
        ".abc",
        "_abc",
        "a b",
        "café",
        "a/b",
        "a\u{0}b",
    ] {
        cases.push((
            format!("sale_id {bad_id:?}"),
            "/v1/sales",
            sale_with(bad_id, good_line.clone()),
            "sale_id",
        ));
        cases.push((
            format!("supplier_id {bad_id:?}"),
            "/v1/suppliers",
            json!({"supplier_id": bad_id, "name": "x"}),
            "supplier_id",
        ));
    }
    cases.push((
        "store_id with a space".into(),
        "/v1/stores",
        json!({"store_id": "new store", "name": "x", "timezone": "Asia/Tokyo"}),
        "store_id",
    ));
    cases.push((
        "item_id of 65 characters".into(),
        "/v1/items",
        json!({"item_id": long, "name": "x", "supplier_id": "acme", "unit_price_cents": 1}),
        "item_id",
    ));
    cases.push((
        "delivery_id leading dash".into(),
        "/v1/deliveries",
        json!({"delivery_id": "-d2", "supplier_id": "acme", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 1, "unit_cost_cents": 1}]}),
        "delivery_id",
    ));
    cases.push((
        "adjustment_id non-ASCII".into(),
        "/v1/stock-adjustments",
        json!({"adjustment_id": "adj-ü", "store_id": "la", "item_id": "a1", "delta": 1, "reason": "other"}),
        "adjustment_id",
    ));
    cases.push((
        "return_id empty".into(),
        "/v1/returns",
        json!({"return_id": "", "sale_id": "s1", "store_id": "la", "lines": [{"item_id": "a1", "quantity": 1}]}),
        "return_id",
    ));
    // Money.
    cases.push((
        "negative price".into(),
        "/v1/sales",
        sale_with("s-m1", sale_line(json!(1), json!(-1))),
        "unit_price_cents",
    ));
    cases.push((
        "price over 10^12".into(),
        "/v1/sales",
        sale_with("s-m2", sale_line(json!(1), json!(1_000_000_000_001_i64))),
        "unit_price_cents",
    ));
    cases.push((
        "item price over 10^12".into(),
        "/v1/items",
        json!({"item_id": "i-rich", "name": "x", "supplier_id": "acme", "unit_price_cents": 1_000_000_000_001_i64}),
        "unit_price_cents",
    ));
    cases.push((
        "negative unit cost".into(),
        "/v1/deliveries",
        json!({"delivery_id": "d-m", "supplier_id": "acme", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 1, "unit_cost_cents": -5}]}),
        "unit_cost_cents",
    ));
    cases.push((
        "price as a float".into(),
        "/v1/sales",
        sale_with("s-m3", sale_line(json!(1), json!(2.5))),
        "unit_price_cents",
    ));
    // Quantities.
    for (what, q) in [
        ("0", json!(0)),
        ("1000001", json!(1_000_001)),
        ("1.5", json!(1.5)),
        ("-1", json!(-1)),
        ("a string", json!("3")),
    ] {
        cases.push((
            format!("quantity {what}"),
            "/v1/sales",
            sale_with("s-q", sale_line(q.clone(), json!(250))),
            "quantity",
        ));
        cases.push((
            format!("return quantity {what}"),
            "/v1/returns",
            json!({"return_id": "r-q", "sale_id": "s1", "store_id": "la", "lines": [{"item_id": "a1", "quantity": q}]}),
            "quantity",
        ));
    }
    cases.push((
        "delivery quantity 0".into(),
        "/v1/deliveries",
        json!({"delivery_id": "d-q", "supplier_id": "acme", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 0, "unit_cost_cents": 1}]}),
        "quantity",
    ));
    // Lines.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"item_id": format!("i{i}"), "quantity": 1, "unit_price_cents": 1}))
        .collect();
    cases.push((
        "1001 lines".into(),
        "/v1/sales",
        sale_with("s-l1", json!(many)),
        "lines",
    ));
    cases.push((
        "no lines".into(),
        "/v1/sales",
        sale_with("s-l2", json!([])),
        "lines",
    ));
    let twice = json!([{"item_id": "a1", "quantity": 1, "unit_price_cents": 250},
                      {"item_id": "a1", "quantity": 2, "unit_price_cents": 250}]);
    cases.push((
        "repeated item".into(),
        "/v1/sales",
        sale_with("s-l3", twice),
        "lines",
    ));
    cases.push((
        "repeated item in a delivery".into(),
        "/v1/deliveries",
        json!({"delivery_id": "d-l", "supplier_id": "acme", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 1, "unit_cost_cents": 1},
                         {"item_id": "a1", "quantity": 1, "unit_cost_cents": 1}]}),
        "lines",
    ));
    cases.push((
        "repeated item in a return".into(),
        "/v1/returns",
        json!({"return_id": "r-l", "sale_id": "s1", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 1}, {"item_id": "a1", "quantity": 1}]}),
        "lines",
    ));
    // Adjustments.
    for (what, delta) in [
        ("0", json!(0)),
        ("1000001", json!(1_000_001)),
        ("-1000001", json!(-1_000_001)),
        ("0.5", json!(0.5)),
    ] {
        cases.push((
            format!("delta {what}"),
            "/v1/stock-adjustments",
            adjustment(delta, "damage"),
            "delta",
        ));
    }
    for reason in ["vandalism", "", "Damage"] {
        cases.push((
            format!("reason {reason:?}"),
            "/v1/stock-adjustments",
            adjustment(json!(5), reason),
            "reason",
        ));
    }
    // Times and zones.
    for at in [
        "2026-03-10T12:00:00",
        "2026-03-10",
        "yesterday",
        "2026-13-10T12:00:00Z",
        "",
    ] {
        let mut body = sale_with("s-t", sale_line(json!(1), json!(250)));
        body["occurred_at"] = json!(at);
        cases.push((
            format!("occurred_at {at:?}"),
            "/v1/sales",
            body,
            "occurred_at",
        ));
    }
    for tz in ["Mars/Olympus", "", "UTC+3", "Europe/Nowhere"] {
        cases.push((
            format!("timezone {tz:?}"),
            "/v1/stores",
            json!({"store_id": "new-store", "name": "x", "timezone": tz}),
            "timezone",
        ));
    }
    // Missing fields.
    cases.push((
        "no store_id".into(),
        "/v1/sales",
        json!({"sale_id": "s-n", "lines": good_line}),
        "store_id",
    ));
    cases.push((
        "no timezone".into(),
        "/v1/stores",
        json!({"store_id": "new-store", "name": "x"}),
        "timezone",
    ));
    cases
}

/// After a refused request with Idempotency-Key K, a fresh request with K and another body must be
/// accepted: had the refused one been enqueued, K would be taken (409).
async fn probe_key_is_free(app: &App, key: &str) -> String {
    let r = app
        .client
        .post(app.at("/v1/suppliers"))
        .bearer_auth(&app.admin)
        .header("idempotency-key", key)
        .json(&json!({"supplier_id": "acme", "name": format!("probe {key}")}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "Idempotency-Key {key} is unused after a refused request: {body}"
    );
    body["command_id"].as_str().unwrap().to_owned()
}

async fn post_bytes(
    app: &App,
    path: &str,
    content_type: Option<&str>,
    idempotency: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut rb = app
        .client
        .post(app.at(path))
        .bearer_auth(&app.admin)
        .body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    if let Some(k) = idempotency {
        rb = rb.header("idempotency-key", k);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;

    // The edges that are allowed, so the refusals below are about the rule and nothing else.
    let id64 = format!("s{}", "9".repeat(63));
    app.run_ok(
        "/v1/sales",
        &sale_with(&id64, sale_line(json!(1), json!(0))),
    )
    .await;
    app.run_ok(
        "/v1/items",
        &json!({"item_id": "A.b_c-9", "name": "rich", "supplier_id": "acme", "unit_price_cents": 1_000_000_000_000_i64}),
    )
    .await;
    app.run_ok(
        "/v1/stock-adjustments",
        &json!({"adjustment_id": "adj-max", "store_id": "la", "item_id": "a1", "delta": 1_000_000, "reason": "count_correction"}),
    )
    .await;
    app.run_ok(
        "/v1/stock-adjustments",
        &json!({"adjustment_id": "adj-min", "store_id": "la", "item_id": "a1", "delta": -1_000_000, "reason": "count_correction"}),
    )
    .await;
    let big = sale_with("s-max", sale_line(json!(1_000_000), json!(1)));
    app.run_rejected("/v1/sales", &big, "insufficient_stock")
        .await;
    let stock = STOCK - 1;
    let head = app.head().await;

    let mut probes = Vec::new();
    // Validation answers whose `errors` do not name the field: reported together at the end, after
    // the checks that nothing was enqueued.
    let mut misnamed: Vec<String> = Vec::new();
    let mut n = 0;
    let mut next_key = || {
        n += 1;
        format!("bad-{n}")
    };

    // Malformed JSON: 400.
    for raw in [
        &b"{\"sale_id\": \"s1\","[..],
        b"not json",
        b"",
        b"{\"sale_id\": }",
        b"{\"sale_id\": \"s1\", \"lines\": [}",
    ] {
        let key = next_key();
        let r = post_bytes(
            &app,
            "/v1/sales",
            Some("application/json"),
            Some(key.as_str()),
            raw.to_vec(),
        )
        .await;
        expect_problem(
            r,
            400,
            &format!("malformed JSON {:?}", String::from_utf8_lossy(raw)),
        )
        .await;
        probes.push(probe_key_is_free(&app, &key).await);
    }

    // Shape errors: 422 naming the field.
    for (what, path, body, field) in invalid_commands() {
        let key = next_key();
        let raw = serde_json::to_vec(&body).unwrap();
        let r = post_bytes(
            &app,
            path,
            Some("application/json"),
            Some(key.as_str()),
            raw,
        )
        .await;
        let problem = expect_problem(r, 422, &what).await;
        if !error_fields(&problem).iter().any(|f| f.contains(field)) {
            misnamed.push(format!("{what}: errors should name {field}: {problem}"));
        }
        probes.push(probe_key_is_free(&app, &key).await);
    }

    // A bad id in the path of a void.
    for bad in ["-s1", "a%20b", &"v".repeat(65)] {
        let key = next_key();
        let r = post_bytes(
            &app,
            &format!("/v1/sales/{bad}/void"),
            Some("application/json"),
            Some(key.as_str()),
            br#"{"reason":"x"}"#.to_vec(),
        )
        .await;
        let problem = expect_problem(r, 422, &format!("void of sale {bad:?}")).await;
        assert!(
            error_fields(&problem).iter().any(|f| f.contains("sale_id")),
            "{problem}"
        );
        probes.push(probe_key_is_free(&app, &key).await);
    }

    // Over 1 MiB: 413.
    let mut body = sale_with("s-huge", sale_line(json!(1), json!(250)));
    body["padding"] = json!("p".repeat(1024 * 1024 + 10));
    let key = next_key();
    let r = post_bytes(
        &app,
        "/v1/sales",
        Some("application/json"),
        Some(key.as_str()),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    expect_problem(r, 413, "a body over 1 MiB").await;
    probes.push(probe_key_is_free(&app, &key).await);

    // Not JSON: 415.
    let good = serde_json::to_vec(&sale_with("s-ct", sale_line(json!(1), json!(250)))).unwrap();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let key = next_key();
        let r = post_bytes(&app, "/v1/sales", ct, Some(key.as_str()), good.clone()).await;
        expect_problem(r, 415, &format!("content type {ct:?}")).await;
        probes.push(probe_key_is_free(&app, &key).await);
    }

    // A bad Idempotency-Key: 422.
    for key in [
        "k".repeat(129),
        "has space".to_owned(),
        String::new(),
        "tab\tkey".to_owned(),
    ] {
        let r = post_bytes(
            &app,
            "/v1/sales",
            Some("application/json"),
            Some(key.as_str()),
            good.clone(),
        )
        .await;
        let problem = expect_problem(r, 422, &format!("Idempotency-Key {key:?}")).await;
        assert!(
            error_fields(&problem)
                .iter()
                .any(|f| f.eq_ignore_ascii_case("idempotency-key")),
            "{problem}"
        );
    }
    let key128 = "k".repeat(128);
    let r = post_bytes(
        &app,
        "/v1/sales",
        Some("application/json"),
        Some(key128.as_str()),
        b"{".to_vec(),
    )
    .await;
    expect_problem(r, 400, "a 128-character key is fine; the body is not").await;

    // Bad query parameters: 422 naming the parameter.
    let some_command = probes[0].clone();
    for (path, field) in [
        (
            format!("/v1/commands/{some_command}?wait_ms=30001"),
            "wait_ms",
        ),
        (format!("/v1/commands/{some_command}?wait_ms=-1"), "wait_ms"),
        (
            format!("/v1/commands/{some_command}?wait_ms=soon"),
            "wait_ms",
        ),
        ("/v1/reports/daily-sales?date=2026-13-01".into(), "date"),
        ("/v1/reports/daily-sales".into(), "date"),
        (
            "/v1/reports/stores/la/daily-sales?from=yesterday".into(),
            "from",
        ),
        (
            "/v1/reports/suppliers/acme/daily?to=2026-02-30".into(),
            "to",
        ),
        ("/v1/inventory/la?min_position=-3".into(), "min_position"),
        ("/v1/events?limit=0".into(), "limit"),
        ("/v1/events?limit=1001".into(), "limit"),
        ("/v1/events?after=x".into(), "after"),
    ] {
        let problem = expect_problem(app.get_raw(&path, Some(&app.admin)).await, 422, &path).await;
        if !error_fields(&problem).iter().any(|f| f.contains(field)) {
            misnamed.push(format!("{path}: errors should name {field}: {problem}"));
        }
    }

    // The probes were accepted (so no refused request held its key) and are rejected as duplicates.
    for id in &probes {
        let outcome = app.wait(id).await;
        assert_eq!(outcome["rejection"]["code"], "duplicate_id", "{outcome}");
    }
    // Nothing happened: no event, no stock moved.
    assert_eq!(app.head().await, head, "no refused request wrote an event");
    let item = app
        .get_ok(
            &format!("/v1/inventory/la/items/a1?min_position={head}"),
            &app.admin,
        )
        .await;
    assert_eq!(item["on_hand"], json!(stock), "{item}");
    app.stop();
    assert!(
        misnamed.is_empty(),
        "{} validation answers do not name the field:\n{}",
        misnamed.len(),
        misnamed.join("\n")
    );
}

/// A body that is not one JSON document is malformed (400), also when the part before the syntax
/// error already has the wrong shape: a truncated array, a document with trailing bytes.
#[tokio::test]
async fn malformed_json_is_400_even_after_a_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    for raw in [
        &b"{\"a\":1}{}"[..],
        b"{\"supplier_id\":\"acme\"} x",
        b"[1,2",
        b"{\"supplier_id\": 5,",
    ] {
        let r = post_bytes(
            &app,
            "/v1/suppliers",
            Some("application/json"),
            None,
            raw.to_vec(),
        )
        .await;
        expect_problem(r, 400, &format!("{:?}", String::from_utf8_lossy(raw))).await;
    }
    app.stop();
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[tokio::test]
async fn random_garbage_never_makes_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;
    let paths = [
        "/v1/suppliers",
        "/v1/stores",
        "/v1/items",
        "/v1/deliveries",
        "/v1/sales",
        "/v1/sales/s1/void",
        "/v1/returns",
        "/v1/stock-adjustments",
        "/v1/admin/api-keys",
    ];
    let templates = [
        sale_with("s-fuzz", sale_line(json!(1), json!(250))),
        adjustment(json!(1), "other"),
        json!({"store_id": "st", "name": "x", "timezone": "Europe/Berlin"}),
        json!({"delivery_id": "d", "supplier_id": "acme", "store_id": "la",
               "lines": [{"item_id": "a1", "quantity": 1, "unit_cost_cents": 1}]}),
        json!({"role": "store", "scope": "la"}),
    ];
    let content_types = [
        Some("application/json"),
        Some("text/plain"),
        None,
        Some("application/json; charset=utf-8"),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let path = paths[rng.below(paths.len())];
        let body: Vec<u8> = if round % 2 == 0 {
            // Pure noise.
            let len = rng.below(600);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // A valid body with a few bytes flipped or cut.
            let mut b = serde_json::to_vec(&templates[rng.below(templates.len())]).unwrap();
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                b.truncate(rng.below(b.len()));
            }
            b
        };
        let ct = content_types[rng.below(content_types.len())];
        let r = post_bytes(&app, path, ct, None, body.clone()).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            !status.is_server_error(),
            "round {round}: POST {path} ({ct:?}) {:?} -> {status} {text}",
            String::from_utf8_lossy(&body)
        );
    }
    // Garbage in paths and query strings too.
    for round in 0..100 {
        let noise: String = (0..rng.below(40))
            .map(|_| {
                let c = b"abc-_.%20%ff%00?&=/0123456789"[rng.below(29)];
                c as char
            })
            .collect();
        for path in [
            format!("/v1/inventory/{noise}"),
            format!("/v1/reports/daily-sales?date={noise}"),
            format!("/v1/reports/stores/la/daily-sales?from={noise}"),
            format!("/v1/commands/{noise}?wait_ms=1"),
            format!("/v1/events?after={noise}"),
        ] {
            let r = app.get_raw(&path, Some(&app.admin)).await;
            let status = r.status();
            assert!(
                !status.is_server_error(),
                "round {round}: GET {path} -> {status}"
            );
        }
    }
    let (status, _) = json_of(app.get_raw("/healthz", None).await).await;
    assert_eq!(status, StatusCode::OK, "still up");
    app.stop();
}
