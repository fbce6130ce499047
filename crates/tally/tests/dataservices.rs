//! Data services end to end (API.md, "Additions", "Data services"): the shipped example queries
//! over W1 checked against figures computed from W1's commands; roles and scopes; hostile
//! parameters; a query cancelled at its time limit; reloads on `POST` and `SIGHUP` (a bad set
//! refused, the old one serving, `/openapi.json` following); `tally queries check` naming the
//! query, file and line of each problem; a server refusing to start with a bad set.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN_KEY, App, error_fields, expect_problem, spawn_app_with};
use jiff::civil::Date;
use serde_json::{Value, json};
use tally_core::workload::{W1, W1Size, w1};
use tally_domain::Command as DomainCommand;

pub fn example_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../queries.example.toml")
}

/// W1 with `sales` sales, sent through `tally load` (which also verifies the books).
pub fn load_w1(app: &App, sales: usize) -> W1 {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "load",
            "--url",
            &app.url,
            "--workload",
            "w1",
            "--connections",
            "8",
        ])
        .args(["--sales", &sales.to_string()])
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("verified=true"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w1(
        42,
        W1Size {
            sales,
            ..W1Size::FULL
        },
    )
}

async fn run(app: &App, name: &str, query: &str) -> Value {
    app.get_ok(&format!("/v1/queries/{name}?{query}"), &app.admin)
        .await
}

fn rows(answer: &Value) -> Vec<Vec<Value>> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect()
}

fn monday(d: Date) -> Date {
    let back = i64::from(d.weekday().to_monday_zero_offset());
    d - jiff::Span::new().days(back)
}

