//! The read models' tables as `verify` compares them: each row a key, some text and some figures,
//! in the same column order on every backend, and what a fold of the log says each row holds.

use crate::readmodel::{
    Delta, INVENTORY, ITEM_DAILY, ItemDailyDelta, REFERENCE, Registered, STORE_DAILY,
    SUPPLIER_DAILY, TILL_DAILY,
};

/// One read-model table: its projection, its key columns, its text columns and its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub projection: &'static str,
    pub keys: &'static [&'static str],
    pub texts: &'static [&'static str],
    pub figures: &'static [&'static str],
}

impl Table {
    /// Whether a row of all-zero figures means nothing (a day whose only sale was voided): such
    /// rows may or may not be stored, and are left out of the comparison. Registrations keep every
    /// row.
    pub fn drops_zero_rows(&self) -> bool {
        self.projection != REFERENCE
    }
}

/// A row: its key, then its text columns, then its figures, each in its table's column order.
/// Compact, since a verify of a long log holds millions of them twice: the key's parts (and the
/// texts) in one string each, joined by a unit separator that no id contains, so that the joined
/// keys sort as the tuples of their parts do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    key: Box<str>,
    texts: Box<str>,
    pub figures: Box<[i64]>,
}

const SEP: char = '\u{1f}';

fn join<S: AsRef<str>>(parts: impl IntoIterator<Item = S>) -> Box<str> {
    let mut out = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.push_str(p.as_ref());
    }
    out.into_boxed_str()
}

fn split(joined: &str, parts: usize) -> Vec<&str> {
    if parts == 0 {
        return Vec::new();
    }
    joined.split(SEP).collect()
}

impl Row {
    pub fn new<K: AsRef<str>, T: AsRef<str>>(
        key: impl IntoIterator<Item = K>,
        texts: impl IntoIterator<Item = T>,
        figures: impl Into<Box<[i64]>>,
    ) -> Self {
        let texts: Vec<T> = texts.into_iter().collect();
        Self {
            key: join(key),
            // No texts and one empty text must differ: count them in.
            texts: if texts.is_empty() {
                Box::from("")
            } else {
                join(std::iter::once("+").chain(texts.iter().map(AsRef::as_ref)))
            },
            figures: figures.into(),
        }
    }

    /// The key's parts.
    pub fn key(&self) -> Vec<&str> {
        split(&self.key, 1)
    }

    /// The text columns.
    pub fn texts(&self) -> Vec<&str> {
        let mut parts = split(&self.texts, usize::from(!self.texts.is_empty()));
        if !parts.is_empty() {
            parts.remove(0);
        }
        parts
    }

    pub(super) fn joined_key(&self) -> &str {
        &self.key
    }

    pub(super) fn joined_texts(&self) -> &str {
        &self.texts
    }
}

/// The figures of item daily sales and of the item totals, in their tables' column order.
const ITEM_FIGURES: &[&str] = &[
    "units_sold",
    "gross_cents",
    "returned_units",
    "returned_cents",
    "units_supplied",
    "supply_cost_cents",
    "discount_cents",
];

/// Every table `verify` compares (the journal is checked through time travel instead).
pub const TABLES: [Table; 9] = [
    Table {
        name: "rm_inventory",
        projection: INVENTORY,
        keys: &["store_id", "item_id"],
        texts: &[],
        figures: &["on_hand"],
    },
    Table {
        name: "rm_store_daily",
        projection: STORE_DAILY,
        keys: &["store_id", "date"],
        texts: &[],
        figures: &[
            "transactions",
            "units_sold",
            "gross_cents",
            "returned_units",
            "returned_cents",
            "discount_cents",
        ],
    },
    Table {
        name: "rm_supplier_daily",
        projection: SUPPLIER_DAILY,
        keys: &["supplier_id", "date"],
        texts: &[],
        figures: &[
            "deliveries",
            "units_supplied",
            "supply_cost_cents",
            "units_sold",
            "sales_cents",
        ],
    },
    Table {
        name: "rm_item_daily",
        projection: ITEM_DAILY,
        keys: &["store_id", "item_id", "date"],
        texts: &["supplier_id"],
        figures: ITEM_FIGURES,
    },
    Table {
        name: "rm_item_totals",
        projection: ITEM_DAILY,
        keys: &["item_id", "date"],
        texts: &["supplier_id"],
        figures: ITEM_FIGURES,
    },
    Table {
        name: "rm_till_daily",
        projection: TILL_DAILY,
        keys: &["store_id", "till_id", "date"],
        texts: &[],
        figures: &["transactions", "gross_cents", "discount_cents"],
    },
    Table {
        name: "rm_suppliers",
        projection: REFERENCE,
        keys: &["supplier_id"],
        texts: &["name"],
        figures: &[],
    },
    Table {
        name: "rm_stores",
        projection: REFERENCE,
        keys: &["store_id"],
        texts: &["name", "timezone"],
        figures: &[],
    },
    Table {
        name: "rm_items",
        projection: REFERENCE,
        keys: &["item_id"],
        texts: &["name", "supplier_id"],
        figures: &["unit_price_cents"],
    },
];

