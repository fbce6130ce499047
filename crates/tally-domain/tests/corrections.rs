//! Given/when/then tests of delivery corrections: the corrected delivery note replaces the delivery's
//! lines as last corrected, and the stock moves by the difference.

mod common;

use common::*;
use tally_domain::{Command, Event, RejectionCode as C, StockPolicy, StreamId, decide};

/// The lines of a delivery as last corrected: (item, quantity, unit cost).
fn lines_of(state: &tally_domain::State, delivery: &str) -> Vec<(String, i64, i64)> {
    let d = state.delivery(&v(delivery)).expect("delivery exists");
    d.lines
        .iter()
        .map(|l| {
            (
                l.item_id.to_string(),
                l.quantity.get(),
                l.unit_cost_cents.get(),
            )
        })
        .collect()
}

fn owned(lines: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    lines
        .iter()
        .map(|&(i, n, c)| (i.to_owned(), n, c))
        .collect()
}

#[test]
fn a_correction_adds_a_line() {
    // d-2 brought 4 apples at 90; the note says 6 pears came too.
    let mut state = given(&plus(world(), &[delivered("d-2", "la", &[("apple", 4)])]));
    let note = [("apple", 4, 90), ("pear", 6, 80)];
    let cmd = correct("c-1", "d-2", None, &note);
    let expected = corrected("c-1", "d-2", "sup-a", "la", &note, &[("pear", 6, 480)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [4, 6]);
    assert_eq!(lines_of(&state, "d-2"), owned(&note));
}

#[test]
fn a_correction_removes_a_line_with_quantity_zero_or_by_leaving_it_out() {
    // d-1 brought 10 apples and 5 pears at 90; no pears came after all.
    let state = given(&stocked());
    let removed = corrected(
        "c-1",
        "d-1",
        "sup-a",
        "la",
        &[("apple", 10, 90)],
        &[("pear", -5, -450)],
    );
    let zero = correct("c-1", "d-1", None, &[("apple", 10, 90), ("pear", 0, 90)]);
    then_events(when(&state, &zero), std::slice::from_ref(&removed));
    // The note replaces the delivery's lines: an item it does not list is no longer delivered.
    let left_out = correct("c-1", "d-1", None, &[("apple", 10, 90)]);
    then_events(when(&state, &left_out), &[removed]);
    let mut after = state.clone();
    run(&mut after, &zero);
    assert_eq!(stock(&after, "la", &["apple", "pear"]), [10, 0]);
    assert_eq!(lines_of(&after, "d-1"), owned(&[("apple", 10, 90)]));
    // An item listed with 0 that the delivery never had changes nothing.
    let nothing = correct("c-2", "d-1", None, &[("apple", 10, 90), ("pear", 0, 90)]);
    match when(&after, &nothing).expect("accepted").as_slice() {
        [Event::DeliveryCorrected(e)] => assert!(e.changes.is_empty(), "{e:?}"),
        other => panic!("expected one correction, got {other:?}"),
    }
}

#[test]
fn a_correction_of_the_cost_only_moves_no_stock() {
    let mut state = given(&stocked());
    let note = [("apple", 10, 95), ("pear", 5, 90)];
    let cmd = correct("c-1", "d-1", None, &note);
    // 10 × 95 − 10 × 90.
    let expected = corrected("c-1", "d-1", "sup-a", "la", &note, &[("apple", 0, 50)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [10, 5]);
    assert_eq!(lines_of(&state, "d-1"), owned(&note));
}

#[test]
fn each_correction_is_relative_to_the_lines_as_last_corrected() {
    let mut state = given(&stocked());
    let first = [("apple", 8, 90), ("pear", 5, 90)];
    let cmd = correct("c-1", "d-1", None, &first);
    let expected = corrected("c-1", "d-1", "sup-a", "la", &first, &[("apple", -2, -180)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple"]), [8]);

    // From 8 at 90 (720) to 12 at 100 (1200), not from the delivery's 10.
    let second = [("apple", 12, 100), ("pear", 5, 90)];
    let cmd = correct("c-2", "d-1", None, &second);
    let expected = corrected("c-2", "d-1", "sup-a", "la", &second, &[("apple", 4, 480)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [12, 5]);
    assert_eq!(lines_of(&state, "d-1"), owned(&second));

    // The same lines again: accepted, and nothing changes.
    let cmd = correct("c-3", "d-1", None, &second);
    let expected = corrected("c-3", "d-1", "sup-a", "la", &second, &[]);
    then_events(when(&state, &cmd), &[expected]);
}

#[test]
fn a_correction_is_rejected_for_bad_references() {
    let state = given(&plus(
        stocked(),
        &[corrected(
            "c-1",
            "d-1",
            "sup-a",
            "la",
            &[("apple", 10, 90), ("pear", 5, 90)],
            &[],
        )],
    ));
    let good = [("apple", 9, 90)];
    then_rejects(
        &state,
        &[
            (correct("c-2", "d-9", None, &good), C::UnknownDelivery),
            (correct("c-1", "d-1", None, &good), C::DuplicateId),
            // A correction id is used once, whatever it corrects.
            (correct("c-1", "d-9", None, &good), C::DuplicateId),
            (
                correct("c-2", "d-1", None, &[("apple", 9, 90), ("kiwi", 1, 90)]),
                C::UnknownItem,
            ),
            (
                correct("c-2", "d-1", None, &[("apple", 9, 90), ("bolt", 1, 90)]),
                C::ItemNotFromSupplier,
            ),
            // Even with quantity 0: the note names an item the supplier does not supply.
            (
                correct("c-2", "d-1", None, &[("bolt", 0, 90)]),
                C::ItemNotFromSupplier,
            ),
            (
                correct("c-2", "d-1", None, &[("apple", 9, 90), ("apple", 1, 90)]),
                C::DuplicateId,
            ),
        ],
    );
}

#[test]
fn a_supplier_key_corrects_only_its_own_deliveries() {
    let state = given(&plus(
        stocked(),
        &[delivered("d-b", "tokyo", &[("bolt", 3)])],
    ));
    let cmd = correct(
        "c-1",
        "d-1",
        Some("sup-a"),
        &[("apple", 9, 90), ("pear", 5, 90)],
    );
    assert!(when(&state, &cmd).is_ok(), "sup-a corrects its own d-1");
    then_rejects(
        &state,
        &[
            // Another supplier's delivery does not exist for it.
            (
                correct("c-1", "d-1", Some("sup-b"), &[("apple", 9, 90)]),
                C::UnknownDelivery,
            ),
            (
                correct("c-1", "d-b", Some("sup-a"), &[("bolt", 1, 90)]),
                C::UnknownDelivery,
            ),
        ],
    );
    assert!(
        when(
            &state,
            &correct("c-1", "d-b", Some("sup-b"), &[("bolt", 1, 90)])
        )
        .is_ok()
    );
}

#[test]
fn a_correction_never_takes_stock_below_zero_under_reject() {
    // 10 apples came, 3 were sold: 7 on hand, so the delivery can shrink to 3 apples, not to 2.
    let state = given(&with_sale());
    let to = |apples: i64| {
        correct(
            "c-1",
            "d-1",
            None,
            &[("apple", apples, 90), ("pear", 5, 90)],
        )
    };
    then_rejects(&state, &[(to(2), C::InsufficientStock)]);
    // Removing all 5 pears when 3 are left is too much as well.
    then_rejects(
        &state,
        &[(
            correct("c-1", "d-1", None, &[("apple", 10, 90)]),
            C::InsufficientStock,
        )],
    );
    let mut at_zero = state.clone();
    run(&mut at_zero, &to(3));
    assert_eq!(stock(&at_zero, "la", &["apple"]), [0]);

    // Allowed under allow-negative, and the stock goes negative.
    let mut negative = state.clone();
    let events = decide(&negative, &to(2), StockPolicy::AllowNegative).expect("accepted");
    events.iter().for_each(|e| negative.apply(e));
    assert_eq!(stock(&negative, "la", &["apple"]), [-1]);
}

#[test]
fn a_correction_reads_and_joins_the_streams_of_its_delivery() {
    let state = given(&stocked());
    let cmd = correct("c-1", "d-1", None, &[("apple", 9, 90)]);
    let s = |raw: &str| StreamId::from_stored(raw);
    assert_eq!(
        cmd.streams_read(),
        [s("correction-c-1"), s("delivery-d-1"), s("item-apple")]
    );
    assert_eq!(cmd.dependent_streams(&state), [s("store-la")]);
    assert!(cmd.dependent_streams(&given(&world())).is_empty());
    assert_eq!(cmd.partition_key(), "delivery:d-1");
    assert_eq!(cmd.kind(), "correct_delivery");
    assert_eq!(Command::KINDS[cmd.kind_index()], "correct_delivery");
    let events = when(&state, &cmd).expect("accepted");
    assert_eq!(
        events[0].streams(),
        [s("correction-c-1"), s("delivery-d-1"), s("store-la")]
    );
}

#[test]
fn a_correction_is_stored_as_this_json() {
    let event = corrected(
        "c-1",
        "d-1",
        "sup-a",
        "la",
        &[("apple", 7, 90)],
        &[("apple", -3, -270), ("pear", -5, -450)],
    );
    assert_eq!(event.event_type(), "DeliveryCorrected");
    let json: serde_json::Value = serde_json::from_str(&event.encode()).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({
            "correction_id": "c-1",
            "delivery_id": "d-1",
            "supplier_id": "sup-a",
            "store_id": "la",
            "business_date": "2026-03-01",
            "reason": "miscounted",
            "lines": [{"item_id": "apple", "quantity": 7, "unit_cost_cents": 90}],
            "changes": [
                {"item_id": "apple", "quantity_change": -3, "cost_change_cents": -270},
                {"item_id": "pear", "quantity_change": -5, "cost_change_cents": -450}
            ]
        })
    );
    let back = Event::decode("DeliveryCorrected", event.schema_version(), &event.encode());
    assert_eq!(back.expect("decodes"), event);
}