/// Every example query over W1, each against the figures W1's commands imply.
pub async fn examples_match_the_books(app: &App, w: &W1) {
    let books = &w.expected;
    let dates: Vec<Date> = books.store_days.keys().map(|(_, d)| *d).collect();
    let (first, last) = (*dates.iter().min().unwrap(), *dates.iter().max().unwrap());
    let range = format!("from={first}&to={last}");

    // sell_through: per item of one supplier, units delivered (W1's deliveries) and sold.
    let mut supplied: HashMap<String, i64> = HashMap::new();
    for c in &w.commands {
        if let DomainCommand::RecordDelivery {
            supplier_id, lines, ..
        } = c
            && supplier_id.as_str() == "sup-03"
        {
            for l in lines {
                *supplied.entry(l.item_id.to_string()).or_default() += l.quantity.get();
            }
        }
    }
    let mut sold: HashMap<String, i64> = HashMap::new();
    for ((_, item, _), f) in &books.item_days {
        *sold.entry(item.clone()).or_default() += f.units_sold;
    }
    let answer = run(app, "sell_through", &format!("supplier_id=sup-03&{range}")).await;
    let got: HashMap<String, (i64, i64)> = rows(&answer)
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                (r[1].as_i64().unwrap(), r[2].as_i64().unwrap()),
            )
        })
        .collect();
    let want: HashMap<String, (i64, i64)> = supplied
        .iter()
        .map(|(i, u)| (i.clone(), (*u, sold.get(i).copied().unwrap_or(0))))
        .collect();
    assert_eq!(got, want, "sell_through");
    let columns: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["item_id", "units_supplied", "units_sold"]);
    assert_eq!(answer["columns"][1]["type"], "integer");

    // top_items_per_store_week: the first week's top 10 of store-00.
    let week = monday(first);
    let mut units: HashMap<&str, (i64, i64)> = HashMap::new();
    for ((s, i, d), f) in &books.item_days {
        if s == "store-00" && monday(*d) == week {
            let e = units.entry(i.as_str()).or_default();
            e.0 += f.units_sold;
            e.1 += f.net_cents();
        }
    }
    let mut ranked: Vec<(&str, i64, i64)> = units.iter().map(|(i, (u, n))| (*i, *u, *n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(10);
    let answer = run(
        app,
        "top_items_per_store_week",
        &format!("store_id=store-00&week={week}"),
    )
    .await;
    let got: Vec<(String, i64, i64)> = rows(&answer)
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_i64().unwrap(),
                r[2].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64, i64)> = ranked
        .iter()
        .map(|(i, u, n)| ((*i).to_owned(), *u, *n))
        .collect();
    assert_eq!(got, want, "top_items_per_store_week");

    // slow_movers: store-03's items in stock that sold nothing since the last day.
    let since = last;
    let moved: std::collections::HashSet<&str> = books
        .item_days
        .iter()
        .filter(|((s, _, d), f)| s == "store-03" && *d >= since && f.units_sold > 0)
        .map(|((_, i, _), _)| i.as_str())
        .collect();
    let mut want: Vec<(String, i64)> = books
        .stock
        .iter()
        .filter(|((s, i), n)| s == "store-03" && **n > 0 && !moved.contains(i.as_str()))
        .map(|((_, i), n)| (i.clone(), *n))
        .collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let answer = run(
        app,
        "slow_movers",
        &format!("store_id=store-03&since={since}&limit=10000"),
    )
    .await;
    let got: Vec<(String, i64)> = rows(&answer)
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, want, "slow_movers");

    // low_stock_across_stores at its default threshold, 5.
    let mut want: Vec<(String, String, i64)> = books
        .stock
        .iter()
        .filter(|(_, n)| **n <= 5)
        .map(|((s, i), n)| (s.clone(), i.clone(), *n))
        .collect();
    want.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let answer = run(app, "low_stock_across_stores", "limit=10000").await;
    let got: Vec<(String, String, i64)> = rows(&answer)
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "low_stock_across_stores");
    assert!(!got.is_empty(), "W1's scarce items run low");

    // returns_rate_per_item: W1 has no returns, so every item sold has a rate of 0.
    let answer = run(
        app,
        "returns_rate_per_item",
        &format!("{range}&limit=10000"),
    )
    .await;
    let got: BTreeMap<String, (i64, i64, i64)> = rows(&answer)
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                (
                    r[1].as_i64().unwrap(),
                    r[2].as_i64().unwrap(),
                    r[3].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (i64, i64, i64)> = sold
        .iter()
        .filter(|(_, u)| **u > 0)
        .map(|(i, u)| (i.clone(), (*u, 0, 0)))
        .collect();
    assert_eq!(got, want, "returns_rate_per_item");

    // net_sales_per_store_week.
    let mut weeks: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for ((s, d), f) in &books.store_days {
        let e = weeks
            .entry((s.clone(), monday(*d).to_string()))
            .or_default();
        e.0 += f.transactions;
        e.1 += f.net_cents();
    }
    let answer = run(
        app,
        "net_sales_per_store_week",
        &format!("{range}&limit=10000"),
    )
    .await;
    let got: BTreeMap<(String, String), (i64, i64)> = rows(&answer)
        .iter()
        .map(|r| {
            let key = (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            );
            (key, (r[2].as_i64().unwrap(), r[3].as_i64().unwrap()))
        })
        .collect();
    assert_eq!(got, weeks, "net_sales_per_store_week");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_answer_w1s_books_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_file().display().to_string();
    let app = spawn_app_with(dir.path(), &["--config", &config], &[]);
    let w = load_w1(&app, 1500);
    // The read models have caught up with everything `tally load` waited for.
    let head = app.head().await;
    run(
        &app,
        "low_stock_across_stores",
        &format!("min_position={head}"),
    )
    .await;
    examples_match_the_books(&app, &w).await;

    // CSV is the same answer.
    let r = app
        .client
        .get(app.at("/v1/queries/low_stock_across_stores?limit=3"))
        .bearer_auth(&app.admin)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let text = r.text().await.unwrap();
    let json = run(&app, "low_stock_across_stores", "limit=3").await;
    let mut want = String::from("store_id,item_id,on_hand\n");
    for r in rows(&json) {
        want.push_str(&format!(
            "{},{},{}\n",
            r[0].as_str().unwrap(),
            r[1].as_str().unwrap(),
            r[2]
        ));
    }
    assert_eq!(text, want);
    assert_eq!(json["truncated"], true);
    assert_eq!(rows(&json).len(), 3);
}

