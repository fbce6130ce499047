//! Exactly one effect under contention (RELIABILITY.md, case 6, on the embedded default): the same
//! idempotency key from 16 clients at once, for 200 keys; the same business id (a sale id) from 16
//! clients at once, for 200 ids; and an oversell race, 64 concurrent sales of 1 against a stock of
//! 10. Each outcome is checked from the books (the log, the command statuses, the inventory), not
//! from logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{App, json_of, spawn_app};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENTS: usize = 16;
const IDS: usize = 200;
/// Requests in flight at once (each of the 16 copies of a request among them).
const IN_FLIGHT: usize = 64;

fn sale(id: &str, store: &str) -> Value {
    json!({"sale_id": id, "store_id": store,
           "lines": [{"item_id": "i1", "quantity": 1, "unit_price_cents": 100}]})
}

/// Posts every (idempotency key, body) at once, `IN_FLIGHT` at a time; the answers in order.
async fn post_all(
    app: &Arc<App>,
    requests: Vec<(Option<String>, Value)>,
) -> Vec<(StatusCode, Value)> {
    futures_util::stream::iter(requests.into_iter().map(|(key, body)| {
        let app = app.clone();
        async move {
            let mut r = app
                .client
                .post(app.at("/v1/sales"))
                .bearer_auth(&app.admin)
                .json(&body);
            if let Some(k) = key {
                r = r.header("idempotency-key", k);
            }
            json_of(r.send().await.unwrap()).await
        }
    }))
    .buffered(IN_FLIGHT)
    .collect()
    .await
}

/// The sale ids of every SaleRecorded event in the log, with how often each occurs.
async fn recorded_sales(app: &App) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in app.all_events().await {
        if e["type"] == "SaleRecorded" {
            *out.entry(e["data"]["sale_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    out
}

async fn setup(app: &App) {
    app.register("sup", &[("big", "UTC"), ("small", "UTC")], &[("i1", 100)])
        .await;
    for (store, quantity) in [("big", 1_000_000), ("small", 10)] {
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("d-{store}"), "supplier_id": "sup", "store_id": store,
                    "lines": [{"item_id": "i1", "quantity": quantity, "unit_cost_cents": 50}]}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_never_makes_two_effects_of_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(spawn_app(dir.path()));
    setup(&app).await;

    // 1. The same idempotency key and body from 16 clients at once, for 200 keys: one command
    //    each, every client answered 202 with that command's id.
    let mut requests = Vec::new();
    // Key by key, so that a key's 16 copies are in flight together.
    for i in 0..IDS {
        for _ in 0..CLIENTS {
            requests.push((Some(format!("idem-{i}")), sale(&format!("si-{i}"), "big")));
        }
    }
    let answers = post_all(&app, requests).await;
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((status, body), n) in answers.iter().zip(0..) {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        let key = format!("idem-{}", n / CLIENTS);
        ids.entry(key)
            .or_default()
            .insert(body["command_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), IDS);
    for (key, commands) in &ids {
        assert_eq!(
            commands.len(),
            1,
            "{key} made {} commands: {commands:?}",
            commands.len()
        );
    }

    // 2. The same sale id from 16 clients at once (no idempotency key: 16 commands), for 200 ids:
    //    one is processed, fifteen rejected as duplicates, for every id.
    let mut requests = Vec::new();
    for i in 0..IDS {
        for _ in 0..CLIENTS {
            requests.push((None, sale(&format!("sd-{i}"), "big")));
        }
    }
    let answers = post_all(&app, requests).await;
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let statuses: Vec<Value> = futures_util::stream::iter(answers.iter().map(|(status, body)| {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        let app = app.clone();
        let id = body["command_id"].as_str().unwrap().to_owned();
        async move { app.wait(&id).await }
    }))
    .buffered(IN_FLIGHT)
    .collect()
    .await;
    for (status, n) in statuses.iter().zip(0..) {
        let outcome = match status["status"].as_str().unwrap() {
            "processed" => "processed".to_owned(),
            _ => status["rejection"]["code"].as_str().unwrap().to_owned(),
        };
        outcomes
            .entry(format!("sd-{}", n / CLIENTS))
            .or_default()
            .push(outcome);
    }
    for (sale, o) in &outcomes {
        let processed = o.iter().filter(|x| *x == "processed").count();
        let duplicates = o.iter().filter(|x| *x == "duplicate_id").count();
        assert_eq!((processed, duplicates), (1, CLIENTS - 1), "{sale}: {o:?}");
    }

    // 3. An oversell race: 64 sales of 1 at once against a stock of 10.
    let requests = (0..64)
        .map(|i| (None, sale(&format!("so-{i}"), "small")))
        .collect();
    let answers = post_all(&app, requests).await;
    let mut processed = 0;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        let outcome = app.wait(body["command_id"].as_str().unwrap()).await;
        match outcome["status"].as_str().unwrap() {
            "processed" => processed += 1,
            _ => assert_eq!(
                outcome["rejection"]["code"], "insufficient_stock",
                "{outcome}"
            ),
        }
    }
    assert_eq!(processed, 10, "exactly the stock was sold");
    let head = app.head().await;
    let stock = app
        .get_ok(
            &format!("/v1/inventory/small/items/i1?min_position={head}"),
            &app.admin,
        )
        .await;
    assert_eq!(stock["on_hand"], 0, "{stock}");

    // The log agrees: each idempotent sale and each contended sale id recorded exactly once,
    // and ten of the oversold ones.
    let recorded = recorded_sales(&app).await;
    for i in 0..IDS {
        assert_eq!(recorded.get(&format!("si-{i}")), Some(&1), "si-{i}");
        assert_eq!(recorded.get(&format!("sd-{i}")), Some(&1), "sd-{i}");
    }
    assert_eq!(recorded.keys().filter(|k| k.starts_with("so-")).count(), 10);
    assert!(recorded.values().all(|n| *n == 1), "no sale recorded twice");
}

/// The oversell race on PostgreSQL with two processors beside one gateway: 64 sales of 1 at once
/// against a stock of 10 sell exactly 10, whichever processor holds the store's partition (a lease
/// may move between them mid-race; a decision is appended only against the stream version it read).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversell_race_across_two_processors_sells_exactly_the_stock() {
    use common::{Schema, spawn_role};
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("oversell");
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    let gateway = Arc::new(spawn_role(dir.path(), "gateway", "gateway", url, schema));
    let _one = spawn_role(dir.path(), "processor-1", "processor", url, schema);
    let _two = spawn_role(dir.path(), "processor-2", "processor", url, schema);
    setup(&gateway).await;
    let requests = (0..64)
        .map(|i| (None, sale(&format!("so-{i}"), "small")))
        .collect();
    let answers = post_all(&gateway, requests).await;
    let mut outcomes = BTreeMap::<String, usize>::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        let o = gateway.wait(body["command_id"].as_str().unwrap()).await;
        let what = match o["status"].as_str().unwrap() {
            "processed" => "processed".to_owned(),
            _ => o["rejection"]["code"].as_str().unwrap().to_owned(),
        };
        *outcomes.entry(what).or_default() += 1;
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("insufficient_stock".to_owned(), 54),
            ("processed".to_owned(), 10)
        ])
    );
    let recorded = recorded_sales(&gateway).await;
    assert_eq!(recorded.keys().filter(|k| k.starts_with("so-")).count(), 10);
    assert!(recorded.values().all(|n| *n == 1), "no sale recorded twice");
}
