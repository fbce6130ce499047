//! Read models as folds of the log. A projection turns a batch of events into a delta (additive changes
//! keyed by row); the read store applies the delta and moves the checkpoint in one transaction. Deltas
//! are additive, so a batch of thousands of events becomes one upsert per touched row.

use std::collections::HashMap;

use jiff::civil::Date;
use serde::Serialize;
use tally_domain::Event;

/// The projections tally maintains, by name.
pub const INVENTORY: &str = "inventory";
pub const STORE_DAILY: &str = "store_daily_sales";
pub const SUPPLIER_DAILY: &str = "supplier_daily";
pub const PROJECTIONS: [&str; 3] = [INVENTORY, STORE_DAILY, SUPPLIER_DAILY];

/// A store's figures for one business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DayFigures {
    pub transactions: i64,
    pub units_sold: i64,
    pub gross_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
}

impl DayFigures {
    pub fn net_cents(&self) -> i64 {
        self.gross_cents - self.returned_cents
    }
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    pub fn add(&mut self, o: &DayFigures) {
        self.transactions = self.transactions.saturating_add(o.transactions);
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.gross_cents = self.gross_cents.saturating_add(o.gross_cents);
        self.returned_units = self.returned_units.saturating_add(o.returned_units);
        self.returned_cents = self.returned_cents.saturating_add(o.returned_cents);
    }
}

/// A supplier's figures for one business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SupplierDay {
    pub deliveries: i64,
    pub units_supplied: i64,
    pub supply_cost_cents: i64,
    pub units_sold: i64,
    pub sales_cents: i64,
}

impl SupplierDay {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    pub fn add(&mut self, o: &SupplierDay) {
        self.deliveries = self.deliveries.saturating_add(o.deliveries);
        self.units_supplied = self.units_supplied.saturating_add(o.units_supplied);
        self.supply_cost_cents = self.supply_cost_cents.saturating_add(o.supply_cost_cents);
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.sales_cents = self.sales_cents.saturating_add(o.sales_cents);
    }
}

/// Additive changes to one projection's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// `(store, item) → on-hand change`
    Inventory(HashMap<(String, String), i64>),
    /// `(store, date) → figures to add`
    StoreDaily(HashMap<(String, Date), DayFigures>),
    /// `(supplier, date) → figures to add`
    SupplierDaily(HashMap<(String, Date), SupplierDay>),
}

impl Delta {
    pub fn empty_for(projection: &str) -> Option<Self> {
        match projection {
            INVENTORY => Some(Delta::Inventory(HashMap::new())),
            STORE_DAILY => Some(Delta::StoreDaily(HashMap::new())),
            SUPPLIER_DAILY => Some(Delta::SupplierDaily(HashMap::new())),
            _ => None,
        }
    }

    /// Folds one event into the delta.
    pub fn fold(&mut self, event: &Event) {
        match self {
            Delta::Inventory(rows) => fold_inventory(rows, event),
            Delta::StoreDaily(rows) => fold_store_daily(rows, event),
            Delta::SupplierDaily(rows) => fold_supplier_daily(rows, event),
        }
    }
}

/// One projection's delta between two checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionUpdate {
    pub projection: String,
    pub from: u64,
    pub to: u64,
    pub delta: Delta,
}

fn fold_inventory(rows: &mut HashMap<(String, String), i64>, event: &Event) {
    let mut add = |store: &str, item: &str, d: i64| {
        *rows.entry((store.to_owned(), item.to_owned())).or_insert(0) += d;
    };
    match event {
        Event::GoodsDelivered(e) => {
            for l in &e.lines {
                add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get());
            }
        }
        Event::SaleRecorded(e) => {
            for l in &e.lines {
                add(e.store_id.as_str(), l.item_id.as_str(), -l.quantity.get());
            }
        }
        Event::SaleVoided(e) => {
            for l in &e.lines {
                add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get());
            }
        }
        Event::ReturnRecorded(e) => {
            for l in &e.lines {
                add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get());
            }
        }
        Event::StockAdjusted(e) => add(e.store_id.as_str(), e.item_id.as_str(), e.delta.get()),
        Event::SupplierRegistered(_) | Event::StoreRegistered(_) | Event::ItemRegistered(_) => {}
    }
}

