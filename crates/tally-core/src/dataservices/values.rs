//! The values that cross the data services port: parameters bound into a statement, and the cells
//! and columns of its answer.

use serde::Serialize;

use super::ParamType;

/// A parameter's value as bound. Ids, strings, dates and instants are text in the views' forms;
/// there are no floating-point parameters (money is integer cents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Null,
    Integer(i64),
    Text(String),
    Boolean(bool),
}

/// The longest string parameter accepted (a larger one is refused, not truncated).
pub const MAX_TEXT: usize = 4096;

impl Bind {
    /// Parses a request's raw value by the parameter's type; the error says what was expected.
    pub fn parse(ty: ParamType, raw: &str) -> Result<Self, &'static str> {
        match ty {
            ParamType::Id => tally_domain::values::check_id(raw)
                .map(|()| Bind::Text(raw.to_owned()))
                .map_err(|_| "must be an id: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit"),
            ParamType::String => {
                if raw.len() > MAX_TEXT {
                    Err("must be at most 4096 bytes")
                } else if raw.contains('\0') {
                    Err("must not contain NUL characters")
                } else {
                    Ok(Bind::Text(raw.to_owned()))
                }
            }
            ParamType::Integer => raw
                .parse::<i64>()
                .map(Bind::Integer)
                .map_err(|_| "must be a whole number"),
            ParamType::Date => raw
                .parse::<jiff::civil::Date>()
                .ok()
                .filter(|_| raw.len() == 10)
                .map(|d| Bind::Text(d.to_string()))
                .ok_or("must be a date, YYYY-MM-DD"),
            ParamType::Timestamp => raw
                .parse::<jiff::Timestamp>()
                .map(|t| Bind::Text(view_instant(t)))
                .map_err(|_| "must be an RFC 3339 instant with its offset, e.g. 2026-12-01T09:30:00Z"),
            ParamType::Boolean => match raw {
                "true" => Ok(Bind::Boolean(true)),
                "false" => Ok(Bind::Boolean(false)),
                _ => Err("must be true or false"),
            },
        }
    }
}

/// An instant in the views' form: UTC, microseconds, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (text that sorts
/// as the instants do, the same on every backend).
pub fn view_instant(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// One column of an answer: its name and the JSON type its cells have (`integer`, `number`,
/// `string`, `boolean`), as the database described the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// One cell of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Integer(i64),
    /// A computed ratio or average; figures of money stay integer cents in the views.
    Real(f64),
    Text(String),
    Boolean(bool),
}

impl Cell {
    /// The cell as CSV field text (null is empty).
    pub fn to_field(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Integer(i) => i.to_string(),
            Cell::Real(r) => r.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Boolean(b) => b.to_string(),
        }
    }
}

/// An answer: its columns, at most `limit` rows, whether there were more, and the read models'
/// position it was read at.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Table {
    pub position: u64,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    pub truncated: bool,
}
