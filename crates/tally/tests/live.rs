//! The live event feed (`GET /v1/events/live`): one SSE message per event, in order, as they commit.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::spawn_app;
use serde_json::json;

#[tokio::test]
async fn the_live_feed_streams_events_as_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app(dir.path());
    let auditor = app.create_key("auditor", None).await;
    let analyst = app.create_key("analyst", None).await;

    let denied = app.get_raw("/v1/events/live?after=0", Some(&analyst)).await;
    assert_eq!(
        denied.status().as_u16(),
        403,
        "an analyst may not read events"
    );

    let mut live = app.get_raw("/v1/events/live?after=0", Some(&auditor)).await;
    assert_eq!(live.status().as_u16(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "served as server-sent events"
    );

    // Written after the stream opened: the feed must deliver them as they commit.
    for s in ["acme", "bolt"] {
        app.run_ok("/v1/suppliers", &json!({"supplier_id": s, "name": s}))
            .await;
    }
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("id: 2") && text.contains("\"bolt\"")) {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .expect("the feed delivers both events within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first = text.find("id: 1").expect("event 1");
    let second = text.find("id: 2").expect("event 2");
    assert!(first < second, "events arrive in global order");
    assert!(text.contains("event: SupplierRegistered"));
    assert!(text.contains("\"supplier_id\":\"acme\""));
    // A stream still open must not keep the server from stopping cleanly.
    app.stop();
    drop(live);
}
