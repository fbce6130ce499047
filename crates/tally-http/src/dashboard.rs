//! The dashboard at `/`: one page and its script and styles, compiled into the binary (no CDN, no
//! external fonts: it works offline). The page holds no data: it asks for an API key, keeps it in
//! the browser's session storage and calls the API with it as a bearer header, so it shows exactly
//! what that key may read. A strict content security policy allows nothing but this origin's own
//! files (no inline script, no other site's), and no site may frame it.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const VIEWS: &str = include_str!("../dashboard/views.js");
const CHARTS: &str = include_str!("../dashboard/charts.js");
const STYLE: &str = include_str!("../dashboard/app.css");
const ICON: &str = include_str!("../dashboard/icon.svg");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on each load: a new build's page never runs an old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `/` and `/dashboard/*`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/views.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEWS) }),
        )
        .route(
            "/dashboard/charts.js",
            get(|| async { asset("text/javascript; charset=utf-8", CHARTS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
}

#[cfg(test)]
mod tests {
    /// Offline and self-contained: nothing the page loads comes from another origin, and the
    /// script never parses HTML it did not write.
    #[test]
    fn the_dashboard_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", super::INDEX),
            ("app.js", super::SCRIPT),
            ("views.js", super::VIEWS),
            ("charts.js", super::CHARTS),
            ("app.css", super::STYLE),
        ] {
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "@import",
                "innerHTML",
                "eval(",
                "document.cookie",
                "localStorage",
            ] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(bad) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{name} uses {bad}: {hits:?}");
            }
        }
        assert!(
            super::INDEX.contains("/dashboard/app.js")
                && super::INDEX.contains("/dashboard/views.js")
        );
    }
}
