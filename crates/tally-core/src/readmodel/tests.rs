#![allow(clippy::unwrap_used)]

use super::*;
use tally_domain::event::{
    DeliveredLine, GoodsDelivered, ReturnRecorded, SaleRecorded, SaleVoided, SoldLine,
    StockAdjusted,
};
use tally_domain::values::{
    AdjustmentId, AdjustmentReason, Cents, DeliveryId, ItemId, Quantity, ReturnId, SaleId,
    StockDelta, StoreId, SupplierId, Text,
};

fn date(d: &str) -> Date {
    d.parse().unwrap()
}

fn line(item: &str, qty: i64, price: i64) -> SoldLine {
    discounted(item, qty, price, 0)
}

fn discounted(item: &str, qty: i64, price: i64, discount: i64) -> SoldLine {
    SoldLine {
        item_id: ItemId::parse(item).unwrap(),
        supplier_id: SupplierId::parse("acme").unwrap(),
        quantity: Quantity::new(qty).unwrap(),
        unit_price_cents: Cents::new(price).unwrap(),
        discount_cents: Cents::new(discount).unwrap(),
    }
}

fn events() -> Vec<Event> {
    let store = StoreId::parse("s1").unwrap();
    vec![
        Event::GoodsDelivered(GoodsDelivered {
            delivery_id: DeliveryId::parse("d1").unwrap(),
            supplier_id: SupplierId::parse("acme").unwrap(),
            store_id: store.clone(),
            business_date: date("2026-11-01"),
            lines: vec![DeliveredLine {
                item_id: ItemId::parse("a").unwrap(),
                quantity: Quantity::new(10).unwrap(),
                unit_cost_cents: Cents::new(60).unwrap(),
            }],
        }),
        Event::SaleRecorded(SaleRecorded {
            sale_id: SaleId::parse("x1").unwrap(),
            store_id: store.clone(),
            business_date: date("2026-11-02"),
            // 30 off: 270 paid, 90 a unit.
            lines: vec![discounted("a", 3, 100, 30)],
            till_id: Some(tally_domain::values::TillId::parse("t1").unwrap()),
        }),
        Event::SaleRecorded(SaleRecorded {
            sale_id: SaleId::parse("x2").unwrap(),
            store_id: store.clone(),
            business_date: date("2026-11-02"),
            lines: vec![line("a", 2, 100)],
            till_id: None,
        }),
        Event::SaleVoided(SaleVoided {
            sale_id: SaleId::parse("x2").unwrap(),
            store_id: store.clone(),
            reason: Text::parse("twice").unwrap(),
            sale_business_date: date("2026-11-02"),
            lines: vec![line("a", 2, 100)],
            till_id: None,
        }),
        Event::ReturnRecorded(ReturnRecorded {
            return_id: ReturnId::parse("r1").unwrap(),
            sale_id: SaleId::parse("x1").unwrap(),
            store_id: store.clone(),
            business_date: date("2026-11-03"),
            // One of the three back: refunded 90, its 10 of discount kept.
            lines: vec![discounted("a", 1, 100, 10)],
        }),
        Event::StockAdjusted(StockAdjusted {
            adjustment_id: AdjustmentId::parse("j1").unwrap(),
            store_id: store,
            item_id: ItemId::parse("a").unwrap(),
            delta: StockDelta::new(-1).unwrap(),
            reason: AdjustmentReason::Damage,
            business_date: date("2026-11-03"),
        }),
    ]
}

fn fold(projection: &str) -> Delta {
    let mut acc = Accumulator::for_projection(projection).unwrap();
    events().iter().for_each(|e| acc.fold(e));
    acc.finish()
}

#[test]
fn inventory_nets_every_movement() {
    let Delta::Inventory(rows) = fold(INVENTORY) else {
        panic!("wrong delta")
    };
    // 10 delivered - 3 - 2 sold + 2 voided + 1 returned - 1 damaged
    assert_eq!(rows.get(&("s1".to_owned(), "a".to_owned())), Some(&7));
}

