//! The dashboard (`GET /`) in a real headless Chromium, driven over WebDriver by Debian's
//! chromedriver: signing in with a key, the charts carrying a known scenario's figures, a sale
//! posted through the API reaching the ticker and the chart within 2 s, the time-travel control
//! changing the figures, a day's history naming its events, the supplier, queries and admin views,
//! and a store key seeing only its own store. Screenshots of each view are kept in
//! `target/tmp/dashboard-screenshots/` (CI keeps them as artifacts).
//!
//! Behind the `browser` feature: `cargo test -p tally --features browser --test dashboard`.
#![cfg(feature = "browser")]
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{App, spawn_app_with};
use serde_json::{Value, json};
use webdriver::Browser;

const SOON: Duration = Duration::from_secs(10);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

/// One supplier, three stores in zones on both sides of the date line, two items; 100 of each
/// item delivered to each store; one sale per store today.
async fn scenario(app: &App) {
    let stores = [
        ("north", "America/Los_Angeles"),
        ("east", "Asia/Tokyo"),
        ("kiwi", "Pacific/Auckland"),
    ];
    app.register("orchard", &stores, &[("apple", 250), ("pear", 400)])
        .await;
    for (store, _) in stores {
        app.run_ok(
            "/v1/deliveries",
            &json!({"delivery_id": format!("d-{store}"), "supplier_id": "orchard", "store_id": store,
                    "lines": [{"item_id": "apple", "quantity": 100, "unit_cost_cents": 100},
                              {"item_id": "pear", "quantity": 100, "unit_cost_cents": 150}]}),
        )
        .await;
    }
    for (store, lines) in [
        (
            "north",
            json!([{"item_id": "apple", "quantity": 2, "unit_price_cents": 250}]),
        ),
        (
            "east",
            json!([{"item_id": "pear", "quantity": 3, "unit_price_cents": 400}]),
        ),
        (
            "kiwi",
            json!([{"item_id": "apple", "quantity": 1, "unit_price_cents": 250},
                   {"item_id": "pear", "quantity": 1, "unit_price_cents": 400}]),
        ),
    ] {
        app.run_ok(
            "/v1/sales",
            &json!({"sale_id": format!("s-{store}-1"), "store_id": store, "lines": lines}),
        )
        .await;
    }
}

/// The figure a chart's mark carries.
async fn bar(b: &Browser, chart: &str, key: &str) -> Value {
    b.run(&format!(
        "const r = document.querySelector('svg[data-chart=\"{chart}\"] rect[data-key=\"{key}\"]'); \
         return r ? Number(r.dataset.value) : null;"
    ))
    .await
}

