//! A random ledger history, decided by the domain and committed to the backend in batches, with
//! clocks that sometimes go backwards (the store must clamp `recorded_at`). The time-travel property
//! test folds it independently of [`crate::readmodel`]: plain arithmetic over decoded events.

use std::collections::HashMap;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use tally_domain::event::{SoldLine, StreamId};
use tally_domain::values::{
    AdjustmentId, AdjustmentReason, Cents, CorrectedQuantity, CorrectionId, DeliveryId, ItemId,
    Quantity, ReturnId, SaleId, StockDelta, StoreId, SupplierId, Text, TillId, TimeZoneName,
};
use tally_domain::{
    Command, CorrectedLine, DeliveryLine, Event, ReturnLine, SaleLine, State, StockPolicy, decide,
};
use uuid::Uuid;

use crate::Backend;
use crate::model::{CommitBatch, EventMetadata, NewEvent, RecordedEvent};
use crate::workload::SplitMix64;

/// The seeded generator W1 uses, with the two draws these histories need.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }
    pub fn draw(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.0.below(100) < percent
    }
}

/// Stores on both sides of the date line, and one in between.
pub const STORES: [(&str, &str); 3] = [
    ("east", "Pacific/Kiritimati"),
    ("west", "Pacific/Pago_Pago"),
    ("mid", "Europe/Berlin"),
];
pub const SUPPLIERS: [&str; 2] = ["acme", "zeta"];
pub const ITEMS: usize = 6;

pub fn item(i: usize) -> String {
    format!("i{i}")
}
fn supplier_of(i: usize) -> &'static str {
    SUPPLIERS[i % SUPPLIERS.len()]
}
fn v<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.expect("a valid fixture value")
}

/// The first business instant of the history; business times spread over the five days after it.
fn base() -> Timestamp {
    v("2026-03-10T00:00:00Z".parse::<Timestamp>())
}

/// A sale the generator made: its id, its store, and its lines as (item number, quantity).
type Sold = (String, String, Vec<(usize, i64)>);

struct Gen<'a> {
    rng: &'a mut Rng,
    n: usize,
    sales: Vec<Sold>,
    deliveries: Vec<(String, String, usize)>,
    /// Whether sales may carry discounts and tills (schema version 2's facts).
    discounts: bool,
}

