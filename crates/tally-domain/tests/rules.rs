//! Given/when/then tests of the business rules: given some events, when a command is decided, then
//! these events follow or the command is rejected with this code.

mod common;

use common::*;
use jiff::civil::{Date, date};
use tally_domain::event::DecodeError;
use tally_domain::{Command, Event, RejectionCode as C, StockPolicy, decide};

// ---- reference data -----------------------------------------------------------------------------

#[test]
fn registrations_are_accepted_once() {
    let reg_sup = Command::RegisterSupplier {
        supplier_id: v("sup-a"),
        name: v("A supplier"),
    };
    let reg_store = Command::RegisterStore {
        store_id: v("la"),
        name: v("A store"),
        timezone: v("America/Los_Angeles"),
    };
    let reg_item = |id: &str, sup: &str| Command::RegisterItem {
        item_id: v(id),
        name: v("An item"),
        supplier_id: v(sup),
        unit_price_cents: cents(PRICE),
    };
    then_events(when(&given(&[]), &reg_sup), &[supplier_registered("sup-a")]);
    let la = store_registered("la", "America/Los_Angeles");
    then_events(when(&given(&[]), &reg_store), &[la]);
    let suppliers_only = given(&world()[..2]);
    let bolt = reg_item("bolt", "sup-b");
    then_events(when(&suppliers_only, &bolt), &[item_registered("bolt")]);
    then_rejects(
        &given(&world()),
        &[
            (reg_sup, C::DuplicateId),
            (reg_store, C::DuplicateId),
            (bolt, C::DuplicateId),
            (reg_item("nail", "sup-x"), C::UnknownSupplier),
        ],
    );
}

// ---- deliveries ---------------------------------------------------------------------------------

#[test]
fn a_delivery_is_recorded_and_adds_stock() {
    let mut state = given(&world());
    let cmd = deliver("d-1", "sup-a", "la", &[("apple", 10), ("pear", 5)]);
    let expected = delivered("d-1", "la", &[("apple", 10), ("pear", 5)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [10, 5]);
    assert_eq!(stock(&state, "tokyo", &["apple", "pear"]), [0, 0]);
}

#[test]
fn a_delivery_is_rejected_for_bad_references() {
    then_rejects(
        &given(&stocked()),
        &[
            (
                deliver("d-1", "sup-a", "tokyo", &[("apple", 1)]),
                C::DuplicateId,
            ),
            (
                deliver("d-2", "sup-x", "la", &[("apple", 1)]),
                C::UnknownSupplier,
            ),
            (
                deliver("d-2", "sup-a", "paris", &[("apple", 1)]),
                C::UnknownStore,
            ),
            (
                deliver("d-2", "sup-a", "la", &[("apple", 1), ("kiwi", 1)]),
                C::UnknownItem,
            ),
            (
                deliver("d-2", "sup-a", "la", &[("bolt", 1)]),
                C::ItemNotFromSupplier,
            ),
            (
                deliver("d-2", "sup-b", "la", &[("bolt", 1), ("pear", 1)]),
                C::ItemNotFromSupplier,
            ),
        ],
    );
}

// ---- sales --------------------------------------------------------------------------------------

#[test]
fn a_sale_is_recorded_with_suppliers_and_takes_stock() {
    let mut state = given(&stocked());
    let cmd = sell("s-1", "la", &[("apple", 3), ("pear", 5)]);
    then_events(
        when(&state, &cmd),
        &[sold("s-1", "la", &[("apple", 3), ("pear", 5)])],
    );
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [7, 0]);
}

#[test]
fn a_sale_is_rejected_for_bad_references_and_missing_stock() {
    // with_sale leaves 7 apples and 3 pears at la, nothing elsewhere.
    let state = given(&with_sale());
    then_rejects(
        &state,
        &[
            // Sale ids are unique across stores.
            (sell("s-1", "tokyo", &[("apple", 1)]), C::DuplicateId),
            (sell("s-2", "paris", &[("apple", 1)]), C::UnknownStore),
            (
                sell("s-2", "la", &[("apple", 1), ("kiwi", 1)]),
                C::UnknownItem,
            ),
            (
                sell("s-2", "la", &[("apple", 7), ("pear", 4)]),
                C::InsufficientStock,
            ),
            (sell("s-2", "la", &[("bolt", 1)]), C::InsufficientStock),
            (sell("s-2", "tokyo", &[("apple", 1)]), C::InsufficientStock),
        ],
    );
    assert!(when(&state, &sell("s-2", "la", &[("apple", 7), ("pear", 3)])).is_ok());
}

