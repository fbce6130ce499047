//! `/v1/admin/projections`: where each read model stands against the log, and rebuilds that never
//! take one away ([`tally_core::projector::rebuild`]), for operators.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use tally_core::model::Role;
use tally_core::projector::poison::{self, Fault};
use tally_core::readmodel::{PROJECTIONS, shadow};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::ops::ModelState;

/// One projection (read model).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionState {
    pub name: String,
    #[serde(flatten)]
    pub state: ModelState,
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
            name: m.model,
            state: m.state,
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

/// An event a projection could not fold ([`tally_core::projector::poison`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultBody {
    pub projection: String,
    pub position: u64,
    /// `stopped` (the projection halts before it) or `parked` (it went on without it).
    pub state: &'static str,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FaultList {
    pub faults: Vec<FaultBody>,
}

fn body(f: Fault) -> FaultBody {
    FaultBody {
        projection: f.projection,
        position: f.position,
        state: f.state.as_str(),
        reason: f.reason,
        at: f.at.to_string(),
    }
}

/// Every poison event: where each projection stopped, and what it parked.
#[utoipa::path(get, path = "/v1/admin/projections/faults", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = FaultList), crate::queries::QueryErrors))]
pub async fn list_faults(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<FaultList>, ApiError> {
    auth.require(&[Role::Admin])?;
    let faults = s.backend.sink.faults().await?;
    Ok(Json(FaultList {
        faults: faults.into_iter().map(body).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FaultDone {
    pub projection: String,
    pub position: u64,
    /// What the fault was: `stopped` or `parked`.
    pub was: &'static str,
    /// `retried` or `skipped`.
    pub done: &'static str,
}

fn position(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid("position", "must be a non-negative integer"))
}

fn refused(e: poison::Refused) -> ApiError {
    match e {
        poison::Refused::NoSuchFault { .. } => ApiError::NotFound(e.to_string()),
        poison::Refused::StillFails(..) | poison::Refused::NotYetPast { .. } => {
            ApiError::Conflict(e.to_string())
        }
        poison::Refused::Store(e) => e.into(),
    }
}

async fn deal(
    s: &AppState,
    auth: Auth,
    (name, raw): (String, String),
    retry: bool,
) -> Result<Json<FaultDone>, ApiError> {
    auth.require(&[Role::Admin])?;
    let name = known(&name)?;
    let at = position(&raw)?;
    let was = if retry {
        poison::retry(&s.backend, name, at).await
    } else {
        poison::skip(&s.backend, name, at).await
    }
    .map_err(refused)?;
    // This process's projector reads the faults again at once (others within about a second).
    s.signals.rebuilds().holds.bump();
    tracing::info!(
        projection = name,
        position = at,
        retry,
        "poison event dealt with"
    );
    Ok(Json(FaultDone {
        projection: name.to_owned(),
        position: at,
        was: was.as_str(),
        done: if retry { "retried" } else { "skipped" },
    }))
}

/// Retries a poison event: a stopped projection tries it again; a parked event is folded and
/// applied on its own (409 when it still cannot be folded).
#[utoipa::path(post, path = "/v1/admin/projections/{name}/faults/{position}/retry", tag = "admin",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The projection"),
        ("position" = u64, Path, description = "The event's global position")),
    responses((status = 200, body = FaultDone),
        (status = 404, description = "No such projection or fault", body = crate::error::Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "It still cannot be folded, or the projection has not gone past it yet",
            body = crate::error::Problem, content_type = "application/problem+json"),
        crate::queries::QueryErrors))]
pub async fn retry_fault(
    State(s): State<AppState>,
    auth: Auth,
    Path(at): Path<(String, String)>,
) -> Result<Json<FaultDone>, ApiError> {
    deal(&s, auth, at, true).await
}

/// Skips a poison event: a stopped projection goes on without it (it stays listed as parked); a
/// parked one is dismissed (`tally verify` then names what the model lacks).
#[utoipa::path(post, path = "/v1/admin/projections/{name}/faults/{position}/skip", tag = "admin",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The projection"),
        ("position" = u64, Path, description = "The event's global position")),
    responses((status = 200, body = FaultDone),
        (status = 404, description = "No such projection or fault", body = crate::error::Problem,
            content_type = "application/problem+json"),
        crate::queries::QueryErrors))]
pub async fn skip_fault(
    State(s): State<AppState>,
    auth: Auth,
    Path(at): Path<(String, String)>,
) -> Result<Json<FaultDone>, ApiError> {
    deal(&s, auth, at, false).await
}