#[test]
fn store_days_follow_the_report_arithmetic() {
    let Delta::StoreDaily(rows) = fold(STORE_DAILY) else {
        panic!("wrong delta")
    };
    let day = |d: &str| {
        rows.get(&("s1".to_owned(), date(d)))
            .copied()
            .unwrap_or_default()
    };
    // The voided sale drops out of its date; the return counts on its own date.
    assert_eq!(
        day("2026-11-02"),
        DayFigures {
            transactions: 1,
            units_sold: 3,
            gross_cents: 300,
            discount_cents: 30,
            ..DayFigures::default()
        }
    );
    assert_eq!(day("2026-11-02").net_cents(), 270, "net of discounts");
    assert_eq!(
        day("2026-11-03"),
        DayFigures {
            returned_units: 1,
            returned_cents: 90,
            ..DayFigures::default()
        },
        "a return counts what it refunded"
    );
    assert_eq!(day("2026-11-03").net_cents(), -90);
    assert!(day("2026-11-01").is_empty(), "a delivery is not a sale");
}

#[test]
fn till_days_count_sales_by_till_and_a_void_takes_its_sale_out() {
    let Delta::TillDaily(rows) = fold(TILL_DAILY) else {
        panic!("wrong delta")
    };
    let till = |t: &str| {
        rows.get(&("s1".to_owned(), t.to_owned(), date("2026-11-02")))
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(
        till("t1"),
        TillDay {
            transactions: 1,
            gross_cents: 300,
            discount_cents: 30,
        }
    );
    assert!(till("").is_empty(), "the till-less sale was voided");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn supplier_days_count_deliveries_and_sales_before_returns() {
    let Delta::SupplierDaily(rows) = fold(SUPPLIER_DAILY) else {
        panic!("wrong delta")
    };
    let day = |d: &str| {
        rows.get(&("acme".to_owned(), date(d)))
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(
        day("2026-11-01"),
        SupplierDay {
            deliveries: 1,
            units_supplied: 10,
            supply_cost_cents: 600,
            ..SupplierDay::default()
        }
    );
    assert_eq!(
        day("2026-11-02"),
        SupplierDay {
            units_sold: 3,
            sales_cents: 270,
            ..SupplierDay::default()
        },
        "sales after discounts"
    );
    assert!(
        day("2026-11-03").is_empty(),
        "returns are not in supplier figures"
    );
}

#[test]
fn a_delivery_correction_moves_stock_and_its_delivery_date_by_the_difference() {
    use tally_domain::event::{DeliveryCorrected, DeliveryLineChange};
    use tally_domain::values::CorrectionId;
    let change = |item: &str, quantity_change: i64, cost_change_cents: i64| DeliveryLineChange {
        item_id: ItemId::parse(item).unwrap(),
        quantity_change,
        cost_change_cents,
    };
    // d1 delivered 10 of a at 60 on 2026-11-01; the note now says 7 of a at 60 and 4 of b at 25, and
    // a later price fix changes only b's cost.
    let corrections = [
        vec![change("a", -3, -180), change("b", 4, 100)],
        vec![change("b", 0, 20)],
    ];
    let mut all = events();
    for (n, changes) in corrections.into_iter().enumerate() {
        all.push(Event::DeliveryCorrected(DeliveryCorrected {
            correction_id: CorrectionId::parse(format!("c{n}")).unwrap(),
            delivery_id: DeliveryId::parse("d1").unwrap(),
            supplier_id: SupplierId::parse("acme").unwrap(),
            store_id: StoreId::parse("s1").unwrap(),
            business_date: date("2026-11-01"),
            reason: Text::parse("miscounted").unwrap(),
            lines: Vec::new(),
            changes,
        }));
    }
    let fold_all = |projection: &str| {
        let mut acc = Accumulator::for_projection(projection).unwrap();
        all.iter().for_each(|e| acc.fold(e));
        acc.finish()
    };

    let Delta::Inventory(stock) = fold_all(INVENTORY) else {
        panic!("wrong delta")
    };
    let on_hand = |item: &str| stock.get(&("s1".to_owned(), item.to_owned())).copied();
    // 7 without corrections (see inventory_nets_every_movement), 3 fewer, and 4 of b.
    assert_eq!((on_hand("a"), on_hand("b")), (Some(4), Some(4)));

    let Delta::SupplierDaily(days) = fold_all(SUPPLIER_DAILY) else {
        panic!("wrong delta")
    };
    let day = |d: &str| days.get(&("acme".to_owned(), date(d))).copied();
    assert_eq!(
        day("2026-11-01"),
        Some(SupplierDay {
            deliveries: 1,
            units_supplied: 11,
            supply_cost_cents: 540,
            ..SupplierDay::default()
        }),
        "counted on the delivery's date, still one delivery"
    );

    let Delta::StoreDaily(store_days) = fold_all(STORE_DAILY) else {
        panic!("wrong delta")
    };
    assert!(
        store_days
            .get(&("s1".to_owned(), date("2026-11-01")))
            .is_none_or(|d| d.is_empty()),
        "a correction is not a sale"
    );
}

#[test]
fn item_daily_changes_are_one_row_per_key_in_key_order() {
    let d = |day| jiff::civil::date(2026, 3, day);
    let key = |s: &str, i: &str, day| (s.to_owned(), i.to_owned(), d(day));
    let sold = ItemDay {
        units_sold: 2,
        gross_cents: 200,
        ..ItemDay::default()
    };
    let delivered = Supplied {
        units: 10,
        cost_cents: 500,
    };
    let delta = ItemDailyDelta {
        rows: [(key("s2", "a", 1), sold), (key("s1", "b", 1), sold)].into(),
        suppliers: [("a".to_owned(), "p".to_owned())].into(),
        supplied: [
            (key("s2", "a", 1), delivered),
            (key("s1", "a", 2), delivered),
        ]
        .into(),
    };
    let got: Vec<_> = delta
        .changes()
        .into_iter()
        .map(|c| {
            (
                c.store,
                c.item,
                c.date.day(),
                c.supplier,
                c.sales,
                c.supplied,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("s1", "a", 2, "p", ItemDay::default(), delivered),
            ("s1", "b", 1, "", sold, Supplied::default()),
            ("s2", "a", 1, "p", sold, delivered),
        ]
    );
}

#[test]
fn item_totals_sum_the_stores_per_item_and_date_in_key_order() {
    let d = |day| jiff::civil::date(2026, 3, day);
    let key = |s: &str, i: &str, day| (s.to_owned(), i.to_owned(), d(day));
    let sold = |units| ItemDay {
        units_sold: units,
        gross_cents: 100 * units,
        discount_cents: units,
        ..ItemDay::default()
    };
    let delivered = Supplied {
        units: 10,
        cost_cents: 500,
    };
    let delta = ItemDailyDelta {
        rows: [
            (key("s2", "a", 1), sold(2)),
            (key("s1", "a", 1), sold(3)),
            (key("s1", "b", 1), sold(1)),
            (key("s3", "a", 2), sold(4)),
        ]
        .into(),
        suppliers: [
            ("a".to_owned(), "p".to_owned()),
            ("b".to_owned(), "q".to_owned()),
        ]
        .into(),
        supplied: [
            (key("s2", "a", 1), delivered),
            (key("s9", "b", 3), delivered),
        ]
        .into(),
    };
    let got: Vec<_> = ItemDailyDelta::totals(&delta.changes())
        .into_iter()
        .map(|t| (t.item, t.date.day(), t.supplier, t.figures))
        .collect();
    assert_eq!(
        got,
        [
            ("a", 1, "p", [5, 500, 0, 0, 10, 500, 5]),
            ("a", 2, "p", [4, 400, 0, 0, 0, 0, 4]),
            ("b", 1, "q", [1, 100, 0, 0, 0, 0, 1]),
            ("b", 3, "q", [0, 0, 0, 0, 10, 500, 0]),
        ]
    );
}
