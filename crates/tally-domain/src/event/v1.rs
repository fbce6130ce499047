//! The stored shapes of schema version 1 that a later version changed, and their upcasters to the
//! next version. Version 1 of every other event type is its current shape.
//!
//! These types are frozen: they describe bytes already in logs and must never change. A later change
//! to a payload adds a module `v2` with the version-2 shapes it replaces and `From<v2::X> for X`,
//! and turns the upcasters here into `From<v1::X> for v2::X`; decoding then chains them
//! ([`super::decode`]).

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::values::{Cents, ItemId, Quantity, ReturnId, SaleId, StoreId, SupplierId, Text};

/// A sold or returned line before discounts (schema version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SoldLine {
    pub item_id: ItemId,
    pub supplier_id: SupplierId,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
}

/// `SaleRecorded` version 1: no discounts, no till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SaleRecorded {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<SoldLine>,
}

/// `SaleVoided` version 1: the voided sale's lines without discounts, no till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SaleVoided {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub reason: Text,
    pub sale_business_date: Date,
    pub lines: Vec<SoldLine>,
}

/// `ReturnRecorded` version 1: returned lines refunded at their full list value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ReturnRecorded {
    pub return_id: ReturnId,
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<SoldLine>,
}

/// Version 1 knew no discounts: every line was paid (and refunded) at its list value.
impl From<SoldLine> for super::SoldLine {
    fn from(l: SoldLine) -> Self {
        Self {
            item_id: l.item_id,
            supplier_id: l.supplier_id,
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
            discount_cents: Cents::ZERO,
        }
    }
}

fn lines(lines: Vec<SoldLine>) -> Vec<super::SoldLine> {
    lines.into_iter().map(Into::into).collect()
}

impl From<SaleRecorded> for super::SaleRecorded {
    fn from(e: SaleRecorded) -> Self {
        Self {
            sale_id: e.sale_id,
            store_id: e.store_id,
            business_date: e.business_date,
            lines: lines(e.lines),
            till_id: None,
        }
    }
}

impl From<SaleVoided> for super::SaleVoided {
    fn from(e: SaleVoided) -> Self {
        Self {
            sale_id: e.sale_id,
            store_id: e.store_id,
            reason: e.reason,
            sale_business_date: e.sale_business_date,
            lines: lines(e.lines),
            till_id: None,
        }
    }
}

impl From<ReturnRecorded> for super::ReturnRecorded {
    fn from(e: ReturnRecorded) -> Self {
        Self {
            return_id: e.return_id,
            sale_id: e.sale_id,
            store_id: e.store_id,
            business_date: e.business_date,
            lines: lines(e.lines),
        }
    }
}
