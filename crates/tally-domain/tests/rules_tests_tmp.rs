// ---- reference data -----------------------------------------------------------------------------

#[test]
fn registrations_are_accepted_once() {
    let reg_sup = Command::RegisterSupplier {
        supplier_id: v("sup-a"),
        name: v("A supplier"),
    };
    then_events(when(&given(&[]), &reg_sup), &[supplier_registered("sup-a")]);
    then_rejected(when(&given(&world()), &reg_sup), C::DuplicateId);

    let reg_store = Command::RegisterStore {
        store_id: v("la"),
        name: v("A store"),
        timezone: v("America/Los_Angeles"),
    };
    then_events(
        when(&given(&[]), &reg_store),
        &[store_registered("la", "America/Los_Angeles")],
    );
    then_rejected(when(&given(&world()), &reg_store), C::DuplicateId);

    let reg_item = |id: &str, sup: &str| Command::RegisterItem {
        item_id: v(id),
        name: v("An item"),
        supplier_id: v(sup),
        unit_price_cents: cents(PRICE),
    };
    then_events(
        when(&given(&world()[..2]), &reg_item("bolt", "sup-b")),
        &[item_registered("bolt")],
    );
    then_rejected(
        when(&given(&world()), &reg_item("bolt", "sup-b")),
        C::DuplicateId,
    );
    then_rejected(
        when(&given(&world()), &reg_item("nail", "sup-x")),
        C::UnknownSupplier,
    );
}

// ---- deliveries ---------------------------------------------------------------------------------

#[test]
fn a_delivery_is_recorded_and_adds_stock() {
    let mut state = given(&world());
    let cmd = deliver("d-1", "sup-a", "la", &[("apple", 10), ("pear", 5)]);
    then_events(
        when(&state, &cmd),
        &[delivered("d-1", "la", &[("apple", 10), ("pear", 5)])],
    );
    run(&mut state, &cmd);
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "la", "pear")
        ),
        (10, 5)
    );
    assert_eq!(on_hand(&state, "tokyo", "apple"), 0);
}

#[test]
fn a_delivery_is_rejected_for_bad_references() {
    let state = given(&stocked());
    then_rejected(
        when(&state, &deliver("d-1", "sup-a", "tokyo", &[("apple", 1)])),
        C::DuplicateId,
    );
    then_rejected(
        when(&state, &deliver("d-2", "sup-x", "la", &[("apple", 1)])),
        C::UnknownSupplier,
    );
    then_rejected(
        when(&state, &deliver("d-2", "sup-a", "paris", &[("apple", 1)])),
        C::UnknownStore,
    );
    then_rejected(
        when(
            &state,
            &deliver("d-2", "sup-a", "la", &[("apple", 1), ("kiwi", 1)]),
        ),
        C::UnknownItem,
    );
    then_rejected(
        when(
            &state,
            &deliver("d-2", "sup-a", "la", &[("apple", 1), ("bolt", 1)]),
        ),
        C::ItemNotFromSupplier,
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
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "la", "pear")
        ),
        (7, 0)
    );
}

#[test]
fn a_sale_is_rejected_for_bad_references_and_missing_stock() {
    let state = given(&with_sale());
    // Sale ids are unique across stores.
    then_rejected(
        when(&state, &sell("s-1", "tokyo", &[("apple", 1)])),
        C::DuplicateId,
    );
    then_rejected(
        when(&state, &sell("s-2", "paris", &[("apple", 1)])),
        C::UnknownStore,
    );
    then_rejected(
        when(&state, &sell("s-2", "la", &[("kiwi", 1)])),
        C::UnknownItem,
    );
    then_rejected(
        when(&state, &sell("s-2", "la", &[("apple", 7), ("pear", 4)])),
        C::InsufficientStock,
    );
    then_rejected(
        when(&state, &sell("s-2", "la", &[("bolt", 1)])),
        C::InsufficientStock,
    );
    then_rejected(
        when(&state, &sell("s-2", "tokyo", &[("apple", 1)])),
        C::InsufficientStock,
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
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "la", "bolt")
        ),
        (-2, -2)
    );
}

// ---- voids --------------------------------------------------------------------------------------

#[test]
fn a_void_reverses_the_sale_and_puts_stock_back() {
    let mut state = given(&with_sale());
    then_events(
        when(&state, &void("s-1", None)),
        &[voided("s-1", "la", &[("apple", 3), ("pear", 2)])],
    );
    // A store key may void its own store's sale.
    assert!(when(&state, &void("s-1", Some("la"))).is_ok());
    run(&mut state, &void("s-1", None));
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "la", "pear")
        ),
        (10, 5)
    );
    assert!(state.sale(&v("s-1")).expect("sale exists").voided);
}