fn fold_store_daily(rows: &mut HashMap<(String, Date), DayFigures>, event: &Event) {
    let (store, date, change) = match event {
        Event::SaleRecorded(e) => (
            &e.store_id,
            e.business_date,
            DayFigures {
                transactions: 1,
                units_sold: e.lines.iter().map(|l| l.quantity.get()).sum(),
                gross_cents: e
                    .lines
                    .iter()
                    .fold(0i64, |a, l| a.saturating_add(l.amount_cents())),
                ..DayFigures::default()
            },
        ),
        // A void takes the sale out of its own date, as if it never happened.
        Event::SaleVoided(e) => (
            &e.store_id,
            e.sale_business_date,
            DayFigures {
                transactions: -1,
                units_sold: -e.lines.iter().map(|l| l.quantity.get()).sum::<i64>(),
                gross_cents: -e
                    .lines
                    .iter()
                    .fold(0i64, |a, l| a.saturating_add(l.amount_cents())),
                ..DayFigures::default()
            },
        ),
        Event::ReturnRecorded(e) => (
            &e.store_id,
            e.business_date,
            DayFigures {
                returned_units: e.lines.iter().map(|l| l.quantity.get()).sum(),
                returned_cents: e
                    .lines
                    .iter()
                    .fold(0i64, |a, l| a.saturating_add(l.amount_cents())),
                ..DayFigures::default()
            },
        ),
        _ => return,
    };
    rows.entry((store.as_str().to_owned(), date))
        .or_default()
        .add(&change);
}

fn fold_supplier_daily(rows: &mut HashMap<(String, Date), SupplierDay>, event: &Event) {
    let mut add = |supplier: &str, date: Date, change: SupplierDay| {
        rows.entry((supplier.to_owned(), date))
            .or_default()
            .add(&change);
    };
    match event {
        Event::GoodsDelivered(e) => add(
            e.supplier_id.as_str(),
            e.business_date,
            SupplierDay {
                deliveries: 1,
                units_supplied: e.lines.iter().map(|l| l.quantity.get()).sum(),
                supply_cost_cents: e.lines.iter().fold(0i64, |a, l| {
                    a.saturating_add(l.quantity.get().saturating_mul(l.unit_cost_cents.get()))
                }),
                ..SupplierDay::default()
            },
        ),
        Event::SaleRecorded(e) => {
            for l in &e.lines {
                add(
                    l.supplier_id.as_str(),
                    e.business_date,
                    SupplierDay {
                        units_sold: l.quantity.get(),
                        sales_cents: l.amount_cents(),
                        ..SupplierDay::default()
                    },
                );
            }
        }
        Event::SaleVoided(e) => {
            for l in &e.lines {
                add(
                    l.supplier_id.as_str(),
                    e.sale_business_date,
                    SupplierDay {
                        units_sold: -l.quantity.get(),
                        sales_cents: -l.amount_cents(),
                        ..SupplierDay::default()
                    },
                );
            }
        }
        // Supplier figures are before returns, like a store's units_sold and gross.
        _ => {}
    }
}

type Fast<K, V> = foldhash::HashMap<K, V>;

/// Folds many events into one projection's delta. Rows are kept in nested maps looked up by `&str`, so
/// a row touched before costs no allocation: this is the projector's hot loop.
pub enum Accumulator {
    Inventory(Fast<String, Fast<String, i64>>),
    StoreDaily(Fast<String, Fast<Date, DayFigures>>),
    SupplierDaily(Fast<String, Fast<Date, SupplierDay>>),
}

