//! Read models as folds of the log. A projection turns a batch of events into a delta (additive changes
//! keyed by row); the read store applies the delta and moves the checkpoint in one transaction. Deltas
//! are additive, so a batch of thousands of events becomes one upsert per touched row.

use std::collections::HashMap;

use jiff::civil::Date;
use tally_domain::Event;

/// The projections tally maintains, by name.
pub const INVENTORY: &str = "inventory";
pub const STORE_DAILY: &str = "store_daily_sales";
pub const SUPPLIER_DAILY: &str = "supplier_daily";
pub const ITEM_DAILY: &str = "item_daily_sales";
/// Suppliers, stores and items as registered (the data services' reference views).
pub const REFERENCE: &str = "reference";
/// Sales per store, till and business date (the data services' `till_daily_sales`).
pub const TILL_DAILY: &str = "till_daily_sales";
pub const PROJECTIONS: [&str; 6] = [
    INVENTORY,
    STORE_DAILY,
    SUPPLIER_DAILY,
    REFERENCE,
    TILL_DAILY,
    ITEM_DAILY,
];
/// The projections applied with every batch; item daily sales are applied less often when live
/// (`projector::SLOW_INTERVAL`).
pub const LIVE: [&str; 5] = [
    INVENTORY,
    STORE_DAILY,
    SUPPLIER_DAILY,
    REFERENCE,
    TILL_DAILY,
];

mod figures;
pub mod journal;
mod moves;
pub mod shadow;
pub use figures::{DayFigures, ItemDay, SupplierDay, TillDay};
// (`Supplied` is defined below, beside the delta it belongs to.)
pub use moves::{Kind, Move, moves};

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
    /// Sealed journal chunks to store (not additive: each is written once).
    Journal(Vec<journal::StoredChunk>),
    /// Registered suppliers, stores and items (not additive: each is registered once).
    Reference(Vec<Registered>),
    /// `(store, till, date) → figures to add`; the till is `""` for sales rung up without one.
    TillDaily(HashMap<(String, String, Date), TillDay>),
}

/// A registration, as the reference views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Supplier {
        supplier_id: String,
        name: String,
    },
    Store {
        store_id: String,
        name: String,
        timezone: String,
    },
    Item {
        item_id: String,
        name: String,
        supplier_id: String,
        unit_price_cents: i64,
    },
}

impl Registered {
    /// Whether the event is a registration.
    pub fn is(event: &Event) -> bool {
        matches!(
            event,
            Event::SupplierRegistered(_) | Event::StoreRegistered(_) | Event::ItemRegistered(_)
        )
    }

    /// The registration an event makes, if it is one.
    pub fn of(event: &Event) -> Option<Self> {
        Some(match event {
            Event::SupplierRegistered(e) => Registered::Supplier {
                supplier_id: e.supplier_id.to_string(),
                name: e.name.as_str().to_owned(),
            },
            Event::StoreRegistered(e) => Registered::Store {
                store_id: e.store_id.to_string(),
                name: e.name.as_str().to_owned(),
                timezone: e.timezone.as_str().to_owned(),
            },
            Event::ItemRegistered(e) => Registered::Item {
                item_id: e.item_id.to_string(),
                name: e.name.as_str().to_owned(),
                supplier_id: e.supplier_id.to_string(),
                unit_price_cents: e.unit_price_cents.get(),
            },
            _ => return None,
        })
    }
}

/// The item daily sales projection's delta: rows keyed by `(store, item, date)`, and the supplier of
/// each item they name (sold lines carry it), kept in the row for the supplier-scoped views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemDailyDelta {
    pub rows: HashMap<(String, String, Date), ItemDay>,
    pub suppliers: HashMap<String, String>,
    /// Units and cost delivered (and corrected) per `(store, item, date)`: kept in the same rows
    /// for the `supplier_item_daily` view; the item reports show the sales figures only.
    pub supplied: HashMap<(String, String, Date), Supplied>,
}

/// One row of item daily sales as a delta changes it: its key, its item's supplier, and the sales
/// and deliveries to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRowChange<'d> {
    pub store: &'d str,
    pub item: &'d str,
    pub date: Date,
    pub supplier: &'d str,
    pub sales: ItemDay,
    pub supplied: Supplied,
}

