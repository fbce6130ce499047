//! W1, the standard retail workload (`shared/design/WORKLOAD.md`), and the books it must produce,
//! computed here directly from the commands — independently of the processor and the projections — so
//! a benchmark run can be verified against them.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::Date;
use tally_domain::values::{
    Cents, DeliveryId, ItemId, Quantity, SaleId, StoreId, SupplierId, Text, TimeZoneName,
};
use tally_domain::{Command, DeliveryLine, SaleLine};

use crate::ports::ReadModels;
use crate::readmodel::{DayFigures, ItemDay, SupplierDay};
use crate::rows::{DateRange, TopItem, TopItemsQuery, rank};
use crate::timetravel::{item_id, store_id, supplier_id};

/// A small, fast, seeded generator (SplitMix64): the same seed gives the same W1 on every machine and
/// every version, which a general-purpose RNG crate does not promise.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub const ZONES: [&str; 5] = [
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
];

/// The first business date of W1's sales and deliveries.
pub const W1_FIRST_DAY: Date = jiff::civil::date(2026, 11, 2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W1Size {
    pub suppliers: usize,
    pub stores: usize,
    pub items: usize,
    pub sales: usize,
}

impl W1Size {
    /// W1 as WORKLOAD.md defines it.
    pub const FULL: W1Size = W1Size {
        suppliers: 10,
        stores: 20,
        items: 1000,
        sales: 100_000,
    };
}

/// The books W1 must produce: what the accepted commands imply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Books {
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub stock: HashMap<(String, String), i64>,
    pub store_days: HashMap<(String, Date), DayFigures>,
    pub supplier_days: HashMap<(String, Date), SupplierDay>,
    /// `(store, item, date)`: the item daily sales read model.
    pub item_days: HashMap<(String, String, Date), ItemDay>,
}

pub struct W1 {
    /// In the order they must be submitted: reference data, then deliveries, then sales.
    pub commands: Vec<Command>,
    /// How many leading commands are reference data (to be processed before the rest is sent).
    pub reference_count: usize,
    pub expected: Books,
}

/// Generates W1 with the given seed (42 by default in WORKLOAD.md).
pub fn w1(seed: u64, size: W1Size) -> W1 {
    w1_over(seed, size, 7)
}

