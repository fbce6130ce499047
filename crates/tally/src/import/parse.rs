//! Reading an import file into commands: a CSV file with a header, one row per line item (rows with
//! the same sale or delivery id are one command), or NDJSON, one request body per line. Each
//! command remembers the file lines it came from, so a problem found later names them.
//!
//! CSV columns (any order; optional ones may be left out of the header or left empty):
//! - sales: `sale_id, store_id, item_id, quantity, unit_price_cents`, optional `occurred_at`,
//!   `till_id`, `discount_cents`
//! - deliveries: `delivery_id, supplier_id, store_id, item_id, quantity, unit_cost_cents`, optional
//!   `occurred_at`
//!
//! The command-level fields (store, supplier, occurred_at, till) must agree on every row of one
//! command.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Kind;

/// A sale or delivery line as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub item_id: String,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_price_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_cost_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub discount_cents: Option<i64>,
}

/// A `POST /v1/sales` or `POST /v1/deliveries` body (the fields of the other kind left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sale_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub supplier_id: Option<String>,
    pub store_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub till_id: Option<String>,
    pub lines: Vec<Line>,
}

impl Body {
    pub fn id(&self, kind: Kind) -> &str {
        match kind {
            Kind::Sales => self.sale_id.as_deref().unwrap_or(""),
            Kind::Deliveries => self.delivery_id.as_deref().unwrap_or(""),
        }
    }
}

/// A command read from the file, with the file line of each of its lines (CSV) or of itself.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub body: Body,
    /// `file_lines[i]` is the line of `body.lines[i]`; an NDJSON command has one entry per line
    /// item, all the same.
    pub file_lines: Vec<u64>,
}

/// A line of the file that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bad {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Csv,
    Ndjson,
}

impl InputFormat {
    /// The format a file's extension names (`.csv`; `.ndjson`, `.jsonl`, `.json`).
    pub fn of(path: &Path) -> anyhow::Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("ndjson" | "jsonl" | "json") => Ok(Self::Ndjson),
            _ => anyhow::bail!(
                "{}: cannot tell the format from the extension; pass --input-format csv|ndjson",
                path.display()
            ),
        }
    }
}

/// What a file holds: the commands in the order of their first line, and the lines it could not
/// read (lines of those commands that could be read stay in `commands`).
#[derive(Debug, Default)]
pub struct File {
    pub commands: Vec<Parsed>,
    pub bad: Vec<Bad>,
    /// Ids of commands one of whose rows is bad: none of their rows is imported.
    pub tainted: std::collections::HashSet<String>,
    pub rows: u64,
}

pub fn read(path: &Path, format: InputFormat, kind: Kind) -> anyhow::Result<File> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::new(f);
    match format {
        InputFormat::Csv => csv_file(reader, kind),
        InputFormat::Ndjson => ndjson_file(reader, kind),
    }
    .with_context(|| format!("reading {}", path.display()))
}

fn ndjson_file(reader: impl BufRead, kind: Kind) -> anyhow::Result<File> {
    let mut file = File::default();
    for (n, line) in reader.lines().enumerate() {
        let line_no = n as u64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        file.rows += 1;
        match serde_json::from_str::<Body>(&line) {
            Ok(body) => {
                let file_lines = vec![line_no; body.lines.len().max(1)];
                file.commands.push(Parsed { body, file_lines });
            }
            Err(e) => file.bad.push(Bad {
                line: line_no,
                reason: format!("not a {} body: {e}", kind.noun()),
            }),
        }
    }
    Ok(file)
}

/// The columns of a kind's CSV: (required, optional).
fn columns(kind: Kind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        Kind::Sales => (
            &[
                "sale_id",
                "store_id",
                "item_id",
                "quantity",
                "unit_price_cents",
            ],
            &["occurred_at", "till_id", "discount_cents"],
        ),
        Kind::Deliveries => (
            &[
                "delivery_id",
                "supplier_id",
                "store_id",
                "item_id",
                "quantity",
                "unit_cost_cents",
            ],
            &["occurred_at"],
        ),
    }
}

/// An integer cell; a cell that is not one is a bad row.
fn integer(column: &str, raw: &str) -> Result<i64, String> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| format!("{column}: {raw:?} is not a whole number"))
}