/// A table's rows (in no particular order until compared).
pub type Rows = Vec<Row>;

/// The rows a projection's delta (a fold of the log from empty) says its tables hold, by table.
pub fn expected(delta: Delta) -> Vec<(&'static str, Rows)> {
    fn rows(items: impl IntoIterator<Item = Row>) -> Rows {
        items.into_iter().collect()
    }
    let row =
        |key: Vec<String>, texts: Vec<String>, figures: Vec<i64>| Row::new(key, texts, figures);
    match delta {
        Delta::Inventory(m) => vec![(
            "rm_inventory",
            rows(
                m.into_iter()
                    .map(|((s, i), n)| row(vec![s, i], vec![], vec![n])),
            ),
        )],
        Delta::StoreDaily(m) => vec![(
            "rm_store_daily",
            rows(m.into_iter().map(|((s, d), f)| {
                let figures = f.values().to_vec();
                row(vec![s, d.to_string()], vec![], figures)
            })),
        )],
        Delta::SupplierDaily(m) => vec![(
            "rm_supplier_daily",
            rows(m.into_iter().map(|((s, d), f)| {
                let figures = f.values().to_vec();
                row(vec![s, d.to_string()], vec![], figures)
            })),
        )],
        Delta::ItemDaily(delta) => {
            let changes = delta.changes();
            let totals = ItemDailyDelta::totals(&changes);
            vec![
                (
                    "rm_item_daily",
                    rows(changes.iter().map(|c| {
                        let figures = c.figures().to_vec();
                        let key = vec![c.store.to_owned(), c.item.to_owned(), c.date.to_string()];
                        row(key, vec![c.supplier.to_owned()], figures)
                    })),
                ),
                (
                    "rm_item_totals",
                    rows(totals.into_iter().map(|t| {
                        let key = vec![t.item.to_owned(), t.date.to_string()];
                        row(key, vec![t.supplier.to_owned()], t.figures.to_vec())
                    })),
                ),
            ]
        }
        Delta::TillDaily(m) => vec![(
            "rm_till_daily",
            rows(m.into_iter().map(|((s, t, d), f)| {
                let figures = f.values().to_vec();
                row(vec![s, t, d.to_string()], vec![], figures)
            })),
        )],
        Delta::Reference(registered) => {
            let (mut suppliers, mut stores, mut items) = (Vec::new(), Vec::new(), Vec::new());
            for r in registered {
                match r {
                    Registered::Supplier { supplier_id, name } => {
                        suppliers.push(row(vec![supplier_id], vec![name], vec![]));
                    }
                    Registered::Store {
                        store_id,
                        name,
                        timezone,
                    } => stores.push(row(vec![store_id], vec![name, timezone], vec![])),
                    Registered::Item {
                        item_id,
                        name,
                        supplier_id,
                        unit_price_cents,
                    } => items.push(row(
                        vec![item_id],
                        vec![name, supplier_id],
                        vec![unit_price_cents],
                    )),
                }
            }
            vec![
                ("rm_suppliers", rows(suppliers)),
                ("rm_stores", rows(stores)),
                ("rm_items", rows(items)),
            ]
        }
        Delta::Journal(_) => Vec::new(),
    }
}
