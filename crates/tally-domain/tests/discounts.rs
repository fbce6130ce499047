//! Discounts and tills (sale schema version 2): the discount is carried by every line that moves
//! money, a void takes it back, and returns refund what the customer paid by the contract's rule.

mod common;

use common::*;
use proptest::prelude::*;
use tally_domain::decide::refund_cents;
use tally_domain::event::SoldLine;
use tally_domain::{Command, Event, RejectionCode as C, SaleLine, State};

fn sell_discounted(id: &str, lines: &[(&str, i64, i64)], till: Option<&str>) -> Command {
    Command::RecordSale {
        sale_id: v(id),
        store_id: v("la"),
        occurred_at: at(T0),
        lines: lines
            .iter()
            .map(|&(item, n, discount)| SaleLine {
                item_id: v(item),
                quantity: q(n),
                unit_price_cents: cents(PRICE),
                discount_cents: cents(discount),
            })
            .collect(),
        till_id: till.map(v),
    }
}

fn decided(state: &mut State, cmd: &Command) -> Event {
    let events = when(state, cmd).expect("accepted");
    assert_eq!(events.len(), 1);
    state.apply(&events[0]);
    events.into_iter().next().expect("one event")
}

fn lines_of(e: &Event) -> &[SoldLine] {
    match e {
        Event::SaleRecorded(e) => &e.lines,
        Event::SaleVoided(e) => &e.lines,
        Event::ReturnRecorded(e) => &e.lines,
        other => panic!("not a sale's event: {other:?}"),
    }
}

#[test]
fn a_sale_carries_its_discounts_and_till_and_a_void_takes_both_back() {
    let mut state = given(&stocked());
    let sale = decided(
        &mut state,
        &sell_discounted("s-1", &[("apple", 3, 100), ("pear", 1, 0)], Some("till-4")),
    );
    let Event::SaleRecorded(recorded) = &sale else {
        panic!("{sale:?}")
    };
    assert_eq!(
        recorded.till_id.as_ref().map(|t| t.as_str()),
        Some("till-4")
    );
    let paid: Vec<i64> = recorded.lines.iter().map(SoldLine::paid_cents).collect();
    assert_eq!(paid, [3 * PRICE - 100, PRICE]);
    let void = decided(&mut state, &void("s-1", None));
    let Event::SaleVoided(voided) = &void else {
        panic!("{void:?}")
    };
    assert_eq!(voided.lines, recorded.lines);
    assert_eq!(voided.till_id, recorded.till_id);
}

#[test]
fn a_discount_beyond_the_line_is_rejected_and_the_whole_line_may_be_free() {
    let state = given(&stocked());
    then_rejects(
        &state,
        &[(
            sell_discounted("s-1", &[("apple", 2, 2 * PRICE + 1)], None),
            C::DiscountExceedsLine,
        )],
    );
    let free = when(
        &state,
        &sell_discounted("s-1", &[("apple", 2, 2 * PRICE)], None),
    );
    let events = free.expect("a free line is a sale");
    assert_eq!(lines_of(&events[0])[0].paid_cents(), 0);
}

#[test]
fn partial_returns_refund_the_paid_share_and_a_full_return_exactly_what_was_paid() {
    let mut state = given(&stocked());
    // 3 apples at 250, 100 off: 650 paid, so 216.67 a unit.
    decided(
        &mut state,
        &sell_discounted("s-1", &[("apple", 3, 100)], None),
    );
    let refunds: Vec<i64> = ["r-1", "r-2", "r-3"]
        .iter()
        .map(|id| {
            let e = decided(&mut state, &ret(id, "s-1", "la", &[("apple", 1)]));
            let line = &lines_of(&e)[0];
            assert_eq!(line.amount_cents(), PRICE, "returned at the sale's price");
            line.paid_cents()
        })
        .collect();
    // floor(650 × 1/3) = 216, floor(650 × 2/3) = 433, 650.
    assert_eq!(refunds, [216, 217, 217]);
    assert_eq!(refunds.iter().sum::<i64>(), 650);
}

#[test]
fn undiscounted_returns_refund_the_list_price() {
    let mut state = given(&stocked());
    decided(
        &mut state,
        &sell_discounted("s-1", &[("apple", 4, 0)], None),
    );
    let e = decided(&mut state, &ret("r-1", "s-1", "la", &[("apple", 3)]));
    assert_eq!(lines_of(&e)[0].paid_cents(), 3 * PRICE);
    assert_eq!(lines_of(&e)[0].discount_cents.get(), 0);
}

proptest! {
    /// Any split of a line into returns refunds, in total, floor(paid × R / q) after R units, never
    /// more than the units' list value each time, and exactly what was paid once all are back.
    #[test]
    fn refunds_of_any_split_follow_the_rule(
        q_units in 1i64..50,
        price in 0i64..100_000,
        discount_share in 0u32..=100,
        cuts in proptest::collection::vec(1i64..10, 1..20),
    ) {
        let list = q_units * price;
        let discount = list * i64::from(discount_share) / 100;
        let line = SoldLine {
            item_id: v("apple"),
            supplier_id: v("sup-a"),
            quantity: q(q_units),
            unit_price_cents: cents(price),
            discount_cents: cents(discount),
        };
        let paid = list - discount;
        let (mut before, mut total) = (0i64, 0i64);
        for cut in cuts {
            let units = cut.min(q_units - before);
            if units == 0 {
                break;
            }
            let refund = refund_cents(&line, before, units);
            prop_assert!(refund >= 0 && refund <= units * price, "{refund} for {units}");
            before += units;
            total += refund;
            prop_assert_eq!(total, paid * before / q_units);
        }
        if before == q_units {
            prop_assert_eq!(total, paid);
        } else {
            let rest = refund_cents(&line, before, q_units - before);
            prop_assert_eq!(total + rest, paid);
        }
    }
}
