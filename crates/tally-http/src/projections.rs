//! `GET /v1/admin/projections`: where each read model stands against the log, for operators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tally_core::model::Role;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;

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
    /// `caught_up` (nothing left to apply) or `behind`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionList {
    /// The log's head when this was read.
    pub head: u64,
    pub projections: Vec<ProjectionState>,
}

#[utoipa::path(get, path = "/v1/admin/projections", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = ProjectionList), crate::queries::QueryErrors))]
pub async fn list_projections(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<ProjectionList>, ApiError> {
    auth.require(&[Role::Admin])?;
    let (head, models) = crate::ops::projections_now(&s.backend)
        .await
        .map_err(|detail| ApiError::Unavailable {
            detail,
            retry_after_s: 1,
        })?;
    let projections = models
        .into_iter()
        .map(|m| ProjectionState {
            status: if m.lag_events == 0 {
                "caught_up"
            } else {
                "behind"
            },
            name: m.model,
            position: m.position,
            lag_events: m.lag_events,
            lag_seconds: m.lag_seconds,
        })
        .collect();
    Ok(Json(ProjectionList { head, projections }))
}
