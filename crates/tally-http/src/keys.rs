//! Admin endpoints for API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_core::model::{ApiKey, KeyUsage, Role};
use tally_domain::values::check_id;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Auth, generate_key};
use crate::body::JsonBody;
use crate::dto::Check;
use crate::error::{ApiError, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"role": "store", "scope": "berlin-1"}))]
pub struct NewKeyRequest {
    /// `admin`, `store`, `supplier`, `analyst` or `auditor`.
    pub role: String,
    /// The store id (role `store`) or supplier id (role `supplier`); absent for other roles.
    pub scope: Option<String>,
    /// This key's rate limit, requests per second.
    pub rate_per_second: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub key_id: String,
    /// The secret, shown this once; only its hash is stored.
    pub key: String,
    pub role: String,
    pub scope: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"key_id": "key_4a1b2c3d4e5f", "role": "store", "scope": "berlin-1",
    "rate_per_second": null, "created_at": "2026-03-14T09:00:00Z", "revoked_at": null,
    "requests": 1520, "rejections": 3, "last_used_at": "2026-03-14T17:42:10.5Z"}))]
pub struct KeyInfo {
    pub key_id: String,
    pub role: String,
    pub scope: Option<String>,
    /// The key's own rate limit; `null`: its role's default.
    pub rate_per_second: Option<u32>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Requests made with this key, as counted by the gateways: stored every 5 s, plus this
    /// process's count not stored yet (another gateway's shows once it has stored it).
    pub requests: u64,
    /// Of those, the ones answered with a 4xx status: 429 (over the rate limit) included, as well as
    /// 400, 401, 403, 404, 409, 413, 415 and 422.
    pub rejections: u64,
    /// When the key was last used; `null` if never.
    pub last_used_at: Option<String>,
}

impl KeyInfo {
    fn new(k: ApiKey, usage: Option<&KeyUsage>) -> Self {
        Self {
            role: k.role.as_str().to_owned(),
            scope: k.scope,
            rate_per_second: k.rate_per_second,
            created_at: k.created_at.to_string(),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
            requests: usage.map_or(0, |u| u.requests),
            rejections: usage.map_or(0, |u| u.rejections),
            last_used_at: usage.and_then(|u| u.last_used_at).map(|t| t.to_string()),
            key_id: k.key_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Validates a key request into a role, scope and rate.
pub fn check_key_request(
    req: &NewKeyRequest,
) -> Result<(Role, Option<String>, Option<u32>), ApiError> {
    let mut c = Check::default();
    let role = Role::parse(&req.role);
    if role.is_none() {
        c.fail(
            "role",
            "must be one of admin, store, supplier, analyst, auditor",
        );
    }
    if let Some(role) = role {
        match (&req.scope, role.needs_scope()) {
            (None, true) => c.fail("scope", format!("is required for a {} key", role.as_str())),
            (Some(_), false) => c.fail(
                "scope",
                format!("must be absent for a {} key", role.as_str()),
            ),
            (Some(s), true) => {
                c.field("scope", check_id(s));
            }
            (None, false) => {}
        }
    }
    let rate = match req.rate_per_second {
        None => None,
        Some(r) if (1..=1_000_000).contains(&r) => Some(r as u32),
        Some(_) => {
            c.fail("rate_per_second", "must be an integer from 1 to 1000000");
            None
        }
    };
    let role = c.finish(role)?;
    Ok((role, req.scope.clone(), rate))
}

#[utoipa::path(post, path = "/v1/admin/api-keys", tag = "admin", request_body = NewKeyRequest, security(("api_key" = [])),
    responses((status = 201, body = CreatedKey), crate::commands::CommandErrors))]
pub async fn create_key(
    State(s): State<AppState>,
    auth: Auth,
    JsonBody(req, _): JsonBody<NewKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    auth.require(&[Role::Admin])?;
    let (role, scope, rate_per_second) = check_key_request(&req)?;
    let new = generate_key();
    let key = ApiKey {
        key_id: new.key_id.clone(),
        role,
        scope: scope.clone(),
        rate_per_second,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    s.backend.keys.create(key, new.hash).await?;
    tracing::info!(key_id = %new.key_id, role = role.as_str(), by = %auth.0.key_id, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key_id: new.key_id,
            key: new.secret,
            role: role.as_str().to_owned(),
            scope,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/admin/api-keys", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = KeyList), crate::queries::QueryErrors))]
pub async fn list_keys(State(s): State<AppState>, auth: Auth) -> Result<Json<KeyList>, ApiError> {
    auth.require(&[Role::Admin])?;
    let keys = s.backend.keys.list().await?;
    let usage = s.traffic.usage(s.backend.keys.as_ref()).await?;
    Ok(Json(KeyList {
        keys: keys
            .into_iter()
            .map(|k| {
                let u = usage.get(&k.key_id);
                KeyInfo::new(k, u)
            })
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/admin/api-keys/{key_id}", tag = "admin", params(("key_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Revoked; the key stops working at once on this server, and within the key cache's TTL (1 s) on other gateways of the same database"),
        (status = 404, body = Problem, content_type = "application/problem+json"), crate::queries::QueryErrors))]
pub async fn revoke_key(
    State(s): State<AppState>,
    auth: Auth,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(&[Role::Admin])?;
    if s.backend.keys.revoke(&key_id, Timestamp::now()).await? {
        s.traffic.forget_key(&key_id);
        tracing::info!(%key_id, by = %auth.0.key_id, "api key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no live key {key_id}")))
    }
}
