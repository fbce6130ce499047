//! tally's HTTP API (the contract is `shared/design/API.md`): the gateway that accepts commands, the
//! query API over the read models, the event feed, API key administration, health endpoints and the
//! OpenAPI document — generated from the handlers themselves, so the two cannot drift.
//!
//! This crate owns the wire DTOs and turns them into domain commands; it talks to storage only
//! through the ports of `tally-core`, and knows no adapter.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tally_core::{Backend, Signals};
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod auth;
pub mod body;
pub mod commands;
pub mod dashboard;
pub mod dataservices;
pub mod deadletters;
pub mod dto;
pub mod error;
pub mod feed;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod projections;
pub mod queries;
mod request_id;
pub mod schemas;
pub mod traffic;

use error::ApiError;

/// What every handler can reach: one shared [`AppContext`]. Cloned for every request (by each
/// extractor and middleware that takes it), so a clone is one reference count, not one per part: a
/// struct of a dozen `Arc`s cost ≈7 % of the server's CPU in W1 over HTTP.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<AppContext>);

impl std::ops::Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

impl From<AppContext> for AppState {
    fn from(context: AppContext) -> Self {
        Self(std::sync::Arc::new(context))
    }
}

/// The parts of [`AppState`].
pub struct AppContext {
    pub backend: Backend,
    pub signals: Signals,
    /// Turns true when the server is shutting down (long-lived streams end, readiness fails).
    pub shutdown: watch::Receiver<bool>,
    /// Rate limits, load shedding, the key cache and per-key usage ([`traffic`]).
    pub traffic: traffic::Traffic,
    /// The named queries being served ([`dataservices`]).
    pub queries: std::sync::Arc<tally_core::dataservices::catalog::Catalog>,
}

