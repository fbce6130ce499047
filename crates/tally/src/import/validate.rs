//! Checking each command of an import file as the API would, before anything is sent: the body is
//! encoded once (those bytes are what is sent, so a re-run sends the same bytes under the same
//! idempotency key) and read back with the API's own request types and validation
//! (`tally_http::dto`): ids, quantities, cents, discounts, distinct items, RFC 3339 times. Each
//! problem is mapped back to the file line it came from.

use std::collections::HashMap;

use anyhow::Context;
use jiff::Timestamp;
use tally_http::error::ApiError;

use super::Kind;
use super::parse::{Bad, File, Parsed};

/// A command ready to send.
#[derive(Debug, Clone)]
pub struct Ready {
    pub id: String,
    /// The JSON body, encoded once.
    pub body: Vec<u8>,
    /// File rows it came from.
    pub rows: u64,
}

/// What `check` found: the commands to send and the bad lines (sorted by line).
pub struct Checked {
    pub ready: Vec<Ready>,
    pub bad: Vec<Bad>,
    /// Distinct lines in `bad`.
    pub bad_lines: usize,
    /// Commands left out because one of their rows is bad.
    pub left_out: u64,
}

/// The API's verdict on one body: the problems, each as (field, message).
fn api_check(kind: Kind, body: &[u8], now: Timestamp) -> Vec<(String, String)> {
    let verdict = match kind {
        Kind::Sales => serde_json::from_slice::<tally_http::dto::NewSale>(body)
            .map(|b| b.into_command(now).map(drop)),
        Kind::Deliveries => serde_json::from_slice::<tally_http::dto::NewDelivery>(body)
            .map(|b| b.into_command(now).map(drop)),
    };
    match verdict {
        Ok(Ok(())) => Vec::new(),
        Ok(Err(ApiError::Invalid(fields))) => {
            fields.into_iter().map(|f| (f.field, f.message)).collect()
        }
        Ok(Err(other)) => vec![(String::new(), other.to_string())],
        Err(e) => vec![(String::new(), format!("not a {} body: {e}", kind.noun()))],
    }
}

/// The file line a field's problem belongs to: `lines[i]…` is line item i's row.
fn line_of(field: &str, parsed: &Parsed) -> u64 {
    field
        .strip_prefix("lines[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| parsed.file_lines.get(i).copied())
        .or_else(|| parsed.file_lines.first().copied())
        .unwrap_or(0)
}

/// In a CSV command, `lines[i].quantity` is the row's `quantity`: name the column as the file does.
fn column_of(field: &str) -> &str {
    match field.find("].") {
        Some(i) if field.starts_with("lines[") => &field[i + 2..],
        _ => field,
    }
}

pub fn check(kind: Kind, file: File, csv: bool) -> anyhow::Result<Checked> {
    let now = Timestamp::now();
    let mut bad = file.bad;
    let mut ready = Vec::with_capacity(file.commands.len());
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    // Commands left out: those with a bad row, and those that failed the API's checks.
    let mut left_out: std::collections::HashSet<String> = file.tainted.clone();
    for parsed in file.commands {
        let id = parsed.body.id(kind).to_owned();
        let first_line = parsed.file_lines.first().copied().unwrap_or(0);
        if file.tainted.contains(&id) {
            continue;
        }
        if let Some(earlier) = first_seen.insert(id.clone(), first_line) {
            bad.push(Bad {
                line: first_line,
                reason: format!(
                    "{} {id:?} is already on line {earlier} (an id is used once)",
                    kind.id_field()
                ),
            });
            continue;
        }
        let body = serde_json::to_vec(&parsed.body).context("encoding a body")?;
        let problems = api_check(kind, &body, now);
        if problems.is_empty() {
            ready.push(Ready {
                id,
                body,
                rows: parsed.file_lines.len() as u64,
            });
            continue;
        }
        left_out.insert(id);
        for (field, message) in problems {
            let shown = if csv { column_of(&field) } else { &field };
            let reason = if shown.is_empty() {
                message
            } else {
                format!("{shown}: {message}")
            };
            bad.push(Bad {
                line: line_of(&field, &parsed),
                reason,
            });
        }
    }
    bad.sort();
    bad.dedup();
    let lines: std::collections::BTreeSet<u64> = bad.iter().map(|b| b.line).collect();
    Ok(Checked {
        ready,
        bad_lines: lines.len(),
        bad,
        left_out: left_out.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::Body;
    use super::*;

    fn parsed(json: serde_json::Value, lines: Vec<u64>) -> Parsed {
        Parsed {
            body: serde_json::from_value::<Body>(json).expect("body"),
            file_lines: lines,
        }
    }

    #[test]
    fn the_api_validation_names_the_row_and_column() {
        let file = File {
            commands: vec![
                parsed(
                    serde_json::json!({"sale_id": "s1", "store_id": "st", "occurred_at": "yesterday",
                        "lines": [{"item_id": "i1", "quantity": 1, "unit_price_cents": 5},
                                  {"item_id": "i2", "quantity": 0, "unit_price_cents": 5}]}),
                    vec![2, 7],
                ),
                parsed(
                    serde_json::json!({"sale_id": "s2", "store_id": "st",
                        "lines": [{"item_id": "i1", "quantity": 1, "unit_price_cents": 5}]}),
                    vec![3],
                ),
            ],
            ..File::default()
        };
        let c = check(Kind::Sales, file, true).expect("checked");
        assert_eq!(c.ready.len(), 1);
        assert_eq!(c.ready[0].id, "s2");
        assert_eq!(c.left_out, 1);
        let lines: Vec<u64> = c.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 7], "{:?}", c.bad);
        assert!(c.bad[1].reason.starts_with("quantity:"), "{:?}", c.bad);
        assert!(c.bad[0].reason.starts_with("occurred_at:"), "{:?}", c.bad);
    }
}
