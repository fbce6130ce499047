//! SIGKILL mid-flight: clients post sales, deliveries and adjustments concurrently; the server dies;
//! after a restart on the same data dir every command that got a 202 has exactly one outcome, and the
//! inventory is what the processed commands imply, never negative.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{App, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const STORES: [&str; 2] = ["north", "south"];
const ITEMS: [&str; 5] = ["i1", "i2", "i3", "i4", "i5"];
const TASKS: usize = 6;
const INITIAL: i64 = 30;

/// One request a client task made: what it sent, and the command id if it got a 202.
#[derive(Clone, Debug)]
struct Sent {
    path: &'static str,
    body: Value,
    idempotency_key: String,
    command_id: Option<String>,
}

/// A small deterministic generator (xorshift64*) per task.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

fn command(rng: &mut Rng, task: usize, n: usize) -> (&'static str, Value) {
    let store = rng.pick(&STORES);
    match rng.below(4) {
        0 | 1 => {
            let first = rng.below(ITEMS.len() as u64) as usize;
            let count = 1 + rng.below(2) as usize;
            let lines: Vec<Value> = (0..count)
                .map(|k| {
                    json!({"item_id": ITEMS[(first + k) % ITEMS.len()], "quantity": 1 + rng.below(3),
                           "unit_price_cents": 100})
                })
                .collect();
            (
                "/v1/sales",
                json!({"sale_id": format!("s-{task}-{n}"), "store_id": store, "lines": lines}),
            )
        }
        2 => (
            "/v1/deliveries",
            json!({"delivery_id": format!("d-{task}-{n}"), "supplier_id": "acme", "store_id": store,
                   "lines": [{"item_id": rng.pick(&ITEMS), "quantity": 1 + rng.below(10),
                              "unit_cost_cents": 60}]}),
        ),
        _ => {
            let delta = rng.below(7) as i64 - 3;
            (
                "/v1/stock-adjustments",
                json!({"adjustment_id": format!("a-{task}-{n}"), "store_id": store,
                       "item_id": rng.pick(&ITEMS), "delta": if delta == 0 { 1 } else { delta },
                       "reason": "count_correction"}),
            )
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    sent: &Sent,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let r = client
        .post(format!("{url}{}", sent.path))
        .bearer_auth(key)
        .header("idempotency-key", &sent.idempotency_key)
        .json(&sent.body)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Posts commands until the server stops answering; returns every request it made.
async fn client_task(url: String, key: String, task: usize, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let client = reqwest::Client::new();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1 ^ ((task as u64 + 1) * 0x9E37_79B9));
    let mut sent = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) && n > 0 {
            break;
        }
        let (path, body) = command(&mut rng, task, n);
        let mut s = Sent {
            path,
            body,
            idempotency_key: format!("crash-{task}-{n}"),
            command_id: None,
        };
        match post(&client, &url, &key, &s).await {
            Ok((StatusCode::ACCEPTED, body)) => {
                // A 202 whose body was cut off by the kill counts as an unknown answer.
                s.command_id = body["command_id"].as_str().map(str::to_owned);
                sent.push(s);
            }
            Ok((status, body)) if status.as_u16() == 429 || status.is_server_error() => {
                // Shed or failing: not a 202, so maybe not durable; resolved after the restart.
                let _ = body;
                sent.push(s);
            }
            Ok((status, body)) => panic!("task {task}: {} {}: {status} {body}", s.path, s.body),
            Err(_) => {
                // The server died under this request: it may or may not be durable.
                sent.push(s);
                break;
            }
        }
    }
    sent
}

async fn setup(app: &App) {
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "acme", "name": "Acme"}),
    )
    .await;
    for (store, tz) in STORES.iter().zip(["Europe/Berlin", "Asia/Tokyo"]) {
        app.run_ok(
            "/v1/stores",
            &json!({"store_id": store, "name": store, "timezone": tz}),
        )
        .await;
    }
    for item in ITEMS {
        app.run_ok(
            "/v1/items",
            &json!({"item_id": item, "name": item, "supplier_id": "acme", "unit_price_cents": 100}),
        )
        .await;
    }
    for store in STORES {
        let lines: Vec<Value> = ITEMS
            .iter()
            .map(|i| json!({"item_id": i, "quantity": INITIAL, "unit_cost_cents": 60}))
            .collect();
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("initial-{store}"), "supplier_id": "acme",
                    "store_id": store, "lines": lines}),
        )
        .await;
    }
}

