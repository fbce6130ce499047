//! Who is asking and what is registered: `GET /v1/me` (the key's role and scope, which the
//! dashboard uses to show only what the key may read) and the registry read model as lists
//! (`/v1/stores`, `/v1/suppliers`, `/v1/items`). The lists are directory data, readable by every
//! key, narrowed to a key's own scope: a store key sees its own store, a supplier key its own
//! supplier and items.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_core::model::Role;
use tally_core::readmodel::REFERENCE;
use tally_core::rows::{Catalog, Positioned};
use utoipa::{IntoParams, ToSchema};

use super::time::wait_for_all;
use super::{Csv, QueryErrors, csv_field, supplier_id, wants_csv};
use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub key_id: String,
    /// `admin`, `analyst`, `auditor`, `store` or `supplier`.
    pub role: String,
    /// The store or supplier a scoped key belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The calling key: its id, role and scope (no secret).
#[utoipa::path(get, path = "/v1/me", tag = "queries", security(("api_key" = [])),
    responses((status = 200, body = Me), QueryErrors))]
pub async fn me(auth: Auth) -> Json<Me> {
    let p = auth.0;
    Json(Me {
        key_id: p.key_id,
        role: p.role.as_str().to_owned(),
        scope: p.scope,
    })
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// Wait until the registry reflects at least this global position (read your writes).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemListParams {
    /// Only this supplier's items (a supplier key: its own, always).
    #[param(value_type = String, required = false)]
    pub supplier_id: Option<String>,
    /// Wait until the registry reflects at least this global position (read your writes).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreBody {
    pub store_id: String,
    pub name: String,
    pub timezone: String,
    /// The store's business date now (its local date in its time zone).
    pub today: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stores {
    pub position: u64,
    pub stores: Vec<StoreBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupplierBody {
    pub supplier_id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suppliers {
    pub position: u64,
    pub suppliers: Vec<SupplierBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemBody {
    pub item_id: String,
    pub name: String,
    pub supplier_id: String,
    pub unit_price_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Items {
    pub position: u64,
    pub items: Vec<ItemBody>,
}

/// The registry after any `min_position` wait.
async fn catalog(
    s: &AppState,
    min_position: Option<&str>,
) -> Result<Positioned<Catalog>, ApiError> {
    if let Some(raw) = min_position {
        let min = raw
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("min_position", "must be a non-negative integer"))?;
        wait_for_all(s, &[REFERENCE], min).await?;
    }
    Ok(s.backend.read.catalog().await?)
}

/// The scope a key's lists are narrowed to, when its role is `role`.
fn own(auth: &Auth, role: Role) -> Option<&str> {
    (auth.0.role == role).then(|| auth.0.scope.as_deref().unwrap_or_default())
}

/// A store's business date now, by the domain's own rule; the time zone was checked when the store
/// was registered (UTC's date if this build's tz database lacks it).
fn today(timezone: &str, now: Timestamp) -> String {
    tally_domain::values::TimeZoneName::parse(timezone)
        .map(|tz| tz.business_date(now).to_string())
        .unwrap_or_else(|_| now.strftime("%Y-%m-%d").to_string())
}

/// Registered stores with their time zones and business dates now, by id.
#[utoipa::path(get, path = "/v1/stores", tag = "queries", params(CatalogParams),
    security(("api_key" = [])),
    responses((status = 200, content((Stores = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn stores(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<CatalogParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = catalog(&s, p.min_position.as_deref()).await?;
    let scope = own(&auth, Role::Store);
    let now = Timestamp::now();
    let stores: Vec<StoreBody> = c
        .rows
        .stores
        .into_iter()
        .filter(|e| scope.is_none_or(|own| e.store_id.as_str() == own))
        .map(|e| StoreBody {
            today: today(&e.timezone, now),
            store_id: e.store_id.to_string(),
            name: e.name,
            timezone: e.timezone,
        })
        .collect();
    if wants_csv(&headers) {
        let mut out = Csv::new("store_id,name,timezone,today");
        for e in &stores {
            out.row(format_args!(
                "{},{},{},{}",
                e.store_id,
                csv_field(&e.name),
                e.timezone,
                e.today
            ));
        }
        return Ok(out.into_response());
    }
    Ok(Json(Stores {
        position: c.position,
        stores,
    })
    .into_response())
}

/// Registered suppliers, by id.
#[utoipa::path(get, path = "/v1/suppliers", tag = "queries", params(CatalogParams),
    security(("api_key" = [])),
    responses((status = 200, content((Suppliers = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn suppliers(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<CatalogParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = catalog(&s, p.min_position.as_deref()).await?;
    let scope = own(&auth, Role::Supplier);
    let suppliers: Vec<SupplierBody> = c
        .rows
        .suppliers
        .into_iter()
        .filter(|e| scope.is_none_or(|own| e.supplier_id.as_str() == own))
        .map(|e| SupplierBody {
            supplier_id: e.supplier_id.to_string(),
            name: e.name,
        })
        .collect();
    if wants_csv(&headers) {
        let mut out = Csv::new("supplier_id,name");
        for e in &suppliers {
            out.row(format_args!("{},{}", e.supplier_id, csv_field(&e.name)));
        }
        return Ok(out.into_response());
    }
    Ok(Json(Suppliers {
        position: c.position,
        suppliers,
    })
    .into_response())
}

/// Registered items with their suppliers and list prices, by id.
#[utoipa::path(get, path = "/v1/items", tag = "queries", params(ItemListParams),
    security(("api_key" = [])),
    responses((status = 200, content((Items = "application/json"), (String = "text/csv"))), QueryErrors))]
pub async fn items(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<ItemListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = match (own(&auth, Role::Supplier), p.supplier_id.as_deref()) {
        (Some(own), Some(raw)) => {
            auth.reads_supplier(raw)?;
            Some(supplier_id(own)?)
        }
        (Some(own), None) => Some(supplier_id(own)?),
        (None, raw) => raw.map(supplier_id).transpose()?,
    };
    let c = catalog(&s, p.min_position.as_deref()).await?;
    let items: Vec<ItemBody> = c
        .rows
        .items
        .into_iter()
        .filter(|e| wanted.as_ref().is_none_or(|w| &e.supplier_id == w))
        .map(|e| ItemBody {
            item_id: e.item_id.to_string(),
            name: e.name,
            supplier_id: e.supplier_id.to_string(),
            unit_price_cents: e.unit_price_cents,
        })
        .collect();
    if wants_csv(&headers) {
        let mut out = Csv::new("item_id,name,supplier_id,unit_price_cents");
        for e in &items {
            out.row(format_args!(
                "{},{},{},{}",
                e.item_id,
                csv_field(&e.name),
                e.supplier_id,
                e.unit_price_cents
            ));
        }
        return Ok(out.into_response());
    }
    Ok(Json(Items {
        position: c.position,
        items,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stores_business_date_is_its_local_date() {
        let now: jiff::Timestamp = "2026-12-08T11:30:00Z".parse().expect("an instant");
        assert_eq!(super::today("Pacific/Kiritimati", now), "2026-12-09");
        assert_eq!(super::today("Pacific/Pago_Pago", now), "2026-12-08");
        assert_eq!(super::today("America/Los_Angeles", now), "2026-12-08");
        let late: jiff::Timestamp = "2026-12-08T03:00:00Z".parse().expect("an instant");
        assert_eq!(super::today("America/Los_Angeles", late), "2026-12-07");
    }
}