#[test]
fn allow_negative_accepts_a_sale_beyond_stock() {
    let mut state = given(&stocked());
    let cmd = sell("s-1", "la", &[("apple", 12), ("bolt", 2)]);
    let events = decide(&state, &cmd, StockPolicy::AllowNegative).expect("accepted");
    assert_eq!(events, [sold("s-1", "la", &[("apple", 12), ("bolt", 2)])]);
    events.iter().for_each(|e| state.apply(e));
    assert_eq!(stock(&state, "la", &["apple", "bolt"]), [-2, -2]);
}

// ---- voids --------------------------------------------------------------------------------------

#[test]
fn a_void_reverses_the_sale_and_puts_stock_back() {
    let mut state = given(&with_sale());
    let expected = voided("s-1", "la", &[("apple", 3), ("pear", 2)]);
    then_events(
        when(&state, &void("s-1", None)),
        std::slice::from_ref(&expected),
    );
    // A store key may void its own store's sale.
    then_events(when(&state, &void("s-1", Some("la"))), &[expected]);
    run(&mut state, &void("s-1", None));
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [10, 5]);
    assert!(state.sale(&v("s-1")).expect("sale exists").voided);
}

#[test]
fn a_void_is_rejected_when_the_sale_cannot_be_voided() {
    then_rejects(
        &given(&with_sale()),
        &[
            (void("s-9", None), C::UnknownSale),
            // Another store's sale does not exist for a store-scoped void.
            (void("s-1", Some("tokyo")), C::UnknownSale),
            (void("s-9", Some("la")), C::UnknownSale),
        ],
    );
    let twice = after_sale(&[voided("s-1", "la", &[("apple", 3), ("pear", 2)])]);
    then_rejects(&twice, &[(void("s-1", None), C::SaleVoided)]);
    let with_return = after_sale(&[returned("r-1", "s-1", "la", &[("pear", 1)])]);
    then_rejects(&with_return, &[(void("s-1", None), C::SaleHasReturns)]);
}

// ---- returns ------------------------------------------------------------------------------------

#[test]
fn a_return_refunds_at_the_sale_price_and_puts_stock_back() {
    let mut state = after_sale(&[returned("r-1", "s-1", "la", &[("apple", 1)])]);
    let cmd = ret("r-2", "s-1", "la", &[("apple", 2), ("pear", 2)]);
    let expected = returned("r-2", "s-1", "la", &[("apple", 2), ("pear", 2)]);
    then_events(when(&state, &cmd), &[expected]);
    run(&mut state, &cmd);
    assert_eq!(stock(&state, "la", &["apple", "pear"]), [10, 5]);
    let sale = state.sale(&v("s-1")).expect("sale exists");
    assert_eq!(
        [sale.returned_of(&v("apple")), sale.returned_of(&v("pear"))],
        [3, 2]
    );
}

#[test]
fn a_return_is_rejected_for_bad_references() {
    let state = after_sale(&[returned("r-1", "s-1", "la", &[("apple", 1)])]);
    then_rejects(
        &state,
        &[
            (ret("r-1", "s-1", "la", &[("apple", 1)]), C::DuplicateId),
            (ret("r-2", "s-1", "paris", &[("apple", 1)]), C::UnknownStore),
            (ret("r-2", "s-9", "la", &[("apple", 1)]), C::UnknownSale),
            // A sale of another store is unknown to this store.
            (ret("r-2", "s-1", "tokyo", &[("apple", 1)]), C::UnknownSale),
            (ret("r-2", "s-1", "la", &[("kiwi", 1)]), C::UnknownItem),
        ],
    );
}

