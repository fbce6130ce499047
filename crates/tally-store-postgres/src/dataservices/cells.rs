//! The cells of a data services answer, read from PostgreSQL's binary forms. Every type a view's
//! column or a query's expression commonly has is read here; another is refused when the query is
//! checked, with the cast to text that answers it.

use std::fmt::Write as _;

use postgres_types::{FromSql, Type};
use tally_core::dataservices::{Cell, view_instant};

use crate::Ts;

/// A cell's bytes as the server sent them, whatever its type.
pub(super) struct Raw<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How a column's cells are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// `sum()` of a bigint is numeric: a whole value answers as an integer (as SQLite's does).
    Numeric,
    Bool,
    Text,
    /// `YYYY-MM-DD`, as the views' dates.
    Date,
    /// UTC with microseconds, as the views' instants (a `timestamp` without zone read as UTC).
    Timestamp,
    Jsonb,
    Uuid,
    /// Lowercase hex, as SQLite answers a blob.
    Bytea,
    /// A function returning nothing (`pg_sleep`): null.
    Void,
}

impl Kind {
    pub(super) fn of(ty: &Type) -> Option<Self> {
        let kinds = [
            (Type::INT2, Kind::Int2),
            (Type::INT4, Kind::Int4),
            (Type::INT8, Kind::Int8),
            (Type::OID, Kind::Oid),
            (Type::FLOAT4, Kind::Float4),
            (Type::FLOAT8, Kind::Float8),
            (Type::NUMERIC, Kind::Numeric),
            (Type::BOOL, Kind::Bool),
            (Type::TEXT, Kind::Text),
            (Type::VARCHAR, Kind::Text),
            (Type::BPCHAR, Kind::Text),
            (Type::NAME, Kind::Text),
            (Type::UNKNOWN, Kind::Text),
            (Type::JSON, Kind::Text),
            (Type::JSONB, Kind::Jsonb),
            (Type::DATE, Kind::Date),
            (Type::TIMESTAMP, Kind::Timestamp),
            (Type::TIMESTAMPTZ, Kind::Timestamp),
            (Type::UUID, Kind::Uuid),
            (Type::BYTEA, Kind::Bytea),
            (Type::VOID, Kind::Void),
        ];
        kinds.into_iter().find(|(t, _)| t == ty).map(|(_, k)| k)
    }

    /// The JSON type of the column's cells.
    pub(super) fn json(self) -> &'static str {
        match self {
            Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Oid => "integer",
            Kind::Float4 | Kind::Float8 | Kind::Numeric => "number",
            Kind::Bool => "boolean",
            _ => "string",
        }
    }

    /// The cell of a non-null value.
    pub(super) fn cell(self, raw: &[u8]) -> Result<Cell, String> {
        let bad = || format!("an ill-formed {self:?} value ({} bytes)", raw.len());
        Ok(match self {
            Kind::Int2 => Cell::Integer(i16::from_be_bytes(fixed(raw).ok_or_else(bad)?).into()),
            Kind::Int4 => Cell::Integer(i32::from_be_bytes(fixed(raw).ok_or_else(bad)?).into()),
            Kind::Int8 => Cell::Integer(i64::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
            Kind::Oid => Cell::Integer(u32::from_be_bytes(fixed(raw).ok_or_else(bad)?).into()),
            Kind::Float4 => Cell::Real(f32::from_be_bytes(fixed(raw).ok_or_else(bad)?).into()),
            Kind::Float8 => Cell::Real(f64::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
            Kind::Numeric => numeric(raw).ok_or_else(bad)?,
            Kind::Bool => Cell::Boolean(raw.first().ok_or_else(bad)? != &0),
            Kind::Text => Cell::Text(String::from_utf8_lossy(raw).into_owned()),
            // The binary form's first byte is its version (1), then the text.
            Kind::Jsonb => {
                Cell::Text(String::from_utf8_lossy(raw.get(1..).ok_or_else(bad)?).into_owned())
            }
            Kind::Date => Cell::Text(date(i32::from_be_bytes(fixed(raw).ok_or_else(bad)?))?),
            Kind::Timestamp => {
                let us = i64::from_be_bytes(fixed(raw).ok_or_else(bad)?);
                Cell::Text(match us {
                    i64::MAX => "infinity".to_owned(),
                    i64::MIN => "-infinity".to_owned(),
                    _ => view_instant(
                        Ts::from_sql(&Type::TIMESTAMPTZ, raw)
                            .map_err(|e| format!("a timestamp out of range: {e}"))?
                            .0,
                    ),
                })
            }
            Kind::Uuid => {
                Cell::Text(uuid::Uuid::from_bytes(fixed(raw).ok_or_else(bad)?).to_string())
            }
            Kind::Bytea => Cell::Text(raw.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })),
            Kind::Void => Cell::Null,
        })
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    raw.try_into().ok()
}

