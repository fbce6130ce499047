//! `/docs`: the interactive API documentation is served by the binary itself, every file of it, and
//! reads the document at `/openapi.json`; nothing comes from a CDN, so it works offline.
#![allow(clippy::unwrap_used)]

mod common;

use common::spawn_app;
use reqwest::StatusCode;

/// The values of `attr="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[tokio::test]
async fn docs_are_served_from_the_binary_with_every_asset() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(app.at("/docs")).send().await.unwrap();
    assert!(r.status().is_redirection(), "/docs: {}", r.status());
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/docs/")
    );

    // No Authorization header: the documentation is public, as API.md says.
    let r = app.get_raw("/docs", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.url().path().ends_with("/docs/"), "{}", r.url());
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let assets: Vec<&str> = attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
        .collect();
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "the page loads scripts and styles: {assets:?}"
    );
    for asset in &assets {
        assert!(
            !asset.contains("://") && !asset.starts_with("//"),
            "{asset} would load from elsewhere"
        );
        let path = asset.trim_start_matches("./");
        let r = app.get_raw(&format!("/docs/{path}"), None).await;
        assert_eq!(r.status(), StatusCode::OK, "/docs/{path}");
        assert!(
            !r.bytes().await.unwrap().is_empty(),
            "/docs/{path} is empty"
        );
    }

    // The page reads the document the server already serves, not a second copy.
    let initializer = app
        .get_raw("/docs/swagger-initializer.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    let doc = app.get_raw("/openapi.json", None).await;
    assert_eq!(doc.status(), StatusCode::OK);
    let doc: serde_json::Value = doc.json().await.unwrap();
    assert!(doc["paths"]["/v1/sales"].is_object());
}
