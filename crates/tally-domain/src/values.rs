//! Validated values: ids, money, quantities, time zones. Each is checked when it is built, so a value of
//! one of these types is always valid (parse, don't validate).

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Why a raw value was refused. The message is lowercase and names no field: callers add the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// Checks the id grammar of the API: 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_id(raw: &str) -> Result<(), InvalidValue> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(invalid("must start with a letter or a digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid("may only contain A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Kept inline up to 24 bytes (no heap allocation), and decoded straight from the borrowed
        /// text of a payload: ids are most of what an event holds, and the projector decodes every
        /// event of the log on a rebuild.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(CompactString);

        impl $name {
            /// Builds the id, refusing anything outside the id grammar.
            pub fn parse(raw: impl AsRef<str>) -> Result<Self, InvalidValue> {
                let raw = raw.as_ref();
                check_id(raw)?;
                Ok(Self(CompactString::new(raw)))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(raw: String) -> Result<Self, InvalidValue> {
                Self::parse(raw)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor(std::marker::PhantomData::<$name>))
            }
        }
        impl FromId for $name {
            fn from_checked(raw: &str) -> Result<Self, InvalidValue> {
                Self::parse(raw)
            }
        }
    };
}

/// What the ids' shared visitor builds: each id type from a `&str` it checks.
trait FromId: Sized {
    fn from_checked(raw: &str) -> Result<Self, InvalidValue>;
}

/// Decodes an id from a string without an intermediate `String`: borrowed text from a payload goes
/// straight into the id.
struct IdVisitor<T>(std::marker::PhantomData<T>);

impl<T: FromId> serde::de::Visitor<'_> for IdVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::from_checked(v).map_err(E::custom)
    }
}

id_type!(
    /// A supplier's business id.
    SupplierId
);
id_type!(
    /// A store's business id.
    StoreId
);
id_type!(
    /// An item's business id (its SKU).
    ItemId
);
id_type!(
    /// A sale's business id, unique across all stores.
    SaleId
);
id_type!(
    /// A delivery's business id.
    DeliveryId
);
id_type!(
    /// A return's business id.
    ReturnId
);
id_type!(
    /// A stock adjustment's business id.
    AdjustmentId
);
id_type!(
    /// A delivery correction's business id.
    CorrectionId
);
id_type!(
    /// A POS terminal's id within its store (a sale's till).
    TillId
);

/// Money in integer minor units (cents), 0 ≤ value ≤ 10^12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Cents(i64);

impl Cents {
    pub const MAX: i64 = 1_000_000_000_000;
    pub const ZERO: Cents = Cents(0);
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        if (0..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(invalid(format!("must be between 0 and {}", Self::MAX)))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
}
impl TryFrom<i64> for Cents {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<Self, InvalidValue> {
        Self::new(v)
    }
}
impl From<Cents> for i64 {
    fn from(c: Cents) -> i64 {
        c.0
    }
}

/// A line quantity: an integer 1–1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: i64 = 1_000_000;
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        if (1..=Self::MAX).contains(&value) {
            // The range check above makes the conversion lossless.
            Ok(Self(value as u32))
        } else {
            Err(invalid(format!("must be between 1 and {}", Self::MAX)))
        }
    }
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}
impl TryFrom<i64> for Quantity {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<Self, InvalidValue> {
        Self::new(v)
    }
}
impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        q.get()
    }
}

/// A corrected line quantity: an integer 0–1,000,000. Unlike [`Quantity`], 0 is allowed: a corrected
/// delivery note that lists an item with 0 removes that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct CorrectedQuantity(u32);

impl CorrectedQuantity {
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        if (0..=Quantity::MAX).contains(&value) {
            // The range check above makes the conversion lossless.
            Ok(Self(value as u32))
        } else {
            Err(invalid(format!("must be between 0 and {}", Quantity::MAX)))
        }
    }
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
    /// The quantity of a line that stays (`None` for 0: the line is removed).
    pub fn to_quantity(self) -> Option<Quantity> {
        Quantity::new(self.get()).ok()
    }
}
impl TryFrom<i64> for CorrectedQuantity {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<Self, InvalidValue> {
        Self::new(v)
    }
}
impl From<CorrectedQuantity> for i64 {
    fn from(q: CorrectedQuantity) -> i64 {
        q.get()
    }
}

/// A stock adjustment: a non-zero integer between −1,000,000 and 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct StockDelta(i32);

