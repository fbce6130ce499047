//! Fixtures shared by the test binaries: values from text, event and command builders over a small
//! retail world, and the given/when/then helpers. Each binary uses only part of it.
#![allow(dead_code)]

use std::fmt::Debug;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use tally_domain::event::{
    DeliveredLine, DeliveryCorrected, DeliveryLineChange, GoodsDelivered, ItemRegistered,
    ReturnRecorded, SaleRecorded, SaleVoided, SoldLine, StockAdjusted, StoreRegistered,
    SupplierRegistered,
};
use tally_domain::values::{AdjustmentReason, Cents, CorrectedQuantity, Quantity, StockDelta};
use tally_domain::{
    Command, CorrectedLine, DeliveryLine, Event, Rejection, RejectionCode, ReturnLine, SaleLine,
    State, StockPolicy, decide,
};

// ---- values -------------------------------------------------------------------------------------

/// Any id, name or time zone from its raw text.
pub fn v<T: TryFrom<String, Error: Debug>>(raw: &str) -> T {
    T::try_from(raw.to_owned()).expect("test values are valid")
}
pub fn q(n: i64) -> Quantity {
    Quantity::new(n).expect("test quantities are valid")
}
pub fn cents(n: i64) -> Cents {
    Cents::new(n).expect("test amounts are valid")
}
pub fn at(raw: &str) -> Timestamp {
    raw.parse().expect("test timestamps are valid")
}
/// Noon in Los Angeles on 2026-03-01, the default business time.
pub const T0: &str = "2026-03-01T12:00:00-08:00";
pub const D0: Date = date(2026, 3, 1);
pub const PRICE: i64 = 250;

pub fn supplier_of(item: &str) -> &'static str {
    if item == "bolt" { "sup-b" } else { "sup-a" }
}

// ---- events -------------------------------------------------------------------------------------

pub fn supplier_registered(id: &str) -> Event {
    Event::SupplierRegistered(SupplierRegistered {
        supplier_id: v(id),
        name: v("A supplier"),
    })
}
pub fn store_registered(id: &str, tz: &str) -> Event {
    Event::StoreRegistered(StoreRegistered {
        store_id: v(id),
        name: v("A store"),
        timezone: v(tz),
    })
}
pub fn item_registered(id: &str) -> Event {
    Event::ItemRegistered(ItemRegistered {
        item_id: v(id),
        name: v("An item"),
        supplier_id: v(supplier_of(id)),
        unit_price_cents: cents(PRICE),
    })
}
pub fn delivered(id: &str, store: &str, lines: &[(&str, i64)]) -> Event {
    Event::GoodsDelivered(GoodsDelivered {
        delivery_id: v(id),
        supplier_id: v(supplier_of(lines[0].0)),
        store_id: v(store),
        business_date: D0,
        lines: lines
            .iter()
            .map(|&(item, n)| DeliveredLine {
                item_id: v(item),
                quantity: q(n),
                unit_cost_cents: cents(90),
            })
            .collect(),
    })
}
pub fn sold_lines(lines: &[(&str, i64)]) -> Vec<SoldLine> {
    lines
        .iter()
        .map(|&(item, n)| SoldLine {
            item_id: v(item),
            supplier_id: v(supplier_of(item)),
            quantity: q(n),
            unit_price_cents: cents(PRICE),
            discount_cents: cents(0),
        })
        .collect()
}
pub fn sold(id: &str, store: &str, lines: &[(&str, i64)]) -> Event {
    Event::SaleRecorded(SaleRecorded {
        sale_id: v(id),
        store_id: v(store),
        business_date: D0,
        lines: sold_lines(lines),
        till_id: None,
    })
}
pub fn voided(id: &str, store: &str, lines: &[(&str, i64)]) -> Event {
    Event::SaleVoided(SaleVoided {
        sale_id: v(id),
        store_id: v(store),
        reason: v("mistake"),
        sale_business_date: D0,
        lines: sold_lines(lines),
        till_id: None,
    })
}
pub fn returned(id: &str, sale: &str, store: &str, lines: &[(&str, i64)]) -> Event {
    Event::ReturnRecorded(ReturnRecorded {
        return_id: v(id),
        sale_id: v(sale),
        store_id: v(store),
        business_date: D0,
        lines: sold_lines(lines),
    })
}
pub fn adjusted(id: &str, store: &str, item: &str, delta: i64) -> Event {
    Event::StockAdjusted(StockAdjusted {
        adjustment_id: v(id),
        store_id: v(store),
        item_id: v(item),
        delta: StockDelta::new(delta).expect("valid delta"),
        reason: AdjustmentReason::CountCorrection,
        business_date: D0,
    })
}

/// A correction of delivery `delivery` (of `supplier` to `store`, on [`D0`]) to `lines` of
/// (item, quantity, unit cost), with these changes of (item, quantity change, cost change).
pub fn corrected(
    id: &str,
    delivery: &str,
    supplier: &str,
    store: &str,
    lines: &[(&str, i64, i64)],
    changes: &[(&str, i64, i64)],
) -> Event {
    Event::DeliveryCorrected(DeliveryCorrected {
        correction_id: v(id),
        delivery_id: v(delivery),
        supplier_id: v(supplier),
        store_id: v(store),
        business_date: D0,
        reason: v("miscounted"),
        lines: lines
            .iter()
            .map(|&(item, n, cost)| DeliveredLine {
                item_id: v(item),
                quantity: q(n),
                unit_cost_cents: cents(cost),
            })
            .collect(),
        changes: changes
            .iter()
            .map(
                |&(item, quantity_change, cost_change_cents)| DeliveryLineChange {
                    item_id: v(item),
                    quantity_change,
                    cost_change_cents,
                },
            )
            .collect(),
    })
}

