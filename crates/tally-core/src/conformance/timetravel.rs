//! Time travel, as a property: over random histories (late and out-of-order business times, voids,
//! returns, corrections, stores on both sides of the date line, appending clocks that go backwards),
//! every query as of a random prefix equals an independent fold of that prefix ([`history::Books`]),
//! and with a business time `at`, a fold of the movements that happened by then. Instants select
//! prefixes: `position_at` is the last event recorded at or before them.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use tally_domain::values::{ItemId, StoreId, SupplierId};

use super::history::{Books, ITEMS, Rng, STORES, SUPPLIERS, dates, item, seed};
use crate::model::RecordedEvent;
use crate::projector::Projector;
use crate::readmodel::journal::JOURNAL;
use crate::readmodel::{DayFigures, ItemDay, SupplierDay};
use crate::rows::{DateRange, TopItem, TopItemsQuery, rank};
use crate::timetravel::{TimeTravel, low};
use crate::{Backend, Signals};

fn store(s: &str) -> StoreId {
    StoreId::parse(s).unwrap()
}

fn stock_of(books: &Books, s: &str) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = books
        .stock
        .iter()
        .filter(|((st, _), _)| st == s)
        .map(|((_, i), n)| (i.clone(), *n))
        .collect();
    rows.sort();
    rows
}

fn store_days(books: &Books, s: &str) -> Vec<(jiff::civil::Date, DayFigures)> {
    let mut days: Vec<_> = books
        .store_days
        .iter()
        .filter(|((st, _), f)| st == s && **f != [0; 6])
        .map(|((_, d), f)| {
            let [
                transactions,
                units_sold,
                gross_cents,
                returned_units,
                returned_cents,
                discount_cents,
            ] = *f;
            let figures = DayFigures {
                transactions,
                units_sold,
                gross_cents,
                returned_units,
                returned_cents,
                discount_cents,
            };
            (*d, figures)
        })
        .collect();
    days.sort_by_key(|(d, _)| *d);
    days
}

fn supplier_days(books: &Books, s: &str) -> Vec<(jiff::civil::Date, SupplierDay)> {
    let mut days: Vec<_> = books
        .supplier_days
        .iter()
        .filter(|((sup, _), f)| sup == s && **f != [0; 5])
        .map(|((_, d), f)| {
            let [
                deliveries,
                units_supplied,
                supply_cost_cents,
                units_sold,
                sales_cents,
            ] = *f;
            let figures = SupplierDay {
                deliveries,
                units_supplied,
                supply_cost_cents,
                units_sold,
                sales_cents,
            };
            (*d, figures)
        })
        .collect();
    days.sort_by_key(|(d, _)| *d);
    days
}

fn item_day(f: [i64; 5]) -> ItemDay {
    let [
        units_sold,
        gross_cents,
        returned_units,
        returned_cents,
        discount_cents,
    ] = f;
    ItemDay {
        units_sold,
        gross_cents,
        returned_units,
        returned_cents,
        discount_cents,
    }
}

/// One item's days over every store, or one store's.
fn item_days(books: &Books, i: &str, s: Option<&str>) -> Vec<(jiff::civil::Date, ItemDay)> {
    let mut by_date: HashMap<jiff::civil::Date, ItemDay> = HashMap::new();
    for ((st, it, d), f) in &books.item_days {
        if it == i && s.is_none_or(|s| s == st) {
            by_date.entry(*d).or_default().add(&item_day(*f));
        }
    }
    let mut days: Vec<_> = by_date.into_iter().filter(|(_, f)| !f.is_empty()).collect();
    days.sort_by_key(|(d, _)| *d);
    days
}

fn top(books: &Books, s: Option<&str>) -> Vec<TopItem> {
    let mut totals: HashMap<&str, ItemDay> = HashMap::new();
    for ((st, it, _), f) in &books.item_days {
        if s.is_none_or(|s| s == st) {
            totals.entry(it).or_default().add(&item_day(*f));
        }
    }
    let items = totals
        .into_iter()
        .map(|(i, f)| TopItem {
            item_id: ItemId::parse(i).unwrap(),
            units_sold: f.units_sold,
            net_cents: f.net_cents(),
        })
        .collect();
    rank(items, 3)
}

