//! Data services over HTTP: `GET /v1/queries` lists the named queries a key may call,
//! `GET /v1/queries/{name}` runs one (JSON or CSV), `POST /v1/admin/queries/reload` reloads the set.
//! The queries themselves are declared in configuration ([`tally_core::dataservices`]); each also
//! gets a path of its own in `/openapi.json` ([`document`]).

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_core::dataservices::{
    BindError, Cell, Column, DEFAULT_LIMIT, MAX_LIMIT, Param, Query, RunError,
};
use tally_core::model::Role;
use tally_core::readmodel::PROJECTIONS;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::queries::QueryErrors;

/// Calls of each named query, by outcome (`ok`, `invalid`, `forbidden`, `timeout`, `refused`, `error`).
pub const QUERY_CALLS: &str = "tally_query_calls_total";
/// Time each named query took to run (not counting a `min_position` wait).
pub const QUERY_SECONDS: &str = "tally_query_duration_seconds";
/// Rows each named query answered.
pub const QUERY_ROWS: &str = "tally_query_rows_total";

/// The endpoint's own parameters (never a query's).
const LIMIT: &str = "limit";
const MIN_POSITION: &str = "min_position";

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryList {
    pub queries: Vec<QueryEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryEntry {
    pub name: String,
    pub description: String,
    #[schema(value_type = Vec<Object>)]
    pub params: Vec<Param>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryAnswer {
    pub name: String,
    /// The read models' position the rows reflect (the least of their checkpoints).
    pub position: u64,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<Column>,
    /// One array per row, its cells in the order of `columns`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Cell>>,
    /// Whether there were more rows than `limit`.
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// How many queries the new set holds.
    pub queries: usize,
}

/// Whether a key may call `q`: its role is listed, and a scoped key (a store's or a supplier's)
/// only a query pinned to its own id by `scope_param`.
fn may_call(auth: &Auth, q: &Query) -> bool {
    let scoped = matches!(auth.role(), Role::Store | Role::Supplier);
    q.allows(auth.role()) && (!scoped || q.scope_param.is_some())
}

/// The named queries this key may call.
#[utoipa::path(
    get,
    path = "/v1/queries",
    tag = "queries",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The queries the key's role may call", body = QueryList),
        QueryErrors,
    )
)]
pub async fn list_queries(State(s): State<AppState>, auth: Auth) -> Json<QueryList> {
    let set = s.queries.current();
    let queries = set
        .iter()
        .filter(|q| may_call(&auth, q))
        .map(|q| QueryEntry {
            name: q.name.clone(),
            description: q.description.clone(),
            params: q.params.clone(),
        })
        .collect();
    Json(QueryList { queries })
}

fn count(name: &str, outcome: &'static str) {
    metrics::counter!(QUERY_CALLS, "query" => name.to_owned(), "outcome" => outcome).increment(1);
}