impl Gen<'_> {
    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }
    /// A business time anywhere in the five days, so facts arrive late and out of order.
    fn when(&mut self) -> Timestamp {
        base() + SignedDuration::from_mins(self.rng.below(5 * 24 * 60) as i64)
    }
    fn store(&mut self) -> &'static str {
        STORES[self.rng.below(STORES.len())].0
    }
    fn command(&mut self) -> Command {
        let pick = self.rng.below(100);
        if pick < 20 || self.deliveries.is_empty() {
            let store = self.store();
            let supplier = self.rng.below(SUPPLIERS.len());
            let lines: Vec<usize> = (0..ITEMS)
                .filter(|i| i % SUPPLIERS.len() == supplier && self.rng.chance(70))
                .collect();
            let lines = if lines.is_empty() {
                vec![supplier]
            } else {
                lines
            };
            let id = self.id("d");
            self.deliveries
                .push((id.clone(), store.to_owned(), supplier));
            return Command::RecordDelivery {
                delivery_id: v(DeliveryId::parse(&id)),
                supplier_id: v(SupplierId::parse(SUPPLIERS[supplier])),
                store_id: v(StoreId::parse(store)),
                occurred_at: self.when(),
                lines: lines
                    .into_iter()
                    .map(|i| DeliveryLine {
                        item_id: v(ItemId::parse(item(i))),
                        quantity: v(Quantity::new(3 + self.rng.below(8) as i64)),
                        unit_cost_cents: v(Cents::new(50 + 10 * i as i64)),
                    })
                    .collect(),
            };
        }
        if pick < 60 || self.sales.is_empty() {
            let store = self.store();
            let mut items: Vec<usize> = (0..ITEMS).filter(|_| self.rng.chance(35)).collect();
            if items.is_empty() {
                items.push(self.rng.below(ITEMS));
            }
            let lines: Vec<(usize, i64)> = items
                .into_iter()
                .map(|i| (i, 1 + self.rng.below(3) as i64))
                .collect();
            let id = self.id("s");
            self.sales
                .push((id.clone(), store.to_owned(), lines.clone()));
            return Command::RecordSale {
                sale_id: v(SaleId::parse(&id)),
                store_id: v(StoreId::parse(store)),
                occurred_at: self.when(),
                lines: lines
                    .into_iter()
                    .map(|(i, q)| {
                        let price = 100 + 25 * i as i64;
                        // About a third of the lines discounted, by amounts that split unevenly
                        // over the units (so partial returns exercise the refund rule).
                        let discount = if self.discounts && self.rng.chance(33) {
                            self.rng.below((q * price) as usize + 1) as i64
                        } else {
                            0
                        };
                        SaleLine {
                            item_id: v(ItemId::parse(item(i))),
                            quantity: v(Quantity::new(q)),
                            unit_price_cents: v(Cents::new(price)),
                            discount_cents: v(Cents::new(discount)),
                        }
                    })
                    .collect(),
                till_id: (self.discounts && self.rng.chance(50))
                    .then(|| v(TillId::parse(format!("till-{}", self.rng.below(3))))),
            };
        }
        let (sale, store, lines) = self.sales[self.rng.below(self.sales.len())].clone();
        match pick {
            60..=69 => Command::VoidSale {
                sale_id: v(SaleId::parse(&sale)),
                reason: v(Text::parse("till error")),
                occurred_at: self.when(),
                only_store: None,
            },
            70..=81 => {
                let (i, q) = lines[self.rng.below(lines.len())];
                let id = self.id("r");
                Command::RecordReturn {
                    return_id: v(ReturnId::parse(&id)),
                    sale_id: v(SaleId::parse(&sale)),
                    store_id: v(StoreId::parse(&store)),
                    occurred_at: self.when(),
                    lines: vec![ReturnLine {
                        item_id: v(ItemId::parse(item(i))),
                        quantity: v(Quantity::new(1 + self.rng.below(q as usize) as i64)),
                    }],
                }
            }
            82..=89 => {
                let id = self.id("a");
                let delta = [-2, -1, 1, 4][self.rng.below(4)];
                Command::AdjustStock {
                    adjustment_id: v(AdjustmentId::parse(&id)),
                    store_id: v(StoreId::parse(self.store())),
                    item_id: v(ItemId::parse(item(self.rng.below(ITEMS)))),
                    delta: v(StockDelta::new(delta)),
                    reason: AdjustmentReason::CountCorrection,
                    occurred_at: self.when(),
                }
            }
            _ => {
                let (delivery, _, supplier) =
                    self.deliveries[self.rng.below(self.deliveries.len())].clone();
                let id = self.id("c");
                let items: Vec<usize> = (0..ITEMS)
                    .filter(|i| i % SUPPLIERS.len() == supplier && self.rng.chance(60))
                    .collect();
                let lines = items
                    .into_iter()
                    .map(|i| CorrectedLine {
                        item_id: v(ItemId::parse(item(i))),
                        quantity: v(CorrectedQuantity::new(self.rng.below(9) as i64)),
                        unit_cost_cents: v(Cents::new(40 + 10 * i as i64)),
                    })
                    .collect();
                Command::CorrectDelivery {
                    correction_id: v(CorrectionId::parse(&id)),
                    delivery_id: v(DeliveryId::parse(&delivery)),
                    reason: v(Text::parse("recount")),
                    lines,
                    only_supplier: None,
                }
            }
        }
    }
}

fn reference_data() -> Vec<Command> {
    let mut out: Vec<Command> = SUPPLIERS
        .iter()
        .map(|s| Command::RegisterSupplier {
            supplier_id: v(SupplierId::parse(*s)),
            name: v(Text::parse(format!("Supplier {s}"))),
        })
        .collect();
    out.extend(STORES.iter().map(|(s, tz)| Command::RegisterStore {
        store_id: v(StoreId::parse(*s)),
        name: v(Text::parse(format!("Store {s}"))),
        timezone: v(TimeZoneName::parse(*tz)),
    }));
    out.extend((0..ITEMS).map(|i| Command::RegisterItem {
        item_id: v(ItemId::parse(item(i))),
        name: v(Text::parse(format!("Item {i}"))),
        supplier_id: v(SupplierId::parse(supplier_of(i))),
        unit_price_cents: v(Cents::new(100 + 25 * i as i64)),
    }));
    out
}

/// Decides `commands` random commands after the reference data and commits their events in
/// batches of 1 to 12, each batch stamped by a clock that now and then runs up to a minute behind
/// the one before (so the store's clamp is exercised). Returns the log as stored.
pub async fn seed(b: &Backend, rng: &mut Rng, commands: usize) -> Vec<RecordedEvent> {
    let seeding = Seeding {
        discounts: true,
        old_percent: 0,
    };
    seed_with(b, rng, commands, seeding).await.0
}

