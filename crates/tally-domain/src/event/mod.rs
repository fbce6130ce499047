//! Events: immutable facts in the past tense. Each event names the streams it belongs to; an event that
//! concerns several aggregates (a sale touches the sale and the store's stock) is appended once to the
//! global log and is a member of each of those streams, so the log holds every fact exactly once.
//!
//! Events are self-contained: they carry what projections need (business date, each sold line's
//! supplier and price), so read models are folds of the log with no lookups.

use std::fmt;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::values::{
    AdjustmentId, AdjustmentReason, Cents, CorrectionId, DeliveryId, ItemId, Quantity, ReturnId,
    SaleId, StockDelta, StoreId, SupplierId, Text, TillId, TimeZoneName,
};

mod decode;
pub mod v1;
pub use decode::{DecodeError, VERSIONS};

/// A stream id: `<kind>-<business id>`, for example `store-s1` or `sale-2026-0001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(String);

impl StreamId {
    pub fn supplier(id: &SupplierId) -> Self {
        Self(format!("supplier-{id}"))
    }
    pub fn store(id: &StoreId) -> Self {
        Self(format!("store-{id}"))
    }
    pub fn item(id: &ItemId) -> Self {
        Self(format!("item-{id}"))
    }
    pub fn sale(id: &SaleId) -> Self {
        Self(format!("sale-{id}"))
    }
    pub fn delivery(id: &DeliveryId) -> Self {
        Self(format!("delivery-{id}"))
    }
    pub fn return_(id: &ReturnId) -> Self {
        Self(format!("return-{id}"))
    }
    pub fn adjustment(id: &AdjustmentId) -> Self {
        Self(format!("adjustment-{id}"))
    }
    pub fn correction(id: &CorrectionId) -> Self {
        Self(format!("correction-{id}"))
    }
    /// A stream id as stored or as a client names it; unchecked, since it is only ever used to look up.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeliveredLine {
    pub item_id: ItemId,
    pub quantity: Quantity,
    pub unit_cost_cents: Cents,
}

/// A line of a sale or a return, with the item's supplier so supplier reports need no lookup.
///
/// `discount_cents` is the part of the line's list value (`quantity × unit_price_cents`) the customer
/// did not pay: on a sale (and its void), the line's discount; on a return, the share of the returned
/// units' list value that is not refunded, so that the refund is [`SoldLine::paid_cents`] on every
/// kind of line (schema version 2; version 1 had no discounts and reads as 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SoldLine {
    pub item_id: ItemId,
    pub supplier_id: SupplierId,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
    pub discount_cents: Cents,
}

impl SoldLine {
    /// Quantity × unit price, saturating: bounded inputs can still multiply past `i64` in theory.
    pub fn amount_cents(&self) -> i64 {
        self.quantity
            .get()
            .saturating_mul(self.unit_price_cents.get())
    }

