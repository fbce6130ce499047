//! Property tests: random command sequences over a small retail world, decided against a live state
//! with every accepted event applied. Replay must equal live, stock must never go negative under
//! `Reject`, on-hand must equal the stock movements counted straight from the accepted events, and each
//! delivery correction's changes must be the difference between the lines before and after it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use common::{cents, q, v};
use jiff::Timestamp;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tally_domain::event::SoldLine;
use tally_domain::values::{
    AdjustmentReason, CorrectedQuantity, DeliveryId, ItemId, SaleId, StockDelta, StoreId,
};
use tally_domain::{
    Command, CorrectedLine, DeliveryLine, Event, RejectionCode, ReturnLine, SaleLine, State,
    StockPolicy, StreamId, decide,
};

/// Three stores in three zones; the last id is never registered.
const STORES: [(&str, &str); 4] = [
    ("st-0", "America/Los_Angeles"),
    ("st-1", "Asia/Tokyo"),
    ("st-2", "Europe/Berlin"),
    ("st-x", ""),
];
/// Five items of two suppliers; the last item and supplier are never registered.
const ITEMS: [(&str, &str); 6] = [
    ("i-0", "sup-a"),
    ("i-1", "sup-a"),
    ("i-2", "sup-a"),
    ("i-3", "sup-b"),
    ("i-4", "sup-b"),
    ("i-x", "sup-a"),
];
const SUPPLIERS: [&str; 3] = ["sup-a", "sup-b", "sup-x"];
const REGISTERED_STORES: usize = 3;
const REGISTERED_ITEMS: usize = 5;

/// A command in terms of indexes into the world, without its time (see [`ops`]); returns pick their
/// lines from the sale they name.
#[derive(Debug, Clone)]
enum Op {
    /// Delivery id, supplier, store, item → quantity.
    Deliver(u8, u8, u8, BTreeMap<u8, i64>),
    /// Sale id, store, item → quantity.
    Sell(u8, u8, BTreeMap<u8, i64>),
    /// Sale id, the store of a store-scoped void.
    Void(u8, Option<u8>),
    /// Return id, sale id, store (default: the sale's), (pick of a sale line, quantity).
    Return(u8, u8, Option<u8>, Vec<(u8, i64)>),
    /// Adjustment id, store, item, delta.
    Adjust(u8, u8, u8, i64),
    /// Correction id, delivery id (10 and 11 are never delivered), the supplier of a supplier-scoped
    /// correction, the note's (pick of a delivery line or any item, quantity 0.., unit cost), and
    /// whether the note also lists the delivery's other lines unchanged (else they are removed).
    Correct(u8, u8, Option<u8>, Vec<(u8, i64, i64)>, bool),
}

fn store() -> impl Strategy<Value = u8> {
    prop_oneof![12 => 0..3u8, 1 => Just(3u8)]
}
fn item() -> impl Strategy<Value = u8> {
    prop_oneof![25 => 0..5u8, 1 => Just(5u8)]
}
fn supplier() -> impl Strategy<Value = u8> {
    prop_oneof![25 => 0..2u8, 1 => Just(2u8)]
}
/// Minutes into a four-day window, so business dates differ between zones.
fn minute() -> impl Strategy<Value = i64> {
    0..4 * 24 * 60i64
}