impl ItemRowChange<'_> {
    /// The row's figures in the table's column order: units sold, gross, returned units,
    /// returned cents, units supplied, supply cost, discounts.
    pub fn figures(&self) -> [i64; 7] {
        [
            self.sales.units_sold,
            self.sales.gross_cents,
            self.sales.returned_units,
            self.sales.returned_cents,
            self.supplied.units,
            self.supplied.cost_cents,
            self.sales.discount_cents,
        ]
    }
}

/// One row of the item totals (item daily sales of every store together, per item and business
/// date) as a delta changes it: the same figures as [`ItemRowChange`], summed over the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemTotalChange<'d> {
    pub item: &'d str,
    pub date: Date,
    pub supplier: &'d str,
    pub figures: [i64; 7],
}

impl ItemDailyDelta {
    /// The delta's rows summed over the stores, per item and date, in the totals' key order (item,
    /// date): the cross-store questions (an item's days everywhere, a supplier's items, every
    /// item's returns) read these, about a store count fewer rows than item daily sales.
    /// `changes` are the delta's [`ItemDailyDelta::changes`], made once for both tables.
    pub fn totals<'d>(changes: &[ItemRowChange<'d>]) -> Vec<ItemTotalChange<'d>> {
        let mut all: Vec<ItemTotalChange<'d>> = changes
            .iter()
            .map(|c| ItemTotalChange {
                item: c.item,
                date: c.date,
                supplier: c.supplier,
                figures: c.figures(),
            })
            .collect();
        all.sort_unstable_by(|a, b| (a.item, a.date).cmp(&(b.item, b.date)));
        all.dedup_by(|later, kept| {
            let same = (later.item, later.date) == (kept.item, kept.date);
            if same {
                for (k, l) in kept.figures.iter_mut().zip(later.figures) {
                    *k = k.saturating_add(l);
                }
            }
            same
        });
        all
    }

    /// Every row the delta touches, sales and deliveries together (one upsert per row, not one
    /// per kind), in the table's key order: store, item, date.
    pub fn changes(&self) -> Vec<ItemRowChange<'_>> {
        fn change<'d>(
            delta: &'d ItemDailyDelta,
            (store, item, date): &'d (String, String, Date),
        ) -> ItemRowChange<'d> {
            ItemRowChange {
                store,
                item,
                date: *date,
                supplier: delta.suppliers.get(item).map_or("", String::as_str),
                sales: ItemDay::default(),
                supplied: Supplied::default(),
            }
        }
        let mut all: Vec<ItemRowChange<'_>> =
            Vec::with_capacity(self.rows.len() + self.supplied.len());
        all.extend(self.rows.iter().map(|(k, f)| ItemRowChange {
            sales: *f,
            ..change(self, k)
        }));
        all.extend(self.supplied.iter().map(|(k, f)| ItemRowChange {
            supplied: *f,
            ..change(self, k)
        }));
        all.sort_unstable_by(|a, b| (a.store, a.item, a.date).cmp(&(b.store, b.item, b.date)));
        // A key in both maps is one row: its sales and its deliveries, side by side.
        all.dedup_by(|later, kept| {
            let same = (later.store, later.item, later.date) == (kept.store, kept.item, kept.date);
            if same {
                kept.sales.add(&later.sales);
                kept.supplied.units += later.supplied.units;
                kept.supplied.cost_cents += later.supplied.cost_cents;
            }
            same
        });
        all
    }
}

/// What was delivered of an item to a store on a business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supplied {
    pub units: i64,
    pub cost_cents: i64,
}

/// One projection's delta between two checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionUpdate {
    pub projection: String,
    pub from: u64,
    pub to: u64,
    pub delta: Delta,
}

/// hashbrown's map (foldhash inside) for its `entry_ref`: one lookup by `&str`, the key copied only
/// when the row is new.
type Fast<K, V> = hashbrown::HashMap<K, V>;

/// Rows by an outer key, then an inner one.
type Nested<K, V> = Fast<String, Fast<K, V>>;

/// Folds many events into one projection's delta. Rows are kept in nested maps looked up by `&str`, so
/// a row touched before costs no allocation: this is the projector's hot loop.
pub enum Accumulator {
    Inventory(Nested<String, i64>),
    StoreDaily(Nested<Date, DayFigures>),
    SupplierDaily(Nested<Date, SupplierDay>),
    ItemDaily(ItemRows),
    Reference(Vec<Registered>),
    /// By store, then till, then date (a till sells on few dates within one update: a short
    /// list, looked up without allocating, as item daily's days are).
    TillDaily(Nested<String, Vec<(Date, TillDay)>>),
}