#[test]
fn a_void_is_rejected_when_the_sale_cannot_be_voided() {
    let state = given(&with_sale());
    then_rejected(when(&state, &void("s-9", None)), C::UnknownSale);
    // Another store's sale does not exist for a store-scoped void.
    then_rejected(when(&state, &void("s-1", Some("tokyo"))), C::UnknownSale);
    let twice = given(&plus(
        with_sale(),
        &[voided("s-1", "la", &[("apple", 3), ("pear", 2)])],
    ));
    then_rejected(when(&twice, &void("s-1", None)), C::SaleVoided);
    let with_return = given(&plus(
        with_sale(),
        &[returned("r-1", "s-1", "la", &[("pear", 1)])],
    ));
    then_rejected(when(&with_return, &void("s-1", None)), C::SaleHasReturns);
}

// ---- returns ------------------------------------------------------------------------------------

#[test]
fn a_return_refunds_at_the_sale_price_and_puts_stock_back() {
    let mut state = given(&plus(
        with_sale(),
        &[returned("r-1", "s-1", "la", &[("apple", 1)])],
    ));
    let cmd = give_back("r-2", "s-1", "la", &[("apple", 2), ("pear", 2)]);
    then_events(
        when(&state, &cmd),
        &[returned("r-2", "s-1", "la", &[("apple", 2), ("pear", 2)])],
    );
    run(&mut state, &cmd);
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "la", "pear")
        ),
        (10, 5)
    );
    let sale = state.sale(&v("s-1")).expect("sale exists");
    assert_eq!(
        (sale.returned_of(&v("apple")), sale.returned_of(&v("pear"))),
        (3, 2)
    );
}

#[test]
fn a_return_is_rejected_for_bad_references() {
    let state = given(&plus(
        with_sale(),
        &[returned("r-1", "s-1", "la", &[("apple", 1)])],
    ));
    then_rejected(
        when(&state, &give_back("r-1", "s-1", "la", &[("apple", 1)])),
        C::DuplicateId,
    );
    then_rejected(
        when(&state, &give_back("r-2", "s-1", "paris", &[("apple", 1)])),
        C::UnknownStore,
    );
    then_rejected(
        when(&state, &give_back("r-2", "s-9", "la", &[("apple", 1)])),
        C::UnknownSale,
    );
    // A sale of another store is unknown to this store.
    then_rejected(
        when(&state, &give_back("r-2", "s-1", "tokyo", &[("apple", 1)])),
        C::UnknownSale,
    );
    then_rejected(
        when(&state, &give_back("r-2", "s-1", "la", &[("kiwi", 1)])),
        C::UnknownItem,
    );
}

#[test]
fn a_return_cannot_exceed_what_is_left_of_the_sale() {
    let state = given(&with_sale());
    then_rejected(
        when(&state, &give_back("r-1", "s-1", "la", &[("apple", 4)])),
        C::ReturnExceedsSale,
    );
    then_rejected(
        when(&state, &give_back("r-1", "s-1", "la", &[("bolt", 1)])),
        C::ReturnExceedsSale,
    );
    // Cumulative over two returns: 2 of 3 apples back, then 2 more is too many, 1 is fine.
    let after_one = given(&plus(
        with_sale(),
        &[returned("r-1", "s-1", "la", &[("apple", 2)])],
    ));
    then_rejected(
        when(&after_one, &give_back("r-2", "s-1", "la", &[("apple", 2)])),
        C::ReturnExceedsSale,
    );
    assert!(when(&after_one, &give_back("r-2", "s-1", "la", &[("apple", 1)])).is_ok());
    let all_back = given(&plus(
        with_sale(),
        &[returned("r-1", "s-1", "la", &[("apple", 3)])],
    ));
    then_rejected(
        when(&all_back, &give_back("r-2", "s-1", "la", &[("apple", 1)])),
        C::ReturnExceedsSale,
    );
}

#[test]
fn a_voided_sale_cannot_be_returned() {
    let state = given(&plus(
        with_sale(),
        &[voided("s-1", "la", &[("apple", 3), ("pear", 2)])],
    ));
    then_rejected(
        when(&state, &give_back("r-1", "s-1", "la", &[("apple", 1)])),
        C::SaleVoided,
    );
}

// ---- stock adjustments --------------------------------------------------------------------------

