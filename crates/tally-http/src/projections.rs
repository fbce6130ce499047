//! `/v1/admin/projections`: where each read model stands against the log, and rebuilds that never
//! take one away ([`tally_core::projector::rebuild`]), for operators.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use tally_core::model::Role;
use tally_core::readmodel::{PROJECTIONS, shadow};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::ops::RebuildState;

/// One projection (read model).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionState {
    pub name: String,
    /// The global position it has applied.
    pub position: u64,
    /// Events in the log it has not applied yet.
    pub lag_events: u64,
    /// Age of the oldest event it has not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// `caught_up` (nothing left to apply), `behind`, `rebuilding` (a new version is being built
    /// beside the one that serves) or `back_filling` (built for the first time: its queries answer
    /// 503 until it is).
    pub status: &'static str,
    /// The new version being built, with its progress and ETA, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionList {
    /// The log's head when this was read.
    pub head: u64,
    pub projections: Vec<ProjectionState>,
}

async fn states(s: &AppState) -> Result<ProjectionList, ApiError> {
    let (head, models) =
        crate::ops::projections_now(s)
            .await
            .map_err(|detail| ApiError::Unavailable {
                detail,
                retry_after_s: 1,
            })?;
    let projections = models
        .into_iter()
        .map(|m| ProjectionState {
            status: m.status,
            name: m.model,
            position: m.position,
            lag_events: m.lag_events,
            lag_seconds: m.lag_seconds,
            rebuild: m.rebuild,
        })
        .collect();
    Ok(ProjectionList { head, projections })
}

#[utoipa::path(get, path = "/v1/admin/projections", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = ProjectionList), crate::queries::QueryErrors))]
pub async fn list_projections(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<ProjectionList>, ApiError> {
    auth.require(&[Role::Admin])?;
    Ok(Json(states(&s).await?))
}

/// A projection named in a path, or 404 naming the ones there are.
fn known(name: &str) -> Result<&'static str, ApiError> {
    PROJECTIONS.into_iter().find(|p| *p == name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "there is no projection named {name:?}; the projections are {}",
            PROJECTIONS.join(", ")
        ))
    })
}

/// Where one projection stands, from a fresh read.
async fn state_of(s: &AppState, name: &str) -> Result<ProjectionState, ApiError> {
    states(s)
        .await?
        .projections
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::Internal(format!("projection {name} not listed")))
}

/// Starts a rebuild: a new version built from the log into shadow tables while the current one
/// serves, swapped in atomically once caught up. The projector's lease holder (this process or
/// another) runs it; a crash or a fail-over resumes it. Follow it with `GET /v1/admin/projections`.
#[utoipa::path(post, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The projection, e.g. store_daily_sales")),
    responses((status = 202, body = ProjectionState, description = "The rebuild is under way"),
        (status = 404, description = "No projection of that name", body = crate::error::Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "A rebuild of it is already under way", body = crate::error::Problem,
            content_type = "application/problem+json"),
        crate::queries::QueryErrors))]
pub async fn rebuild_projection(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ProjectionState>), ApiError> {
    auth.require(&[Role::Admin])?;
    let name = known(&name)?;
    let c = s.backend.sink.checkpoints().await?;
    if let Some(at) = c.get(&shadow::checkpoint_of(name)) {
        return Err(ApiError::Conflict(format!(
            "a rebuild of {name} is already under way (at position {at}); \
             DELETE /v1/admin/projections/{name}/rebuild cancels it"
        )));
    }
    s.backend.sink.start_rebuild(name).await?;
    s.signals.rebuilds().wake();
    tracing::info!(projection = name, "rebuild asked for");
    Ok((StatusCode::ACCEPTED, Json(state_of(&s, name).await?)))
}

/// Cancels a rebuild: its shadow version is dropped; the serving version is untouched. A
/// back-fill cannot be cancelled (there is nothing else to serve).
#[utoipa::path(delete, path = "/v1/admin/projections/{name}/rebuild", tag = "admin",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The projection")),
    responses((status = 200, body = ProjectionState, description = "Cancelled"),
        (status = 404, description = "No projection of that name, or no rebuild of it",
            body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is being back-filled", body = crate::error::Problem,
            content_type = "application/problem+json"),
        crate::queries::QueryErrors))]
pub async fn cancel_rebuild(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<ProjectionState>, ApiError> {
    auth.require(&[Role::Admin])?;
    let name = known(&name)?;
    let c = s.backend.sink.checkpoints().await?;
    if shadow::back_filling(&c, name) {
        return Err(ApiError::Conflict(format!(
            "{name} is being back-filled: it has no other version to serve"
        )));
    }
    if !s.backend.sink.cancel_rebuild(name).await? {
        return Err(ApiError::NotFound(format!(
            "no rebuild of {name} is under way"
        )));
    }
    tracing::info!(projection = name, "rebuild cancelled");
    Ok(Json(state_of(&s, name).await?))
}
