//! `/v1/admin/dead-letters`: the commands the processor could not handle after their retries, and
//! putting one back on the queue (what `tally dlq list|replay` does, over HTTP).

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use tally_core::model::{CommandEnvelope, Role};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    pub message_id: String,
    /// The queue partition it was on (its store or supplier).
    pub partition_key: String,
    pub failed_at: String,
    pub reason: String,
    /// The command's kind, e.g. `record_sale`; absent when this build cannot decode it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The command's id, when it decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    pub payload_bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterBody>,
}

#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = DeadLetterList), crate::queries::QueryErrors))]
pub async fn list_dead_letters(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<DeadLetterList>, ApiError> {
    auth.require(&[Role::Admin])?;
    let letters = s.backend.queue.dead_letters().await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters
            .into_iter()
            .map(|d| {
                let command = CommandEnvelope::decode(&d.payload).ok();
                DeadLetterBody {
                    message_id: d.message_id.to_string(),
                    partition_key: d.partition_key,
                    failed_at: d.failed_at.to_string(),
                    reason: d.reason,
                    kind: command.as_ref().map(|c| c.command.kind().to_owned()),
                    command_id: command.as_ref().map(|c| c.command_id.to_string()),
                    payload_bytes: d.payload.len(),
                }
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub message_id: String,
    /// Always `queued`: the command is on the queue again, to be decided like any other.
    pub state: &'static str,
}

/// Puts a dead letter back on the queue; 404 when there is none with that id.
#[utoipa::path(post, path = "/v1/admin/dead-letters/{message_id}/replay", tag = "admin",
    security(("api_key" = [])),
    params(("message_id" = String, Path, description = "The dead letter's message id (a UUID)")),
    responses((status = 200, body = Replayed),
        (status = 404, description = "No dead letter with that id", body = crate::error::Problem),
        crate::queries::QueryErrors))]
pub async fn replay_dead_letter(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
) -> Result<Json<Replayed>, ApiError> {
    auth.require(&[Role::Admin])?;
    let id =
        Uuid::parse_str(&raw).map_err(|_| ApiError::invalid("message_id", "must be a UUID"))?;
    if !s.backend.queue.replay_dead_letter(id).await? {
        return Err(ApiError::NotFound(format!("there is no dead letter {id}")));
    }
    Ok(Json(Replayed {
        message_id: id.to_string(),
        state: "queued",
    }))
}