fn op() -> impl Strategy<Value = Op> {
    let delta = prop_oneof![-6..0i64, 1..6i64];
    let returned_store = proptest::option::weighted(0.15, store());
    let returned_lines = vec((any::<u8>(), 1..4i64), 1..=3);
    prop_oneof![
        4 => (0..10u8, supplier(), store(), btree_map(item(), 1..15i64, 1..=3))
            .prop_map(|(id, sup, store, lines)| Op::Deliver(id, sup, store, lines)),
        5 => (0..14u8, store(), btree_map(item(), 1..5i64, 1..=3))
            .prop_map(|(id, store, lines)| Op::Sell(id, store, lines)),
        2 => (0..14u8, proptest::option::weighted(0.3, store()))
            .prop_map(|(sale, only_store)| Op::Void(sale, only_store)),
        3 => (0..10u8, 0..14u8, returned_store, returned_lines)
            .prop_map(|(id, sale, store, lines)| Op::Return(id, sale, store, lines)),
        2 => (0..8u8, store(), item(), delta)
            .prop_map(|(id, store, item, delta)| Op::Adjust(id, store, item, delta)),
        3 => (
            0..8u8,
            0..12u8,
            proptest::option::weighted(0.2, supplier()),
            vec((any::<u8>(), 0..15i64, prop_oneof![Just(80i64), Just(95i64)]), 1..=3),
            any::<bool>(),
        )
            .prop_map(|(id, delivery, sup, lines, keep)| Op::Correct(id, delivery, sup, lines, keep)),
    ]
}

/// Up to 80 ops, each at its own minute.
fn ops() -> impl Strategy<Value = Vec<(Op, i64)>> {
    vec((op(), minute()), 1..80)
}

fn at_minute(minute: i64) -> Timestamp {
    // 2026-03-01T00:00:00Z
    Timestamp::from_second(1_772_323_200 + minute * 60).expect("in range")
}
fn store_id(i: u8) -> StoreId {
    v(STORES[usize::from(i)].0)
}
fn item_id(i: u8) -> ItemId {
    v(ITEMS[usize::from(i) % ITEMS.len()].0)
}

/// The world's reference data, as commands.
fn registrations() -> Vec<Command> {
    let suppliers = SUPPLIERS[..2].iter().map(|s| Command::RegisterSupplier {
        supplier_id: v(s),
        name: v("supplier"),
    });
    let stores = STORES[..REGISTERED_STORES]
        .iter()
        .map(|(s, tz)| Command::RegisterStore {
            store_id: v(s),
            name: v("store"),
            timezone: v(tz),
        });
    let items = ITEMS[..REGISTERED_ITEMS]
        .iter()
        .map(|(i, s)| Command::RegisterItem {
            item_id: v(i),
            name: v("item"),
            supplier_id: v(s),
            unit_price_cents: cents(199),
        });
    suppliers.chain(stores).chain(items).collect()
}

