//! The daily reports: a store's sales per business date, every store's sales on one date, and a
//! supplier's deliveries and sales per date; as they are, or as known at an earlier moment.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tally_core::readmodel::{DayFigures, STORE_DAILY, SUPPLIER_DAILY, SupplierDay};
use tally_core::rows::Dated;
use utoipa::{IntoParams, ToSchema};

use super::time::{Knowledge, TimeParams, knowledge, travel};
use super::{Csv, QueryErrors, date, range, store_id, supplier_id, wants_csv};
use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub from: Option<String>,
    /// Last business date (inclusive), `YYYY-MM-DD`.
    #[param(value_type = String, required = false, format = Date)]
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DateParams {
    /// The business date, `YYYY-MM-DD` (required; its absence is a 422 naming it).
    #[param(value_type = String, required = true, format = Date)]
    pub date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SalesDay {
    pub date: String,
    pub transactions: i64,
    pub units_sold: i64,
    /// List value sold (quantity × unit price), before discounts.
    pub gross_cents: i64,
    /// Discounts given on the day's sales.
    pub discount_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub net_cents: i64,
}

impl SalesDay {
    pub(super) fn new(date: Date, f: &DayFigures) -> Self {
        Self {
            date: date.to_string(),
            transactions: f.transactions,
            units_sold: f.units_sold,
            gross_cents: f.gross_cents,
            discount_cents: f.discount_cents,
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
    /// The instant asked for with `as_of`, in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub days: Vec<SalesDay>,
}

pub(super) const SALES_CSV_HEADER: &str =
    "transactions,units_sold,gross_cents,returned_units,returned_cents,net_cents,discount_cents";

pub(super) fn sales_csv_row(out: &mut Csv, key: std::fmt::Arguments<'_>, f: &DayFigures) {
    out.row(format_args!(
        "{key},{},{},{},{},{},{},{}",
        f.transactions,
        f.units_sold,
        f.gross_cents,
        f.returned_units,
        f.returned_cents,
        f.net_cents(),
        f.discount_cents
    ));
}

#[utoipa::path(get, path = "/v1/reports/stores/{store_id}/daily-sales", tag = "queries",
    params(("store_id" = String, Path), RangeParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((StoreDailySales = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn store_daily_sales(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
    QueryParams(p): QueryParams<RangeParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&raw)?;
    let store = store_id(&raw)?;
    let range = range(p.from.as_deref(), p.to.as_deref())?;
    let k = knowledge(&s, &t, STORE_DAILY).await?;
    let answer = match k {
        Knowledge::Current => s.backend.read.store_daily(&store, range).await?,
        Knowledge::Prefix { position, .. } => {
            travel(&s).store_daily(&store, range, position).await?
        }
    };
    if wants_csv(&headers) {
        let mut out = Csv::new(&format!("store_id,date,{SALES_CSV_HEADER}"));
        for d in &answer.rows {
            sales_csv_row(&mut out, format_args!("{store},{}", d.date), &d.figures);
        }
        return Ok(out.into_response());
    }
    let days = answer
        .rows
        .iter()
        .map(|d| SalesDay::new(d.date, &d.figures))
        .collect();
    Ok(Json(StoreDailySales {
        store_id: store.to_string(),
        position: answer.position,
        as_of: k.as_of(),
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
    pub discount_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub net_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailySales {
    pub date: String,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub stores: Vec<StoreSales>,
}

#[utoipa::path(get, path = "/v1/reports/daily-sales", tag = "queries", params(DateParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((DailySales = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn daily_sales(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<DateParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.require(&[
        tally_core::model::Role::Admin,
        tally_core::model::Role::Analyst,
    ])?;
    let day = date("date", p.date.as_deref())?
        .ok_or_else(|| ApiError::invalid("date", "is required, YYYY-MM-DD"))?;
    let k = knowledge(&s, &t, STORE_DAILY).await?;
    let answer = match k {
        Knowledge::Current => s.backend.read.daily_sales(day).await?,
        Knowledge::Prefix { position, .. } => travel(&s).daily_sales(day, position).await?,
    };
    if wants_csv(&headers) {
        let mut out = Csv::new(&format!("date,store_id,{SALES_CSV_HEADER}"));
        for r in &answer.rows {
            sales_csv_row(&mut out, format_args!("{day},{}", r.store_id), &r.figures);
        }
        return Ok(out.into_response());
    }
    let stores = answer
        .rows
        .into_iter()
        .map(|r| StoreSales {
            store_id: r.store_id.to_string(),
            transactions: r.figures.transactions,
            units_sold: r.figures.units_sold,
            gross_cents: r.figures.gross_cents,
            discount_cents: r.figures.discount_cents,
            returned_units: r.figures.returned_units,
            returned_cents: r.figures.returned_cents,
            net_cents: r.figures.net_cents(),
        })
        .collect();
    Ok(Json(DailySales {
        date: day.to_string(),
        position: answer.position,
        as_of: k.as_of(),
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

impl SupplierDayBody {
    pub(super) fn new(date: Date, f: &SupplierDay) -> Self {
        Self {
            date: date.to_string(),
            deliveries: f.deliveries,
            units_supplied: f.units_supplied,
            supply_cost_cents: f.supply_cost_cents,
            units_sold: f.units_sold,
            sales_cents: f.sales_cents,
        }
    }
}

pub(super) const SUPPLIER_CSV_HEADER: &str =
    "deliveries,units_supplied,supply_cost_cents,units_sold,sales_cents";

pub(super) fn supplier_csv_row(out: &mut Csv, key: std::fmt::Arguments<'_>, f: &SupplierDay) {
    out.row(format_args!(
        "{key},{},{},{},{},{}",
        f.deliveries, f.units_supplied, f.supply_cost_cents, f.units_sold, f.sales_cents
    ));
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierDaily {
    pub supplier_id: String,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub days: Vec<SupplierDayBody>,
}

#[utoipa::path(get, path = "/v1/reports/suppliers/{supplier_id}/daily", tag = "queries",
    params(("supplier_id" = String, Path), RangeParams, TimeParams),
    security(("api_key" = [])), responses((status = 200, content((SupplierDaily = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn supplier_daily(
    State(s): State<AppState>,
    auth: Auth,
    Path(raw): Path<String>,
    QueryParams(p): QueryParams<RangeParams>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_supplier(&raw)?;
    let supplier = supplier_id(&raw)?;
    let range = range(p.from.as_deref(), p.to.as_deref())?;
    let k = knowledge(&s, &t, SUPPLIER_DAILY).await?;
    let answer = match k {
        Knowledge::Current => s.backend.read.supplier_daily(&supplier, range).await?,
        Knowledge::Prefix { position, .. } => {
            travel(&s)
                .supplier_daily(&supplier, range, position)
                .await?
        }
    };
    if wants_csv(&headers) {
        let mut out = Csv::new(&format!("supplier_id,date,{SUPPLIER_CSV_HEADER}"));
        for d in &answer.rows {
            supplier_csv_row(&mut out, format_args!("{supplier},{}", d.date), &d.figures);
        }
        return Ok(out.into_response());
    }
    let days = answer
        .rows
        .iter()
        .map(|d: &Dated<SupplierDay>| SupplierDayBody::new(d.date, &d.figures))
        .collect();
    Ok(Json(SupplierDaily {
        supplier_id: supplier.to_string(),
        position: answer.position,
        as_of: k.as_of(),
        days,
    })
    .into_response())
}