#[test]
fn a_return_cannot_exceed_what_is_left_of_the_sale() {
    // s-1 sold 3 apples and 2 pears.
    then_rejects(
        &given(&with_sale()),
        &[
            (
                ret("r-1", "s-1", "la", &[("apple", 4)]),
                C::ReturnExceedsSale,
            ),
            (
                ret("r-1", "s-1", "la", &[("pear", 1), ("apple", 4)]),
                C::ReturnExceedsSale,
            ),
            // An item the sale did not sell.
            (
                ret("r-1", "s-1", "la", &[("bolt", 1)]),
                C::ReturnExceedsSale,
            ),
        ],
    );
    // Cumulative over two returns: after 2 of 3 apples came back, 2 more is too many, 1 is fine.
    let after_one = after_sale(&[returned("r-1", "s-1", "la", &[("apple", 2)])]);
    let too_many = ret("r-2", "s-1", "la", &[("apple", 2)]);
    then_rejects(&after_one, &[(too_many, C::ReturnExceedsSale)]);
    assert!(when(&after_one, &ret("r-2", "s-1", "la", &[("apple", 1)])).is_ok());
    let all_back = after_sale(&[returned("r-1", "s-1", "la", &[("apple", 3)])]);
    let one_more = ret("r-2", "s-1", "la", &[("apple", 1)]);
    then_rejects(&all_back, &[(one_more, C::ReturnExceedsSale)]);
}

#[test]
fn a_voided_sale_cannot_be_returned() {
    let state = after_sale(&[voided("s-1", "la", &[("apple", 3), ("pear", 2)])]);
    let cmd = ret("r-1", "s-1", "la", &[("apple", 1)]);
    then_rejects(&state, &[(cmd, C::SaleVoided)]);
}

// ---- stock adjustments --------------------------------------------------------------------------

#[test]
fn adjustments_move_stock_but_never_below_zero() {
    let mut state = given(&stocked());
    let all_apples = adjust("a-1", "la", "apple", -10);
    then_events(
        when(&state, &all_apples),
        &[adjusted("a-1", "la", "apple", -10)],
    );
    then_rejects(
        &state,
        &[
            (adjust("a-1", "la", "apple", -11), C::InsufficientStock),
            (adjust("a-1", "tokyo", "bolt", -1), C::InsufficientStock),
        ],
    );
    run(&mut state, &adjust("a-1", "la", "apple", -4));
    run(&mut state, &adjust("a-2", "tokyo", "bolt", 7));
    assert_eq!(stock(&state, "la", &["apple"]), [6]);
    assert_eq!(stock(&state, "tokyo", &["bolt"]), [7]);
    then_rejects(
        &state,
        &[
            (adjust("a-1", "la", "apple", 1), C::DuplicateId),
            (adjust("a-3", "paris", "apple", 1), C::UnknownStore),
            (adjust("a-3", "la", "kiwi", 1), C::UnknownItem),
        ],
    );
}

// ---- business dates -----------------------------------------------------------------------------

fn business_date_of_sale(store: &str, when_: &str) -> Date {
    let events = plus(world(), &[delivered("d-1", store, &[("apple", 1)])]);
    match when(
        &given(&events),
        &sell_at("s-1", store, when_, &[("apple", 1)]),
    )
    .as_deref()
    {
        Ok([Event::SaleRecorded(e)]) => e.business_date,
        other => panic!("expected one sale, got {other:?}"),
    }
}

#[test]
fn the_business_date_is_the_store_local_date() {
    let cases = [
        // 07:30 UTC on the 2nd is still the evening of the 1st in Los Angeles.
        ("la", "2026-03-01T23:30:00-08:00", date(2026, 3, 1)),
        ("la", "2026-03-02T07:59:59Z", date(2026, 3, 1)),
        ("la", "2026-03-02T08:00:00Z", date(2026, 3, 2)),
        // After the switch to daylight time (2026-03-08), Los Angeles is UTC-7.
        ("la", "2026-03-10T06:30:00Z", date(2026, 3, 9)),
        ("la", "2026-03-10T07:30:00Z", date(2026, 3, 10)),
        // Tokyo is 9 hours ahead: 15:00 UTC is already midnight of the next day.
        ("tokyo", "2026-03-01T14:59:59Z", date(2026, 3, 1)),
        ("tokyo", "2026-03-01T15:00:00Z", date(2026, 3, 2)),
        ("tokyo", "2026-03-01T23:30:00-08:00", date(2026, 3, 2)),
        // Berlin: UTC+1 in winter, UTC+2 in summer.
        ("berlin", "2026-01-31T23:30:00Z", date(2026, 2, 1)),
        ("berlin", "2026-06-30T21:30:00Z", date(2026, 6, 30)),
        ("berlin", "2026-06-30T22:30:00Z", date(2026, 7, 1)),
    ];
    for (store, at, expected) in cases {
        assert_eq!(
            business_date_of_sale(store, at),
            expected,
            "{store} at {at}"
        );
    }
}

