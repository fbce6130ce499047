//! Operations endpoints: liveness, readiness, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: Vec<Check>,
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness, description = "Something is not ready; `checks` says what")))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let b = &s.backend;
    let check = |name: &str, r: Result<String, tally_core::Error>| match r {
        Ok(detail) => Check {
            name: name.into(),
            ok: true,
            detail: Some(detail),
        },
        Err(e) => Check {
            name: name.into(),
            ok: false,
            detail: Some(e.to_string()),
        },
    };
    let checks = vec![
        check(
            "event_store",
            b.events.head().await.map(|h| format!("head position {h}")),
        ),
        check(
            "command_queue",
            b.queue
                .depth()
                .await
                .map(|d| format!("{d} commands waiting")),
        ),
        check(
            "read_models",
            b.read.checkpoints().await.map(|c| {
                let mut c: Vec<_> = c.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                c.sort();
                c.join(" ")
            }),
        ),
        check(
            "shutting_down",
            if *s.shutdown.borrow() {
                Err(tally_core::Error::Unavailable("draining".into()))
            } else {
                Ok("no".into())
            },
        ),
    ];
    let ok = checks.iter().all(|c| c.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "not_ready" }.into(),
            checks,
        }),
    )
}
