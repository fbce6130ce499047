//! Command endpoints: check the caller, validate the body, make the command durable, answer 202.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_core::model::{CommandEnvelope, CommandStatus, Role};
use tally_core::ports::{Submission, Submitted};
use tally_domain::Command;
use tally_domain::values::{InvalidValue, StoreId, SupplierId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Auth;
use crate::body::{JsonBody, QueryParams};
use crate::dto::{
    AcceptedBody, CorrectDelivery, NewAdjustment, NewDelivery, NewItem, NewReturn, NewSale,
    NewStore, NewSupplier, VoidSale,
};
use crate::error::{ApiError, Problem};

/// Error answers every command endpoint can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CommandErrors {
    /// Malformed JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(#[to_schema] Problem),
    /// Missing, unknown or revoked API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(#[to_schema] Problem),
    /// The key's role or scope does not allow this command.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] Problem),
    /// The Idempotency-Key was used with a different request.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// The body is over 1 MiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(#[to_schema] Problem),
    /// The body is not application/json.
    #[response(status = 415, content_type = "application/problem+json")]
    MediaType(#[to_schema] Problem),
    /// Invalid fields, each named in `errors`.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(#[to_schema] Problem),
    /// Over the key's rate limit (or, without a valid key, the client address's); retry after
    /// `Retry-After` seconds. `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` say more.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(#[to_schema] Problem),
    /// The command could not be made durable, or the server sheds load (too many requests in hand,
    /// the command queue over its high-water mark); retry after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

/// The optional `Idempotency-Key` header of every command endpoint (read by [`idempotency_key`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// 1–128 visible ASCII characters; a retry with the same key and body gets the first answer.
    #[param(rename = "Idempotency-Key", value_type = String, required = false, min_length = 1, max_length = 128, pattern = "^[\\x21-\\x7E]+$")]
    idempotency_key: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 128 visible ASCII characters",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    Ok(Some(s.to_owned()))
}

/// The correlation id: the request's `X-Request-Id` (the client's when it is sane, else the one the
/// middleware made).
fn correlation_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| crate::request_id::is_sane(s))
        .map(str::to_owned)
}

fn accepted(command_id: Uuid) -> Response {
    let url = format!("/v1/commands/{command_id}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(AcceptedBody {
            command_id: command_id.to_string(),
            status: "accepted".into(),
            status_url: url.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Makes the command durable and answers 202 (or the first answer for a repeated Idempotency-Key).
async fn submit(
    state: &AppState,
    auth: &Auth,
    headers: &HeaderMap,
    route: &str,
    raw: &[u8],
    command: Command,
) -> Result<Response, ApiError> {
    let idempotency = idempotency_key(headers)?.map(|key| {
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(raw);
        (key, h.finalize().into())
    });
    let envelope = CommandEnvelope {
        command_id: Uuid::now_v7(),
        received_at: Timestamp::now(),
        principal: auth.0.clone(),
        correlation_id: correlation_id(headers),
        command,
    };
    let partition_key = envelope.command.partition_key();
    let kind = envelope.command.kind_index();
    let submitted = state
        .backend
        .intake
        .submit(Submission {
            envelope,
            partition_key,
            idempotency,
        })
        .await
        .map_err(|e| match e {
            tally_core::Error::Unavailable(detail) => ApiError::Unavailable {
                detail: format!("the command queue cannot take commands now: {detail}"),
                retry_after_s: 1,
            },
            other => ApiError::Internal(other.to_string()),
        })?;
    match submitted {
        Submitted::Accepted { command_id } => {
            crate::metrics::accepted(kind);
            Ok(accepted(command_id))
        }
        Submitted::Replayed { command_id } => {
            // The first answer again, marked as such (as Stripe's API does), so a client can tell
            // a retry that had got through from a new command.
            let mut r = accepted(command_id);
            r.headers_mut().insert(
                axum::http::HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
            Ok(r)
        }
        Submitted::KeyReused => Err(ApiError::IdempotencyConflict),
    }
}

#[utoipa::path(post, path = "/v1/suppliers", tag = "commands", request_body = NewSupplier,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn register_supplier(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewSupplier>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Admin])?;
    submit(
        &s,
        &auth,
        &headers,
        "POST /v1/suppliers",
        &raw,
        body.into_command()?,
    )
    .await
}

#[utoipa::path(post, path = "/v1/stores", tag = "commands", request_body = NewStore,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn register_store(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewStore>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Admin])?;
    submit(
        &s,
        &auth,
        &headers,
        "POST /v1/stores",
        &raw,
        body.into_command()?,
    )
    .await
}

#[utoipa::path(post, path = "/v1/items", tag = "commands", request_body = NewItem,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn register_item(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewItem>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Admin])?;
    submit(
        &s,
        &auth,
        &headers,
        "POST /v1/items",
        &raw,
        body.into_command()?,
    )
    .await
}

#[utoipa::path(post, path = "/v1/deliveries", tag = "commands", request_body = NewDelivery,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn record_delivery(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewDelivery>,
) -> Result<Response, ApiError> {
    auth.for_supplier(&body.supplier_id)?;
    let cmd = body.into_command(Timestamp::now())?;
    submit(&s, &auth, &headers, "POST /v1/deliveries", &raw, cmd).await
}

#[utoipa::path(post, path = "/v1/sales", tag = "commands", request_body = NewSale,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn record_sale(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewSale>,
) -> Result<Response, ApiError> {
    auth.for_store(&body.store_id)?;
    let cmd = body.into_command(Timestamp::now())?;
    submit(&s, &auth, &headers, "POST /v1/sales", &raw, cmd).await
}