/// The change in stock a processed command makes, per (store, item).
fn effect(path: &str, body: &Value, stock: &mut BTreeMap<(String, String), i64>) {
    let store = body["store_id"].as_str().unwrap().to_owned();
    let mut add = |item: &Value, n: i64| {
        *stock
            .entry((store.clone(), item.as_str().unwrap().to_owned()))
            .or_default() += n;
    };
    match path {
        "/v1/sales" => {
            for l in body["lines"].as_array().unwrap() {
                add(&l["item_id"], -l["quantity"].as_i64().unwrap());
            }
        }
        "/v1/deliveries" => {
            for l in body["lines"].as_array().unwrap() {
                add(&l["item_id"], l["quantity"].as_i64().unwrap());
            }
        }
        "/v1/stock-adjustments" => add(&body["item_id"], body["delta"].as_i64().unwrap()),
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    setup(&app).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            tokio::spawn(client_task(
                app.url.clone(),
                app.admin.clone(),
                t,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    let accepted_before = sent.iter().filter(|s| s.command_id.is_some()).count();
    assert!(
        accepted_before > 0,
        "some commands were accepted before the kill"
    );

    let unknown = sent.len() - accepted_before;
    let app = spawn_app(dir.path());
    // Each request whose answer was lost is sent again with its Idempotency-Key: if the first try was
    // durable this is its command, else a new one. Either way it has one command id now.
    for s in sent.iter_mut().filter(|s| s.command_id.is_none()) {
        let (status, body) = post(&app.client, &app.url, &app.admin, s).await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "retry of {}: {body}", s.body);
        s.command_id = Some(body["command_id"].as_str().unwrap().to_owned());
    }
    // A retry of a request that did get its 202 answers the same command.
    for s in sent.iter().filter(|s| s.command_id.is_some()).step_by(25) {
        let (status, body) = post(&app.client, &app.url, &app.admin, s).await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            body["command_id"].as_str(),
            s.command_id.as_deref(),
            "same key, same command"
        );
    }

    // Every command has exactly one outcome.
    let mut stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for store in STORES {
        for item in ITEMS {
            stock.insert((store.to_owned(), item.to_owned()), INITIAL);
        }
    }
    let mut processed: HashMap<String, u64> = HashMap::new();
    let mut rejected = HashSet::new();
    let mut last = 0;
    for s in &sent {
        let id = s.command_id.clone().unwrap();
        let outcome = app.wait(&id).await;
        match outcome["status"].as_str() {
            Some("processed") => {
                let position = outcome["position"].as_u64().unwrap();
                last = last.max(position);
                assert!(
                    processed.insert(id, position).is_none(),
                    "one command id per request"
                );
                effect(s.path, &s.body, &mut stock);
            }
            Some("rejected") => {
                let code = outcome["rejection"]["code"].as_str().unwrap();
                assert_eq!(
                    code, "insufficient_stock",
                    "{} {}: {outcome}",
                    s.path, s.body
                );
                assert!(rejected.insert(id), "one command id per request");
            }
            _ => panic!("{outcome}"),
        }
    }
    eprintln!(
        "{} requests: {accepted_before} answered 202 before the kill, {unknown} retried; \
         {} processed, {} rejected",
        sent.len(),
        processed.len(),
        rejected.len()
    );
    assert!(
        processed.len() > rejected.len(),
        "most commands succeed: {} processed, {} rejected",
        processed.len(),
        rejected.len()
    );

    // A processed command's effect is in the log once; a rejected one wrote nothing.
    let events = app.all_events().await;
    let mut per_command: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *per_command
            .entry(e["metadata"]["command_id"].as_str().unwrap())
            .or_default() += 1;
    }
    for (id, position) in &processed {
        assert_eq!(
            per_command.get(id.as_str()),
            Some(&1),
            "command {id}: one event"
        );
        let at = events
            .iter()
            .find(|e| e["position"] == json!(position))
            .unwrap_or_else(|| panic!("event at {position}"));
        assert_eq!(at["metadata"]["command_id"], json!(id));
    }
    for id in &rejected {
        assert!(
            !per_command.contains_key(id.as_str()),
            "rejected {id} wrote nothing"
        );
    }

    // The inventory is what the processed commands imply, and never negative.
    for store in STORES {
        let answer = app
            .get_ok(
                &format!("/v1/inventory/{store}?min_position={last}"),
                &app.admin,
            )
            .await;
        let got: BTreeMap<String, i64> = answer["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["item_id"].as_str().unwrap().to_owned(),
                    r["on_hand"].as_i64().unwrap(),
                )
            })
            .collect();
        for item in ITEMS {
            let want = stock[&(store.to_owned(), item.to_owned())];
            assert!(
                want >= 0,
                "the processed commands never take {store}/{item} below zero"
            );
            assert_eq!(
                got.get(item).copied().unwrap_or(0),
                want,
                "{store}/{item}: {answer}"
            );
        }
    }
    let (status, _) = json_of(app.get_raw("/readyz", None).await).await;
    assert_eq!(status, StatusCode::OK);
    let mut app = app;
    app.stop();
}