/// The command an op stands for, given what the live state knows (returns name the sale's items).
fn command(op: &Op, minute: i64, state: &State) -> Command {
    match op {
        Op::Deliver(id, supplier, store, lines) => Command::RecordDelivery {
            delivery_id: v(&format!("d-{id}")),
            supplier_id: v(SUPPLIERS[usize::from(*supplier)]),
            store_id: store_id(*store),
            occurred_at: at_minute(minute),
            lines: lines
                .iter()
                .map(|(&i, &n)| DeliveryLine {
                    item_id: item_id(i),
                    quantity: q(n),
                    unit_cost_cents: cents(80),
                })
                .collect(),
        },
        Op::Sell(id, store, lines) => Command::RecordSale {
            sale_id: v(&format!("s-{id}")),
            store_id: store_id(*store),
            occurred_at: at_minute(minute),
            lines: lines
                .iter()
                .map(|(&i, &n)| SaleLine {
                    item_id: item_id(i),
                    quantity: q(n),
                    unit_price_cents: cents(199),
                    // Some lines discounted, by amounts that do not divide evenly; now and then
                    // by more than the line is worth (rejected).
                    discount_cents: cents(if id % 23 == 7 {
                        n * 199 + 1
                    } else {
                        (i64::from(i) * 37 + *id as i64) % (n * 199 + 1)
                    }),
                })
                .collect(),
            till_id: (id % 2 == 0).then(|| v(&format!("till-{}", id % 3))),
        },
        Op::Void(sale, only_store) => Command::VoidSale {
            sale_id: v(&format!("s-{sale}")),
            reason: v("void"),
            occurred_at: at_minute(minute),
            only_store: only_store.map(store_id),
        },
        Op::Return(id, sale, store, lines) => {
            let sale_id: SaleId = v(&format!("s-{sale}"));
            let known = state.sale(&sale_id);
            let mut picked: BTreeMap<ItemId, i64> = BTreeMap::new();
            for &(pick, n) in lines {
                let item = match known {
                    Some(s) => s.lines[usize::from(pick) % s.lines.len()].item_id.clone(),
                    None => item_id(pick),
                };
                picked.entry(item).or_insert(n);
            }
            let store_id = match (store, known) {
                (Some(i), _) => store_id(*i),
                (None, Some(s)) => s.store_id.clone(),
                (None, None) => store_id(0),
            };
            Command::RecordReturn {
                return_id: v(&format!("r-{id}")),
                sale_id,
                store_id,
                occurred_at: at_minute(minute),
                lines: picked
                    .into_iter()
                    .map(|(item_id, n)| ReturnLine {
                        item_id,
                        quantity: q(n),
                    })
                    .collect(),
            }
        }
        Op::Adjust(id, store, item, delta) => Command::AdjustStock {
            adjustment_id: v(&format!("a-{id}")),
            store_id: store_id(*store),
            item_id: item_id(*item),
            delta: StockDelta::new(*delta).expect("non-zero delta"),
            reason: AdjustmentReason::CountCorrection,
            occurred_at: at_minute(minute),
        },
        Op::Correct(id, delivery, supplier, lines, keep) => {
            let delivery_id: DeliveryId = v(&format!("d-{delivery}"));
            let known = state.delivery(&delivery_id).filter(|d| !d.lines.is_empty());
            let mut note: BTreeMap<ItemId, (i64, i64)> = BTreeMap::new();
            for &(pick, n, cost) in lines {
                let item = match known {
                    Some(d) if pick % 2 == 0 => d.lines[usize::from(pick / 2) % d.lines.len()]
                        .item_id
                        .clone(),
                    _ => item_id(pick),
                };
                note.entry(item).or_insert((n, cost));
            }
            if let (Some(d), true) = (known, keep) {
                for l in &d.lines {
                    note.entry(l.item_id.clone())
                        .or_insert((l.quantity.get(), l.unit_cost_cents.get()));
                }
            }
            Command::CorrectDelivery {
                correction_id: v(&format!("c-{id}")),
                delivery_id,
                reason: v("recount"),
                lines: note
                    .into_iter()
                    .map(|(item_id, (n, cost))| CorrectedLine {
                        item_id,
                        quantity: CorrectedQuantity::new(n).expect("0 to 14"),
                        unit_cost_cents: cents(cost),
                    })
                    .collect(),
                only_supplier: supplier.map(|s| v(SUPPLIERS[usize::from(s)])),
            }
        }
    }
}

/// A run: the live state, every accepted event in order, and the rejections met.
struct Run {
    live: State,
    accepted: Vec<Event>,
    rejected: Vec<RejectionCode>,
}

/// Decides each op against the live state, applying what is accepted; `after_step` sees each state.
fn run(ops: &[(Op, i64)], policy: StockPolicy, mut after_step: impl FnMut(&State)) -> Run {
    let mut r = Run {
        live: State::default(),
        accepted: Vec::new(),
        rejected: Vec::new(),
    };
    for cmd in registrations() {
        for e in decide(&r.live, &cmd, policy).expect("the world registers") {
            r.live.apply(&e);
            r.accepted.push(e);
        }
    }
    for (op, minute) in ops {
        let cmd = command(op, *minute, &r.live);
        match decide(&r.live, &cmd, policy) {
            Ok(events) => {
                for e in events {
                    r.live.apply(&e);
                    r.accepted.push(e);
                }
            }
            Err(rejection) => r.rejected.push(rejection.code),
        }
        after_step(&r.live);
    }
    r
}