/// W1 with its business times spread over `days` days instead of 7 (the time-travel benchmark's
/// log covers 90).
pub fn w1_over(seed: u64, size: W1Size, days: usize) -> W1 {
    let mut rng = SplitMix64::new(seed);
    let mut commands = Vec::with_capacity(
        size.suppliers + size.stores + size.items * (size.stores + 1) + size.sales,
    );
    let id = |raw: String| raw;
    let suppliers: Vec<SupplierId> = (0..size.suppliers)
        .map(|s| {
            SupplierId::parse(id(format!("sup-{s:02}"))).unwrap_or_else(|e| unreachable!("{e}"))
        })
        .collect();
    let stores: Vec<(StoreId, TimeZoneName)> = (0..size.stores)
        .map(|s| {
            let store =
                StoreId::parse(format!("store-{s:02}")).unwrap_or_else(|e| unreachable!("{e}"));
            let tz =
                TimeZoneName::parse(ZONES[s % ZONES.len()]).unwrap_or_else(|e| unreachable!("{e}"));
            (store, tz)
        })
        .collect();
    let items: Vec<(ItemId, usize, i64)> = (0..size.items)
        .map(|i| {
            let item =
                ItemId::parse(format!("item-{i:04}")).unwrap_or_else(|e| unreachable!("{e}"));
            (item, i % size.suppliers, 100 + rng.below(9901) as i64)
        })
        .collect();
    let name = |s: &str| Text::parse(s).unwrap_or_else(|e| unreachable!("{e}"));
    let cents = |c: i64| Cents::new(c).unwrap_or_else(|e| unreachable!("{e}"));
    let qty = |q: i64| Quantity::new(q).unwrap_or_else(|e| unreachable!("{e}"));
    for s in &suppliers {
        commands.push(Command::RegisterSupplier {
            supplier_id: s.clone(),
            name: name("supplier"),
        });
    }
    for (s, tz) in &stores {
        commands.push(Command::RegisterStore {
            store_id: s.clone(),
            name: name("store"),
            timezone: tz.clone(),
        });
    }
    for (i, sup, price) in &items {
        commands.push(Command::RegisterItem {
            item_id: i.clone(),
            name: name("item"),
            supplier_id: suppliers[*sup].clone(),
            unit_price_cents: cents(*price),
        });
    }
    let reference_count = commands.len();
    let mut books = Books::default();

    // Business times: `days` days from 2026-11-02 in each store's zone.
    let first_day: Date = W1_FIRST_DAY;
    let when = |rng: &mut SplitMix64, tz: &TimeZoneName| -> Timestamp {
        let day = first_day
            .checked_add(jiff::Span::new().days(rng.below(days.max(1) as u64) as i64))
            .unwrap_or(first_day);
        let secs = rng.below(86_400) as i64;
        let local = day.to_datetime(jiff::civil::Time::midnight());
        let ts = jiff::tz::db()
            .get(tz.as_str())
            .ok()
            .and_then(|zone| zone.to_timestamp(local).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        ts.checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap_or(ts)
    };

    let mut pairs: Vec<(usize, usize)> = (0..size.stores)
        .flat_map(|s| (0..size.items).map(move |i| (s, i)))
        .collect();
    for k in (1..pairs.len()).rev() {
        let j = rng.below(k as u64 + 1) as usize;
        pairs.swap(k, j);
    }
    for (n, (s, i)) in pairs.into_iter().enumerate() {
        let (store, tz) = &stores[s];
        let (item, sup, price) = &items[i];
        let quantity = if i % 50 == 0 { 5 } else { 500 };
        let cost = price * 60 / 100;
        let at = when(&mut rng, tz);
        commands.push(Command::RecordDelivery {
            delivery_id: DeliveryId::parse(format!("d-{n:06}"))
                .unwrap_or_else(|e| unreachable!("{e}")),
            supplier_id: suppliers[*sup].clone(),
            store_id: store.clone(),
            occurred_at: at,
            lines: vec![DeliveryLine {
                item_id: item.clone(),
                quantity: qty(quantity),
                unit_cost_cents: cents(cost),
            }],
        });
        books.accepted += 1;
        *books
            .stock
            .entry((store.to_string(), item.to_string()))
            .or_insert(0) += quantity;
        let day = books
            .supplier_days
            .entry((suppliers[*sup].to_string(), tz.business_date(at)))
            .or_default();
        day.deliveries += 1;
        day.units_supplied += quantity;
        day.supply_cost_cents += quantity * cost;
    }

    for n in 0..size.sales {
        let s = rng.below(size.stores as u64) as usize;
        let (store, tz) = &stores[s];
        let line_count = 1 + rng.below(5) as usize;
        let mut picked: Vec<usize> = Vec::with_capacity(line_count);
        while picked.len() < line_count.min(size.items) {
            let i = rng.below(size.items as u64) as usize;
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let lines: Vec<(usize, i64)> = picked
            .iter()
            .map(|&i| (i, 1 + rng.below(3) as i64))
            .collect();
        let at = when(&mut rng, tz);
        let fits = lines.iter().all(|(i, q)| {
            books
                .stock
                .get(&(store.to_string(), items[*i].0.to_string()))
                .copied()
                .unwrap_or(0)
                >= *q
        });
        if fits {
            books.accepted += 1;
            let date = tz.business_date(at);
            let day = books
                .store_days
                .entry((store.to_string(), date))
                .or_default();
            day.transactions += 1;
            for (i, q) in &lines {
                let (item, sup, price) = &items[*i];
                *books
                    .stock
                    .entry((store.to_string(), item.to_string()))
                    .or_insert(0) -= q;
                day.units_sold += q;
                day.gross_cents += q * price;
                let item_day = books
                    .item_days
                    .entry((store.to_string(), item.to_string(), date))
                    .or_default();
                item_day.units_sold += q;
                item_day.gross_cents += q * price;
                let sd = books
                    .supplier_days
                    .entry((suppliers[*sup].to_string(), date))
                    .or_default();
                sd.units_sold += q;
                sd.sales_cents += q * price;
            }
        } else {
            books.rejected += 1;
        }
        commands.push(Command::RecordSale {
            sale_id: SaleId::parse(format!("s-{n:07}")).unwrap_or_else(|e| unreachable!("{e}")),
            store_id: store.clone(),
            occurred_at: at,
            lines: lines
                .iter()
                .map(|(i, q)| SaleLine {
                    item_id: items[*i].0.clone(),
                    quantity: qty(*q),
                    unit_price_cents: cents(items[*i].2),
                    // W1 (WORKLOAD.md) gives no discounts.
                    discount_cents: cents(0),
                })
                .collect(),
            till_id: None,
        });
    }
    books.accepted += reference_count as u64;
    books.submitted = commands.len() as u64;
    W1 {
        commands,
        reference_count,
        expected: books,
    }
}

/// The books that a set of accepted commands implies, computed directly from the commands (not through
/// the domain's rules): what WORKLOAD.md verifies when the order of sales within a store is the
/// server's to choose (W1 over HTTP with concurrent connections). `accepted(i)` says whether
/// `commands[i]` was accepted. Handles the command kinds W1 sends (reference data, deliveries, sales).
pub fn books_of(commands: &[Command], accepted: impl Fn(usize) -> bool) -> Books {
    let mut books = Books {
        submitted: commands.len() as u64,
        ..Books::default()
    };
    let mut zones = HashMap::new();
    let mut supplier_of = HashMap::new();
    for (n, c) in commands.iter().enumerate() {
        if !accepted(n) {
            books.rejected += 1;
            continue;
        }
        books.accepted += 1;
        match c {
            Command::RegisterStore {
                store_id, timezone, ..
            } => {
                zones.insert(store_id.to_string(), timezone.clone());
            }
            Command::RegisterItem {
                item_id,
                supplier_id,
                ..
            } => {
                supplier_of.insert(item_id.to_string(), supplier_id.to_string());
            }
            Command::RecordDelivery {
                supplier_id,
                store_id,
                occurred_at,
                lines,
                ..
            } => {
                let Some(tz) = zones.get(store_id.as_str()) else {
                    continue;
                };
                let day = books
                    .supplier_days
                    .entry((supplier_id.to_string(), tz.business_date(*occurred_at)))
                    .or_default();
                day.deliveries += 1;
                for l in lines {
                    let (q, cost) = (l.quantity.get(), l.unit_cost_cents.get());
                    day.units_supplied += q;
                    day.supply_cost_cents += q * cost;
                    *books
                        .stock
                        .entry((store_id.to_string(), l.item_id.to_string()))
                        .or_insert(0) += q;
                }
            }
            Command::RecordSale {
                store_id,
                occurred_at,
                lines,
                ..
            } => {
                let Some(tz) = zones.get(store_id.as_str()) else {
                    continue;
                };
                let date = tz.business_date(*occurred_at);
                let day = books
                    .store_days
                    .entry((store_id.to_string(), date))
                    .or_default();
                day.transactions += 1;
                for l in lines {
                    let (q, price) = (l.quantity.get(), l.unit_price_cents.get());
                    day.units_sold += q;
                    day.gross_cents += q * price;
                    let item_day = books
                        .item_days
                        .entry((store_id.to_string(), l.item_id.to_string(), date))
                        .or_default();
                    item_day.units_sold += q;
                    item_day.gross_cents += q * price;
                    *books
                        .stock
                        .entry((store_id.to_string(), l.item_id.to_string()))
                        .or_insert(0) -= q;
                    if let Some(sup) = supplier_of.get(l.item_id.as_str()) {
                        let sd = books.supplier_days.entry((sup.clone(), date)).or_default();
                        sd.units_sold += q;
                        sd.sales_cents += q * price;
                    }
                }
            }
            _ => {}
        }
    }
    books
}

/// Compares the outcome counts and every read model with the books computed from the commands.
pub async fn verify(
    read: &dyn ReadModels,
    expected: &Books,
    accepted: u64,
    rejected: u64,
) -> Result<(), String> {
    if accepted != expected.accepted || rejected != expected.rejected {
        return Err(format!(
            "outcomes: {accepted} accepted / {rejected} rejected, expected {} / {}",
            expected.accepted, expected.rejected
        ));
    }
    if accepted + rejected != expected.submitted {
        return Err(format!(
            "accepted + rejected = {} but {} were submitted",
            accepted + rejected,
            expected.submitted
        ));
    }
    let text = |e: crate::ports::Error| e.to_string();
    let mut stores: Vec<&String> = expected.stock.keys().map(|(s, _)| s).collect();
    stores.sort();
    stores.dedup();
    let mut stock = HashMap::new();
    let mut store_days = HashMap::new();
    for store in stores {
        let id = store_id(store).map_err(text)?;
        for row in read.inventory(&id).await.map_err(text)?.rows {
            stock.insert((store.clone(), row.item_id.to_string()), row.on_hand);
        }
        for day in read
            .store_daily(&id, DateRange::default())
            .await
            .map_err(text)?
            .rows
        {
            store_days.insert((store.clone(), day.date), day.figures);
        }
        verify_store_rankings(read, &id, expected).await?;
    }
    if stock != expected.stock {
        return Err(format!(
            "inventory differs from deliveries - sales ({} rows vs {} expected)",
            stock.len(),
            expected.stock.len()
        ));
    }
    let expected_days: HashMap<_, _> = expected
        .store_days
        .iter()
        .filter(|(_, f)| !f.is_empty())
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if store_days != expected_days {
        return Err(format!(
            "store daily sales differ ({} days vs {} expected)",
            store_days.len(),
            expected_days.len()
        ));
    }
    let mut suppliers: Vec<&String> = expected.supplier_days.keys().map(|(s, _)| s).collect();
    suppliers.sort();
    suppliers.dedup();
    let mut supplier_days = HashMap::new();
    for supplier in suppliers {
        let id = supplier_id(supplier).map_err(text)?;
        for day in read
            .supplier_daily(&id, DateRange::default())
            .await
            .map_err(text)?
            .rows
        {
            supplier_days.insert((supplier.clone(), day.date), day.figures);
        }
    }
    if supplier_days != expected.supplier_days {
        return Err(format!(
            "supplier daily reports differ ({} days vs {} expected)",
            supplier_days.len(),
            expected.supplier_days.len()
        ));
    }
    verify_item_days(read, expected).await
}

/// The item daily sales of every item, summed over the stores, against the books.
async fn verify_item_days(read: &dyn ReadModels, expected: &Books) -> Result<(), String> {
    let mut want: HashMap<(String, Date), ItemDay> = HashMap::new();
    for ((_, item, date), f) in &expected.item_days {
        want.entry((item.clone(), *date)).or_default().add(f);
    }
    let mut items: Vec<&String> = want.keys().map(|(i, _)| i).collect();
    items.sort();
    items.dedup();
    let mut got = HashMap::new();
    for item in items {
        let id = item_id(item).map_err(|e| e.to_string())?;
        let sales = read
            .item_daily(&id, None, DateRange::default())
            .await
            .map_err(|e| e.to_string())?
            .rows;
        for day in sales.days {
            got.insert((item.clone(), day.date), day.figures);
        }
    }
    want.retain(|_, f| !f.is_empty());
    if got != want {
        return Err(format!(
            "item daily sales differ ({} item days vs {} expected)",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// A store's top items over all dates and its low-stock list, against the books.
async fn verify_store_rankings(
    read: &dyn ReadModels,
    store: &tally_domain::values::StoreId,
    expected: &Books,
) -> Result<(), String> {
    let text = |e: crate::ports::Error| e.to_string();
    let mut totals: HashMap<&str, ItemDay> = HashMap::new();
    for ((s, item, _), f) in &expected.item_days {
        if s == store.as_str() {
            totals.entry(item.as_str()).or_default().add(f);
        }
    }
    let want = rank(
        totals
            .into_iter()
            .map(|(item, f)| {
                Ok(TopItem {
                    item_id: item_id(item)?,
                    units_sold: f.units_sold,
                    net_cents: f.net_cents(),
                })
            })
            .collect::<Result<Vec<_>, crate::ports::Error>>()
            .map_err(text)?,
        100,
    );
    let query = TopItemsQuery {
        range: DateRange::default(),
        store: Some(store.clone()),
        supplier: None,
        limit: 100,
    };
    let got = read.top_items(&query).await.map_err(text)?.rows;
    if got != want {
        let at = got.iter().zip(&want).position(|(g, w)| g != w);
        return Err(format!(
            "top items of store {store} differ from the books: {} ranked, {} expected; first \
             difference at {at:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            at.and_then(|i| got.get(i)),
            at.and_then(|i| want.get(i)),
        ));
    }
    let threshold = 5;
    let mut want_low: Vec<(String, i64)> = expected
        .stock
        .iter()
        .filter(|((s, _), n)| s == store.as_str() && **n <= threshold)
        .map(|((_, i), n)| (i.clone(), *n))
        .collect();
    want_low.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let got_low: Vec<(String, i64)> = read
        .low_stock(store, threshold)
        .await
        .map_err(text)?
        .rows
        .into_iter()
        .map(|r| (r.item_id.to_string(), r.on_hand))
        .collect();
    if got_low != want_low {
        return Err(format!(
            "low stock of store {store} differs from the books ({} items vs {} expected)",
            got_low.len(),
            want_low.len()
        ));
    }
    Ok(())
}
