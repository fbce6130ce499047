//! The JSON Schema of every event type in every schema version it was ever stored in, generated from
//! the payload types themselves (behind the `schema` feature: the domain needs no schema library to
//! decide anything). `GET /v1/events/schemas` serves them; `tests/corpus.rs` checks each stored
//! fixture against its version's schema, so a schema cannot drift from what is stored.

use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::event::{self, VERSIONS, v1};
use crate::values::*;

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
}

fn integer(description: &str, min: i64, max: i64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .description(Some(description))
        .into()
}

macro_rules! id_schemas {
    ($($name:ident),*) => {$(
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string("An id: 1–64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit")
                    .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))
                    .into()
            }
        }
        impl ToSchema for $name {}
    )*};
}
id_schemas!(
    SupplierId,
    StoreId,
    ItemId,
    SaleId,
    DeliveryId,
    ReturnId,
    AdjustmentId,
    CorrectionId,
    TillId
);

impl PartialSchema for Cents {
    fn schema() -> RefOr<Schema> {
        integer("Money in integer minor units (cents)", 0, Cents::MAX)
    }
}
impl ToSchema for Cents {}

impl PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        integer("A quantity of units", 1, Quantity::MAX)
    }
}
impl ToSchema for Quantity {}

impl PartialSchema for StockDelta {
    fn schema() -> RefOr<Schema> {
        integer(
            "A non-zero change of stock on hand",
            -Quantity::MAX,
            Quantity::MAX,
        )
    }
}
impl ToSchema for StockDelta {}

impl PartialSchema for TimeZoneName {
    fn schema() -> RefOr<Schema> {
        string("An IANA time zone name, e.g. Europe/Berlin")
            .min_length(Some(1))
            .max_length(Some(64))
            .into()
    }
}
impl ToSchema for TimeZoneName {}

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        string("1–200 characters, no control characters")
            .min_length(Some(1))
            .max_length(Some(200))
            .into()
    }
}
impl ToSchema for Text {}

impl PartialSchema for AdjustmentReason {
    fn schema() -> RefOr<Schema> {
        string("Why stock was adjusted")
            .enum_values(Some(["damage", "theft", "count_correction", "other"]))
            .into()
    }
}
impl ToSchema for AdjustmentReason {}

/// One event type in one schema version.
#[derive(Debug, Clone)]
pub struct EventSchema {
    pub event_type: &'static str,
    pub schema_version: u32,
    /// Whether this build writes this version (older ones are read and upcast).
    pub current: bool,
    /// A JSON Schema (2020-12) document for the payload (`data`), its parts under `$defs`.
    pub schema: Value,
}

/// A standalone JSON Schema of `T`: the type's schema with every type it refers to under `$defs`.
fn document<T: ToSchema>(event_type: &str, version: u32) -> Value {
    let mut parts = Vec::new();
    T::schemas(&mut parts);
    let mut defs = Map::new();
    for (name, part) in parts {
        defs.insert(name, serde_json::to_value(part).unwrap_or(Value::Null));
    }
    let mut doc = serde_json::to_value(T::schema()).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut doc {
        o.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        o.insert(
            "$id".into(),
            json!(format!("tally:event/{event_type}/v{version}")),
        );
        o.insert(
            "title".into(),
            json!(format!("{event_type} version {version}")),
        );
        if !defs.is_empty() {
            o.insert("$defs".into(), Value::Object(defs));
        }
    }
    rewrite_refs(&mut doc);
    doc
}

/// OpenAPI's `#/components/schemas/X` references as this document's own `#/$defs/X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/$defs/{name}");
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Every event type's schema in every version that decodes (1 to the current), by type then version.
pub fn event_schemas() -> Vec<EventSchema> {
    let mut out = Vec::new();
    for (event_type, current) in VERSIONS {
        for version in 1..=current {
            let schema = match (event_type, version) {
                ("SupplierRegistered", 1) => {
                    document::<event::SupplierRegistered>(event_type, version)
                }
                ("StoreRegistered", 1) => document::<event::StoreRegistered>(event_type, version),
                ("ItemRegistered", 1) => document::<event::ItemRegistered>(event_type, version),
                ("GoodsDelivered", 1) => document::<event::GoodsDelivered>(event_type, version),
                ("SaleRecorded", 1) => document::<v1::SaleRecorded>(event_type, version),
                ("SaleRecorded", 2) => document::<event::SaleRecorded>(event_type, version),
                ("SaleVoided", 1) => document::<v1::SaleVoided>(event_type, version),
                ("SaleVoided", 2) => document::<event::SaleVoided>(event_type, version),
                ("ReturnRecorded", 1) => document::<v1::ReturnRecorded>(event_type, version),
                ("ReturnRecorded", 2) => document::<event::ReturnRecorded>(event_type, version),
                ("StockAdjusted", 1) => document::<event::StockAdjusted>(event_type, version),
                ("DeliveryCorrected", 1) => {
                    document::<event::DeliveryCorrected>(event_type, version)
                }
                // A version added to VERSIONS without its schema here: named, so the test
                // `every_version_has_a_schema` fails.
                _ => Value::Null,
            };
            out.push(EventSchema {
                event_type,
                schema_version: version,
                current: version == current,
                schema,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_version_has_a_schema() {
        let all = super::event_schemas();
        let versions: u32 = super::VERSIONS.iter().map(|(_, v)| v).sum();
        assert_eq!(all.len(), versions as usize);
        for s in &all {
            assert!(
                s.schema.is_object(),
                "{} v{} has no schema",
                s.event_type,
                s.schema_version
            );
        }
    }
}