fn policy(allow_negative: bool) -> StockPolicy {
    if allow_negative {
        StockPolicy::AllowNegative
    } else {
        StockPolicy::Reject
    }
}

/// Loads each stream on its own, in an order set by `seed`, each event as the next version.
fn replay_by_stream(events: &[Event], seed: u64) -> State {
    let mut streams: HashMap<StreamId, Vec<&Event>> = HashMap::new();
    for e in events {
        for s in e.streams() {
            streams.entry(s).or_default().push(e);
        }
    }
    let mut order: Vec<_> = streams.into_iter().collect();
    order.sort_by_cached_key(|(stream, _)| {
        let mut h = DefaultHasher::new();
        (seed, stream).hash(&mut h);
        h.finish()
    });
    let mut state = State::default();
    for (stream, events) in &order {
        for (version, e) in (1u64..).zip(events) {
            state.apply_to(stream, version, e);
        }
    }
    state
}

/// Deliveries − sales + voided sales + returns + adjustments, per store and item, from the events
/// alone. A void's quantities are taken from the sale it voids, not from the void.
fn movements(events: &[Event]) -> HashMap<(StoreId, ItemId), i64> {
    let mut m: HashMap<(StoreId, ItemId), i64> = HashMap::new();
    let mut sales: HashMap<SaleId, Vec<SoldLine>> = HashMap::new();
    let mut add = |store: &StoreId, item: &ItemId, n: i64| {
        *m.entry((store.clone(), item.clone())).or_default() += n;
    };
    for e in events {
        match e {
            Event::GoodsDelivered(d) => d
                .lines
                .iter()
                .for_each(|l| add(&d.store_id, &l.item_id, l.quantity.get())),
            Event::SaleRecorded(s) => {
                s.lines
                    .iter()
                    .for_each(|l| add(&s.store_id, &l.item_id, -l.quantity.get()));
                sales.insert(s.sale_id.clone(), s.lines.clone());
            }
            Event::SaleVoided(x) => {
                let lines = sales.get(&x.sale_id).expect("a void follows its sale");
                lines
                    .iter()
                    .for_each(|l| add(&x.store_id, &l.item_id, l.quantity.get()));
            }
            Event::ReturnRecorded(r) => r
                .lines
                .iter()
                .for_each(|l| add(&r.store_id, &l.item_id, l.quantity.get())),
            Event::StockAdjusted(a) => add(&a.store_id, &a.item_id, a.delta.get()),
            Event::DeliveryCorrected(c) => c
                .changes
                .iter()
                .for_each(|ch| add(&c.store_id, &ch.item_id, ch.quantity_change)),
            Event::SupplierRegistered(_) | Event::StoreRegistered(_) | Event::ItemRegistered(_) => {
            }
        }
    }
    m
}

/// A delivery's lines by item: (quantity, unit cost).
type Lines = BTreeMap<ItemId, (i64, i64)>;

fn lines_by_item<'l>(
    lines: impl IntoIterator<Item = &'l tally_domain::event::DeliveredLine>,
) -> Lines {
    lines
        .into_iter()
        .map(|l| {
            (
                l.item_id.clone(),
                (l.quantity.get(), l.unit_cost_cents.get()),
            )
        })
        .collect()
}