impl StockDelta {
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        if value != 0 && (-1_000_000..=1_000_000).contains(&value) {
            Ok(Self(value as i32))
        } else {
            Err(invalid(
                "must be a non-zero integer between -1000000 and 1000000",
            ))
        }
    }
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}
impl TryFrom<i64> for StockDelta {
    type Error = InvalidValue;
    fn try_from(v: i64) -> Result<Self, InvalidValue> {
        Self::new(v)
    }
}
impl From<StockDelta> for i64 {
    fn from(d: StockDelta) -> i64 {
        d.get()
    }
}

/// An IANA time zone, resolved against the tz database bundled into the binary (no file is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl TimeZoneName {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let name = raw.into();
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("must be an IANA time zone name"));
        }
        let tz = jiff::tz::db()
            .get(&name)
            .map_err(|_| invalid(format!("unknown time zone {name:?}")))?;
        Ok(Self { name, tz })
    }
    pub fn as_str(&self) -> &str {
        &self.name
    }
    /// The store-local calendar date of an instant: the business date a fact is reported on.
    pub fn business_date(&self, at: jiff::Timestamp) -> jiff::civil::Date {
        self.tz.to_datetime(at).date()
    }
}
impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for TimeZoneName {}
impl TryFrom<String> for TimeZoneName {
    type Error = InvalidValue;
    fn try_from(raw: String) -> Result<Self, InvalidValue> {
        Self::parse(raw)
    }
}
impl From<TimeZoneName> for String {
    fn from(tz: TimeZoneName) -> String {
        tz.name
    }
}

/// A short free text (names, reasons): 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        let len = raw.chars().count();
        if len == 0 || len > 200 {
            return Err(invalid("must be 1 to 200 characters"));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        Ok(Self(raw))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Text {
    type Error = InvalidValue;
    fn try_from(raw: String) -> Result<Self, InvalidValue> {
        Self::parse(raw)
    }
}
impl From<Text> for String {
    fn from(t: Text) -> String {
        t.0
    }
}

/// Why stock was adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    Damage,
    Theft,
    CountCorrection,
    Other,
}

impl AdjustmentReason {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "damage" => Ok(Self::Damage),
            "theft" => Ok(Self::Theft),
            "count_correction" => Ok(Self::CountCorrection),
            "other" => Ok(Self::Other),
            _ => Err(invalid(
                "must be one of damage, theft, count_correction, other",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_api_grammar() {
        assert!(StoreId::parse("s-1.a_b").is_ok());
        assert!(StoreId::parse("9").is_ok());
        assert!(StoreId::parse("").is_err());
        assert!(StoreId::parse("-x").is_err());
        assert!(StoreId::parse("a b").is_err());
        assert!(StoreId::parse("é").is_err());
        assert!(StoreId::parse("a".repeat(64)).is_ok());
        assert!(StoreId::parse("a".repeat(65)).is_err());
    }

    #[test]
    fn money_and_quantities_have_bounds() {
        assert!(Cents::new(0).is_ok());
        assert!(Cents::new(1_000_000_000_000).is_ok());
        assert!(Cents::new(-1).is_err());
        assert!(Cents::new(1_000_000_000_001).is_err());
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1_000_000).is_ok());
        assert!(Quantity::new(1_000_001).is_err());
        assert!(CorrectedQuantity::new(0).is_ok());
        assert!(CorrectedQuantity::new(1_000_000).is_ok());
        assert!(CorrectedQuantity::new(-1).is_err());
        assert!(CorrectedQuantity::new(1_000_001).is_err());
        assert_eq!(
            CorrectedQuantity::new(0).ok().and_then(|q| q.to_quantity()),
            None
        );
        assert!(CorrectionId::parse("c-1").is_ok());
        assert!(CorrectionId::parse("-c").is_err());
        assert!(StockDelta::new(0).is_err());
        assert!(StockDelta::new(-1_000_000).is_ok());
        assert!(StockDelta::new(1_000_001).is_err());
    }

    #[test]
    fn time_zones_come_from_the_bundled_database() {
        let tz = TimeZoneName::parse("Asia/Tokyo").expect("tokyo is a zone");
        let at: jiff::Timestamp = "2026-03-01T16:30:00Z".parse().expect("timestamp");
        assert_eq!(tz.business_date(at).to_string(), "2026-03-02");
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
        assert!(TimeZoneName::parse("").is_err());
    }

    #[test]
    fn values_refuse_bad_json() {
        assert!(serde_json::from_str::<Cents>("-5").is_err());
        assert!(serde_json::from_str::<StoreId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<StoreId>("\" bad\"").is_err());
    }
}