/// A configuration of a few queries written to `dir/name.toml`; its path.
fn config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const SCOPED: &str = r#"
[[queries]]
name = "store_stock"
description = "One store's stock"
roles = ["admin", "store"]
scope_param = "store_id"
sql = "select item_id, on_hand from inventory where store_id = :store_id order by item_id"
[[queries.params]]
name = "store_id"
type = "id"

[[queries]]
name = "echo"
description = "Says back what it is given"
roles = ["admin", "analyst"]
sql = "select :s as s, :n as n, :d as d, :t as t, :b as b"
[[queries.params]]
name = "s"
type = "string"
[[queries.params]]
name = "n"
type = "integer"
default = 7
[[queries.params]]
name = "d"
type = "date"
required = false
[[queries.params]]
name = "t"
type = "timestamp"
required = false
[[queries.params]]
name = "b"
type = "boolean"
default = false

[[queries]]
name = "forever"
description = "Counts for a very long time"
roles = ["admin"]
timeout_ms = 300
sql = "with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000000000) select count(*) from n"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_scopes_hostile_input_and_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "tally.toml", SCOPED);
    let app = spawn_app_with(dir.path(), &["--config", &path], &[]);
    app.run_ok(
        "/v1/suppliers",
        &json!({"supplier_id": "acme", "name": "Acme"}),
    )
    .await;
    for s in ["s1", "s2"] {
        app.run_ok(
            "/v1/stores",
            &json!({"store_id": s, "name": s, "timezone": "Europe/Paris"}),
        )
        .await;
    }
    app.run_ok(
        "/v1/items",
        &json!({"item_id": "a1", "name": "a1", "supplier_id": "acme", "unit_price_cents": 100}),
    )
    .await;
    let position = app
        .run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": "d1", "supplier_id": "acme", "store_id": "s1",
                    "occurred_at": "2026-03-10T09:00:00Z",
                    "lines": [{"item_id": "a1", "quantity": 10, "unit_cost_cents": 50}]}),
        )
        .await;

    let s1 = app.create_key("store", Some("s1")).await;
    let analyst = app.create_key("analyst", None).await;
    let supplier = app.create_key("supplier", Some("acme")).await;

    // The list shows what each key may call.
    let names = |v: Value| -> Vec<String> {
        v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(app.get_ok("/v1/queries", &app.admin).await),
        ["store_stock", "echo", "forever"]
    );
    assert_eq!(names(app.get_ok("/v1/queries", &s1).await), ["store_stock"]);
    assert_eq!(names(app.get_ok("/v1/queries", &analyst).await), ["echo"]);
    assert!(names(app.get_ok("/v1/queries", &supplier).await).is_empty());
    let listed = app.get_ok("/v1/queries", &app.admin).await;
    assert_eq!(
        listed["queries"][1]["params"][1],
        json!({"name": "n", "type": "integer", "required": false, "default": "7"})
    );

    // A store key: its own store by default and by name; another store's is 403.
    let own = app
        .get_ok(
            &format!("/v1/queries/store_stock?min_position={position}"),
            &s1,
        )
        .await;
    assert_eq!(own["rows"], json!([["a1", 10]]));
    assert!(own["position"].as_u64().unwrap() >= position);
    let (status, _) = app.get("/v1/queries/store_stock?store_id=s1", &s1).await;
    assert_eq!(status, 200);
    let r = app
        .get_raw("/v1/queries/store_stock?store_id=s2", Some(&s1))
        .await;
    expect_problem(r, 403, "another store's").await;
    let r = app.get_raw("/v1/queries/echo?s=x", Some(&s1)).await;
    expect_problem(r, 403, "a role not listed").await;
    let r = app
        .get_raw("/v1/queries/store_stock", Some(&supplier))
        .await;
    expect_problem(r, 403, "a role not listed").await;
    let r = app.get_raw("/v1/queries/nope", Some(&app.admin)).await;
    expect_problem(r, 404, "an unknown query").await;
    let r = app.get_raw("/v1/queries/echo?s=x", None).await;
    expect_problem(r, 401, "no key").await;

    // Hostile values come back as literals, or are refused naming the parameter; nothing changes.
    let before = app.head().await;
    for hostile in [
        "' OR 1=1 --",
        "1; drop table events",
        "x'); delete from rm_inventory; --",
    ] {
        let encoded: String = form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
        let answer = app
            .get_ok(&format!("/v1/queries/echo?s={encoded}"), &analyst)
            .await;
        assert_eq!(answer["rows"][0][0], hostile);
        assert_eq!(answer["rows"][0][1], 7, "the default");
    }
    // Over 4 KiB (a 100 KiB value is refused by the string type too: `dataservices::tests`).
    let big = "x".repeat(5 * 1024);
    for (query, field) in [
        (format!("s={big}"), "s"),
        ("s=a%00b".to_owned(), "s"),
        ("s=a&n=1;drop".to_owned(), "n"),
        ("s=a&d=yesterday".to_owned(), "d"),
        ("s=a&t=2026-03-10".to_owned(), "t"),
        ("s=a&b=yes".to_owned(), "b"),
        ("n=1".to_owned(), "s"),
        ("s=a&x=1".to_owned(), "x"),
        ("s=a&limit=0".to_owned(), "limit"),
        ("s=a&limit=10001".to_owned(), "limit"),
        ("s=a&min_position=-1".to_owned(), "min_position"),
    ] {
        let r = app
            .get_raw(&format!("/v1/queries/echo?{query}"), Some(&analyst))
            .await;
        let problem = expect_problem(r, 422, &query[..query.len().min(40)]).await;
        assert_eq!(
            error_fields(&problem),
            [field],
            "{}",
            &query[..query.len().min(40)]
        );
    }
    let answer = app
        .get_ok(
            "/v1/queries/echo?s=a&n=-3&d=2026-03-10&t=2026-03-10T10:00:00%2B01:00&b=true",
            &analyst,
        )
        .await;
    assert_eq!(
        answer["rows"][0],
        json!(["a", -3, "2026-03-10", "2026-03-10T09:00:00.000000Z", 1])
    );
    assert_eq!(app.head().await, before, "nothing written");
    let own = app.get_ok("/v1/queries/store_stock", &s1).await;
    assert_eq!(own["rows"], json!([["a1", 10]]), "nothing deleted");

    // Past its time limit a query is cancelled: 503, and the server goes on.
    let r = app.get_raw("/v1/queries/forever", Some(&app.admin)).await;
    let problem = expect_problem(r, 503, "a query past its time limit").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("300 ms"),
        "{problem}"
    );
    assert_eq!(
        app.get_ok("/v1/queries/echo?s=ok", &analyst).await["rows"][0][0],
        "ok"
    );
    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tally_query_calls_total{query=\"forever\",outcome=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_query_duration_seconds_count{query=\"echo\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_query_rows_total{query=\"store_stock\"}"),
        "{metrics}"
    );
}