/// Runs a named query with its parameters (in the query string), JSON or CSV.
#[utoipa::path(
    get,
    path = "/v1/queries/{name}",
    tag = "queries",
    security(("api_key" = [])),
    params(
        ("name" = String, Path, description = "The query's name"),
        ("limit" = Option<u32>, Query, description = "Most rows, 1 to 10000 (default 1000)"),
        ("min_position" = Option<u64>, Query, description = "Wait (up to 10 s) until the read models reach this position"),
    ),
    responses(
        (status = 200, description = "The rows (or CSV with `Accept: text/csv`)", body = QueryAnswer),
        (status = 404, description = "No query of that name", content_type = "application/problem+json"),
        QueryErrors,
    )
)]
pub async fn run_query(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let set = s.queries.current();
    let q = set
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no query named {name:?}")))?
        .clone();
    if !may_call(&auth, &q) {
        count(&q.name, "forbidden");
        return Err(ApiError::Forbidden(if q.allows(auth.role()) {
            format!(
                "query {}: a scoped key may only call queries pinned to its own id",
                q.name
            )
        } else {
            format!(
                "query {}: a {} key may not call it",
                q.name,
                auth.role().as_str()
            )
        }));
    }
    let mut given = params(raw.as_deref())?;
    let limit = match given.remove(LIMIT) {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid(LIMIT, "must be a whole number from 1 to 10000"))?,
    };
    let min = given
        .remove(MIN_POSITION)
        .map(|raw| {
            raw.parse::<u64>()
                .map_err(|_| ApiError::invalid(MIN_POSITION, "must be a position, a whole number"))
        })
        .transpose()?;
    let scope = auth
        .0
        .scope
        .as_deref()
        .filter(|_| matches!(auth.role(), Role::Store | Role::Supplier));
    if let (Some(own), Some(param)) = (scope, &q.scope_param) {
        // A scoped key's own id, unless it names one (which must then be its own).
        given.entry(param.clone()).or_insert_with(|| own.to_owned());
    }
    let binds = q.bind(&given, scope).map_err(|e| {
        count(
            &q.name,
            if matches!(e, BindError::OutOfScope(_)) {
                "forbidden"
            } else {
                "invalid"
            },
        );
        match e {
            BindError::OutOfScope(param) => ApiError::Forbidden(format!(
                "query {}: this key is scoped to {}, and {param} must be its own",
                q.name,
                scope.unwrap_or("its own id")
            )),
            BindError::Unknown(param) => {
                ApiError::invalid(param, format!("query {} has no such parameter", q.name))
            }
            BindError::Missing(param) => ApiError::invalid(param, "required"),
            BindError::Invalid { param, problem } => ApiError::invalid(param, problem),
        }
    })?;
    if let Some(min) = min {
        crate::queries::wait_for_all(&s, &PROJECTIONS, min).await?;
    }
    // The views span the read models: none may be half built.
    crate::queries::not_back_filling(&s, &PROJECTIONS).await?;
    let started = Instant::now();
    let answer = s.queries.backend().run(&q, binds, limit).await;
    metrics::histogram!(QUERY_SECONDS, "query" => q.name.clone())
        .record(started.elapsed().as_secs_f64());
    let table = answer.map_err(|e| {
        let (outcome, error) = match e {
            RunError::Timeout(t) => (
                "timeout",
                ApiError::Unavailable {
                    detail: format!(
                        "query {} ran past its time limit of {} ms and was cancelled",
                        q.name,
                        t.as_millis()
                    ),
                    retry_after_s: 5,
                },
            ),
            RunError::Refused(m) => (
                "refused",
                ApiError::invalid(
                    "query",
                    format!("query {}: the database refused it: {m}", q.name),
                ),
            ),
            RunError::Storage(e) => ("error", ApiError::from(e)),
        };
        count(&q.name, outcome);
        error
    })?;
    count(&q.name, "ok");
    metrics::counter!(QUERY_ROWS, "query" => q.name.clone()).increment(table.rows.len() as u64);
    if crate::queries::wants_csv(&headers) {
        return Ok(crate::queries::csv(csv(&table.columns, &table.rows)));
    }
    Ok(Json(QueryAnswer {
        name: q.name.clone(),
        position: table.position,
        columns: table.columns,
        rows: table.rows,
        truncated: table.truncated,
    })
    .into_response())
}

/// The query string as name → value, percent-decoded; a parameter given twice is refused.
fn params(raw: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::invalid(k.to_string(), "given more than once"));
        }
    }
    Ok(out)
}

/// RFC 4180 CSV: a header of the column names, then the rows; fields with a comma, a quote or a
/// line break are quoted, quotes doubled.
fn csv(columns: &[Column], rows: &[Vec<Cell>]) -> String {
    fn field(out: &mut String, raw: &str) {
        out.push_str(&crate::queries::csv_field(raw));
    }
    let mut out = String::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, &c.name);
    }
    out.push('\n');
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, &c.to_field());
        }
        out.push('\n');
    }
    out
}

