//! What the dashboard reads besides the reports, over HTTP against a real server: the page itself
//! (`GET /`, its files and its security headers), `GET /v1/me`, the registry as lists
//! (`/v1/stores` with each store's business date now, `/v1/suppliers`, `/v1/items`), each narrowed
//! to a scoped key's own, the dead letters over HTTP, and the events' JSON Schemas.
#![allow(clippy::unwrap_used)]

mod common;

use common::{error_fields, expect_problem, spawn_app};
use serde_json::json;

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let r = app.get_raw("/", None).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(h["x-content-type-options"], "nosniff");
    let page = r.text().await.unwrap();
    for file in [
        "/dashboard/app.js",
        "/dashboard/views.js",
        "/dashboard/charts.js",
        "/dashboard/app.css",
    ] {
        assert!(page.contains(file), "the page loads {file}");
        let r = app.get_raw(file, None).await;
        assert_eq!(r.status(), 200, "{file}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            ct.starts_with(if file.ends_with(".css") {
                "text/css"
            } else {
                "text/javascript"
            }),
            "{file}: {ct}"
        );
    }
    // The page needs no key; the API behind it does.
    let r = app.get_raw("/v1/me", None).await;
    expect_problem(r, 401, "no key").await;
}

#[tokio::test]
async fn the_registry_lists_narrow_to_a_keys_own_scope() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let stores = [("la", "America/Los_Angeles"), ("akl", "Pacific/Auckland")];
    app.register("acme", &stores, &[("a1", 100), ("a2", 250)])
        .await;
    let last = app.register("bolt", &[], &[("b1", 900)]).await;

    let me = app.get_ok("/v1/me", &app.admin).await;
    assert_eq!(me["role"], "admin");
    assert!(me.get("scope").is_none(), "{me}");

    let all = app
        .get_ok(&format!("/v1/stores?min_position={last}"), &app.admin)
        .await;
    assert_eq!(all["position"], json!(last));
    let ids: Vec<&str> = all["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["akl", "la"]);
    let now = jiff::Timestamp::now();
    for s in all["stores"].as_array().unwrap() {
        let tz = jiff::tz::TimeZone::get(s["timezone"].as_str().unwrap()).unwrap();
        let local = tz.to_datetime(now).date().to_string();
        // Around local midnight the second read may be a day on: either is the store's today.
        let next = tz
            .to_datetime(now + jiff::SignedDuration::from_secs(5))
            .date()
            .to_string();
        assert!(
            s["today"] == json!(local) || s["today"] == json!(next),
            "{s}"
        );
    }
    let suppliers = app.get_ok("/v1/suppliers", &app.admin).await;
    assert_eq!(
        suppliers["suppliers"],
        json!([{"supplier_id": "acme", "name": "acme"}, {"supplier_id": "bolt", "name": "bolt"}])
    );
    let items = app.get_ok("/v1/items?supplier_id=bolt", &app.admin).await;
    assert_eq!(
        items["items"],
        json!([{"item_id": "b1", "name": "b1", "supplier_id": "bolt", "unit_price_cents": 900}])
    );
    let csv = app.csv_of("/v1/items").await;
    assert_eq!(
        csv,
        "item_id,name,supplier_id,unit_price_cents\na1,a1,acme,100\na2,a2,acme,250\nb1,b1,bolt,900\n"
    );

    // A store key: its own store; every supplier and item (it sells them).
    let store = app.create_key("store", Some("la")).await;
    let me = app.get_ok("/v1/me", &store).await;
    assert_eq!(
        (me["role"].as_str(), me["scope"].as_str()),
        (Some("store"), Some("la"))
    );
    let own = app.get_ok("/v1/stores", &store).await;
    assert_eq!(own["stores"].as_array().unwrap().len(), 1);
    assert_eq!(own["stores"][0]["store_id"], "la");
    assert_eq!(
        app.get_ok("/v1/items", &store).await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A supplier key: its own supplier and items; asking for another's items is 403.
    let supplier = app.create_key("supplier", Some("acme")).await;
    let own = app.get_ok("/v1/suppliers", &supplier).await;
    assert_eq!(
        own["suppliers"],
        json!([{"supplier_id": "acme", "name": "acme"}])
    );
    let items = app.get_ok("/v1/items", &supplier).await;
    let ids: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a2"]);
    let r = app
        .get_raw("/v1/items?supplier_id=bolt", Some(&supplier))
        .await;
    expect_problem(r, 403, "another supplier's items").await;

    // Bad input names its field.
    let r = app
        .get_raw("/v1/items?supplier_id=no%20such", Some(&app.admin))
        .await;
    let p = expect_problem(r, 422, "a malformed supplier id").await;
    assert_eq!(error_fields(&p), ["supplier_id"]);
    let r = app
        .get_raw("/v1/stores?min_position=-1", Some(&app.admin))
        .await;
    let p = expect_problem(r, 422, "a negative position").await;
    assert_eq!(error_fields(&p), ["min_position"]);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let list = app.get_ok("/v1/admin/dead-letters", &app.admin).await;
    assert_eq!(list, json!({"dead_letters": []}));
    let analyst = app.create_key("analyst", None).await;
    let r = app.get_raw("/v1/admin/dead-letters", Some(&analyst)).await;
    expect_problem(r, 403, "an analyst").await;
    let r = app
        .post_raw(
            "/v1/admin/dead-letters/not-a-uuid/replay",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    let p = expect_problem(r, 422, "a malformed id").await;
    assert_eq!(error_fields(&p), ["message_id"]);
    let r = app
        .post_raw(
            "/v1/admin/dead-letters/0190f0a0-0000-7000-8000-000000000000/replay",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    expect_problem(r, 404, "no such dead letter").await;
}

/// `GET /v1/events/schemas`: every type in every version, the current ones marked, each a JSON
/// Schema document; admins and auditors only.
#[tokio::test]
async fn the_event_schemas_cover_every_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let auditor = app.create_key("auditor", None).await;
    let all = app.get_ok("/v1/events/schemas", &auditor).await;
    let schemas = all["schemas"].as_array().unwrap();
    let versions: Vec<(String, u64, bool)> = schemas
        .iter()
        .map(|s| {
            (
                s["type"].as_str().unwrap().to_owned(),
                s["schema_version"].as_u64().unwrap(),
                s["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        versions.contains(&("SaleRecorded".into(), 1, false)),
        "{versions:?}"
    );
    assert!(
        versions.contains(&("SaleRecorded".into(), 2, true)),
        "{versions:?}"
    );
    assert_eq!(
        versions.iter().filter(|v| v.2).count(),
        9,
        "one current version per type"
    );
    for s in schemas {
        assert_eq!(
            s["schema"]["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(s["schema"]["type"], "object", "{s}");
    }
    let sale = schemas
        .iter()
        .find(|s| s["type"] == "SaleRecorded" && s["current"] == true)
        .unwrap();
    let required = sale["schema"]["required"].as_array().unwrap();
    assert!(required.contains(&json!("business_date")), "{sale}");
    assert!(
        !required.contains(&json!("till_id")),
        "till_id is optional: {sale}"
    );
    let store = app.create_key("store", Some("s1")).await;
    let r = app.get_raw("/v1/events/schemas", Some(&store)).await;
    expect_problem(r, 403, "a store key").await;
}