#[utoipa::path(post, path = "/v1/sales/{sale_id}/void", tag = "commands", request_body = VoidSale,
    params(("sale_id" = String, Path, description = "The sale to void"), IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn void_sale(
    State(s): State<AppState>,
    auth: Auth,
    Path(sale_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<VoidSale>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Admin, Role::Store])?;
    // A store key may void only its own store's sales; the processor checks the sale's store.
    let only_store = own_scope(&auth, Role::Store, StoreId::parse)?;
    let cmd = body.into_command(sale_id.clone(), only_store, Timestamp::now())?;
    submit(
        &s,
        &auth,
        &headers,
        &format!("POST /v1/sales/{sale_id}/void"),
        &raw,
        cmd,
    )
    .await
}

#[utoipa::path(post, path = "/v1/deliveries/{delivery_id}/corrections", tag = "commands",
    request_body = CorrectDelivery,
    params(("delivery_id" = String, Path, description = "The delivery to correct"), IdempotencyHeader),
    security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn correct_delivery(
    State(s): State<AppState>,
    auth: Auth,
    Path(delivery_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<CorrectDelivery>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Admin, Role::Supplier])?;
    // A supplier key may correct only its own supplier's deliveries; the body names no supplier, so
    // the processor checks the delivery's.
    let only_supplier = own_scope(&auth, Role::Supplier, SupplierId::parse)?;
    let cmd = body.into_command(delivery_id.clone(), only_supplier)?;
    submit(
        &s,
        &auth,
        &headers,
        &format!("POST /v1/deliveries/{delivery_id}/corrections"),
        &raw,
        cmd,
    )
    .await
}

/// The scope of a key of `role`, which the processor holds the command to (`None` for other roles);
/// 403 for a key of that role without a valid scope.
fn own_scope<T>(
    auth: &Auth,
    role: Role,
    parse: impl FnOnce(String) -> Result<T, InvalidValue>,
) -> Result<Option<T>, ApiError> {
    if auth.role() != role {
        return Ok(None);
    }
    auth.0
        .scope
        .clone()
        .and_then(|s| parse(s).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Forbidden(format!("this {} key has no valid scope", role.as_str()))
        })
}

#[utoipa::path(post, path = "/v1/returns", tag = "commands", request_body = NewReturn,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn record_return(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewReturn>,
) -> Result<Response, ApiError> {
    auth.for_store(&body.store_id)?;
    let cmd = body.into_command(Timestamp::now())?;
    submit(&s, &auth, &headers, "POST /v1/returns", &raw, cmd).await
}

#[utoipa::path(post, path = "/v1/stock-adjustments", tag = "commands", request_body = NewAdjustment,
    params(IdempotencyHeader), security(("api_key" = [])),
    responses((status = 202, description = "Accepted: durable and queued", body = AcceptedBody), CommandErrors))]
pub async fn adjust_stock(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<NewAdjustment>,
) -> Result<Response, ApiError> {
    auth.for_store(&body.store_id)?;
    let cmd = body.into_command(Timestamp::now())?;
    submit(&s, &auth, &headers, "POST /v1/stock-adjustments", &raw, cmd).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Wait up to this many milliseconds (0–30000) for the command to leave `accepted`.
    #[param(value_type = u32, required = false, minimum = 0, maximum = 30000)]
    pub wait_ms: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionBody {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"command_id": "0193a5b0-7c1e-7000-8000-000000000000", "status": "processed", "position": 42}))]
pub struct StatusBody {
    pub command_id: String,
    /// `accepted`, `processed` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionBody>,
}

#[utoipa::path(get, path = "/v1/commands/{command_id}", tag = "commands",
    params(("command_id" = String, Path), StatusParams), security(("api_key" = [])),
    responses((status = 200, body = StatusBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "Over the rate limit; retry after `Retry-After` seconds"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "Overloaded or storage unavailable; retry after `Retry-After` seconds")))]
pub async fn command_status(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<StatusParams>,
) -> Result<Json<StatusBody>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no command {id}"));
    let command_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let wait_ms = match p.wait_ms.as_deref() {
        None => 0,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= 30_000)
            .ok_or_else(|| ApiError::invalid("wait_ms", "must be an integer from 0 to 30000"))?,
    };
    // Authorize on the record before waiting, so nobody can long-poll someone else's command.
    let record = s
        .backend
        .commands
        .status(command_id)
        .await?
        .ok_or_else(not_found)?;
    let me = &auth.0;
    let sender = &record.principal;
    let allowed = matches!(me.role, Role::Admin | Role::Auditor)
        || (me.role == sender.role && me.scope == sender.scope);
    if !allowed {
        return Err(not_found());
    }
    let record = if wait_ms > 0 {
        let wait = tally_core::wait::command_outcome(
            s.backend.commands.as_ref(),
            &s.signals,
            command_id,
            Duration::from_millis(wait_ms),
        );
        // A long poll ends early when the server shuts down, answering the status as it is.
        let waited = tokio::select! {
            r = wait => r?,
            _ = crate::shutting_down(&s) => s.backend.commands.status(command_id).await?,
        };
        waited.ok_or_else(not_found)?
    } else {
        record
    };
    Ok(Json(match record.status {
        CommandStatus::Accepted => StatusBody {
            command_id: id,
            status: "accepted".into(),
            position: None,
            rejection: None,
        },
        CommandStatus::Processed { position } => StatusBody {
            command_id: id,
            status: "processed".into(),
            position: Some(position),
            rejection: None,
        },
        CommandStatus::Rejected { code, message } => StatusBody {
            command_id: id,
            status: "rejected".into(),
            position: None,
            rejection: Some(RejectionBody { code, message }),
        },
    }))
}