/// Every answer of the fold up to `upto` against the books of `log[..upto]`.
async fn check_prefix(travel: &TimeTravel, log: &[RecordedEvent], upto: u64) {
    let prefix: Vec<RecordedEvent> = log.iter().filter(|e| e.position <= upto).cloned().collect();
    let books = Books::of(&prefix, |_, _| true);
    for (s, _) in STORES {
        let inv = travel.inventory(&store(s), upto, None).await.unwrap();
        assert_eq!(inv.position, upto);
        let got: Vec<_> = inv
            .rows
            .iter()
            .map(|r| (r.item_id.to_string(), r.on_hand))
            .collect();
        assert_eq!(got, stock_of(&books, s), "inventory of {s} at {upto}");
        let low_got = travel.low_stock(&store(s), 2, upto, None).await.unwrap();
        assert_eq!(low_got.rows, low(inv.rows.clone(), 2), "low stock of {s}");
        let one = ItemId::parse(item(1)).unwrap();
        let on_hand = travel.inventory_item(&store(s), &one, upto, None).await;
        let want = books
            .stock
            .get(&(s.to_owned(), item(1)))
            .copied()
            .unwrap_or(0);
        assert_eq!(on_hand.unwrap().rows, want, "item i1 in {s} at {upto}");

        let days = travel
            .store_daily(&store(s), DateRange::default(), upto)
            .await
            .unwrap();
        let got: Vec<_> = days.rows.iter().map(|d| (d.date, d.figures)).collect();
        assert_eq!(got, store_days(&books, s), "store daily of {s} at {upto}");

        let got = travel.top_items(&top_query(Some(s)), upto).await.unwrap();
        assert_eq!(got.rows, top(&books, Some(s)), "top items of {s} at {upto}");
    }
    for sup in SUPPLIERS {
        let id = SupplierId::parse(sup).unwrap();
        let days = travel
            .supplier_daily(&id, DateRange::default(), upto)
            .await
            .unwrap();
        let got: Vec<_> = days.rows.iter().map(|d| (d.date, d.figures)).collect();
        assert_eq!(got, supplier_days(&books, sup), "supplier {sup} at {upto}");
    }
    for i in 0..ITEMS {
        let id = ItemId::parse(item(i)).unwrap();
        for s in [None, Some(STORES[0].0)] {
            let answer = travel
                .item_daily(&id, s.map(store).as_ref(), DateRange::default(), upto)
                .await
                .unwrap();
            let got: Vec<_> = answer
                .rows
                .days
                .iter()
                .map(|d| (d.date, d.figures))
                .collect();
            assert_eq!(
                got,
                item_days(&books, &item(i), s),
                "item {i} in {s:?} at {upto}"
            );
        }
    }
    let got = travel.top_items(&top_query(None), upto).await.unwrap();
    assert_eq!(got.rows, top(&books, None), "top items at {upto}");
    for date in dates() {
        let all = travel.daily_sales(date, upto).await.unwrap();
        for row in &all.rows {
            let want = store_days(&books, row.store_id.as_str());
            let want = want.iter().find(|(d, _)| *d == date).map(|(_, f)| *f);
            assert_eq!(Some(row.figures), want, "all stores on {date} at {upto}");
        }
    }
}

fn top_query(s: Option<&str>) -> TopItemsQuery {
    TopItemsQuery {
        range: DateRange::default(),
        store: s.map(store),
        supplier: None,
        limit: 3,
    }
}

/// A day's history: each version is the fold of the prefix ending at its event, and the versions
/// are exactly the events that changed the day.
async fn check_history(travel: &TimeTravel, log: &[RecordedEvent], head: u64) {
    // The store days after each event of the log, folded once.
    let mut books = Books::default();
    let after: Vec<HashMap<(String, jiff::civil::Date), [i64; 6]>> = log
        .iter()
        .map(|e| {
            books.fold(&e.decode().unwrap());
            books.store_days.clone()
        })
        .collect();
    for (s, _) in STORES {
        for date in dates() {
            let history = travel
                .store_day_history(&store(s), date, head)
                .await
                .unwrap();
            let key = (s.to_owned(), date);
            let mut before = [0i64; 6];
            let mut seen = 0;
            for (e, days) in log.iter().zip(&after) {
                let now = days.get(&key).copied().unwrap_or([0; 6]);
                if now == before {
                    continue;
                }
                let v = &history.rows[seen];
                assert_eq!(v.position, e.position, "history of {s} {date}");
                assert_eq!(v.command_id, e.metadata.command_id);
                assert_eq!(v.recorded_at, e.recorded_at);
                assert_eq!(v.event_type, e.event_type);
                let f = v.figures;
                let got = f.values();
                assert_eq!(got, now, "figures after {}", e.position);
                seen += 1;
                before = now;
            }
            assert_eq!(
                seen,
                history.rows.len(),
                "no version without a change: {s} {date}"
            );
        }
    }
}

