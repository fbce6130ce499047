//! The history of one day's figures: every version of a store's or a supplier's day, in the order the
//! system learned it, each with the event that changed it ("why did Tuesday's report change?").

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_core::readmodel::{DayFigures, STORE_DAILY, SUPPLIER_DAILY, SupplierDay};
use tally_core::timetravel::Version;
use utoipa::ToSchema;

use super::reports::{
    SALES_CSV_HEADER, SUPPLIER_CSV_HEADER, SalesDay, SupplierDayBody, sales_csv_row,
    supplier_csv_row,
};
use super::time::{TimeParams, fold_upto, knowledge, travel};
use super::{Csv, QueryErrors, date, store_id, supplier_id, wants_csv};
use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::ApiError;

/// What every version says of the event that made it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cause {
    pub position: u64,
    pub recorded_at: String,
    pub command_id: String,
    pub event_type: String,
}

impl<F> From<&Version<F>> for Cause {
    fn from(v: &Version<F>) -> Self {
        Self {
            position: v.position,
            recorded_at: v.recorded_at.to_string(),
            command_id: v.command_id.to_string(),
            event_type: v.event_type.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreDayVersion {
    #[serde(flatten)]
    pub cause: Cause,
    #[serde(flatten)]
    pub figures: SalesDay,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreDayHistory {
    pub store_id: String,
    pub date: String,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub versions: Vec<StoreDayVersion>,
}

const CAUSE_CSV_HEADER: &str = "position,recorded_at,command_id,event_type";

fn cause_csv<F>(v: &Version<F>) -> String {
    format!(
        "{},{},{},{}",
        v.position, v.recorded_at, v.command_id, v.event_type
    )
}

#[utoipa::path(get, path = "/v1/reports/stores/{store_id}/daily-sales/{date}/history", tag = "queries",
    params(("store_id" = String, Path), ("date" = String, Path, format = Date), TimeParams),
    security(("api_key" = [])), responses((status = 200, content((StoreDayHistory = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn store_day_history(
    State(s): State<AppState>,
    auth: Auth,
    Path((raw_store, raw_date)): Path<(String, String)>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_store(&raw_store)?;
    let store = store_id(&raw_store)?;
    let day = date("date", Some(&raw_date))?.unwrap_or_default();
    let k = knowledge(&s, &t, STORE_DAILY).await?;
    let upto = fold_upto(&s, k, STORE_DAILY).await?;
    let answer = travel(&s).store_day_history(&store, day, upto).await?;
    if wants_csv(&headers) {
        let mut out = Csv::new(&format!(
            "store_id,date,{CAUSE_CSV_HEADER},{SALES_CSV_HEADER}"
        ));
        for v in &answer.rows {
            let key = cause_csv(v);
            sales_csv_row(&mut out, format_args!("{store},{day},{key}"), &v.figures);
        }
        return Ok(out.into_response());
    }
    let versions = answer
        .rows
        .iter()
        .map(|v: &Version<DayFigures>| StoreDayVersion {
            cause: v.into(),
            figures: SalesDay::new(day, &v.figures),
        })
        .collect();
    Ok(Json(StoreDayHistory {
        store_id: store.to_string(),
        date: day.to_string(),
        position: answer.position,
        as_of: k.as_of(),
        versions,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierDayVersion {
    #[serde(flatten)]
    pub cause: Cause,
    #[serde(flatten)]
    pub figures: SupplierDayBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierDayHistory {
    pub supplier_id: String,
    pub date: String,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub versions: Vec<SupplierDayVersion>,
}

#[utoipa::path(get, path = "/v1/reports/suppliers/{supplier_id}/daily/{date}/history", tag = "queries",
    params(("supplier_id" = String, Path), ("date" = String, Path, format = Date), TimeParams),
    security(("api_key" = [])), responses((status = 200, content((SupplierDayHistory = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn supplier_day_history(
    State(s): State<AppState>,
    auth: Auth,
    Path((raw_supplier, raw_date)): Path<(String, String)>,
    QueryParams(t): QueryParams<TimeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.reads_supplier(&raw_supplier)?;
    let supplier = supplier_id(&raw_supplier)?;
    let day = date("date", Some(&raw_date))?.unwrap_or_default();
    let k = knowledge(&s, &t, SUPPLIER_DAILY).await?;
    let upto = fold_upto(&s, k, SUPPLIER_DAILY).await?;
    let answer = travel(&s)
        .supplier_day_history(&supplier, day, upto)
        .await?;
    if wants_csv(&headers) {
        let mut out = Csv::new(&format!(
            "supplier_id,date,{CAUSE_CSV_HEADER},{SUPPLIER_CSV_HEADER}"
        ));
        for v in &answer.rows {
            let key = cause_csv(v);
            supplier_csv_row(&mut out, format_args!("{supplier},{day},{key}"), &v.figures);
        }
        return Ok(out.into_response());
    }
    let versions = answer
        .rows
        .iter()
        .map(|v: &Version<SupplierDay>| SupplierDayVersion {
            cause: v.into(),
            figures: SupplierDayBody::new(day, &v.figures),
        })
        .collect();
    Ok(Json(SupplierDayHistory {
        supplier_id: supplier.to_string(),
        date: day.to_string(),
        position: answer.position,
        as_of: k.as_of(),
        versions,
    })
    .into_response())
}
