//! Hostile HTTP input (RELIABILITY.md, case 7) against a real server: 10,000 headers, a 100 MiB
//! chunked body, `Content-Length` lies, 10,000-deep JSON, lone surrogates and invalid UTF-8, NUL
//! bytes and right-to-left overrides in ids, numbers past 2^53 and past i64, impossible dates,
//! a key in the query string, and `X-Forwarded-For` rotated against the per-address limit. Every
//! answer is a documented 4xx (or the connection is closed), never a 5xx; the server keeps serving;
//! and the log holds not one event more.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{App, error_fields, expect_problem, spawn_app};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &App) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

/// Writes `head` (and then `body`, as far as the server lets it) on a fresh connection; the status
/// line of the answer, or `None` when the server closed without one.
async fn raw(app: &App, head: &[u8], body: &[u8]) -> Option<String> {
    raw_within(app, head, body, Duration::from_secs(30)).await
}

/// [`raw`], waiting at most `patience` for an answer.
async fn raw_within(app: &App, head: &[u8], body: &[u8], patience: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(head).await.ok()?;
    // The server may answer and close before the whole body is in: a write error is fine.
    for chunk in body.chunks(64 * 1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(patience, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

fn status_of(line: &Option<String>) -> Option<u16> {
    line.as_ref()?.split(' ').nth(1)?.parse().ok()
}

fn sale(id: &str, quantity: Value, price: Value) -> Value {
    json!({"sale_id": id, "store_id": "s1",
           "lines": [{"item_id": "i1", "quantity": quantity, "unit_price_cents": price}]})
}

async fn post_raw_body(app: &App, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.at("/v1/sales"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_documented_answer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    app.register("sup", &[("s1", "Europe/Berlin")], &[("i1", 100)])
        .await;
    let head = app.head().await;
    let key = &app.admin;

    // Protocol level.
    let many: String = (0..10_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let line = raw(
        &app,
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        b"",
    )
    .await;
    assert!(
        line.is_none() || status_of(&line) == Some(431) || status_of(&line) == Some(400),
        "10,000 headers: {line:?}"
    );
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "a".repeat(1 << 20));
    let body = chunk.repeat(100).into_bytes();
    let line = raw(
        &app,
        format!(
            "POST /v1/sales HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
        &body,
    )
    .await;
    assert!(
        line.is_none() || status_of(&line) == Some(413),
        "100 MiB chunked: {line:?}"
    );
    // Content-Length longer than the body: the server waits for the rest (no answer within 3 s),
    // and when the client goes away nothing is taken (the log's head is checked at the end).
    let short = serde_json::to_vec(&sale("s-short", json!(1), json!(100))).unwrap();
    let line = raw_within(
        &app,
        format!(
            "POST /v1/sales HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            short.len() + 100
        )
        .as_bytes(),
        &short,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        line.is_none() || status_of(&line).is_some_and(|s| (400..500).contains(&s)),
        "a Content-Length longer than the body: {line:?}"
    );
    // Content-Length shorter than the body: the rest is read as the next request, garbage.
    let line = raw(
        &app,
        format!(
            "POST /v1/sales HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
        )
        .as_bytes(),
        &short,
    )
    .await;
    assert!(
        status_of(&line).is_some_and(|s| (400..500).contains(&s)) || line.is_none(),
        "a Content-Length shorter than the body: {line:?}"
    );

    // JSON that is deep, not UTF-8, or holds lone surrogates.
    // 10,000-deep JSON is valid JSON, but no command: a body must be an object.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let p = expect_problem(
        post_raw_body(&app, deep.into_bytes()).await,
        422,
        "10,000-deep JSON",
    )
    .await;
    assert_eq!(error_fields(&p), ["body"]);
    let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let r = post_raw_body(&app, deep.into_bytes()).await;
    let status = r.status().as_u16();
    assert!(
        status == 400 || status == 422,
        "10,000-deep objects: {status}"
    );
    // Nor is an array that serde could read positionally as the command's fields.
    let positional = br#"["s-pos","s1",[["i1",1,100,0]],null]"#.to_vec();
    let p = expect_problem(
        post_raw_body(&app, positional).await,
        422,
        "a positional array",
    )
    .await;
    assert_eq!(error_fields(&p), ["body"]);
    let mut bad_utf8 = serde_json::to_vec(&sale("s-x", json!(1), json!(100))).unwrap();
    bad_utf8[12] = 0xff;
    expect_problem(post_raw_body(&app, bad_utf8).await, 400, "invalid UTF-8").await;
    let surrogate = br#"{"sale_id":"\ud800","store_id":"s1","lines":[{"item_id":"i1","quantity":1,"unit_price_cents":100}]}"#;
    let r = post_raw_body(&app, surrogate.to_vec()).await;
    let status = r.status().as_u16();
    assert!(status == 400 || status == 422, "a lone surrogate: {status}");

    // Ids with NUL or a right-to-left override, numbers past 2^53 and past i64.
    for (body, field) in [
        (sale("s\u{0}1", json!(1), json!(100)), "sale_id"),
        (sale("s\u{202e}1", json!(1), json!(100)), "sale_id"),
        (
            sale("s-big", json!(9_007_199_254_740_993_i64), json!(100)),
            "lines[0].quantity",
        ),
        (
            sale("s-big", json!(1), json!(9_223_372_036_854_775_808_u64)),
            "lines[0].unit_price_cents",
        ),
        (
            sale("s-big", json!(1), json!(1e300)),
            "lines[0].unit_price_cents",
        ),
    ] {
        let p = expect_problem(
            app.post_raw("/v1/sales", Some(key), &body).await,
            422,
            &body.to_string(),
        )
        .await;
        assert_eq!(error_fields(&p), [field], "{body}");
    }
    // Impossible dates and instants.
    let p = expect_problem(
        app.get_raw(
            "/v1/reports/stores/s1/daily-sales?from=2024-02-30",
            Some(key),
        )
        .await,
        422,
        "2024-02-30",
    )
    .await;
    assert_eq!(error_fields(&p), ["from"]);
    let mut late = sale("s-date", json!(1), json!(100));
    late["occurred_at"] = json!("2024-02-30T10:00:00Z");
    let p = expect_problem(
        app.post_raw("/v1/sales", Some(key), &late).await,
        422,
        "occurred_at",
    )
    .await;
    assert_eq!(error_fields(&p), ["occurred_at"]);

    // A key in the query string is no key.
    for q in [
        format!("api_key={key}"),
        format!("key={key}"),
        format!("access_token={key}"),
    ] {
        let r = app.get_raw(&format!("/v1/inventory/s1?{q}"), None).await;
        expect_problem(r, 401, &q).await;
    }

    // X-Forwarded-For rotated on every request does not escape the per-address limit of
    // requests without a valid key.
    let mut limited = false;
    for i in 0..400 {
        let r = app
            .client
            .get(app.at("/v1/inventory/s1"))
            .header(
                "x-forwarded-for",
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            )
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            429 => {
                limited = true;
                break;
            }
            401 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        limited,
        "rotating X-Forwarded-For escaped the per-address limit"
    );

    // Still serving, and not one event more.
    let h = app.get_raw("/healthz", None).await;
    assert_eq!(h.status(), 200);
    assert_eq!(app.head().await, head, "hostile input appended events");
}