fn csv_file(reader: impl std::io::Read, kind: Kind) -> anyhow::Result<File> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = csv.headers().context("reading the header")?.clone();
    let (required, optional) = columns(kind);
    let index: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (h, i)).collect();
    if let Some(missing) = required.iter().find(|c| !index.contains_key(**c)) {
        anyhow::bail!(
            "line 1: the header has no {missing} column (a {} file has {}, optionally {})",
            kind.noun(),
            required.join(", "),
            optional.join(", ")
        );
    }
    if let Some(unknown) = header
        .iter()
        .find(|h| !required.contains(h) && !optional.contains(h))
    {
        anyhow::bail!("line 1: unknown column {unknown:?}");
    }
    let mut file = File::default();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for record in csv.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                file.bad.push(Bad {
                    line,
                    reason: format!("not a CSV row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        file.rows += 1;
        let cell = |c: &str| index.get(c).and_then(|&i| record.get(i)).unwrap_or("");
        let opt = |c: &str| Some(cell(c).to_owned()).filter(|v| !v.is_empty());
        let row = (|| {
            let line_item = Line {
                item_id: cell("item_id").to_owned(),
                quantity: integer("quantity", cell("quantity"))?,
                unit_price_cents: match kind {
                    Kind::Sales => Some(integer("unit_price_cents", cell("unit_price_cents"))?),
                    Kind::Deliveries => None,
                },
                unit_cost_cents: match kind {
                    Kind::Deliveries => Some(integer("unit_cost_cents", cell("unit_cost_cents"))?),
                    Kind::Sales => None,
                },
                discount_cents: opt("discount_cents")
                    .map(|d| integer("discount_cents", &d))
                    .transpose()?,
            };
            let head = Body {
                sale_id: (kind == Kind::Sales).then(|| cell("sale_id").to_owned()),
                delivery_id: (kind == Kind::Deliveries).then(|| cell("delivery_id").to_owned()),
                supplier_id: (kind == Kind::Deliveries).then(|| cell("supplier_id").to_owned()),
                store_id: cell("store_id").to_owned(),
                occurred_at: opt("occurred_at"),
                till_id: opt("till_id"),
                lines: Vec::new(),
            };
            Ok::<_, String>((head, line_item))
        })();
        let id = cell(required[0]).to_owned();
        let (head, line_item) = match row {
            Ok(r) => r,
            Err(reason) => {
                file.bad.push(Bad { line, reason });
                file.tainted.insert(id);
                continue;
            }
        };
        match by_id.get(&id) {
            Some(&at) => {
                let command = &mut file.commands[at];
                if let Some(reason) = disagreement(&command.body, &head, command.file_lines[0]) {
                    file.bad.push(Bad { line, reason });
                    file.tainted.insert(id);
                    continue;
                }
                command.body.lines.push(line_item);
                command.file_lines.push(line);
            }
            None => {
                by_id.insert(id, file.commands.len());
                let mut body = head;
                body.lines.push(line_item);
                file.commands.push(Parsed {
                    body,
                    file_lines: vec![line],
                });
            }
        }
    }
    Ok(file)
}

/// Why a row's command-level fields differ from those of its command's first row, if they do.
fn disagreement(first: &Body, row: &Body, first_line: u64) -> Option<String> {
    let fields = [
        ("store_id", &first.store_id, &row.store_id),
        (
            "supplier_id",
            &display(&first.supplier_id),
            &display(&row.supplier_id),
        ),
        (
            "occurred_at",
            &display(&first.occurred_at),
            &display(&row.occurred_at),
        ),
        ("till_id", &display(&first.till_id), &display(&row.till_id)),
    ];
    fields.iter().find(|(_, a, b)| a != b).map(|(f, a, b)| {
        format!("{f} {b:?} differs from {a:?} on line {first_line}, the first row of this command")
    })
}

fn display(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALES: &str = "sale_id,store_id,occurred_at,item_id,quantity,unit_price_cents\n\
        s1,st,2026-11-02T10:00:00+01:00,i1,2,150\n\
        s2,st,2026-11-02T10:05:00+01:00,i1,1,150\n\
        s1,st,2026-11-02T10:00:00+01:00,i2,1,99\n\
        s3,st,,i1,x,150\n\
        s1,other,2026-11-02T10:00:00+01:00,i3,1,99\n";

    #[test]
    fn rows_of_one_sale_are_one_command_and_bad_rows_are_named_by_line() {
        let f = csv_file(SALES.as_bytes(), Kind::Sales).expect("file");
        assert_eq!(f.rows, 5);
        assert_eq!(f.commands.len(), 2);
        assert_eq!(f.commands[0].body.lines.len(), 2);
        assert_eq!(f.commands[0].file_lines, vec![2, 4]);
        assert_eq!(f.bad.len(), 2);
        assert_eq!(f.bad[0].line, 5);
        assert!(f.bad[0].reason.contains("quantity"), "{:?}", f.bad[0]);
        assert_eq!(f.bad[1].line, 6);
        assert!(f.bad[1].reason.contains("store_id"), "{:?}", f.bad[1]);
    }

    #[test]
    fn a_header_without_a_required_column_is_refused() {
        let e = csv_file("sale_id,store_id\n".as_bytes(), Kind::Sales).expect_err("refused");
        assert!(e.to_string().contains("item_id"), "{e}");
    }

    #[test]
    fn ndjson_lines_are_bodies() {
        let text = "{\"sale_id\":\"s1\",\"store_id\":\"st\",\"lines\":[{\"item_id\":\"i\",\"quantity\":1,\"unit_price_cents\":5}]}\n\nnot json\n";
        let f = ndjson_file(text.as_bytes(), Kind::Sales).expect("file");
        assert_eq!(f.commands.len(), 1);
        assert_eq!(
            f.bad,
            vec![Bad {
                line: 3,
                reason: f.bad[0].reason.clone()
            }]
        );
    }
}
