//! Query endpoints: the read models as JSON, or CSV on `Accept: text/csv`. Each answer carries the
//! position its read model reflects; `min_position` waits (up to 10 s) for the caller's own writes.

use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tally_core::readmodel::{DayFigures, SupplierDay};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::{ApiError, Problem};

/// Error answers every query can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum QueryErrors {
    /// Missing, unknown or revoked API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(#[to_schema] Problem),
    /// The key may not read this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] Problem),
    /// An invalid parameter, named in `errors`.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(#[to_schema] Problem),
    /// Over the key's rate limit (or, without a valid key, the client address's); retry after
    /// `Retry-After` seconds. `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` say more.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(#[to_schema] Problem),
    /// The read model did not reach `min_position` within 10 s, or the server is overloaded; retry
    /// after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Wait until the read model reflects at least this global position (read your writes).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
    /// Answer as known at this time. Not available yet: refused with 422.
    #[param(value_type = String, required = false, format = DateTime)]
    pub as_of: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub from: Option<String>,
    /// Last business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub to: Option<String>,
    /// Wait until the read model reflects at least this global position (read your writes).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
    /// Answer as known at this time. Not available yet: refused with 422.
    #[param(value_type = String, required = false, format = DateTime)]
    pub as_of: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DateParams {
    /// The business date, `YYYY-MM-DD` (required; its absence is a 422 naming it).
    #[param(value_type = String, required = true, format = Date)]
    pub date: Option<String>,
    /// Wait until the read model reflects at least this global position (read your writes).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
}

fn date(name: &str, raw: Option<&str>) -> Result<Option<Date>, ApiError> {
    raw.map(|r| {
        r.parse::<Date>()
            .map_err(|_| ApiError::invalid(name, "must be a date, YYYY-MM-DD"))
    })
    .transpose()
}

async fn ready(
    s: &AppState,
    min_position: Option<&str>,
    as_of: Option<&str>,
) -> Result<(), ApiError> {
    if as_of.is_some() {
        return Err(ApiError::invalid(
            "as_of",
            "as_of queries are not available yet",
        ));
    }
    let Some(raw) = min_position else {
        return Ok(());
    };
    let position: u64 = raw
        .parse()
        .map_err(|_| ApiError::invalid("min_position", "must be a non-negative integer"))?;
    let wait = tally_core::wait::projected(s.backend.read.as_ref(), &s.signals, position, MAX_WAIT);
    let reached = tokio::select! {
        r = wait => r?,
        _ = crate::shutting_down(s) => false,
    };
    if reached {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            detail: format!("the read models have not reached position {position} yet"),
            retry_after_s: 1,
        })
    }
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

fn csv(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r
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
    pub items: Vec<OnHand>,
}