#[test]
fn adjustments_move_stock_but_never_below_zero() {
    let mut state = given(&stocked());
    then_events(
        when(&state, &adjust("a-1", "la", "apple", -10)),
        &[adjusted("a-1", "la", "apple", -10)],
    );
    then_rejected(
        when(&state, &adjust("a-1", "la", "apple", -11)),
        C::InsufficientStock,
    );
    then_rejected(
        when(&state, &adjust("a-1", "tokyo", "bolt", -1)),
        C::InsufficientStock,
    );
    run(&mut state, &adjust("a-1", "la", "apple", -4));
    run(&mut state, &adjust("a-2", "tokyo", "bolt", 7));
    assert_eq!(
        (
            on_hand(&state, "la", "apple"),
            on_hand(&state, "tokyo", "bolt")
        ),
        (6, 7)
    );
    then_rejected(
        when(&state, &adjust("a-1", "la", "apple", 1)),
        C::DuplicateId,
    );
    then_rejected(
        when(&state, &adjust("a-3", "paris", "apple", 1)),
        C::UnknownStore,
    );
    then_rejected(
        when(&state, &adjust("a-3", "la", "kiwi", 1)),
        C::UnknownItem,
    );
}

// ---- business dates -----------------------------------------------------------------------------

fn business_date_of_sale(store: &str, when_: &str) -> Date {
    let mut events = world();
    events.push(delivered("d-1", store, &[("apple", 1)]));
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
    // 07:30 UTC on the 2nd is still the evening of the 1st in Los Angeles.
    assert_eq!(
        business_date_of_sale("la", "2026-03-01T23:30:00-08:00"),
        date(2026, 3, 1)
    );
    assert_eq!(
        business_date_of_sale("la", "2026-03-02T07:59:59Z"),
        date(2026, 3, 1)
    );
    assert_eq!(
        business_date_of_sale("la", "2026-03-02T08:00:00Z"),
        date(2026, 3, 2)
    );
    // Tokyo is 9 hours ahead: 15:00 UTC is already midnight of the next day.
    assert_eq!(
        business_date_of_sale("tokyo", "2026-03-01T14:59:59Z"),
        date(2026, 3, 1)
    );
    assert_eq!(
        business_date_of_sale("tokyo", "2026-03-01T15:00:00Z"),
        date(2026, 3, 2)
    );
    // Berlin: UTC+1 in winter, UTC+2 in summer.
    assert_eq!(
        business_date_of_sale("berlin", "2026-01-31T23:30:00Z"),
        date(2026, 2, 1)
    );
    assert_eq!(
        business_date_of_sale("berlin", "2026-06-30T22:30:00Z"),
        date(2026, 7, 1)
    );
    assert_eq!(
        business_date_of_sale("berlin", "2026-06-30T21:30:00Z"),
        date(2026, 6, 30)
    );
}

#[test]
fn deliveries_returns_and_adjustments_use_the_store_local_date_too() {
    let state = given(&with_sale());
    let late = at("2026-03-01T23:30:00-08:00");
    let mut cmds = [
        deliver("d-2", "sup-a", "la", &[("apple", 1)]),
        give_back("r-1", "s-1", "la", &[("apple", 1)]),
        adjust("a-1", "la", "apple", 1),
    ];
    for cmd in &mut cmds {
        match cmd {
            Command::RecordDelivery { occurred_at, .. }
            | Command::RecordReturn { occurred_at, .. }
            | Command::AdjustStock { occurred_at, .. } => *occurred_at = late,
            _ => unreachable!(),
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
        ],
    );
    let mut types: Vec<_> = events.iter().map(Event::event_type).collect();
    types.dedup();
    assert_eq!(types.len(), 8, "one of each type: {types:?}");
    for e in &events {
        let back = Event::decode(e.event_type(), Event::SCHEMA_VERSION, &e.encode());
        assert_eq!(&back.expect("decodes"), e);
    }
}

#[test]
fn decoding_refuses_unknown_types_versions_and_payloads() {
    let e = sold("s-1", "la", &[("apple", 3)]);
    let data = e.encode();
    assert!(
        matches!(Event::decode("SaleRung", 1, &data), Err(DecodeError::UnknownType(t)) if t == "SaleRung")
    );
    for version in [0, 2] {
        assert!(matches!(
            Event::decode("SaleRecorded", version, &data),
            Err(DecodeError::UnknownVersion { version: v, .. }) if v == version
        ));
    }
    assert!(matches!(
        Event::decode("SaleVoided", 1, &data),
        Err(DecodeError::Payload { .. })
    ));
    assert!(matches!(
        Event::decode("SaleRecorded", 1, "{"),
        Err(DecodeError::Payload { .. })
    ));
}

#[test]
fn rejection_codes_are_the_ones_of_the_api() {
    let api = [
        "unknown_store",
        "unknown_item",
        "unknown_supplier",
        "item_not_from_supplier",
        "duplicate_id",
        "insufficient_stock",
        "unknown_sale",
        "return_exceeds_sale",
        "sale_voided",
        "sale_has_returns",
    ];
    assert_eq!(C::ALL.map(C::as_str), api);
    for code in C::ALL {
        assert_eq!(C::parse(code.as_str()), Some(code));
        assert_eq!(
            serde_json::to_string(&code).expect("serializes"),
            format!("\"{}\"", code.as_str())
        );
    }
}