pub async fn as_of_equals_a_fold_of_the_prefix(b: &Backend) {
    let travel = TimeTravel::new(b.events.clone(), b.journal.clone());
    let mut rng = Rng::new(0x5EED_0017);
    let log = seed(b, &mut rng, 260).await;
    let head = log.last().map_or(0, |e| e.position);
    assert!(head > 150, "the history has events: {head}");
    for pair in log.windows(2) {
        assert!(
            pair[0].recorded_at <= pair[1].recorded_at,
            "recorded_at decreases at {}",
            pair[1].position
        );
    }
    // Before the first event: nothing.
    let first = log[0].recorded_at;
    let before = first - SignedDuration::from_micros(1);
    assert_eq!(travel.position_at(before).await.unwrap(), 0);
    let empty = travel.inventory(&store("east"), 0, None).await.unwrap();
    assert!(empty.rows.is_empty());
    // Random instants, exact recorded_at values among them, select prefixes: first from the log
    // alone, then (journal 1) from journal chunks of 29 positions and the log after them.
    check_instants(&travel, &log, &mut rng).await;
    // Two batches by one projector, then the rest by another: the second resumes the journal from
    // the heads the first sealed (each store's stock and version at its last chunk).
    let mut first = Projector::new(b.events.clone(), b.sink.clone(), Signals::default())
        .with_journal_interval(29)
        .with_batch_size(50);
    first.step().await.unwrap();
    first.step().await.unwrap();
    first.flush().await.unwrap();
    assert!(
        b.read.checkpoints().await.unwrap()[JOURNAL] >= 29,
        "a chunk sealed"
    );
    let mut projector = Projector::new(b.events.clone(), b.sink.clone(), Signals::default())
        .with_journal_interval(29)
        .with_batch_size(50);
    projector.catch_up().await.unwrap();
    let sealed = b.read.checkpoints().await.unwrap()[JOURNAL];
    assert_eq!(sealed, head / 29 * 29, "every whole interval sealed");
    check_instants(&travel, &log, &mut rng).await;
    check_history(&travel, &log, head).await;
}

async fn check_instants(travel: &TimeTravel, log: &[RecordedEvent], rng: &mut Rng) {
    let first = log[0].recorded_at;
    let head = log.last().map_or(0, |e| e.position);
    for round in 0..12 {
        let instant = if round % 2 == 0 {
            log[rng.below(log.len())].recorded_at
        } else {
            let span = log[log.len() - 1].recorded_at.duration_since(first);
            first + SignedDuration::from_micros(rng.draw() as i64 % span.as_micros().max(1) as i64)
        };
        let want = log
            .iter()
            .filter(|e| e.recorded_at <= instant)
            .map(|e| e.position)
            .max()
            .unwrap_or(0);
        let upto = travel.position_at(instant).await.unwrap();
        assert_eq!(upto, want, "position_at {instant}");
        check_prefix(travel, log, upto).await;
    }
    check_prefix(travel, log, head).await;
}

/// Business time: the inventory at `at` counts exactly the movements that happened by then, a
/// correction on its delivery's behalf; combined with a prefix.
pub async fn business_time_counts_movements_that_happened_by_then(b: &Backend) {
    let travel = TimeTravel::new(b.events.clone(), b.journal.clone());
    let mut rng = Rng::new(0xB05_1E55);
    let log = seed(b, &mut rng, 120).await;
    let head = log.last().map_or(0, |e| e.position);
    for round in 0..10 {
        let at: Timestamp = "2026-03-10T00:00:00Z".parse::<Timestamp>().unwrap()
            + SignedDuration::from_mins(rng.below(6 * 24 * 60) as i64);
        let upto = if round % 2 == 0 {
            head
        } else {
            1 + rng.below(head as usize) as u64
        };
        let books = Books::of(&log, |e, moved| e.position <= upto && moved <= at);
        for (s, _) in STORES {
            let inv = travel.inventory(&store(s), upto, Some(at)).await.unwrap();
            let got: Vec<_> = inv
                .rows
                .iter()
                .map(|r| (r.item_id.to_string(), r.on_hand))
                .collect();
            assert_eq!(got, stock_of(&books, s), "{s} at {at} as of {upto}");
        }
    }
}
