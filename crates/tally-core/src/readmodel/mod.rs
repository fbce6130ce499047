//! Read models as folds of the log. A projection turns a batch of events into a delta (additive changes
//! keyed by row); the read store applies the delta and moves the checkpoint in one transaction. Deltas
//! are additive, so a batch of thousands of events becomes one upsert per touched row.

use std::collections::HashMap;

use jiff::civil::Date;
use tally_domain::Event;
use tally_domain::event::{ReturnRecorded, SaleRecorded, SaleVoided, SoldLine};

/// The projections tally maintains, by name.
pub const INVENTORY: &str = "inventory";
pub const STORE_DAILY: &str = "store_daily_sales";
pub const SUPPLIER_DAILY: &str = "supplier_daily";
pub const ITEM_DAILY: &str = "item_daily_sales";
pub const PROJECTIONS: [&str; 4] = [INVENTORY, STORE_DAILY, SUPPLIER_DAILY, ITEM_DAILY];

mod figures;
pub use figures::{DayFigures, ItemDay, SupplierDay};

/// Additive changes to one projection's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// `(store, item) → on-hand change`
    Inventory(HashMap<(String, String), i64>),
    /// `(store, date) → figures to add`
    StoreDaily(HashMap<(String, Date), DayFigures>),
    /// `(supplier, date) → figures to add`
    SupplierDaily(HashMap<(String, Date), SupplierDay>),
    /// `(store, item, date) → figures to add`, with each item's supplier.
    ItemDaily(ItemDailyDelta),
}

/// The item daily sales projection's delta: rows keyed by `(store, item, date)`, and the supplier of
/// each item they name (sold lines carry it), kept in the row for the supplier-scoped views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemDailyDelta {
    pub rows: HashMap<(String, String, Date), ItemDay>,
    pub suppliers: HashMap<String, String>,
}

/// One projection's delta between two checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionUpdate {
    pub projection: String,
    pub from: u64,
    pub to: u64,
    pub delta: Delta,
}

/// The change a store's day takes from an event: which store, which business date, which figures.
pub(crate) fn store_day_change(event: &Event) -> Option<(&str, Date, DayFigures)> {
    let units = |lines: &[tally_domain::event::SoldLine]| {
        lines.iter().map(|l| l.quantity.get()).sum::<i64>()
    };
    let cents = |lines: &[tally_domain::event::SoldLine]| {
        lines
            .iter()
            .fold(0i64, |a, l| a.saturating_add(l.amount_cents()))
    };
    Some(match event {
        Event::SaleRecorded(e) => (
            e.store_id.as_str(),
            e.business_date,
            DayFigures {
                transactions: 1,
                units_sold: units(&e.lines),
                gross_cents: cents(&e.lines),
                ..DayFigures::default()
            },
        ),
        // A void takes the sale out of its own date, as if it never happened.
        Event::SaleVoided(e) => (
            e.store_id.as_str(),
            e.sale_business_date,
            DayFigures {
                transactions: -1,
                units_sold: -units(&e.lines),
                gross_cents: -cents(&e.lines),
                ..DayFigures::default()
            },
        ),
        Event::ReturnRecorded(e) => (
            e.store_id.as_str(),
            e.business_date,
            DayFigures {
                returned_units: units(&e.lines),
                returned_cents: cents(&e.lines),
                ..DayFigures::default()
            },
        ),
        _ => return None,
    })
}

/// hashbrown's map (foldhash inside) for its `entry_ref`: one lookup by `&str`, the key copied only
/// when the row is new.
type Fast<K, V> = hashbrown::HashMap<K, V>;

/// Folds many events into one projection's delta. Rows are kept in nested maps looked up by `&str`, so
/// a row touched before costs no allocation: this is the projector's hot loop.
pub enum Accumulator {
    Inventory(Fast<String, Fast<String, i64>>),
    StoreDaily(Fast<String, Fast<Date, DayFigures>>),
    SupplierDaily(Fast<String, Fast<Date, SupplierDay>>),
    ItemDaily(ItemRows),
}

/// Item daily rows by store, then `(item, date)`; with each item's supplier.
#[derive(Default)]
pub struct ItemRows {
    rows: Fast<String, Fast<(String, Date), ItemDay>>,
    suppliers: Fast<String, String>,
}

impl ItemRows {
    /// Adds `sign` × each line to its item's row on `date`: sold (`returned` false) or returned.
    fn add(&mut self, store: &str, date: Date, lines: &[SoldLine], sign: i64, returned: bool) {
        let days = self.rows.entry_ref(store).or_default();
        for l in lines {
            let units = sign * l.quantity.get();
            let cents = sign.saturating_mul(l.amount_cents());
            let row = days
                .entry((l.item_id.as_str().to_owned(), date))
                .or_default();
            if returned {
                row.returned_units = row.returned_units.saturating_add(units);
                row.returned_cents = row.returned_cents.saturating_add(cents);
            } else {
                row.units_sold = row.units_sold.saturating_add(units);
                row.gross_cents = row.gross_cents.saturating_add(cents);
            }
            if !self.suppliers.contains_key(l.item_id.as_str()) {
                self.suppliers.insert(
                    l.item_id.as_str().to_owned(),
                    l.supplier_id.as_str().to_owned(),
                );
            }
        }
    }
}

fn row<'m, K: std::hash::Hash + Eq, V: Default>(
    m: &'m mut Fast<String, Fast<K, V>>,
    outer: &str,
    inner: K,
) -> &'m mut V {
    m.entry_ref(outer).or_default().entry(inner).or_default()
}