/// Item daily rows by store, then item (with its supplier), then date. An item sells on few dates
/// within one update, so its dates are a short list scanned in place, not a map of their own.
#[derive(Default)]
pub struct ItemRows {
    rows: Nested<String, ItemEntry>,
}

#[derive(Default)]
struct ItemEntry {
    supplier: String,
    days: Vec<(Date, ItemDay)>,
    supplied: Vec<(Date, Supplied)>,
}

/// The entry of `date` in a short list, added when missing.
fn on<V: Default>(list: &mut Vec<(Date, V)>, date: Date) -> &mut V {
    let at = match list.iter().position(|(d, _)| *d == date) {
        Some(at) => at,
        None => {
            list.push((date, V::default()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

impl ItemRows {
    fn entry(&mut self, m: &Move<'_>) -> &mut ItemEntry {
        let items = self.rows.entry_ref(m.store).or_default();
        items.entry_ref(m.item).or_insert_with(|| ItemEntry {
            supplier: m.supplier.to_owned(),
            ..ItemEntry::default()
        })
    }

    fn row(&mut self, m: &Move<'_>) -> &mut ItemDay {
        on(&mut self.entry(m).days, m.date)
    }

    fn supplied(&mut self, m: &Move<'_>) -> &mut Supplied {
        on(&mut self.entry(m).supplied, m.date)
    }
}

fn row<'m, K: std::hash::Hash + Eq, V: Default>(
    m: &'m mut Nested<K, V>,
    outer: &str,
    inner: K,
) -> &'m mut V {
    m.entry_ref(outer).or_default().entry(inner).or_default()
}

impl Accumulator {
    pub fn for_projection(projection: &str) -> Option<Self> {
        match projection {
            INVENTORY => Some(Self::Inventory(Fast::default())),
            STORE_DAILY => Some(Self::StoreDaily(Fast::default())),
            SUPPLIER_DAILY => Some(Self::SupplierDaily(Fast::default())),
            ITEM_DAILY => Some(Self::ItemDaily(ItemRows::default())),
            REFERENCE => Some(Self::Reference(Vec::new())),
            TILL_DAILY => Some(Self::TillDaily(Fast::default())),
            _ => None,
        }
    }

    /// Folds one event into each of `items` that `keep` picks, working its moves out once for
    /// all of them: the projector's live lane and `verify` fold many projections at once this way.
    pub fn fold_into<T>(
        event: &Event,
        items: &mut [T],
        keep: impl Fn(&T) -> bool,
        acc: fn(&mut T) -> &mut Accumulator,
    ) {
        if Registered::is(event) || TillDay::concerns(event) {
            for item in items.iter_mut().filter(|i| keep(i)) {
                acc(item).fold_event(event);
            }
        }
        moves(event, |m| {
            for item in items.iter_mut().filter(|i| keep(i)) {
                acc(item).fold_move(&m);
            }
        });
    }

    /// Folds every move of the event (and a registration or a till's sale into their rows).
    pub fn fold(&mut self, event: &Event) {
        self.fold_event(event);
        moves(event, |m| self.fold_move(&m));
    }

    /// Folds what a projection takes from the event as a whole rather than from its moves: a
    /// registration into the reference rows, a sale or void into its till's day (other events and
    /// projections: nothing).
    pub fn fold_event(&mut self, event: &Event) {
        match self {
            Accumulator::Reference(rows) => rows.extend(Registered::of(event)),
            Accumulator::TillDaily(rows) => {
                let (store, till, date, lines, sign) = match event {
                    Event::SaleRecorded(e) => {
                        (&e.store_id, &e.till_id, e.business_date, &e.lines, 1)
                    }
                    Event::SaleVoided(e) => {
                        (&e.store_id, &e.till_id, e.sale_business_date, &e.lines, -1)
                    }
                    _ => return,
                };
                let till = till.as_ref().map_or("", |t| t.as_str());
                let days = rows
                    .entry_ref(store.as_str())
                    .or_default()
                    .entry_ref(till)
                    .or_default();
                let r = on(days, date);
                r.transactions = r.transactions.saturating_add(sign);
                for l in lines {
                    r.gross_cents = r
                        .gross_cents
                        .saturating_add(sign.saturating_mul(l.amount_cents()));
                    r.discount_cents = r
                        .discount_cents
                        .saturating_add(sign.saturating_mul(l.discount_cents.get()));
                }
            }
            _ => {}
        }
    }

    /// Folds one move into this projection's rows (a move it does not concern changes nothing).
    pub fn fold_move(&mut self, m: &Move<'_>) {
        match self {
            Accumulator::Inventory(rows) => {
                if let Some(change) = m.stock_change() {
                    let items = rows.entry_ref(m.store).or_default();
                    *items.entry_ref(m.item).or_insert(0) += change;
                }
            }
            Accumulator::StoreDaily(rows) => {
                let r = match m.kind {
                    Kind::SaleCount | Kind::Sold | Kind::Returned => row(rows, m.store, m.date),
                    _ => return,
                };
                match m.kind {
                    Kind::SaleCount => r.transactions = r.transactions.saturating_add(m.qty),
                    Kind::Sold => {
                        r.units_sold = r.units_sold.saturating_add(m.qty);
                        r.gross_cents = r.gross_cents.saturating_add(m.cents);
                        r.discount_cents = r.discount_cents.saturating_add(m.discount);
                    }
                    _ => {
                        r.returned_units = r.returned_units.saturating_add(m.qty);
                        r.returned_cents = r.returned_cents.saturating_add(m.cents);
                    }
                }
            }
            Accumulator::SupplierDaily(rows) => {
                if !m.kind.is_supplier_day() {
                    return;
                }
                let r = row(rows, m.supplier, m.date);
                match m.kind {
                    Kind::DeliveryCount => r.deliveries = r.deliveries.saturating_add(m.qty),
                    Kind::Delivered | Kind::Corrected => {
                        r.units_supplied = r.units_supplied.saturating_add(m.qty);
                        r.supply_cost_cents = r.supply_cost_cents.saturating_add(m.cents);
                    }
                    _ => {
                        r.units_sold = r.units_sold.saturating_add(m.qty);
                        r.sales_cents = r
                            .sales_cents
                            .saturating_add(m.cents.saturating_sub(m.discount));
                    }
                }
            }
            Accumulator::ItemDaily(rows) => match m.kind {
                Kind::Sold => {
                    let r = rows.row(m);
                    r.units_sold = r.units_sold.saturating_add(m.qty);
                    r.gross_cents = r.gross_cents.saturating_add(m.cents);
                    r.discount_cents = r.discount_cents.saturating_add(m.discount);
                }
                Kind::Returned => {
                    let r = rows.row(m);
                    r.returned_units = r.returned_units.saturating_add(m.qty);
                    r.returned_cents = r.returned_cents.saturating_add(m.cents);
                }
                Kind::Delivered | Kind::Corrected => {
                    let r = rows.supplied(m);
                    r.units = r.units.saturating_add(m.qty);
                    r.cost_cents = r.cost_cents.saturating_add(m.cents);
                }
                _ => {}
            },
            // Folded by event (`fold_event`): registrations have no moves, and moves carry no till.
            Accumulator::Reference(_) | Accumulator::TillDaily(_) => {}
        }
    }

    pub fn finish(self) -> Delta {
        fn flatten<K: Clone, V>(m: Nested<K, V>) -> impl Iterator<Item = ((String, K), V)> {
            m.into_iter().flat_map(|(outer, inner)| {
                inner.into_iter().map(move |(k, v)| ((outer.clone(), k), v))
            })
        }
        match self {
            Accumulator::Inventory(m) => Delta::Inventory(flatten(m).collect()),
            Accumulator::StoreDaily(m) => Delta::StoreDaily(flatten(m).collect()),
            Accumulator::SupplierDaily(m) => Delta::SupplierDaily(flatten(m).collect()),
            Accumulator::ItemDaily(m) => {
                let mut delta = ItemDailyDelta::default();
                for (store, items) in m.rows {
                    for (item, entry) in items {
                        for (date, f) in entry.days {
                            delta.rows.insert((store.clone(), item.clone(), date), f);
                        }
                        for (date, f) in entry.supplied {
                            delta
                                .supplied
                                .insert((store.clone(), item.clone(), date), f);
                        }
                        delta.suppliers.insert(item, entry.supplier);
                    }
                }
                Delta::ItemDaily(delta)
            }
            Accumulator::Reference(rows) => Delta::Reference(rows),
            Accumulator::TillDaily(m) => {
                let mut rows = HashMap::new();
                for (store, tills) in m {
                    for (till, days) in tills {
                        for (date, f) in days {
                            rows.insert((store.clone(), till.clone(), date), f);
                        }
                    }
                }
                Delta::TillDaily(rows)
            }
        }
    }
}

#[cfg(test)]
mod tests;