fn openapi_paths(doc: &Value) -> Vec<String> {
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("/v1/queries/") && !k.contains('{'))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_swap_valid_sets_and_refuse_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).unwrap();
    let one = "[[queries]]\nname = \"one\"\nroles = [\"admin\"]\nsql = \"select 1 as one\"\n";
    std::fs::write(queries.join("a.toml"), one).unwrap();
    let qdir = queries.display().to_string();
    let mut app = spawn_app_with(dir.path(), &["--queries-dir", &qdir], &[]);
    let doc = app.get_ok("/openapi.json", &app.admin).await;
    assert_eq!(openapi_paths(&doc), ["/v1/queries/one"]);
    assert_eq!(
        doc["paths"]["/v1/queries/one"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["properties"]["rows"]["items"]["prefixItems"][0]["title"],
        "one"
    );

    // A valid set swaps in at once; /openapi.json follows.
    let two = "[[queries]]\nname = \"two\"\nroles = [\"admin\"]\nsql = \"select 2 as two\"\n";
    std::fs::write(queries.join("b.toml"), two).unwrap();
    let (status, body) = app
        .post("/v1/admin/queries/reload", &app.admin, &json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), body["queries"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    assert_eq!(
        app.get_ok("/v1/queries/two", &app.admin).await["rows"],
        json!([[2]])
    );
    let doc = app.get_ok("/openapi.json", &app.admin).await;
    assert_eq!(openapi_paths(&doc), ["/v1/queries/one", "/v1/queries/two"]);

    // An invalid set is refused with its reasons; the old one keeps serving.
    let bad =
        "[[queries]]\nname = \"three\"\nroles = [\"admin\"]\nsql = \"select * from api_keys\"\n";
    std::fs::write(queries.join("c.toml"), bad).unwrap();
    let r = app
        .post_raw("/v1/admin/queries/reload", Some(&app.admin), &json!({}))
        .await;
    let problem = expect_problem(r, 422, "a bad set").await;
    let text = problem.to_string();
    assert!(
        text.contains("three") && text.contains("c.toml:1") && text.contains("api_keys"),
        "{text}"
    );
    assert_eq!(
        app.get_ok("/v1/queries/two", &app.admin).await["rows"],
        json!([[2]])
    );
    let r = app.get_raw("/v1/queries/three", Some(&app.admin)).await;
    expect_problem(r, 404, "not served").await;
    let analyst = app.create_key("analyst", None).await;
    let r = app
        .post_raw("/v1/admin/queries/reload", Some(&analyst), &json!({}))
        .await;
    expect_problem(r, 403, "reload is for admins").await;

    // SIGHUP reloads too.
    std::fs::remove_file(queries.join("c.toml")).unwrap();
    std::fs::remove_file(queries.join("a.toml")).unwrap();
    let pid = app.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut gone = false;
    for _ in 0..100 {
        let r = app.get_raw("/v1/queries/one", Some(&app.admin)).await;
        if r.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "SIGHUP reloaded the set: {}", app.log_text());
    assert_eq!(
        app.get_ok("/v1/queries/two", &app.admin).await["rows"],
        json!([[2]])
    );
    app.stop();
}

#[test]
fn check_names_each_problem_and_serve_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[[queries]]
name = "fine"
roles = ["admin"]
sql = "select store_id from stores"

[[queries]]
name = "writes"
roles = ["admin"]
sql = "delete from inventory"

[[queries]]
name = "secret"
roles = ["admin"]
sql = "select * from api_keys"

[[queries]]
name = "two"
roles = ["admin"]
sql = "select 1; select 2"

[[queries]]
name = "unplaced"
roles = ["admin"]
sql = "select * from inventory where store_id = :store"

[[queries]]
name = "unused"
roles = ["admin"]
sql = "select 1"
[[queries.params]]
name = "p"
type = "id"

[[queries]]
name = "typed"
roles = ["admin"]
sql = "select :p"
[[queries.params]]
name = "p"
type = "float"

[[queries]]
name = "nocolumn"
roles = ["admin"]
sql = "select nope from inventory"
"#;
    let path = config(dir.path(), "tally.toml", text);
    let data = dir.path().join("data").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["queries", "check", "--config", &path, "--data-dir", &data])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (name, what) in [
        ("writes", "not a SELECT"),
        ("secret", "api_keys"),
        ("two", "more than one statement"),
        ("unplaced", "placeholder :store has no parameter"),
        ("unused", "has no placeholder :p"),
        ("typed", "unknown type"),
        ("nocolumn", "nope"),
    ] {
        // The line of the query's [[queries]] header: the one before its name.
        let line = text
            .lines()
            .position(|l| l == format!("name = \"{name}\""))
            .unwrap();
        let wanted = format!("query {name} ({path}:{line}): ");
        let found = stdout.lines().find(|l| l.contains(&wanted));
        assert!(
            found.is_some_and(|l| l.contains(what)),
            "{name}: {what}\n{stdout}"
        );
    }
    assert!(!stdout.contains("query fine"), "{stdout}");

    // The same set stops a server from starting, naming the problems.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--config",
            &path,
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("query secret"), "{stderr}");

    // A good set checks clean.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["queries", "check", "--data-dir", &data])
        .args(["--config", &example_file().display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("6 queries checked, none refused"),
        "{stdout}"
    );
}

