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
    SaleId, StockDelta, StoreId, SupplierId, Text, TimeZoneName,
};

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
pub struct DeliveredLine {
    pub item_id: ItemId,
    pub quantity: Quantity,
    pub unit_cost_cents: Cents,
}

/// A line of a sale or a return, with the item's supplier so supplier reports need no lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoldLine {
    pub item_id: ItemId,
    pub supplier_id: SupplierId,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
}

impl SoldLine {
    /// Quantity × unit price, saturating: bounded inputs can still multiply past `i64` in theory.
    pub fn amount_cents(&self) -> i64 {
        self.quantity
            .get()
            .saturating_mul(self.unit_price_cents.get())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierRegistered {
    pub supplier_id: SupplierId,
    pub name: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRegistered {
    pub store_id: StoreId,
    pub name: Text,
    pub timezone: TimeZoneName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRegistered {
    pub item_id: ItemId,
    pub name: Text,
    pub supplier_id: SupplierId,
    pub unit_price_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsDelivered {
    pub delivery_id: DeliveryId,
    pub supplier_id: SupplierId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<DeliveredLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecorded {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<SoldLine>,
}

/// A reversing event: the sale drops out of the figures of its own business date and its stock goes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleVoided {
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub reason: Text,
    pub sale_business_date: Date,
    pub lines: Vec<SoldLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnRecorded {
    pub return_id: ReturnId,
    pub sale_id: SaleId,
    pub store_id: StoreId,
    pub business_date: Date,
    /// Returned quantities, each at the unit price of the sale line it refunds.
    pub lines: Vec<SoldLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct DeliveryLineChange {
    pub item_id: ItemId,
    pub quantity_change: i64,
    pub cost_change_cents: i64,
}

/// A retroactive fact: the delivery's lines are now `lines` (lines of quantity 0 left out). It counts
/// on the delivery's own business date, by `changes` (the items whose quantity or cost changed,
/// relative to the lines as last corrected), and moves the store's stock by each quantity change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// An event could not be read back from its stored form.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event type {event_type} has no schema version {version}")]
    UnknownVersion { event_type: String, version: u32 },
    #[error("malformed {event_type} payload: {source}")]
    Payload {
        event_type: String,
        source: serde_json::Error,
    },
}

impl Event {
    /// The schema version every event type is written with today. Bump it together with an upcaster in
    /// [`Event::decode`] when a payload changes shape.
    pub const SCHEMA_VERSION: u32 = 1;

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

    /// Reads an event back from its type, schema version and JSON payload, upcasting old versions.
    pub fn decode(event_type: &str, schema_version: u32, data: &str) -> Result<Self, DecodeError> {
        if schema_version != Self::SCHEMA_VERSION {
            // No event type has changed shape yet; an upcaster from older versions goes here.
            return Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            });
        }
        fn parse<T: serde::de::DeserializeOwned>(
            event_type: &str,
            data: &str,
        ) -> Result<T, DecodeError> {
            serde_json::from_str(data).map_err(|source| DecodeError::Payload {
                event_type: event_type.to_owned(),
                source,
            })
        }
        Ok(match event_type {
            "SupplierRegistered" => Event::SupplierRegistered(parse(event_type, data)?),
            "StoreRegistered" => Event::StoreRegistered(parse(event_type, data)?),
            "ItemRegistered" => Event::ItemRegistered(parse(event_type, data)?),
            "GoodsDelivered" => Event::GoodsDelivered(parse(event_type, data)?),
            "SaleRecorded" => Event::SaleRecorded(parse(event_type, data)?),
            "SaleVoided" => Event::SaleVoided(parse(event_type, data)?),
            "ReturnRecorded" => Event::ReturnRecorded(parse(event_type, data)?),
            "StockAdjusted" => Event::StockAdjusted(parse(event_type, data)?),
            "DeliveryCorrected" => Event::DeliveryCorrected(parse(event_type, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}