/// Adds each `(item, change)` to the store's stock rows: one store per event, so its items' map is
/// looked up once, then each line's row.
fn add_stock<'e>(
    rows: &mut Fast<String, Fast<String, i64>>,
    store: &str,
    lines: impl Iterator<Item = (&'e str, i64)>,
) {
    let items = rows.entry_ref(store).or_default();
    lines.for_each(|(item, change)| *items.entry_ref(item).or_insert(0) += change);
}

impl Accumulator {
    pub fn for_projection(projection: &str) -> Option<Self> {
        match projection {
            INVENTORY => Some(Self::Inventory(Fast::default())),
            STORE_DAILY => Some(Self::StoreDaily(Fast::default())),
            SUPPLIER_DAILY => Some(Self::SupplierDaily(Fast::default())),
            ITEM_DAILY => Some(Self::ItemDaily(ItemRows::default())),
            _ => None,
        }
    }

    pub fn fold<'e>(&mut self, event: &'e Event) {
        match self {
            Accumulator::Inventory(rows) => {
                // Sold lines leave the stock; voided and returned ones come back.
                let sold = |lines: &'e [SoldLine], sign: i64| {
                    lines
                        .iter()
                        .map(move |l| (l.item_id.as_str(), sign * l.quantity.get()))
                };
                match event {
                    Event::GoodsDelivered(e) => add_stock(
                        rows,
                        e.store_id.as_str(),
                        e.lines
                            .iter()
                            .map(|l| (l.item_id.as_str(), l.quantity.get())),
                    ),
                    Event::SaleRecorded(SaleRecorded {
                        store_id, lines, ..
                    }) => add_stock(rows, store_id.as_str(), sold(lines, -1)),
                    Event::SaleVoided(SaleVoided {
                        store_id, lines, ..
                    })
                    | Event::ReturnRecorded(ReturnRecorded {
                        store_id, lines, ..
                    }) => add_stock(rows, store_id.as_str(), sold(lines, 1)),
                    Event::StockAdjusted(e) => add_stock(
                        rows,
                        e.store_id.as_str(),
                        std::iter::once((e.item_id.as_str(), e.delta.get())),
                    ),
                    // Stock moves by the difference the correction makes (a change of cost only
                    // moves none).
                    Event::DeliveryCorrected(e) => add_stock(
                        rows,
                        e.store_id.as_str(),
                        e.changes
                            .iter()
                            .filter(|c| c.quantity_change != 0)
                            .map(|c| (c.item_id.as_str(), c.quantity_change)),
                    ),
                    Event::SupplierRegistered(_)
                    | Event::StoreRegistered(_)
                    | Event::ItemRegistered(_) => {}
                }
            }
            Accumulator::StoreDaily(rows) => {
                if let Some((store, date, change)) = store_day_change(event) {
                    row(rows, store, date).add(&change);
                }
            }
            Accumulator::SupplierDaily(rows) => match event {
                Event::GoodsDelivered(e) => {
                    let r = row(rows, e.supplier_id.as_str(), e.business_date);
                    r.deliveries += 1;
                    for l in &e.lines {
                        r.units_supplied = r.units_supplied.saturating_add(l.quantity.get());
                        r.supply_cost_cents = r.supply_cost_cents.saturating_add(
                            l.quantity.get().saturating_mul(l.unit_cost_cents.get()),
                        );
                    }
                }
                Event::SaleRecorded(e) => {
                    for l in &e.lines {
                        let r = row(rows, l.supplier_id.as_str(), e.business_date);
                        r.units_sold = r.units_sold.saturating_add(l.quantity.get());
                        r.sales_cents = r.sales_cents.saturating_add(l.amount_cents());
                    }
                }
                Event::SaleVoided(e) => {
                    for l in &e.lines {
                        let r = row(rows, l.supplier_id.as_str(), e.sale_business_date);
                        r.units_sold = r.units_sold.saturating_sub(l.quantity.get());
                        r.sales_cents = r.sales_cents.saturating_sub(l.amount_cents());
                    }
                }
                // On the corrected delivery's own date; it is still one delivery.
                Event::DeliveryCorrected(e) => {
                    let r = row(rows, e.supplier_id.as_str(), e.business_date);
                    for c in &e.changes {
                        r.units_supplied = r.units_supplied.saturating_add(c.quantity_change);
                        r.supply_cost_cents =
                            r.supply_cost_cents.saturating_add(c.cost_change_cents);
                    }
                }
                _ => {}
            },
            Accumulator::ItemDaily(rows) => match event {
                Event::SaleRecorded(e) => {
                    rows.add(e.store_id.as_str(), e.business_date, &e.lines, 1, false)
                }
                // A void takes the sale out of its own date, as in the store's report.
                Event::SaleVoided(e) => rows.add(
                    e.store_id.as_str(),
                    e.sale_business_date,
                    &e.lines,
                    -1,
                    false,
                ),
                Event::ReturnRecorded(e) => {
                    rows.add(e.store_id.as_str(), e.business_date, &e.lines, 1, true)
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
            Accumulator::ItemDaily(m) => Delta::ItemDaily(ItemDailyDelta {
                rows: flatten(m.rows)
                    .map(|((store, (item, date)), f)| ((store, item, date), f))
                    .collect(),
                suppliers: m.suppliers.into_iter().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
