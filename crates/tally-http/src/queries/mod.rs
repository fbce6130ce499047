//! Query endpoints: the read models as JSON, or CSV on `Accept: text/csv`. Each answer carries the
//! position its read model reflects; `min_position` waits (up to 10 s) for the caller's own writes;
//! `as_of` and `as_of_position` answer from a prefix of the log instead ([`time`]).
//!
//! Ids in paths and parameters are parsed into domain types here, at the edge: a malformed one is a
//! 422 naming it, and nothing below sees a string that is not an id.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use tally_core::rows::DateRange;
use tally_domain::values::{ItemId, StoreId, SupplierId};

use crate::error::{ApiError, Problem};

mod catalog;
mod history;
mod inventory;
mod items;
mod reports;
mod time;

pub(crate) use time::{not_back_filling, wait_for_all};

// Globs: the route macros also need each handler's generated `__path_*` item.
pub use catalog::*;
pub use history::*;
pub use inventory::*;
pub use items::*;
pub use reports::*;

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

fn date(name: &str, raw: Option<&str>) -> Result<Option<Date>, ApiError> {
    raw.map(|r| {
        r.parse::<Date>()
            .map_err(|_| ApiError::invalid(name, "must be a date, YYYY-MM-DD"))
    })
    .transpose()
}

/// `from` and `to`, each a date when given (a `to` before `from` selects no day).
fn range(from: Option<&str>, to: Option<&str>) -> Result<DateRange, ApiError> {
    Ok(DateRange::new(date("from", from)?, date("to", to)?))
}

fn invalid_id(field: &str) -> impl FnOnce(tally_domain::values::InvalidValue) -> ApiError + '_ {
    move |e| ApiError::invalid(field, e.to_string())
}

fn store_id(raw: &str) -> Result<StoreId, ApiError> {
    StoreId::parse(raw).map_err(invalid_id("store_id"))
}
fn item_id(raw: &str) -> Result<ItemId, ApiError> {
    ItemId::parse(raw).map_err(invalid_id("item_id"))
}
fn supplier_id(raw: &str) -> Result<SupplierId, ApiError> {
    SupplierId::parse(raw).map_err(invalid_id("supplier_id"))
}

pub(crate) fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

pub(crate) fn csv(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r
}

/// One RFC 4180 field: quoted when it holds a comma, a quote or a line break, quotes doubled.
pub(crate) fn csv_field(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\"")).into()
    } else {
        raw.into()
    }
}

/// Builds a CSV body: a header line, then one line per row.
struct Csv(String);

impl Csv {
    fn new(header: &str) -> Self {
        Self(format!("{header}\n"))
    }
    fn row(&mut self, fields: std::fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(fields);
        self.0.push('\n');
    }
    fn into_response(self) -> Response {
        csv(self.0)
    }
}