/// Every view whole, in key order, as a named query each (beside the examples).
#[cfg(feature = "postgres")]
const VIEW_DUMPS: &[(&str, &str)] = &[
    ("suppliers", "supplier_id"),
    ("stores", "store_id"),
    ("items", "item_id"),
    ("inventory", "store_id, item_id"),
    ("store_daily_sales", "store_id, date"),
    ("supplier_daily", "supplier_id, date"),
    ("item_daily_sales", "store_id, item_id, date"),
    (
        "supplier_item_daily",
        "supplier_id, item_id, store_id, date",
    ),
];

/// The examples and a dump of every view, over the same W1 on SQLite and on PostgreSQL: the same
/// answers, column types included, and on PostgreSQL the examples match the books too.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_the_same_over_the_same_w1() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(example_file()).unwrap();
    for (view, key) in VIEW_DUMPS {
        text.push_str(&format!(
            "\n[[queries]]\nname = \"dump_{view}\"\nroles = [\"admin\"]\nsql = \"select * from {view} order by {key}\"\n"
        ));
    }
    text.push_str("\n[[queries]]\nname = \"dump_event_types\"\nroles = [\"admin\"]\nsql = \"select type, schema_version, count(*) as n from events group by type, schema_version order by type\"\n");
    let path = config(dir.path(), "both.toml", &text);
    let sqlite_dir = dir.path().join("sqlite");
    std::fs::create_dir(&sqlite_dir).unwrap();
    let sqlite = spawn_app_with(&sqlite_dir, &["--config", &path], &[]);
    let db = common::Schema::new("dataservices");
    let pg = common::spawn_role_env(
        dir.path(),
        "pg",
        "all",
        &db.url,
        &db.name,
        &[("TALLY_CONFIG", path.as_str())],
    );
    let w = load_w1(&sqlite, 1500);
    load_w1(&pg, 1500);
    for app in [&sqlite, &pg] {
        let head = app.head().await;
        run(app, "dump_suppliers", &format!("min_position={head}")).await;
    }
    examples_match_the_books(&pg, &w).await;
    let listed = sqlite.get_ok("/v1/queries", &sqlite.admin).await;
    let mut compared = 0;
    for q in listed["queries"].as_array().unwrap() {
        let name = q["name"].as_str().unwrap();
        let query = match name {
            "sell_through" => "supplier_id=sup-01&from=2026-01-01&to=2027-12-31",
            "top_items_per_store_week" | "slow_movers" => {
                "store_id=store-07&week=2026-11-02&since=2026-11-06"
            }
            "returns_rate_per_item" | "net_sales_per_store_week" => "from=2026-01-01&to=2027-12-31",
            _ => "",
        };
        let query = match name {
            "top_items_per_store_week" => query.replace("&since=2026-11-06", ""),
            "slow_movers" => query.replace("&week=2026-11-02", ""),
            _ => query.to_owned(),
        };
        let a = run(&sqlite, name, &format!("{query}&limit=10000")).await;
        let b = run(&pg, name, &format!("{query}&limit=10000")).await;
        assert_eq!(a["columns"], b["columns"], "{name}: columns");
        assert_eq!(a["rows"], b["rows"], "{name}: rows");
        // The larger views' dumps stop at 10,000 rows of their key order, on both alike.
        assert_eq!(a["truncated"], b["truncated"], "{name}");
        assert!(!rows(&a).is_empty(), "{name} answers rows");
        compared += 1;
    }
    assert_eq!(compared, 6 + VIEW_DUMPS.len() + 1);
}
