//! Events' stored form: each event type's current schema version, and decoding from every version
//! ever written, upcasting old ones to the current shape. The stored bytes never change; an old
//! event is upcast each time it is read.
//!
//! To change a payload: freeze its current shape in a module of the old version (see [`super::v1`]),
//! write the upcaster as `From<old> for new`, bump the type's version in [`VERSIONS`], add an arm
//! below, and add a fixture per new version to the corpus (`tests/corpus/`); the corpus test fails
//! until there is one.

use serde::de::DeserializeOwned;

use super::{Event, v1};

/// Every event type with the schema version it is written in today. Every version from 1 to that
/// one decodes.
pub const VERSIONS: [(&str, u32); 9] = [
    ("SupplierRegistered", 1),
    ("StoreRegistered", 1),
    ("ItemRegistered", 1),
    ("GoodsDelivered", 1),
    // 2: per-line `discount_cents` and an optional `till_id`.
    ("SaleRecorded", 2),
    // 2: the voided lines' `discount_cents` and the sale's `till_id`.
    ("SaleVoided", 2),
    // 2: per-line `discount_cents`, the part of the returned units' list value not refunded.
    ("ReturnRecorded", 2),
    ("StockAdjusted", 1),
    ("DeliveryCorrected", 1),
];

/// An event could not be read back from its stored form.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event type {event_type} has no schema version {version}")]
    UnknownVersion { event_type: String, version: u32 },
    /// Written by a newer binary: this one cannot know what the payload means, and must not guess.
    #[error(
        "{event_type} version {version} is newer than this build knows (it reads up to version \
         {current}); upgrade tally before reading this log"
    )]
    FutureVersion {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("malformed {event_type} version {version} payload: {source}")]
    Payload {
        event_type: String,
        version: u32,
        source: serde_json::Error,
    },
}

impl Event {
    /// The schema version this event is written in (its type's current version).
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::SaleRecorded(_) | Event::SaleVoided(_) | Event::ReturnRecorded(_) => 2,
            Event::SupplierRegistered(_)
            | Event::StoreRegistered(_)
            | Event::ItemRegistered(_)
            | Event::GoodsDelivered(_)
            | Event::StockAdjusted(_)
            | Event::DeliveryCorrected(_) => 1,
        }
    }

    /// The current schema version of an event type, if the type exists.
    pub fn current_version(event_type: &str) -> Option<u32> {
        VERSIONS
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
    }

    /// Reads an event back from its type, schema version and JSON payload, upcasting old versions to
    /// the current shape.
    pub fn decode(event_type: &str, version: u32, data: &str) -> Result<Self, DecodeError> {
        let parse = Parse {
            event_type,
            version,
            data,
        };
        Ok(match (event_type, version) {
            ("SupplierRegistered", 1) => Event::SupplierRegistered(parse.json()?),
            ("StoreRegistered", 1) => Event::StoreRegistered(parse.json()?),
            ("ItemRegistered", 1) => Event::ItemRegistered(parse.json()?),
            ("GoodsDelivered", 1) => Event::GoodsDelivered(parse.json()?),
            ("SaleRecorded", 2) => Event::SaleRecorded(parse.json()?),
            ("SaleRecorded", 1) => Event::SaleRecorded(parse.json::<v1::SaleRecorded>()?.into()),
            ("SaleVoided", 2) => Event::SaleVoided(parse.json()?),
            ("SaleVoided", 1) => Event::SaleVoided(parse.json::<v1::SaleVoided>()?.into()),
            ("ReturnRecorded", 2) => Event::ReturnRecorded(parse.json()?),
            ("ReturnRecorded", 1) => {
                Event::ReturnRecorded(parse.json::<v1::ReturnRecorded>()?.into())
            }
            ("StockAdjusted", 1) => Event::StockAdjusted(parse.json()?),
            ("DeliveryCorrected", 1) => Event::DeliveryCorrected(parse.json()?),
            _ => return Err(parse.unknown()),
        })
    }
}

struct Parse<'a> {
    event_type: &'a str,
    version: u32,
    data: &'a str,
}

impl Parse<'_> {
    fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_str(self.data).map_err(|source| DecodeError::Payload {
            event_type: self.event_type.to_owned(),
            version: self.version,
            source,
        })
    }

    /// Why no arm matched: an unknown type, a version past the type's current one, or none at all.
    fn unknown(&self) -> DecodeError {
        match Event::current_version(self.event_type) {
            None => DecodeError::UnknownType(self.event_type.to_owned()),
            Some(current) if self.version > current => DecodeError::FutureVersion {
                event_type: self.event_type.to_owned(),
                version: self.version,
                current,
            },
            Some(_) => DecodeError::UnknownVersion {
                event_type: self.event_type.to_owned(),
                version: self.version,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_listed_once_with_the_version_it_writes() {
        let mut types: Vec<&str> = VERSIONS.iter().map(|(t, _)| *t).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), VERSIONS.len(), "a type is listed twice");
        for (t, v) in VERSIONS {
            assert!(v >= 1, "{t}");
            // An unknown payload of each listed version fails as malformed, not as unknown: every
            // version from 1 to the current one has an arm.
            for version in 1..=v {
                match Event::decode(t, version, "{}") {
                    Err(DecodeError::Payload { .. }) => {}
                    other => panic!("{t} v{version}: {other:?}"),
                }
            }
            assert!(matches!(
                Event::decode(t, v + 1, "{}"),
                Err(DecodeError::FutureVersion { current, .. }) if current == v
            ));
            assert!(matches!(
                Event::decode(t, 0, "{}"),
                Err(DecodeError::UnknownVersion { .. })
            ));
        }
        assert!(matches!(
            Event::decode("Nope", 1, "{}"),
            Err(DecodeError::UnknownType(_))
        ));
    }
}
