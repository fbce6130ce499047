//! Item reports: one item's daily sales (in a store, or over every store) and the top items of a
//! period. Store keys read their own store's figures; supplier keys their own items'.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_core::model::Role;
use tally_core::readmodel::ITEM_DAILY;
use tally_core::rows::{DateRange, TopItemsQuery};
use tally_domain::values::{StoreId, SupplierId};
use utoipa::{IntoParams, ToSchema};

use super::time::{Knowledge, TimeParams, knowledge, travel};
use super::{Csv, QueryErrors, date, range, store_id, supplier_id, wants_csv};
use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemParams {
    /// Only this store (a store key: its own, which is also the default).
    #[param(value_type = String, required = false)]
    pub store_id: Option<String>,
    /// First business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub from: Option<String>,
    /// Last business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopParams {
    /// One business date, `YYYY-MM-DD` (or `from` and `to`, not both).
    #[param(value_type = String, required = false, format = Date)]
    pub date: Option<String>,
    /// First business date (inclusive).
    #[param(value_type = String, required = false, format = Date)]
    pub from: Option<String>,
    /// Last business date (inclusive).
    #[param(value_type = String, required = false, format = Date)]
    pub to: Option<String>,
    /// Only this store (a store key: its own, which is also the default).
    #[param(value_type = String, required = false)]
    pub store_id: Option<String>,
    /// Only this supplier's items (a supplier key: its own, which is also the default).
    #[param(value_type = String, required = false)]
    pub supplier_id: Option<String>,
    /// How many items, 1 to 100 (default 10).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// The store a key may read item figures of: a store key only its own (and that by default).
fn store_of(auth: &Auth, raw: Option<&str>) -> Result<Option<StoreId>, ApiError> {
    let p = &auth.0;
    match (p.role, raw) {
        (Role::Admin | Role::Analyst, None) => Ok(None),
        (Role::Admin | Role::Analyst, Some(raw)) => store_id(raw).map(Some),
        (Role::Store, raw) => {
            let own = p.scope.as_deref().unwrap_or_default();
            let wanted = raw.unwrap_or(own);
            auth.reads_store(wanted)?;
            store_id(wanted).map(Some)
        }
        (Role::Supplier, raw) => raw.map(store_id).transpose(),
        (role, _) => Err(ApiError::Forbidden(format!(
            "a {} key may not read item reports",
            role.as_str()
        ))),
    }
}

/// The supplier whose items a ranking is limited to: any for admins, analysts and store keys
/// (none by default), a supplier key's own (and that by default).
fn supplier_of(auth: &Auth, raw: Option<&str>) -> Result<Option<SupplierId>, ApiError> {
    match (auth.0.role, raw) {
        (Role::Supplier, raw) => {
            let own = auth.0.scope.as_deref().unwrap_or_default();
            let wanted = raw.unwrap_or(own);
            auth.reads_supplier(wanted)?;
            supplier_id(wanted).map(Some)
        }
        (_, raw) => raw.map(supplier_id).transpose(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemDayBody {
    pub date: String,
    pub units_sold: i64,
    pub gross_cents: i64,
    pub discount_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub net_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemDailySales {
    pub item_id: String,
    /// The store asked for; absent when summed over every store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// The item's supplier, once the item has sold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier_id: Option<String>,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub days: Vec<ItemDayBody>,
}

#[utoipa::path(get, path = "/v1/reports/items/{item_id}/daily-sales", tag = "queries",
    params(("item_id" = String, Path), ItemParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((ItemDailySales = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn item_daily_sales(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
    QueryParams(p): QueryParams<ItemParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = store_of(&auth, p.store_id.as_deref())?;
    let item = super::item_id(&raw)?;
    let range = range(p.from.as_deref(), p.to.as_deref())?;
    let k = knowledge(&s, &t, ITEM_DAILY).await?;
    let answer = match k {
        Knowledge::Current => {
            s.backend
                .read
                .item_daily(&item, store.as_ref(), range)
                .await?
        }
        Knowledge::Prefix { position, .. } => {
            travel(&s)
                .item_daily(&item, store.as_ref(), range, position)
                .await?
        }
    };
    if let (Some(own), Some(of)) = (supplier_of(&auth, None)?, &answer.rows.supplier_id)
        && own != *of
    {
        return Err(ApiError::Forbidden(format!(
            "item {item} is not supplied by {own}"
        )));
    }
    if wants_csv(&headers) {
        let mut out = Csv::new(
            "item_id,date,units_sold,gross_cents,returned_units,returned_cents,net_cents,discount_cents",
        );
        for d in &answer.rows.days {
            let f = &d.figures;
            out.row(format_args!(
                "{item},{},{},{},{},{},{},{}",
                d.date,
                f.units_sold,
                f.gross_cents,
                f.returned_units,
                f.returned_cents,
                f.net_cents(),
                f.discount_cents
            ));
        }
        return Ok(out.into_response());
    }
    let days = answer
        .rows
        .days
        .iter()
        .map(|d| ItemDayBody {
            date: d.date.to_string(),
            units_sold: d.figures.units_sold,
            gross_cents: d.figures.gross_cents,
            discount_cents: d.figures.discount_cents,
            returned_units: d.figures.returned_units,
            returned_cents: d.figures.returned_cents,
            net_cents: d.figures.net_cents(),
        })
        .collect();
    Ok(Json(ItemDailySales {
        item_id: item.to_string(),
        store_id: store.map(|s| s.to_string()),
        supplier_id: answer.rows.supplier_id.as_ref().map(|s| s.to_string()),
        position: answer.position,
        as_of: k.as_of(),
        days,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RankedItem {
    pub item_id: String,
    pub units_sold: i64,
    pub net_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopItems {
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub items: Vec<RankedItem>,
}

fn top_query(auth: &Auth, p: &TopParams) -> Result<TopItemsQuery, ApiError> {
    let range = match p.date.as_deref() {
        Some(_) if p.from.is_some() || p.to.is_some() => {
            return Err(ApiError::invalid(
                "date",
                "give either date, or from and to, not both",
            ));
        }
        Some(raw) => DateRange::day(date("date", Some(raw))?.unwrap_or_default()),
        None => range(p.from.as_deref(), p.to.as_deref())?,
    };
    let limit = match p.limit.as_deref() {
        None => 10,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be an integer from 1 to 100"))?,
    };
    Ok(TopItemsQuery {
        range,
        store: store_of(auth, p.store_id.as_deref())?,
        supplier: supplier_of(auth, p.supplier_id.as_deref())?,
        limit,
    })
}

#[utoipa::path(get, path = "/v1/reports/top-items", tag = "queries", params(TopParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((TopItems = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn top_items(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<TopParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = top_query(&auth, &p)?;
    let k = knowledge(&s, &t, ITEM_DAILY).await?;
    let answer = match k {
        Knowledge::Current => s.backend.read.top_items(&query).await?,
        Knowledge::Prefix { position, .. } => travel(&s).top_items(&query, position).await?,
    };
    if wants_csv(&headers) {
        let mut out = Csv::new("item_id,units_sold,net_cents");
        for i in &answer.rows {
            out.row(format_args!(
                "{},{},{}",
                i.item_id, i.units_sold, i.net_cents
            ));
        }
        return Ok(out.into_response());
    }
    Ok(Json(TopItems {
        position: answer.position,
        as_of: k.as_of(),
        items: answer
            .rows
            .into_iter()
            .map(|i| RankedItem {
                item_id: i.item_id.to_string(),
                units_sold: i.units_sold,
                net_cents: i.net_cents,
            })
            .collect(),
    })
    .into_response())
}