/// Reads the declarations again and serves the new set if every query in it passes; otherwise 422
/// with every problem, and the old set keeps serving.
#[utoipa::path(
    post,
    path = "/v1/admin/queries/reload",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The new set is serving", body = Reloaded),
        QueryErrors,
    )
)]
pub async fn reload_queries(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<Reloaded>, ApiError> {
    auth.require(&[Role::Admin])?;
    match s.queries.reload().await {
        Ok(queries) => {
            tracing::info!(queries, "named queries reloaded");
            Ok(Json(Reloaded { queries }))
        }
        Err(problems) => {
            tracing::warn!(
                ?problems,
                "named queries not reloaded; the old set keeps serving"
            );
            Err(ApiError::Invalid(
                problems
                    .into_iter()
                    .map(|p| crate::error::FieldError::new("queries", p))
                    .collect(),
            ))
        }
    }
}

/// `/openapi.json` with a path per named query: its parameters (typed) and its columns as the
/// answer's row schema, so each can be tried from `/docs`.
pub fn document(
    base: &serde_json::Value,
    queries: &tally_core::dataservices::QuerySet,
) -> serde_json::Value {
    use serde_json::json;
    let mut doc = base.clone();
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return doc;
    };
    for q in queries.iter() {
        let schema = |ty: tally_core::dataservices::ParamType| match ty {
            tally_core::dataservices::ParamType::Integer => {
                json!({"type": "integer", "format": "int64"})
            }
            tally_core::dataservices::ParamType::Boolean => json!({"type": "boolean"}),
            tally_core::dataservices::ParamType::Date => {
                json!({"type": "string", "format": "date"})
            }
            tally_core::dataservices::ParamType::Timestamp => {
                json!({"type": "string", "format": "date-time"})
            }
            _ => json!({"type": "string"}),
        };
        let mut parameters: Vec<serde_json::Value> = q
            .params
            .iter()
            .map(|p| {
                let mut s = schema(p.ty);
                if let Some(d) = &p.default {
                    s["default"] = json!(d);
                }
                json!({"name": p.name, "in": "query", "required": p.required, "schema": s})
            })
            .collect();
        parameters.push(json!({"name": LIMIT, "in": "query", "required": false,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}));
        parameters.push(
            json!({"name": MIN_POSITION, "in": "query", "required": false,
            "schema": {"type": "integer", "minimum": 0}}),
        );
        let cells: Vec<serde_json::Value> = q
            .columns
            .iter()
            .map(|c| {
                let mut s = if c.ty.is_empty() {
                    json!({})
                } else {
                    json!({"type": [c.ty.as_str(), "null"]})
                };
                s["title"] = json!(c.name);
                s
            })
            .collect();
        let roles: Vec<&str> = q.roles.iter().map(|r| r.as_str()).collect();
        let description = format!(
            "{}\n\nRoles: {}.{}\n\n```sql\n{}\n```",
            q.description,
            roles.join(", "),
            q.scope_param
                .as_ref()
                .map(|p| format!(" A store or supplier key is pinned to its own id by `{p}`."))
                .unwrap_or_default(),
            q.sql.trim()
        );
        paths.insert(
            format!("/v1/queries/{}", q.name),
            json!({"get": {
                "tags": ["data services"],
                "summary": q.description,
                "description": description,
                "operationId": format!("query_{}", q.name),
                "security": [{"api_key": []}],
                "parameters": parameters,
                "responses": {
                    "200": {
                        "description": "The rows (or CSV with `Accept: text/csv`)",
                        "content": {
                            "application/json": {"schema": {
                                "type": "object",
                                "required": ["name", "position", "columns", "rows", "truncated"],
                                "properties": {
                                    "name": {"type": "string", "const": q.name},
                                    "position": {"type": "integer"},
                                    "columns": {"type": "array", "items": {"type": "object"}},
                                    "rows": {"type": "array", "items": {
                                        "type": "array", "prefixItems": cells,
                                        "minItems": q.columns.len(), "maxItems": q.columns.len()}},
                                    "truncated": {"type": "boolean"}
                                }
                            }},
                            "text/csv": {"schema": {"type": "string"}}
                        }
                    },
                    "401": {"description": "Missing, unknown or revoked API key"},
                    "403": {"description": "The key may not call this query (role, or another store's or supplier's id)"},
                    "422": {"description": "A parameter is missing, unknown or ill-typed (named in `errors`)"},
                    "503": {"description": "The query ran past its time limit, or `min_position` was not reached"}
                }
            }}),
        );
    }
    doc
}