fn row<'m, K: std::hash::Hash + Eq, V: Default>(
    m: &'m mut Fast<String, Fast<K, V>>,
    outer: &str,
    inner: K,
) -> &'m mut V {
    if !m.contains_key(outer) {
        m.insert(outer.to_owned(), Fast::default());
    }
    m.get_mut(outer)
        .unwrap_or_else(|| unreachable!("inserted above"))
        .entry(inner)
        .or_default()
}

fn item_row<'m>(
    m: &'m mut Fast<String, Fast<String, i64>>,
    store: &str,
    item: &str,
) -> &'m mut i64 {
    if !m.contains_key(store) {
        m.insert(store.to_owned(), Fast::default());
    }
    let items = m
        .get_mut(store)
        .unwrap_or_else(|| unreachable!("inserted above"));
    if !items.contains_key(item) {
        items.insert(item.to_owned(), 0);
    }
    items
        .get_mut(item)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

impl Accumulator {
    pub fn for_projection(projection: &str) -> Option<Self> {
        match projection {
            INVENTORY => Some(Self::Inventory(Fast::default())),
            STORE_DAILY => Some(Self::StoreDaily(Fast::default())),
            SUPPLIER_DAILY => Some(Self::SupplierDaily(Fast::default())),
            _ => None,
        }
    }

    pub fn fold(&mut self, event: &Event) {
        match self {
            Accumulator::Inventory(rows) => {
                let mut add = |store: &str, item: &str, d: i64| *item_row(rows, store, item) += d;
                match event {
                    Event::GoodsDelivered(e) => e.lines.iter().for_each(|l| {
                        add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get())
                    }),
                    Event::SaleRecorded(e) => e.lines.iter().for_each(|l| {
                        add(e.store_id.as_str(), l.item_id.as_str(), -l.quantity.get())
                    }),
                    Event::SaleVoided(e) => e.lines.iter().for_each(|l| {
                        add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get())
                    }),
                    Event::ReturnRecorded(e) => e.lines.iter().for_each(|l| {
                        add(e.store_id.as_str(), l.item_id.as_str(), l.quantity.get())
                    }),
                    Event::StockAdjusted(e) => {
                        add(e.store_id.as_str(), e.item_id.as_str(), e.delta.get())
                    }
                    Event::SupplierRegistered(_)
                    | Event::StoreRegistered(_)
                    | Event::ItemRegistered(_) => {}
                }
            }
            Accumulator::StoreDaily(rows) => {
                let mut one = HashMap::new();
                fold_store_daily(&mut one, event);
                for ((store, date), f) in one {
                    row(rows, &store, date).add(&f);
                }
            }
            Accumulator::SupplierDaily(rows) => match event {
                Event::SaleRecorded(e) => {
                    for l in &e.lines {
                        let r = row(rows, l.supplier_id.as_str(), e.business_date);
                        r.units_sold = r.units_sold.saturating_add(l.quantity.get());
                        r.sales_cents = r.sales_cents.saturating_add(l.amount_cents());
                    }
                }
                Event::GoodsDelivered(_) | Event::SaleVoided(_) => {
                    let mut one = HashMap::new();
                    fold_supplier_daily(&mut one, event);
                    for ((supplier, date), f) in one {
                        row(rows, &supplier, date).add(&f);
                    }
                }
                _ => {}
            },
        }
    }

    pub fn finish(self) -> Delta {
        fn flatten<K: Clone, V>(
            m: Fast<String, Fast<K, V>>,
        ) -> impl Iterator<Item = ((String, K), V)> {
            m.into_iter().flat_map(|(outer, inner)| {
                inner.into_iter().map(move |(k, v)| ((outer.clone(), k), v))
            })
        }
        match self {
            Accumulator::Inventory(m) => Delta::Inventory(flatten(m).collect()),
            Accumulator::StoreDaily(m) => Delta::StoreDaily(flatten(m).collect()),
            Accumulator::SupplierDaily(m) => Delta::SupplierDaily(flatten(m).collect()),
        }
    }
}