/// How [`seed_with`] writes its history.
#[derive(Debug, Clone, Copy)]
pub struct Seeding {
    /// Sales with discounts and tills (else none: every fact has a version 1 form).
    pub discounts: bool,
    /// Of the events whose type has an older version, the share (in %) stored in their version 1
    /// form, as a build before that version wrote them.
    pub old_percent: u32,
}

/// Decides `commands` random commands (after the reference data) and commits their events; the
/// log as stored and the events as decided (in the current version's shape).
pub async fn seed_with(
    b: &Backend,
    rng: &mut Rng,
    commands: usize,
    seeding: Seeding,
) -> (Vec<RecordedEvent>, Vec<Event>) {
    let mut state = State::default();
    let mut decided = Vec::new();
    let mut generator = Gen {
        rng,
        n: 0,
        sales: Vec::new(),
        deliveries: Vec::new(),
        discounts: seeding.discounts,
    };
    let mut clock = v("2026-03-20T09:00:00Z".parse::<Timestamp>());
    let mut batch: Vec<NewEvent> = Vec::new();
    let mut todo = reference_data();
    todo.reverse();
    let mut left = commands;
    loop {
        let command = match todo.pop() {
            Some(c) => c,
            None if left > 0 => {
                left -= 1;
                generator.command()
            }
            None => break,
        };
        let occurred_at = command.occurred_at().unwrap_or(clock);
        let Ok(events) = decide(&state, &command, StockPolicy::Reject) else {
            continue;
        };
        let command_id = Uuid::now_v7();
        for event in events {
            let streams: Vec<(StreamId, u64)> = event
                .streams()
                .into_iter()
                .map(|s| {
                    let version = state.version(&s) + 1;
                    (s, version)
                })
                .collect();
            for (s, version) in &streams {
                state.apply_to(s, *version, &event);
            }
            let old = (generator.rng.below(100) < seeding.old_percent as usize)
                .then(|| super::upcasting::as_version_1(&event))
                .flatten();
            let (schema_version, data) =
                old.unwrap_or_else(|| (event.schema_version(), event.encode()));
            decided.push(event.clone());
            batch.push(NewEvent {
                event_type: event.event_type().to_owned(),
                schema_version,
                occurred_at,
                recorded_at: clock,
                data,
                metadata: EventMetadata {
                    command_id,
                    correlation_id: None,
                    principal: "key-history".to_owned(),
                },
                streams,
            });
        }
        if generator.rng.below(12) == 0 || batch.len() >= 12 {
            commit(b, &mut batch).await;
            // Mostly forward by up to 3 s; one batch in five by a clock up to a minute behind.
            let step = if generator.rng.chance(20) {
                -(generator.rng.below(60_000) as i64)
            } else {
                generator.rng.below(3_000) as i64
            };
            clock += SignedDuration::from_millis(step);
        }
    }
    commit(b, &mut batch).await;
    let mut log = Vec::new();
    loop {
        let after = log.last().map_or(0, |e: &RecordedEvent| e.position);
        let more = b.events.read_all(after, 1000).await.expect("read_all");
        if more.is_empty() {
            return (log, decided);
        }
        log.extend(more);
    }
}

async fn commit(b: &Backend, batch: &mut Vec<NewEvent>) {
    if batch.is_empty() {
        return;
    }
    let events = std::mem::take(batch);
    b.events
        .commit(CommitBatch {
            events,
            outcomes: Vec::new(),
            reads: Vec::new(),
        })
        .await
        .expect("commit a decided batch");
}

/// Business dates of every report in the history's zones, a day either side.
pub fn dates() -> Vec<Date> {
    let first = v("2026-03-08".parse::<Date>());
    (0..9).map(|d| first + jiff::Span::new().days(d)).collect()
}

/// Each sold line's amount, as reports count it.
pub fn amount(l: &SoldLine) -> i64 {
    l.quantity.get() * l.unit_price_cents.get()
}

/// The expected books of a prefix, folded by hand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Books {
    /// `(store, item) → on hand`
    pub stock: HashMap<(String, String), i64>,
    /// `(store, date) → [transactions, units, gross, returned units, returned cents, discounts]`
    pub store_days: HashMap<(String, Date), [i64; 6]>,
    /// `(supplier, date) → [deliveries, units supplied, cost, units sold, sales]`
    pub supplier_days: HashMap<(String, Date), [i64; 5]>,
    /// `(store, item, date) → [units, gross, returned units, returned cents]`
    pub item_days: HashMap<(String, String, Date), [i64; 5]>,
}

fn add<const N: usize>(row: &mut [i64; N], change: [i64; N]) {
    for (r, c) in row.iter_mut().zip(change) {
        *r += c;
    }
}