#[test]
fn deliveries_returns_and_adjustments_use_the_store_local_date_too() {
    let state = given(&with_sale());
    let late = at("2026-03-01T23:30:00-08:00");
    let mut cmds = [
        deliver("d-2", "sup-a", "la", &[("apple", 1)]),
        ret("r-1", "s-1", "la", &[("apple", 1)]),
        adjust("a-1", "la", "apple", 1),
    ];
    for cmd in &mut cmds {
        match cmd {
            Command::RecordDelivery { occurred_at, .. }
            | Command::RecordReturn { occurred_at, .. }
            | Command::AdjustStock { occurred_at, .. } => *occurred_at = late,
            _ => unreachable!("only dated store commands here"),
        }
        let got = match when(&state, cmd).expect("accepted").as_slice() {
            [Event::GoodsDelivered(e)] => e.business_date,
            [Event::ReturnRecorded(e)] => e.business_date,
            [Event::StockAdjusted(e)] => e.business_date,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got, date(2026, 3, 1), "{}", cmd.kind());
    }
}

// ---- stored form --------------------------------------------------------------------------------

#[test]
fn every_event_type_round_trips_through_its_stored_form() {
    let events = plus(
        world(),
        &[
            delivered("d-1", "la", &[("apple", 10)]),
            sold("s-1", "la", &[("apple", 3), ("pear", 1)]),
            voided("s-1", "la", &[("apple", 3), ("pear", 1)]),
            returned("r-1", "s-1", "la", &[("apple", 1)]),
            adjusted("a-1", "la", "apple", -2),
            corrected(
                "c-1",
                "d-1",
                "sup-a",
                "la",
                &[("apple", 7, 95)],
                &[("apple", -3, -235)],
            ),
        ],
    );
    let mut types: Vec<_> = events.iter().map(Event::event_type).collect();
    types.dedup();
    assert_eq!(types.len(), 9, "one of each type: {types:?}");
    for e in &events {
        let back = Event::decode(e.event_type(), e.schema_version(), &e.encode());
        assert_eq!(&back.expect("decodes"), e);
    }
}

#[test]
fn decoding_refuses_unknown_types_versions_and_payloads() {
    let data = sold("s-1", "la", &[("apple", 3)]).encode();
    assert!(matches!(
        Event::decode("SaleRung", 2, &data),
        Err(DecodeError::UnknownType(t)) if t == "SaleRung"
    ));
    assert!(matches!(
        Event::decode("SaleRecorded", 0, &data),
        Err(DecodeError::UnknownVersion { version: 0, .. })
    ));
    // A version from a newer build is named as such, never guessed at.
    assert!(matches!(
        Event::decode("SaleRecorded", 3, &data),
        Err(DecodeError::FutureVersion {
            version: 3,
            current: 2,
            ..
        })
    ));
    let wrong_shape = Event::decode("SaleVoided", 2, &data);
    assert!(matches!(wrong_shape, Err(DecodeError::Payload { .. })));
    let not_json = Event::decode("SaleRecorded", 2, "{");
    assert!(matches!(not_json, Err(DecodeError::Payload { .. })));
}

#[test]
fn rejection_codes_are_the_ones_of_the_api() {
    let api = "unknown_store unknown_item unknown_supplier item_not_from_supplier duplicate_id \
               insufficient_stock unknown_sale return_exceeds_sale sale_voided sale_has_returns \
               unknown_delivery discount_exceeds_line";
    assert_eq!(C::ALL.map(C::as_str).join(" "), api);
    for code in C::ALL {
        assert_eq!(C::parse(code.as_str()), Some(code));
        let json = serde_json::to_string(&code).expect("serializes");
        assert_eq!(json, format!("\"{}\"", code.as_str()));
    }
}