/// Checks each correction against a model of the deliveries' lines kept from the events alone, and
/// returns the model's lines per delivery at the end.
fn check_corrections(events: &[Event]) -> Result<HashMap<DeliveryId, Lines>, TestCaseError> {
    let mut deliveries: HashMap<DeliveryId, Lines> = HashMap::new();
    for e in events {
        match e {
            Event::GoodsDelivered(d) => {
                deliveries.insert(d.delivery_id.clone(), lines_by_item(&d.lines));
            }
            Event::DeliveryCorrected(c) => {
                let before = deliveries
                    .get(&c.delivery_id)
                    .cloned()
                    .ok_or_else(|| TestCaseError::fail("a correction follows its delivery"))?;
                let after = lines_by_item(&c.lines);
                let mut expected: BTreeMap<ItemId, (i64, i64)> = BTreeMap::new();
                for item in before.keys().chain(after.keys()) {
                    let (q0, c0) = before.get(item).copied().unwrap_or((0, 0));
                    let (q1, c1) = after.get(item).copied().unwrap_or((0, 0));
                    if (q0, c0) != (q1, c1) {
                        expected.insert(item.clone(), (q1 - q0, q1 * c1 - q0 * c0));
                    }
                }
                let got: BTreeMap<ItemId, (i64, i64)> = c
                    .changes
                    .iter()
                    .map(|ch| {
                        (
                            ch.item_id.clone(),
                            (ch.quantity_change, ch.cost_change_cents),
                        )
                    })
                    .collect();
                prop_assert_eq!(got.len(), c.changes.len(), "one change per item");
                prop_assert_eq!(&got, &expected, "correction {}", c.correction_id);
                prop_assert!(c.lines.iter().all(|l| l.quantity.get() > 0));
                deliveries.insert(c.delivery_id.clone(), after);
            }
            _ => {}
        }
    }
    Ok(deliveries)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn corrections_change_deliveries_by_the_difference(ops in ops(), allow_negative: bool) {
        let r = run(&ops, policy(allow_negative), |_| {});
        let model = check_corrections(&r.accepted)?;
        let live: HashMap<DeliveryId, Lines> = r
            .live
            .deliveries()
            .map(|(id, d)| (id.clone(), lines_by_item(&d.lines)))
            .collect();
        prop_assert_eq!(live, model);
    }

    #[test]
    fn replay_equals_live(ops in ops(), allow_negative: bool, seed: u64) {
        let r = run(&ops, policy(allow_negative), |_| {});
        let mut replayed = State::default();
        r.accepted.iter().for_each(|e| replayed.apply(e));
        prop_assert_eq!(&replayed, &r.live);
        prop_assert_eq!(&replay_by_stream(&r.accepted, seed), &r.live);
    }

    #[test]
    fn stock_never_goes_below_zero_under_reject(ops in ops()) {
        let mut lowest = 0;
        run(&ops, StockPolicy::Reject, |state| {
            for (_, store) in state.stores() {
                lowest = store.stock.values().copied().fold(lowest, i64::min);
            }
        });
        prop_assert!(lowest >= 0, "on hand went down to {}", lowest);
    }

    #[test]
    fn on_hand_equals_the_movements_of_the_accepted_events(ops in ops(), allow_negative: bool) {
        let r = run(&ops, policy(allow_negative), |_| {});
        let counted = movements(&r.accepted);
        let keys: HashSet<_> = counted.keys().cloned().collect();
        for (store, item) in &keys {
            prop_assert!(r.live.store(store).is_some(), "a movement names store {}", store);
            prop_assert!(r.live.item(item).is_some(), "a movement names item {}", item);
        }
        for (s, state) in r.live.stores() {
            for (i, _) in &ITEMS {
                let item: ItemId = v(i);
                let expected = counted.get(&(s.clone(), item.clone())).copied().unwrap_or(0);
                prop_assert_eq!(state.on_hand(&item), expected, "{} at {}", item, s);
            }
        }
    }
}

/// The generator is worth something only if it reaches every event type and every rejection.
#[test]
fn the_generator_reaches_every_event_and_rejection() {
    let mut runner = TestRunner::deterministic();
    let mut events = HashSet::new();
    let mut codes = HashSet::new();
    for _ in 0..200 {
        let ops = ops().new_tree(&mut runner).expect("generates").current();
        let r = run(&ops, StockPolicy::Reject, |_| {});
        events.extend(r.accepted.iter().map(Event::event_type));
        codes.extend(r.rejected);
    }
    assert_eq!(events.len(), 9, "event types reached: {events:?}");
    assert_eq!(
        codes.len(),
        RejectionCode::ALL.len(),
        "rejections reached: {codes:?}"
    );
}