/// Resolves once the server starts shutting down; long polls end early with it.
pub(crate) async fn shutting_down(state: &AppState) {
    let mut shutdown = state.shutdown.clone();
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        // The sender is gone: the server is going away, or never had a shutdown signal (tests).
        std::future::pending::<()>().await;
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer tally_…`"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tally", description = "An event-sourced retail ledger: commands in, events stored, reports out."),
    modifiers(&Security),
    tags(
        (name = "commands", description = "Accepted with 202 once durable; processed asynchronously"),
        (name = "queries", description = "Read models, JSON or CSV"),
        (name = "data services", description = "Named SQL queries declared in configuration, over the read-model views"),
        (name = "events", description = "The event log"),
        (name = "admin", description = "API keys"),
        (name = "operations", description = "Health, readiness, metrics and documentation")
    )
)]
struct ApiDoc;

fn header_name(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(commands::register_supplier))
        .routes(routes!(commands::register_store))
        .routes(routes!(commands::register_item))
        .routes(routes!(commands::record_delivery))
        .routes(routes!(commands::record_sale))
        .routes(routes!(commands::void_sale))
        .routes(routes!(commands::correct_delivery))
        .routes(routes!(commands::record_return))
        .routes(routes!(commands::adjust_stock))
        .routes(routes!(commands::command_status))
        .routes(routes!(queries::inventory))
        .routes(routes!(queries::inventory_item))
        .routes(routes!(queries::store_daily_sales))
        .routes(routes!(queries::daily_sales))
        .routes(routes!(queries::supplier_daily))
        .routes(routes!(queries::low_stock))
        .routes(routes!(queries::store_day_history))
        .routes(routes!(queries::supplier_day_history))
        .routes(routes!(queries::item_daily_sales))
        .routes(routes!(queries::top_items))
        .routes(routes!(queries::me))
        .routes(routes!(queries::stores))
        .routes(routes!(queries::suppliers))
        .routes(routes!(queries::items))
        .routes(routes!(schemas::event_schemas))
        .routes(routes!(deadletters::list_dead_letters))
        .routes(routes!(deadletters::replay_dead_letter))
        .routes(routes!(dataservices::list_queries))
        .routes(routes!(dataservices::run_query))
        .routes(routes!(dataservices::reload_queries))
        .routes(routes!(feed::events))
        .routes(routes!(feed::live))
        .routes(routes!(feed::stream))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(projections::list_projections))
        .routes(routes!(projections::list_faults))
        .routes(routes!(projections::retry_fault))
        .routes(routes!(projections::skip_fault))
        .routes(routes!(
            projections::rebuild_projection,
            projections::cancel_rebuild
        ))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The whole API with its OpenAPI document.
pub fn router(state: AppState) -> Router {
    metrics::install();
    let traffic = axum::middleware::from_fn_with_state(state.clone(), traffic::control);
    let (router, api) = api_router().with_state(state.clone()).split_for_parts();
    // Encoded once and shared: the handler is cloned for every connection, and the document is
    // megabytes as a value (64 keep-alive connections held 170 MB of copies).
    // The document as JSON once: the route table for metrics is read from it, and it is served as is.
    let json = serde_json::to_value(&api).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        serde_json::Value::Object(Default::default())
    });
    let documented = metrics::layer::RouteTable::documented(&json);
    // The document follows the named queries: rebuilt when the set served changes (a reload).
    let catalog = state.queries.clone();
    let cached: std::sync::Arc<std::sync::Mutex<(u64, axum::body::Bytes)>> =
        std::sync::Arc::new(std::sync::Mutex::new((0, axum::body::Bytes::new())));
    let base = std::sync::Arc::new(json);
    let document = move || {
        let (catalog, cached, base) = (catalog.clone(), cached.clone(), base.clone());
        async move {
            let generation = catalog.generation();
            let body = match cached.lock() {
                Ok(mut c) => {
                    if c.0 != generation {
                        let doc = dataservices::document(&base, &catalog.current());
                        *c = (generation, axum::body::Bytes::from(doc.to_string()));
                    }
                    c.1.clone()
                }
                Err(_) => axum::body::Bytes::from(base.to_string()),
            };
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    };
    let request_id = header_name("x-request-id");
    let routes = metrics::layer::RouteTable::new(
        documented
            .iter()
            .map(|(path, method, statuses)| (path.as_str(), method.clone(), statuses.clone()))
            .chain([("/openapi.json", axum::http::Method::GET, vec![200])]),
    );
    // Every `Router::layer` wraps each route in one more boxed service, which a request clones (an
    // allocation) and calls through a boxed future: eight such layers cost about 6 % of the server's
    // CPU in W1 over HTTP. So the layers that need the matched route (the metrics' label) and must see
    // each handler's response (panics, the traffic control) are one stack applied once, and the rest
    // wrap the whole router from outside, cloned per connection rather than per request.
    let routed = router
        .route("/openapi.json", axum::routing::get(document))
        .merge(docs())
        .merge(dashboard::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            let mut r = ApiError::NotFound("method not allowed".into()).into_response();
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        })
        .layer(
            tower::ServiceBuilder::new()
                .layer(metrics::layer::HttpMetricsLayer::new(routes))
                .layer(CatchPanicLayer::custom(|_| -> Response {
                    ApiError::Internal("handler panicked".into()).into_response()
                }))
                .layer(traffic)
                .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES)),
        );
    let outer = tower::ServiceBuilder::new()
        .layer(tower::util::MapRequestLayer::new(request_id::drop_insane))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(request_id::LogResponse),
        )
        .service(routed);
    Router::new().fallback_service(outer)
}

/// Only the operations endpoints (`/healthz`, `/readyz`, `/metrics`), for processes that serve no
/// API: a processor or projector still answers its orchestrator's probes and scrapes.
pub fn ops_router(state: AppState) -> Router {
    metrics::install();
    let routes = metrics::layer::RouteTable::new([
        ("/healthz", axum::http::Method::GET, vec![200]),
        ("/readyz", axum::http::Method::GET, vec![200, 503]),
        ("/metrics", axum::http::Method::GET, vec![200]),
    ]);
    Router::new()
        .route("/healthz", axum::routing::get(ops::healthz))
        .route("/readyz", axum::routing::get(ops::readyz))
        .route("/metrics", axum::routing::get(ops::metrics))
        .with_state(state)
        .fallback(|| async {
            ApiError::NotFound("this process serves no API (see its --role)".into())
        })
        .layer(metrics::layer::HttpMetricsLayer::new(routes))
}

/// `/docs`: Swagger UI, its files compiled into the binary (no CDN: it works offline), reading the
/// document served at `/openapi.json` (not a second copy of it).
fn docs() -> Router {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
        .into()
}

/// The OpenAPI document alone (for `tally openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

#[cfg(test)]
mod tests {
    /// Every endpoint of API.md that this version serves, with its method. A route missing from the
    /// OpenAPI document fails here.
    const CONTRACT: &[(&str, &str)] = &[
        ("post", "/v1/suppliers"),
        ("post", "/v1/stores"),
        ("post", "/v1/items"),
        ("post", "/v1/deliveries"),
        ("post", "/v1/sales"),
        ("post", "/v1/sales/{sale_id}/void"),
        ("post", "/v1/deliveries/{delivery_id}/corrections"),
        ("post", "/v1/returns"),
        ("post", "/v1/stock-adjustments"),
        ("get", "/v1/commands/{command_id}"),
        ("get", "/v1/inventory/{store_id}"),
        ("get", "/v1/inventory/{store_id}/items/{item_id}"),
        ("get", "/v1/reports/stores/{store_id}/daily-sales"),
        ("get", "/v1/reports/daily-sales"),
        ("get", "/v1/reports/suppliers/{supplier_id}/daily"),
        ("get", "/v1/queries"),
        ("get", "/v1/queries/{name}"),
        ("post", "/v1/admin/queries/reload"),
        ("get", "/v1/events"),
        ("get", "/v1/streams/{stream_id}"),
        ("get", "/v1/events/live"),
        ("get", "/v1/events/schemas"),
        ("post", "/v1/admin/api-keys"),
        ("get", "/v1/admin/api-keys"),
        ("delete", "/v1/admin/api-keys/{key_id}"),
        ("get", "/v1/admin/projections"),
        ("post", "/v1/admin/projections/{name}/rebuild"),
        ("delete", "/v1/admin/projections/{name}/rebuild"),
        ("get", "/v1/admin/projections/faults"),
        (
            "post",
            "/v1/admin/projections/{name}/faults/{position}/retry",
        ),
        (
            "post",
            "/v1/admin/projections/{name}/faults/{position}/skip",
        ),
        ("get", "/v1/me"),
        ("get", "/v1/stores"),
        ("get", "/v1/suppliers"),
        ("get", "/v1/items"),
        ("get", "/v1/admin/dead-letters"),
        ("post", "/v1/admin/dead-letters/{message_id}/replay"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];

    #[test]
    fn the_openapi_document_covers_the_contract() {
        let doc = serde_json::to_value(super::openapi()).expect("the document serializes");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "OpenAPI 3.1"
        );
        for (method, path) in CONTRACT {
            let op = &doc["paths"][path][method];
            assert!(
                op.is_object(),
                "{method} {path} is missing from /openapi.json"
            );
            if !["/healthz", "/readyz", "/metrics"].contains(path) {
                assert!(
                    op["security"].is_array(),
                    "{method} {path} must declare its security"
                );
            }
        }
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