impl Books {
    /// Folds the events of `log` for which `keep(event, business instant of its movement)` holds.
    pub fn of(log: &[RecordedEvent], keep: impl Fn(&RecordedEvent, Timestamp) -> bool) -> Self {
        let mut books = Books::default();
        let mut delivered_at: HashMap<String, Timestamp> = HashMap::new();
        for r in log {
            let event = r.decode().expect("decodable");
            let moved_at = match &event {
                Event::DeliveryCorrected(c) => delivered_at
                    .get(c.delivery_id.as_str())
                    .copied()
                    .unwrap_or(r.occurred_at),
                Event::GoodsDelivered(d) => {
                    delivered_at.insert(d.delivery_id.to_string(), r.occurred_at);
                    r.occurred_at
                }
                _ => r.occurred_at,
            };
            if keep(r, moved_at) {
                books.fold(&event);
            }
        }
        books
    }

    fn stock(&mut self, store: &StoreId, item: &ItemId, change: i64) {
        *self
            .stock
            .entry((store.to_string(), item.to_string()))
            .or_default() += change;
    }

    fn sold(&mut self, store: &StoreId, date: Date, lines: &[SoldLine], sign: i64, returned: bool) {
        for l in lines {
            let (q, a) = (sign * l.quantity.get(), sign * amount(l));
            let d = sign * l.discount_cents.get();
            let key = (store.to_string(), l.item_id.to_string(), date);
            let row = self.item_days.entry(key).or_default();
            if returned {
                // A return refunds the paid share: its line's list value less the discount share.
                add(row, [0, 0, q, a - d, 0]);
            } else {
                add(row, [q, a, 0, 0, d]);
                let sup = (l.supplier_id.to_string(), date);
                add(
                    self.supplier_days.entry(sup).or_default(),
                    [0, 0, 0, q, a - d],
                );
            }
            self.stock(store, &l.item_id, if returned { q } else { -q });
        }
    }

    /// Folds one event (every movement, whenever it happened).
    pub fn fold(&mut self, event: &Event) {
        match event {
            Event::GoodsDelivered(d) => {
                let day = self
                    .supplier_days
                    .entry((d.supplier_id.to_string(), d.business_date))
                    .or_default();
                day[0] += 1;
                for l in &d.lines {
                    let q = l.quantity.get();
                    add(day, [0, q, q * l.unit_cost_cents.get(), 0, 0]);
                }
                for l in &d.lines {
                    self.stock(&d.store_id, &l.item_id, l.quantity.get());
                }
            }
            Event::DeliveryCorrected(c) => {
                let key = (c.supplier_id.to_string(), c.business_date);
                for ch in &c.changes {
                    let day = self.supplier_days.entry(key.clone()).or_default();
                    add(day, [0, ch.quantity_change, ch.cost_change_cents, 0, 0]);
                    self.stock(&c.store_id, &ch.item_id, ch.quantity_change);
                }
            }
            Event::SaleRecorded(e) => {
                let units = e.lines.iter().map(|l| l.quantity.get()).sum();
                let gross = e.lines.iter().map(amount).sum();
                let discount = e.lines.iter().map(|l| l.discount_cents.get()).sum();
                let key = (e.store_id.to_string(), e.business_date);
                add(
                    self.store_days.entry(key).or_default(),
                    [1, units, gross, 0, 0, discount],
                );
                self.sold(&e.store_id, e.business_date, &e.lines, 1, false);
            }
            Event::SaleVoided(e) => {
                let units: i64 = e.lines.iter().map(|l| l.quantity.get()).sum();
                let gross: i64 = e.lines.iter().map(amount).sum();
                let discount: i64 = e.lines.iter().map(|l| l.discount_cents.get()).sum();
                let key = (e.store_id.to_string(), e.sale_business_date);
                add(
                    self.store_days.entry(key).or_default(),
                    [-1, -units, -gross, 0, 0, -discount],
                );
                self.sold(&e.store_id, e.sale_business_date, &e.lines, -1, false);
            }
            Event::ReturnRecorded(e) => {
                let units = e.lines.iter().map(|l| l.quantity.get()).sum();
                let cents = e
                    .lines
                    .iter()
                    .map(|l| amount(l) - l.discount_cents.get())
                    .sum();
                let key = (e.store_id.to_string(), e.business_date);
                add(
                    self.store_days.entry(key).or_default(),
                    [0, 0, 0, units, cents, 0],
                );
                self.sold(&e.store_id, e.business_date, &e.lines, 1, true);
            }
            Event::StockAdjusted(e) => self.stock(&e.store_id, &e.item_id, e.delta.get()),
            Event::SupplierRegistered(_) | Event::StoreRegistered(_) | Event::ItemRegistered(_) => {
            }
        }
    }
}