/// Days since 2000-01-01 (PostgreSQL's epoch) as `YYYY-MM-DD`.
fn date(days: i32) -> Result<String, String> {
    match days {
        i32::MAX => return Ok("infinity".to_owned()),
        i32::MIN => return Ok("-infinity".to_owned()),
        _ => {}
    }
    jiff::civil::date(2000, 1, 1)
        .checked_add(
            jiff::Span::new()
                .try_days(days)
                .map_err(|e| e.to_string())?,
        )
        .map(|d| d.to_string())
        .map_err(|e| format!("a date out of range: {e}"))
}

/// A `numeric` in its binary form: digit count, weight (of the first base-10000 digit), sign,
/// display scale, then the digits. Whole and within i64: an integer; else the nearest f64 (read
/// from its decimal text, so rounded once).
fn numeric(raw: &[u8]) -> Option<Cell> {
    let word = |i: usize| raw.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (count, weight, sign) = (usize::from(word(0)?), i32::from(word(2)? as i16), word(4)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some(Cell::Real(f64::NAN)),
        0xD000 => return Some(Cell::Real(f64::INFINITY)),
        0xF000 => return Some(Cell::Real(f64::NEG_INFINITY)),
        _ => return None,
    }
    let digits = (0..count)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<Vec<u16>>>()?;
    let negative = sign == 0x4000;
    // Digit i is worth 10000^(weight - i): past the units' place when i > weight.
    let whole = digits
        .iter()
        .enumerate()
        .all(|(i, d)| *d == 0 || i32::try_from(i).is_ok_and(|i| i <= weight));
    if whole {
        let mut n: Option<i128> = Some(0);
        for i in 0..=weight.max(-1) {
            let d = usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(i))
                .copied()
                .unwrap_or(0);
            n = n
                .and_then(|n| n.checked_mul(10_000))
                .and_then(|n| n.checked_add(i128::from(d)));
            if n.is_none() {
                break;
            }
        }
        if let Some(v) = n.and_then(|n| i64::try_from(if negative { -n } else { n }).ok()) {
            return Some(Cell::Integer(v));
        }
    }
    let mut text = String::from(if negative { "-0." } else { "0." });
    for d in &digits {
        let _ = write!(text, "{d:04}");
    }
    // A trailing 0 changes nothing and keeps `0.e4` (no digits) a number.
    let _ = write!(text, "0e{}", (weight + 1) * 4);
    text.parse().ok().map(Cell::Real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [digits.len() as u16, weight as u16, sign, scale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn whole_numerics_are_integers_and_the_rest_reals() {
        let n = |w, s, scale, d: &[u16]| numeric(&encode(w, s, scale, d));
        assert_eq!(n(0, 0, 0, &[]), Some(Cell::Integer(0)));
        assert_eq!(n(1, 0, 0, &[1, 2345]), Some(Cell::Integer(12_345)));
        assert_eq!(n(2, 0x4000, 0, &[7]), Some(Cell::Integer(-700_000_000)));
        assert_eq!(n(0, 0, 4, &[3]), Some(Cell::Integer(3)), "3.0000 is whole");
        assert_eq!(n(0, 0, 1, &[2, 5000]), Some(Cell::Real(2.5)));
        assert_eq!(n(-1, 0x4000, 1, &[5000]), Some(Cell::Real(-0.5)));
        assert_eq!(
            n(5, 0, 0, &[9999, 0, 0, 0, 0, 0]),
            Some(Cell::Real(9.999e23))
        );
        assert!(matches!(n(0, 0xC000, 0, &[]), Some(Cell::Real(r)) if r.is_nan()));
        assert_eq!(numeric(&[0, 1]), None);
    }

    #[test]
    fn dates_and_instants_in_the_views_forms() {
        assert_eq!(date(0).as_deref(), Ok("2000-01-01"));
        assert_eq!(date(9567).as_deref(), Ok("2026-03-12"));
        assert_eq!(date(-1).as_deref(), Ok("1999-12-31"));
        let us: i64 = 9567 * 86_400_000_000 + 34_200_000_123;
        assert_eq!(
            Kind::Timestamp.cell(&us.to_be_bytes()),
            Ok(Cell::Text("2026-03-12T09:30:00.000123Z".to_owned()))
        );
        assert_eq!(
            Kind::Bytea.cell(&[0, 171]),
            Ok(Cell::Text("00ab".to_owned()))
        );
        assert_eq!(
            Kind::Int4.cell(&[0, 0]),
            Err("an ill-formed Int4 value (2 bytes)".to_owned())
        );
    }
}
