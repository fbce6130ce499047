//! A report's JSON as a table: the columns each report shows, money formatted from integer cents
//! (never through a float), numbers right-aligned, the width fitted to the terminal or `COLUMNS`.

use anyhow::Context;
use comfy_table::{
    Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width, presets,
};
use serde_json::Value;

/// How a report's answer becomes a table: the heading's fields, the list of rows and its columns.
pub struct Shape {
    /// Top-level fields shown above the table (`store_id`, `date`…), those present.
    pub heading: &'static [&'static str],
    pub rows: &'static str,
    pub columns: &'static [&'static str],
}

const SALES: &[&str] = &[
    "transactions",
    "units_sold",
    "gross_cents",
    "discount_cents",
    "returned_units",
    "returned_cents",
    "net_cents",
];

pub static STORE_DAILY: Shape = Shape {
    heading: &["store_id"],
    rows: "days",
    columns: &[
        "date", SALES[0], SALES[1], SALES[2], SALES[3], SALES[4], SALES[5], SALES[6],
    ],
};

pub static ALL_STORES: Shape = Shape {
    heading: &["date"],
    rows: "stores",
    columns: &[
        "store_id", SALES[0], SALES[1], SALES[2], SALES[3], SALES[4], SALES[5], SALES[6],
    ],
};

pub static SUPPLIER_DAILY: Shape = Shape {
    heading: &["supplier_id"],
    rows: "days",
    columns: &[
        "date",
        "deliveries",
        "units_supplied",
        "supply_cost_cents",
        "units_sold",
        "sales_cents",
    ],
};

pub static ITEM_DAILY: Shape = Shape {
    heading: &["item_id", "store_id"],
    rows: "days",
    columns: &[
        "date",
        "units_sold",
        "gross_cents",
        "discount_cents",
        "returned_units",
        "returned_cents",
        "net_cents",
    ],
};

pub static STOCK: Shape = Shape {
    heading: &["store_id"],
    rows: "items",
    columns: &["item_id", "on_hand"],
};

pub static TOP_ITEMS: Shape = Shape {
    heading: &[],
    rows: "items",
    columns: &["item_id", "units_sold", "net_cents"],
};

/// Integer cents as currency units: 12345 → "123.45", -5 → "-0.05". No float is involved.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A column's heading: `gross_cents` is shown as `gross`, the unit being the currency's, and words
/// apart (`units sold`), so a narrow terminal wraps a heading between its words.
fn heading(column: &str) -> String {
    column
        .strip_suffix("_cents")
        .unwrap_or(column)
        .replace('_', " ")
}

fn cell(column: &str, v: &Value) -> Cell {
    let text = match v {
        Value::Number(n) if column.ends_with("_cents") => match n.as_i64() {
            Some(c) => money(c),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let c = Cell::new(text);
    if v.is_number() {
        c.set_alignment(CellAlignment::Right)
    } else {
        c
    }
}

/// The width to fit: `COLUMNS` when set (scripts, tests), else the terminal's when there is one.
pub fn width() -> Option<u16> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
}

/// The answer `json` drawn as `shape` says: a heading line, the table, and `(no rows)` when empty.
pub fn render(shape: &Shape, json: &Value, width: Option<u16>) -> anyhow::Result<String> {
    let rows = json[shape.rows]
        .as_array()
        .with_context(|| format!("the answer has no list of {}", shape.rows))?;
    let mut about: Vec<String> = shape
        .heading
        .iter()
        .filter_map(|f| json[*f].as_str().map(|v| format!("{f} {v}")))
        .collect();
    if let Some(p) = json["position"].as_u64() {
        about.push(format!("position {p}"));
    }
    if let Some(a) = json["as_of"].as_str() {
        about.push(format!("as of {a}"));
    }
    let mut out = about.join(", ");
    out.push('\n');
    if rows.is_empty() {
        out.push_str("(no rows)\n");
        return Ok(out);
    }
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(shape.columns.iter().map(|c| heading(c)));
    if let Some(w) = width {
        table.set_width(w);
    }
    let mut widest = vec![0usize; shape.columns.len()];
    for row in rows {
        let cells: Vec<Cell> = shape.columns.iter().map(|c| cell(c, &row[*c])).collect();
        for (w, c) in widest.iter_mut().zip(&cells) {
            *w = (*w).max(c.content().chars().count());
        }
        table.add_row(cells);
    }
    // Headings may wrap to fit the width; figures and dates never do (the width counts the
    // column's padding, a space each side).
    for (i, w) in widest.into_iter().enumerate() {
        if let Some(column) = table.column_mut(i) {
            let w = u16::try_from(w + 2).unwrap_or(u16::MAX);
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
        }
    }
    out.push_str(&table.to_string());
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_become_currency_units_exactly() {
        assert_eq!(money(12345), "123.45");
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(-12_300), "-123.00");
        assert_eq!(money(1_000_000_000_000), "10000000000.00");
        assert_eq!(money(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn a_table_shows_money_in_units_and_says_when_it_is_empty() {
        let json = serde_json::json!({"store_id": "s1", "position": 7, "items": [
            {"item_id": "i1", "units_sold": 3, "net_cents": 1999}]});
        let t = render(&TOP_ITEMS, &json, Some(60)).expect("table");
        assert!(t.contains("19.99"), "{t}");
        assert!(t.starts_with("position 7\n"), "{t}");
        let empty = serde_json::json!({"position": 0, "items": []});
        assert!(
            render(&TOP_ITEMS, &empty, None)
                .expect("table")
                .contains("(no rows)")
        );
    }
}