#[utoipa::path(get, path = "/v1/inventory/{store_id}", tag = "queries", params(("store_id" = String, Path), ReadParams),
    security(("api_key" = [])), responses((status = 200, content((Inventory = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn inventory(
    State(s): State<AppState>,
    auth: Auth,
    Path(store_id): Path<String>,
    QueryParams(p): QueryParams<ReadParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&store_id)?;
    ready(&s, p.min_position.as_deref(), p.as_of.as_deref()).await?;
    let (position, rows) = s.backend.read.inventory(&store_id).await?;
    if wants_csv(&headers) {
        let mut out = String::from("store_id,item_id,on_hand\n");
        for (item, n) in &rows {
            let _ = writeln!(out, "{store_id},{item},{n}");
        }
        return Ok(csv(out));
    }
    let items = rows
        .into_iter()
        .map(|(item_id, on_hand)| OnHand { item_id, on_hand })
        .collect();
    Ok(Json(Inventory {
        store_id,
        position,
        items,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemOnHand {
    pub store_id: String,
    pub item_id: String,
    pub on_hand: i64,
    pub position: u64,
}

#[utoipa::path(get, path = "/v1/inventory/{store_id}/items/{item_id}", tag = "queries",
    params(("store_id" = String, Path), ("item_id" = String, Path), ReadParams),
    security(("api_key" = [])), responses((status = 200, content((ItemOnHand = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn inventory_item(
    State(s): State<AppState>,
    auth: Auth,
    Path((store_id, item_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<ReadParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&store_id)?;
    ready(&s, p.min_position.as_deref(), p.as_of.as_deref()).await?;
    let (position, on_hand) = s.backend.read.inventory_item(&store_id, &item_id).await?;
    if wants_csv(&headers) {
        return Ok(csv(format!(
            "store_id,item_id,on_hand,position\n{store_id},{item_id},{on_hand},{position}\n"
        )));
    }
    Ok(Json(ItemOnHand {
        store_id,
        item_id,
        on_hand,
        position,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SalesDay {
    pub date: String,
    pub transactions: i64,
    pub units_sold: i64,
    pub gross_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub net_cents: i64,
}

impl SalesDay {
    fn new(date: Date, f: &DayFigures) -> Self {
        Self {
            date: date.to_string(),
            transactions: f.transactions,
            units_sold: f.units_sold,
            gross_cents: f.gross_cents,
            returned_units: f.returned_units,
            returned_cents: f.returned_cents,
            net_cents: f.net_cents(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreDailySales {
    pub store_id: String,
    pub position: u64,
    pub days: Vec<SalesDay>,
}

const SALES_CSV_HEADER: &str =
    "transactions,units_sold,gross_cents,returned_units,returned_cents,net_cents";

fn sales_csv_row(out: &mut String, key: &str, f: &DayFigures) {
    let _ = writeln!(
        out,
        "{key},{},{},{},{},{},{}",
        f.transactions,
        f.units_sold,
        f.gross_cents,
        f.returned_units,
        f.returned_cents,
        f.net_cents()
    );
}

#[utoipa::path(get, path = "/v1/reports/stores/{store_id}/daily-sales", tag = "queries",
    params(("store_id" = String, Path), RangeParams),
    security(("api_key" = [])), responses((status = 200, content((StoreDailySales = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn store_daily_sales(
    State(s): State<AppState>,
    auth: Auth,
    Path(store_id): Path<String>,
    QueryParams(p): QueryParams<RangeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&store_id)?;
    let (from, to) = (
        date("from", p.from.as_deref())?,
        date("to", p.to.as_deref())?,
    );
    ready(&s, p.min_position.as_deref(), p.as_of.as_deref()).await?;
    let (position, rows) = s.backend.read.store_daily(&store_id, from, to).await?;
    if wants_csv(&headers) {
        let mut out = format!("store_id,date,{SALES_CSV_HEADER}\n");
        for (d, f) in &rows {
            sales_csv_row(&mut out, &format!("{store_id},{d}"), f);
        }
        return Ok(csv(out));
    }
    let days = rows.iter().map(|(d, f)| SalesDay::new(*d, f)).collect();
    Ok(Json(StoreDailySales {
        store_id,
        position,
        days,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreSales {
    pub store_id: String,
    pub transactions: i64,
    pub units_sold: i64,
    pub gross_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub net_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailySales {
    pub date: String,
    pub position: u64,
    pub stores: Vec<StoreSales>,
}

#[utoipa::path(get, path = "/v1/reports/daily-sales", tag = "queries", params(DateParams),
    security(("api_key" = [])), responses((status = 200, content((DailySales = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn daily_sales(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<DateParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.require(&[
        tally_core::model::Role::Admin,
        tally_core::model::Role::Analyst,
    ])?;
    let day = date("date", p.date.as_deref())?
        .ok_or_else(|| ApiError::invalid("date", "is required, YYYY-MM-DD"))?;
    ready(&s, p.min_position.as_deref(), None).await?;
    let (position, rows) = s.backend.read.daily_sales(day).await?;
    if wants_csv(&headers) {
        let mut out = format!("date,store_id,{SALES_CSV_HEADER}\n");
        for (store, f) in &rows {
            sales_csv_row(&mut out, &format!("{day},{store}"), f);
        }
        return Ok(csv(out));
    }
    let stores = rows
        .into_iter()
        .map(|(store_id, f)| StoreSales {
            store_id,
            transactions: f.transactions,
            units_sold: f.units_sold,
            gross_cents: f.gross_cents,
            returned_units: f.returned_units,
            returned_cents: f.returned_cents,
            net_cents: f.net_cents(),
        })
        .collect();
    Ok(Json(DailySales {
        date: day.to_string(),
        position,
        stores,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierDayBody {
    pub date: String,
    pub deliveries: i64,
    pub units_supplied: i64,
    pub supply_cost_cents: i64,
    pub units_sold: i64,
    pub sales_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierDaily {
    pub supplier_id: String,
    pub position: u64,
    pub days: Vec<SupplierDayBody>,
}

#[utoipa::path(get, path = "/v1/reports/suppliers/{supplier_id}/daily", tag = "queries",
    params(("supplier_id" = String, Path), RangeParams),
    security(("api_key" = [])), responses((status = 200, content((SupplierDaily = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn supplier_daily(
    State(s): State<AppState>,
    auth: Auth,
    Path(supplier_id): Path<String>,
    QueryParams(p): QueryParams<RangeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_supplier(&supplier_id)?;
    let (from, to) = (
        date("from", p.from.as_deref())?,
        date("to", p.to.as_deref())?,
    );
    ready(&s, p.min_position.as_deref(), p.as_of.as_deref()).await?;
    let (position, rows) = s
        .backend
        .read
        .supplier_daily(&supplier_id, from, to)
        .await?;
    if wants_csv(&headers) {
        let mut out = String::from(
            "supplier_id,date,deliveries,units_supplied,supply_cost_cents,units_sold,sales_cents\n",
        );
        for (d, f) in &rows {
            let _ = writeln!(
                out,
                "{supplier_id},{d},{},{},{},{},{}",
                f.deliveries, f.units_supplied, f.supply_cost_cents, f.units_sold, f.sales_cents
            );
        }
        return Ok(csv(out));
    }
    let days = rows
        .iter()
        .map(|(d, f): &(Date, SupplierDay)| SupplierDayBody {
            date: d.to_string(),
            deliveries: f.deliveries,
            units_supplied: f.units_supplied,
            supply_cost_cents: f.supply_cost_cents,
            units_sold: f.units_sold,
            sales_cents: f.sales_cents,
        })
        .collect();
    Ok(Json(SupplierDaily {
        supplier_id,
        position,
        days,
    })
    .into_response())
}