    /// What the customer paid for the line (or, on a return, is refunded): the list value less the
    /// discount.
    pub fn paid_cents(&self) -> i64 {
        self.amount_cents() - self.discount_cents.get()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SupplierRegistered {
    pub supplier_id: SupplierId,
    pub name: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct StoreRegistered {
    pub store_id: StoreId,
    pub name: Text,
    pub timezone: TimeZoneName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ItemRegistered {
    pub item_id: ItemId,
    pub name: Text,
    pub supplier_id: SupplierId,
    pub unit_price_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct GoodsDelivered {
    pub delivery_id: DeliveryId,
    pub supplier_id: SupplierId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<DeliveredLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SaleRecorded {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<SoldLine>,
    /// The POS terminal the sale was rung up on, when the store says (schema version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub till_id: Option<TillId>,
}

/// A reversing event: the sale drops out of the figures of its own business date and its stock goes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SaleVoided {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub reason: Text,
    pub sale_business_date: Date,
    pub lines: Vec<SoldLine>,
    /// The voided sale's till, so per-till figures drop it too (schema version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub till_id: Option<TillId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ReturnRecorded {
    pub return_id: ReturnId,
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    /// Returned quantities, each at the unit price of the sale line it refunds, with the part of
    /// their list value not refunded as `discount_cents` (the refund rule: [`crate::decide`]).
    pub lines: Vec<SoldLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct StockAdjusted {
    pub adjustment_id: AdjustmentId,
    pub store_id: StoreId,
    pub item_id: ItemId,
    pub delta: StockDelta,
    pub reason: AdjustmentReason,
    pub business_date: Date,
}

/// How a correction moved one item of a delivery: the new quantity minus the old, and the new line
/// cost (quantity × unit cost) minus the old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeliveryLineChange {
    pub item_id: ItemId,
    pub quantity_change: i64,
    pub cost_change_cents: i64,
}

/// A retroactive fact: the delivery's lines are now `lines` (lines of quantity 0 left out). It counts
/// on the delivery's own business date, by `changes` (the items whose quantity or cost changed,
/// relative to the lines as last corrected), and moves the store's stock by each quantity change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeliveryCorrected {
    pub correction_id: CorrectionId,
    pub delivery_id: DeliveryId,
    pub supplier_id: SupplierId,
    pub store_id: StoreId,
    /// The corrected delivery's business date, not the correction's.
    pub business_date: Date,
    pub reason: Text,
    pub lines: Vec<DeliveredLine>,
    pub changes: Vec<DeliveryLineChange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SupplierRegistered(SupplierRegistered),
    StoreRegistered(StoreRegistered),
    ItemRegistered(ItemRegistered),
    GoodsDelivered(GoodsDelivered),
    SaleRecorded(SaleRecorded),
    SaleVoided(SaleVoided),
    ReturnRecorded(ReturnRecorded),
    StockAdjusted(StockAdjusted),
    DeliveryCorrected(DeliveryCorrected),
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::SupplierRegistered(_) => "SupplierRegistered",
            Event::StoreRegistered(_) => "StoreRegistered",
            Event::ItemRegistered(_) => "ItemRegistered",
            Event::GoodsDelivered(_) => "GoodsDelivered",
            Event::SaleRecorded(_) => "SaleRecorded",
            Event::SaleVoided(_) => "SaleVoided",
            Event::ReturnRecorded(_) => "ReturnRecorded",
            Event::StockAdjusted(_) => "StockAdjusted",
            Event::DeliveryCorrected(_) => "DeliveryCorrected",
        }
    }

    /// The streams this event belongs to, the first being its primary stream. Derived from the event
    /// itself, so the same event always lands in the same streams.
    pub fn streams(&self) -> Vec<StreamId> {
        match self {
            Event::SupplierRegistered(e) => vec![StreamId::supplier(&e.supplier_id)],
            Event::StoreRegistered(e) => vec![StreamId::store(&e.store_id)],
            Event::ItemRegistered(e) => vec![StreamId::item(&e.item_id)],
            Event::GoodsDelivered(e) => vec![
                StreamId::delivery(&e.delivery_id),
                StreamId::store(&e.store_id),
            ],
            Event::SaleRecorded(e) => {
                vec![StreamId::sale(&e.sale_id), StreamId::store(&e.store_id)]
            }
            Event::SaleVoided(e) => {
                vec![StreamId::sale(&e.sale_id), StreamId::store(&e.store_id)]
            }
            Event::ReturnRecorded(e) => vec![
                StreamId::return_(&e.return_id),
                StreamId::sale(&e.sale_id),
                StreamId::store(&e.store_id),
            ],
            Event::StockAdjusted(e) => vec![
                StreamId::adjustment(&e.adjustment_id),
                StreamId::store(&e.store_id),
            ],
            Event::DeliveryCorrected(e) => vec![
                StreamId::correction(&e.correction_id),
                StreamId::delivery(&e.delivery_id),
                StreamId::store(&e.store_id),
            ],
        }
    }

    /// The store whose stream this event belongs to, if any: every event that moves a store's stock
    /// or figures does, and so does the store's registration.
    pub fn store(&self) -> Option<&StoreId> {
        match self {
            Event::StoreRegistered(e) => Some(&e.store_id),
            Event::GoodsDelivered(e) => Some(&e.store_id),
            Event::SaleRecorded(e) => Some(&e.store_id),
            Event::SaleVoided(e) => Some(&e.store_id),
            Event::ReturnRecorded(e) => Some(&e.store_id),
            Event::StockAdjusted(e) => Some(&e.store_id),
            Event::DeliveryCorrected(e) => Some(&e.store_id),
            Event::SupplierRegistered(_) | Event::ItemRegistered(_) => None,
        }
    }

    /// The payload as JSON text.
    pub fn encode(&self) -> String {
        let encoded = match self {
            Event::SupplierRegistered(e) => serde_json::to_string(e),
            Event::StoreRegistered(e) => serde_json::to_string(e),
            Event::ItemRegistered(e) => serde_json::to_string(e),
            Event::GoodsDelivered(e) => serde_json::to_string(e),
            Event::SaleRecorded(e) => serde_json::to_string(e),
            Event::SaleVoided(e) => serde_json::to_string(e),
            Event::ReturnRecorded(e) => serde_json::to_string(e),
            Event::StockAdjusted(e) => serde_json::to_string(e),
            Event::DeliveryCorrected(e) => serde_json::to_string(e),
        };
        // Serializing these plain structs of strings and integers into a String cannot fail.
        encoded.unwrap_or_else(|e| unreachable!("event payloads always serialize: {e}"))
    }
}