/// Two suppliers, three stores in three zones, three items: apple and pear of sup-a, bolt of sup-b.
pub fn world() -> Vec<Event> {
    vec![
        supplier_registered("sup-a"),
        supplier_registered("sup-b"),
        store_registered("la", "America/Los_Angeles"),
        store_registered("tokyo", "Asia/Tokyo"),
        store_registered("berlin", "Europe/Berlin"),
        item_registered("apple"),
        item_registered("pear"),
        item_registered("bolt"),
    ]
}
/// The world, with 10 apples and 5 pears delivered to la.
pub fn stocked() -> Vec<Event> {
    let mut e = world();
    e.push(delivered("d-1", "la", &[("apple", 10), ("pear", 5)]));
    e
}
/// Stocked, and sale s-1 of 3 apples and 2 pears at la.
pub fn with_sale() -> Vec<Event> {
    let mut e = stocked();
    e.push(sold("s-1", "la", &[("apple", 3), ("pear", 2)]));
    e
}
pub fn plus(mut events: Vec<Event>, more: &[Event]) -> Vec<Event> {
    events.extend_from_slice(more);
    events
}

// ---- commands -----------------------------------------------------------------------------------

pub fn deliver(id: &str, supplier: &str, store: &str, lines: &[(&str, i64)]) -> Command {
    Command::RecordDelivery {
        delivery_id: v(id),
        supplier_id: v(supplier),
        store_id: v(store),
        occurred_at: at(T0),
        lines: lines
            .iter()
            .map(|&(item, n)| DeliveryLine {
                item_id: v(item),
                quantity: q(n),
                unit_cost_cents: cents(90),
            })
            .collect(),
    }
}
pub fn sell_at(id: &str, store: &str, when: &str, lines: &[(&str, i64)]) -> Command {
    Command::RecordSale {
        sale_id: v(id),
        store_id: v(store),
        occurred_at: at(when),
        lines: lines
            .iter()
            .map(|&(item, n)| SaleLine {
                item_id: v(item),
                quantity: q(n),
                unit_price_cents: cents(PRICE),
                discount_cents: cents(0),
            })
            .collect(),
        till_id: None,
    }
}
pub fn sell(id: &str, store: &str, lines: &[(&str, i64)]) -> Command {
    sell_at(id, store, T0, lines)
}
pub fn void(sale: &str, only_store: Option<&str>) -> Command {
    Command::VoidSale {
        sale_id: v(sale),
        reason: v("mistake"),
        occurred_at: at(T0),
        only_store: only_store.map(v),
    }
}
pub fn ret(id: &str, sale: &str, store: &str, lines: &[(&str, i64)]) -> Command {
    Command::RecordReturn {
        return_id: v(id),
        sale_id: v(sale),
        store_id: v(store),
        occurred_at: at(T0),
        lines: lines
            .iter()
            .map(|&(item, n)| ReturnLine {
                item_id: v(item),
                quantity: q(n),
            })
            .collect(),
    }
}
pub fn adjust(id: &str, store: &str, item: &str, delta: i64) -> Command {
    Command::AdjustStock {
        adjustment_id: v(id),
        store_id: v(store),
        item_id: v(item),
        delta: StockDelta::new(delta).expect("valid delta"),
        reason: AdjustmentReason::CountCorrection,
        occurred_at: at(T0),
    }
}

/// A correction of `delivery` to the note `lines` of (item, quantity, unit cost); `only_supplier` is
/// the scope of a supplier key.
pub fn correct(
    id: &str,
    delivery: &str,
    only_supplier: Option<&str>,
    lines: &[(&str, i64, i64)],
) -> Command {
    Command::CorrectDelivery {
        correction_id: v(id),
        delivery_id: v(delivery),
        reason: v("miscounted"),
        lines: lines
            .iter()
            .map(|&(item, n, cost)| CorrectedLine {
                item_id: v(item),
                quantity: CorrectedQuantity::new(n).expect("valid corrected quantity"),
                unit_cost_cents: cents(cost),
            })
            .collect(),
        only_supplier: only_supplier.map(v),
    }
}

// ---- given / when / then ------------------------------------------------------------------------

pub fn given(events: &[Event]) -> State {
    let mut state = State::default();
    events.iter().for_each(|e| state.apply(e));
    state
}
pub fn when(state: &State, cmd: &Command) -> Result<Vec<Event>, Rejection> {
    decide(state, cmd, StockPolicy::Reject)
}
pub fn then_events(result: Result<Vec<Event>, Rejection>, expected: &[Event]) {
    assert_eq!(result.expect("the command is accepted"), expected);
}
/// Each command is rejected with its code.
pub fn then_rejects(state: &State, cases: &[(Command, RejectionCode)]) {
    for (cmd, code) in cases {
        match when(state, cmd) {
            Err(r) => assert_eq!(r.code, *code, "{cmd:?} was rejected with: {}", r.message),
            Ok(events) => panic!("{cmd:?} should be {}, got {events:?}", code.as_str()),
        }
    }
}
/// A store's on-hand quantity of each item.
pub fn stock(state: &State, store: &str, items: &[&str]) -> Vec<i64> {
    let store = state.store(&v(store)).expect("store exists");
    items.iter().map(|i| store.on_hand(&v(i))).collect()
}
/// The state after `with_sale` and then `more`.
pub fn after_sale(more: &[Event]) -> State {
    given(&plus(with_sale(), more))
}
/// Decides under `Reject` and applies what was decided.
pub fn run(state: &mut State, cmd: &Command) {
    for e in when(state, cmd).expect("the command is accepted") {
        state.apply(&e);
    }
}
