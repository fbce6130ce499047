//! Read models as folds of the log. A projection turns a batch of events into a delta (additive changes
//! keyed by row); the read store applies the delta and moves the checkpoint in one transaction. Deltas
//! are additive, so a batch of thousands of events becomes one upsert per touched row.

use std::collections::HashMap;

use jiff::civil::Date;
use serde::Serialize;
use tally_domain::Event;
use tally_domain::event::{ReturnRecorded, SaleRecorded, SaleVoided, SoldLine};

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

/// One projection's delta between two checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionUpdate {
    pub projection: String,
    pub from: u64,
    pub to: u64,
    pub delta: Delta,
}

/// The change a store's day takes from an event: which store, which business date, which figures.
fn store_day_change(event: &Event) -> Option<(&str, Date, DayFigures)> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_domain::event::{
        DeliveredLine, GoodsDelivered, ReturnRecorded, SaleRecorded, SaleVoided, SoldLine,
        StockAdjusted,
    };
    use tally_domain::values::{
        AdjustmentId, AdjustmentReason, Cents, DeliveryId, ItemId, Quantity, ReturnId, SaleId,
        StockDelta, StoreId, SupplierId, Text,
    };

    fn date(d: &str) -> Date {
        d.parse().unwrap()
    }

    fn line(item: &str, qty: i64, price: i64) -> SoldLine {
        SoldLine {
            item_id: ItemId::parse(item).unwrap(),
            supplier_id: SupplierId::parse("acme").unwrap(),
            quantity: Quantity::new(qty).unwrap(),
            unit_price_cents: Cents::new(price).unwrap(),
        }
    }

    fn events() -> Vec<Event> {
        let store = StoreId::parse("s1").unwrap();
        vec![
            Event::GoodsDelivered(GoodsDelivered {
                delivery_id: DeliveryId::parse("d1").unwrap(),
                supplier_id: SupplierId::parse("acme").unwrap(),
                store_id: store.clone(),
                business_date: date("2026-11-01"),
                lines: vec![DeliveredLine {
                    item_id: ItemId::parse("a").unwrap(),
                    quantity: Quantity::new(10).unwrap(),
                    unit_cost_cents: Cents::new(60).unwrap(),
                }],
            }),
            Event::SaleRecorded(SaleRecorded {
                sale_id: SaleId::parse("x1").unwrap(),
                store_id: store.clone(),
                business_date: date("2026-11-02"),
                lines: vec![line("a", 3, 100)],
            }),
            Event::SaleRecorded(SaleRecorded {
                sale_id: SaleId::parse("x2").unwrap(),
                store_id: store.clone(),
                business_date: date("2026-11-02"),
                lines: vec![line("a", 2, 100)],
            }),
            Event::SaleVoided(SaleVoided {
                sale_id: SaleId::parse("x2").unwrap(),
                store_id: store.clone(),
                reason: Text::parse("twice").unwrap(),
                sale_business_date: date("2026-11-02"),
                lines: vec![line("a", 2, 100)],
            }),
            Event::ReturnRecorded(ReturnRecorded {
                return_id: ReturnId::parse("r1").unwrap(),
                sale_id: SaleId::parse("x1").unwrap(),
                store_id: store.clone(),
                business_date: date("2026-11-03"),
                lines: vec![line("a", 1, 100)],
            }),
            Event::StockAdjusted(StockAdjusted {
                adjustment_id: AdjustmentId::parse("j1").unwrap(),
                store_id: store,
                item_id: ItemId::parse("a").unwrap(),
                delta: StockDelta::new(-1).unwrap(),
                reason: AdjustmentReason::Damage,
                business_date: date("2026-11-03"),
            }),
        ]
    }

    fn fold(projection: &str) -> Delta {
        let mut acc = Accumulator::for_projection(projection).unwrap();
        events().iter().for_each(|e| acc.fold(e));
        acc.finish()
    }

    #[test]
    fn inventory_nets_every_movement() {
        let Delta::Inventory(rows) = fold(INVENTORY) else {
            panic!("wrong delta")
        };
        // 10 delivered - 3 - 2 sold + 2 voided + 1 returned - 1 damaged
        assert_eq!(rows.get(&("s1".to_owned(), "a".to_owned())), Some(&7));
    }

    #[test]
    fn store_days_follow_the_report_arithmetic() {
        let Delta::StoreDaily(rows) = fold(STORE_DAILY) else {
            panic!("wrong delta")
        };
        let day = |d: &str| {
            rows.get(&("s1".to_owned(), date(d)))
                .copied()
                .unwrap_or_default()
        };
        // The voided sale drops out of its date; the return counts on its own date.
        assert_eq!(
            day("2026-11-02"),
            DayFigures {
                transactions: 1,
                units_sold: 3,
                gross_cents: 300,
                ..DayFigures::default()
            }
        );
        assert_eq!(
            day("2026-11-03"),
            DayFigures {
                returned_units: 1,
                returned_cents: 100,
                ..DayFigures::default()
            }
        );
        assert_eq!(day("2026-11-03").net_cents(), -100);
        assert!(day("2026-11-01").is_empty(), "a delivery is not a sale");
    }

    #[test]
    fn supplier_days_count_deliveries_and_sales_before_returns() {
        let Delta::SupplierDaily(rows) = fold(SUPPLIER_DAILY) else {
            panic!("wrong delta")
        };
        let day = |d: &str| {
            rows.get(&("acme".to_owned(), date(d)))
                .copied()
                .unwrap_or_default()
        };
        assert_eq!(
            day("2026-11-01"),
            SupplierDay {
                deliveries: 1,
                units_supplied: 10,
                supply_cost_cents: 600,
                ..SupplierDay::default()
            }
        );
        assert_eq!(
            day("2026-11-02"),
            SupplierDay {
                units_sold: 3,
                sales_cents: 300,
                ..SupplierDay::default()
            }
        );
        assert!(
            day("2026-11-03").is_empty(),
            "returns are not in supplier figures"
        );
    }
}