async fn sign_in(b: &Browser, app: &App, key: &str) {
    b.goto(&format!("{}/", app.url)).await;
    let input = b.wait_for("#key", SOON).await;
    // Typed and submitted with the Enter key, as a keyboard user would.
    b.type_into(&input, &format!("{key}\u{E007}")).await;
    b.wait_for("#app:not([hidden]) #who .role", SOON).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_books_live_as_of_and_only_what_a_key_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../queries.example.toml"),
        queries.join("example.toml"),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let app = spawn_app_with(
        &data,
        &["--queries-dir", &queries.display().to_string()],
        &[],
    );
    scenario(&app).await;
    let store_key = app.create_key("store", Some("east")).await;
    let b = Browser::start().await;
    let out = shots();

    // Signing in: the key goes to session storage, never to a cookie or the URL.
    sign_in(&b, &app, &app.admin).await;
    b.wait_until(
        "the overview's bars",
        "return document.querySelectorAll('svg[data-chart=\"today\"] rect').length === 3",
        SOON,
    )
    .await;
    assert_eq!(bar(&b, "today", "north").await, json!(500));
    assert_eq!(bar(&b, "today", "east").await, json!(1200));
    assert_eq!(bar(&b, "today", "kiwi").await, json!(650));
    let kept = b
        .run("return [sessionStorage.getItem('tally.key'), document.cookie, location.href]")
        .await;
    assert_eq!(kept[0], json!(app.admin), "{kept}");
    assert_eq!(kept[1], json!(""), "no cookie: {kept}");
    assert!(!kept[2].as_str().unwrap().contains(&app.admin), "{kept}");
    // The 30-day trend ends today with the chain's total.
    let total_today = b
        .run("const c = [...document.querySelectorAll('svg[data-chart=\"trend\"] g[data-key=\"all\"] circle')]; \
              return c.length ? [c.length, Number(c[c.length - 1].dataset.value)] : null;")
        .await;
    assert_eq!(total_today, json!([30, 2350]));
    b.screenshot(&out, "1-overview").await;

    // Keyboard: the skip link is the page's first stop; from it, Tab reaches the brand, then the
    // views in order, and Enter on a view's link opens it.
    let first = b
        .run("const f = [...document.querySelectorAll('a[href], button, input')].find(e => e.offsetParent !== null || e.classList.contains('skip')); \
              return f.textContent.trim()")
        .await;
    assert_eq!(first, json!("Skip to the content"));
    b.run("document.querySelector('.skip').focus(); return true")
        .await;
    b.press("\u{E004}\u{E004}\u{E004}").await;
    let focused = b
        .run("return document.activeElement.getAttribute('href')")
        .await;
    assert_eq!(
        focused,
        json!("#/stores"),
        "Tab order: skip link, brand, Overview, Stores"
    );
    b.press("\u{E007}").await;
    b.wait_until(
        "the stores view by keyboard",
        "return location.hash === '#/stores'",
        SOON,
    )
    .await;
    b.goto(&format!("{}/#/overview", app.url)).await;
    b.wait_for("svg[data-chart=\"today\"] rect[data-key=\"north\"]", SOON)
        .await;

    // Before the late sale: the instant the time-travel control will go back to.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A sale through the API reaches the ticker and the chart within 2 s of its 202.
    let id = app
        .submit(
            "/v1/sales",
            &json!({"sale_id": "s-north-2", "store_id": "north",
                    "lines": [{"item_id": "apple", "quantity": 4, "unit_price_cents": 250}]}),
        )
        .await;
    let accepted = Instant::now();
    let position = app.wait(&id).await["position"].as_u64().unwrap();
    b.wait_until(
        "the sale in the ticker",
        &format!("return !!document.querySelector('#ticker-list li[data-position=\"{position}\"][data-type=\"SaleRecorded\"]')"),
        Duration::from_secs(2).saturating_sub(accepted.elapsed()),
    )
    .await;
    b.wait_until(
        "the sale in the chart",
        "const r = document.querySelector('svg[data-chart=\"today\"] rect[data-key=\"north\"]'); \
         return r && Number(r.dataset.value) === 1500;",
        Duration::from_secs(2).saturating_sub(accepted.elapsed()),
    )
    .await;
    b.screenshot(&out, "2-overview-after-a-sale").await;

    // Time travel: as of before the sale, north is back at 500, and a banner says so.
    let travel = b.wait_for("#as-of", SOON).await;
    b.type_into(&travel, &format!("{before}\u{E007}")).await;
    b.wait_until(
        "north as of before the sale",
        "const r = document.querySelector('svg[data-chart=\"today\"] rect[data-key=\"north\"]'); \
         return r && Number(r.dataset.value) === 500;",
        SOON,
    )
    .await;
    let banner = b.text(&b.wait_for("#travel-banner", SOON).await).await;
    assert!(banner.contains("Time travel"), "{banner}");
    b.screenshot(&out, "3-overview-as-of-before-the-sale").await;
    b.click(&b.wait_for("#travel-now", SOON).await).await;
    b.wait_until(
        "north now",
        "const r = document.querySelector('svg[data-chart=\"today\"] rect[data-key=\"north\"]'); \
         return r && Number(r.dataset.value) === 1500;",
        SOON,
    )
    .await;

    // One store: its day, its top items, its stock, and "why did today change?".
    b.goto(&format!("{}/#/store/north", app.url)).await;
    let why = b
        .wait_for("table[data-table=\"days\"] tbody tr button", SOON)
        .await;
    b.click(&why).await;
    b.wait_for("table[data-table=\"history\"] tbody tr", SOON)
        .await;
    let history = b
        .run("return [...document.querySelectorAll('table[data-table=\"history\"] tbody tr')].map(r => r.innerText)")
        .await;
    let rows = history.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(
        rows.iter()
            .all(|r| r.as_str().unwrap().contains("SaleRecorded")),
        "{history}"
    );
    assert!(
        rows[1].as_str().unwrap().contains(&id),
        "the late sale's command: {history}"
    );
    let top = b
        .run("return [...document.querySelectorAll('table[data-table=\"top-items\"] tbody tr')].map(r => r.dataset.key)")
        .await;
    assert_eq!(top, json!(["apple"]));
    let search = b.wait_for("#item-search", SOON).await;
    b.type_into(&search, "pea").await;
    let stock = b
        .wait_until(
            "the inventory filtered",
            "const r = [...document.querySelectorAll('table[data-table=\"inventory\"] tbody tr')]; \
             return r.length === 1 ? r[0].innerText : null;",
            SOON,
        )
        .await;
    assert!(stock.as_str().unwrap().contains("100"), "{stock}");
    b.screenshot(&out, "4-store").await;
    // The same view on a tablet held upright.
    b.resize(820, 1180).await;
    b.run("window.scrollTo(0, 0); return true").await;
    b.screenshot(&out, "4-store-tablet").await;
    b.resize(1280, 1700).await;

    // The supplier: what it delivered and what sold.
    b.goto(&format!("{}/#/supplier/orchard", app.url)).await;
    // Each delivery on its store's business date (Los Angeles is often a day behind Auckland):
    // the days' units add up to the three deliveries of 200.
    let delivered = b
        .wait_until(
            "the supplier's days",
            "const rows = [...document.querySelectorAll('table[data-table=\"supplier-days\"] tbody tr[data-key]')]; \
             return rows.length ? rows.map(r => Number(r.cells[2].innerText.replace(/,/g, ''))).reduce((a, b) => a + b, 0) : null;",
            SOON,
        )
        .await;
    assert_eq!(delivered, json!(600));
    b.screenshot(&out, "5-supplier").await;

    // The named queries, runnable with their parameters.
    b.goto(&format!("{}/#/queries", app.url)).await;
    b.wait_for("form[data-query=\"low_stock_across_stores\"]", SOON)
        .await;
    b.run("document.querySelector('form[data-query=\"low_stock_across_stores\"] input[name=\"threshold\"]').value = '98'; \
           document.querySelector('form[data-query=\"low_stock_across_stores\"] button[type=\"submit\"]').click(); return true;")
        .await;
    let rows = b
        .wait_until(
            "the query's answer",
            "return document.querySelectorAll('table[data-table=\"query-low_stock_across_stores\"] tbody tr').length",
            SOON,
        )
        .await;
    // At most 98 on hand: north's apples (94) and east's pears (97); kiwi has 99 of each.
    assert_eq!(rows, json!(2));
    b.screenshot(&out, "6-queries").await;

    // Admin: the keys with their usage, the read models, faults and dead letters.
    b.goto(&format!("{}/#/admin", app.url)).await;
    let keys = b
        .wait_until(
            "the key list",
            "return document.querySelectorAll('table[data-table=\"keys\"] tbody tr').length",
            SOON,
        )
        .await;
    assert_eq!(keys, json!(2));
    b.wait_for("table[data-table=\"dead-letters\"]", SOON).await;
    b.screenshot(&out, "7-admin").await;
    b.goto(&format!("{}/#/live", app.url)).await;
    b.wait_for("table[data-table=\"rates\"] tbody tr", SOON)
        .await;
    b.wait_for("table[data-table=\"events\"] tbody tr[data-key]", SOON)
        .await;
    b.screenshot(&out, "8-live").await;

    // A store key sees its own store only.
    b.click(&b.wait_for("#who button", SOON).await).await;
    sign_in(&b, &app, &store_key).await;
    b.wait_until(
        "east's page",
        "return location.hash === '#/store/east' && !!document.querySelector('table[data-table=\"days\"] tbody tr[data-key]')",
        SOON,
    )
    .await;
    let seen = b.run("return document.body.innerText").await;
    let seen = seen.as_str().unwrap();
    for other in ["north", "kiwi", "Overview", "Admin"] {
        assert!(
            !seen.contains(other),
            "a store key's page shows {other:?}: {seen}"
        );
    }
    b.goto(&format!("{}/#/overview", app.url)).await;
    b.wait_until(
        "sent back to its own store",
        "return location.hash === '#/store/east'",
        SOON,
    )
    .await;
    b.goto(&format!("{}/#/store/north", app.url)).await;
    b.wait_until(
        "another store refused",
        "return document.body.innerText.includes('may not read it')",
        SOON,
    )
    .await;
    b.goto(&format!("{}/#/store/east", app.url)).await;
    b.wait_for("table[data-table=\"days\"] tbody tr[data-key]", SOON)
        .await;
    b.screenshot(&out, "9-store-key").await;
}
