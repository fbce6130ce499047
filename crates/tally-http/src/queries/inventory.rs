//! Stock: a store's inventory, one item's, and the low-stock list; as they are, as of an earlier
//! moment, and in business time (`at`: only movements that happened at or before it).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_core::readmodel::INVENTORY;
use tally_core::rows::{Positioned, StockRow};
use tally_domain::values::StoreId;
use utoipa::{IntoParams, ToSchema};

use super::time::{Knowledge, TimeParams, fold_upto, instant, knowledge, travel};
use super::{Csv, QueryErrors, item_id, store_id, wants_csv};
use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StockParams {
    /// Business time: count only the movements that happened (`occurred_at`) at or before this
    /// instant (RFC 3339 with offset). Combines with `as_of`.
    #[param(value_type = String, required = false, format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LowStockParams {
    /// Items with at most this many on hand (0 to 1,000,000; default 5).
    #[param(value_type = u32, required = false, minimum = 0, maximum = 1000000)]
    pub threshold: Option<String>,
    /// Business time, as for the inventory.
    #[param(value_type = String, required = false, format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnHand {
    pub item_id: String,
    pub on_hand: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Inventory {
    pub store_id: String,
    pub position: u64,
    /// The instant asked for with `as_of`, in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// The business-time cut-off asked for with `at`, in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub items: Vec<OnHand>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemOnHand {
    pub store_id: String,
    pub item_id: String,
    pub on_hand: i64,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// A store's stock rows as the parameters ask: the read model, or a fold of the store's stream.
async fn stock(
    s: &AppState,
    store: &StoreId,
    knowledge: Knowledge,
    at: Option<Timestamp>,
) -> Result<Positioned<Vec<StockRow>>, ApiError> {
    if knowledge == Knowledge::Current && at.is_none() {
        return Ok(s.backend.read.inventory(store).await?);
    }
    let upto = fold_upto(s, knowledge, INVENTORY).await?;
    Ok(travel(s).inventory(store, upto, at).await?)
}

fn at_param(raw: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|r| instant("at", r)).transpose()
}

fn stock_answer(
    store: &StoreId,
    answer: Positioned<Vec<StockRow>>,
    knowledge: Knowledge,
    at: Option<Timestamp>,
    headers: &HeaderMap,
) -> Response {
    if wants_csv(headers) {
        let mut out = Csv::new("store_id,item_id,on_hand");
        for r in &answer.rows {
            out.row(format_args!("{store},{},{}", r.item_id, r.on_hand));
        }
        return out.into_response();
    }
    Json(Inventory {
        store_id: store.to_string(),
        position: answer.position,
        as_of: knowledge.as_of(),
        at: at.map(|t| t.to_string()),
        items: answer
            .rows
            .into_iter()
            .map(|r| OnHand {
                item_id: r.item_id.to_string(),
                on_hand: r.on_hand,
            })
            .collect(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/v1/inventory/{store_id}", tag = "queries", params(("store_id" = String, Path), StockParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((Inventory = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn inventory(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
    QueryParams(p): QueryParams<StockParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&raw)?;
    let store = store_id(&raw)?;
    let at = at_param(p.at.as_deref())?;
    let k = knowledge(&s, &t, INVENTORY).await?;
    let answer = stock(&s, &store, k, at).await?;
    Ok(stock_answer(&store, answer, k, at, &headers))
}

#[utoipa::path(get, path = "/v1/inventory/{store_id}/items/{item_id}", tag = "queries",
    params(("store_id" = String, Path), ("item_id" = String, Path), StockParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((ItemOnHand = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn inventory_item(
    State(s): State<AppState>,
    auth: Auth,
    Path((raw_store, raw_item)): Path<(String, String)>,
    QueryParams(p): QueryParams<StockParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&raw_store)?;
    let (store, item) = (store_id(&raw_store)?, item_id(&raw_item)?);
    let at = at_param(p.at.as_deref())?;
    let k = knowledge(&s, &t, INVENTORY).await?;
    let answer = if k == Knowledge::Current && at.is_none() {
        s.backend.read.inventory_item(&store, &item).await?
    } else {
        let upto = fold_upto(&s, k, INVENTORY).await?;
        travel(&s).inventory_item(&store, &item, upto, at).await?
    };
    if wants_csv(&headers) {
        let mut out = Csv::new("store_id,item_id,on_hand,position");
        out.row(format_args!(
            "{store},{item},{},{}",
            answer.rows, answer.position
        ));
        return Ok(out.into_response());
    }
    Ok(Json(ItemOnHand {
        store_id: store.to_string(),
        item_id: item.to_string(),
        on_hand: answer.rows,
        position: answer.position,
        as_of: k.as_of(),
        at: at.map(|t| t.to_string()),
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/inventory/{store_id}/low-stock", tag = "queries",
    params(("store_id" = String, Path), LowStockParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((Inventory = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn low_stock(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
    QueryParams(p): QueryParams<LowStockParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&raw)?;
    let store = store_id(&raw)?;
    let threshold = match p.threshold.as_deref() {
        None => 5,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|t| (0..=1_000_000).contains(t))
            .ok_or_else(|| {
                ApiError::invalid("threshold", "must be an integer from 0 to 1,000,000")
            })?,
    };
    let at = at_param(p.at.as_deref())?;
    let k = knowledge(&s, &t, INVENTORY).await?;
    let answer = if k == Knowledge::Current && at.is_none() {
        s.backend.read.low_stock(&store, threshold).await?
    } else {
        let upto = fold_upto(&s, k, INVENTORY).await?;
        travel(&s).low_stock(&store, threshold, upto, at).await?
    };
    Ok(stock_answer(&store, answer, k, at, &headers))
}
