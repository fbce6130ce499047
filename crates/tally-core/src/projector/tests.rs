#![allow(clippy::unwrap_used)]

use super::*;
use crate::readmodel::{
    Delta, INVENTORY, ITEM_DAILY, REFERENCE, STORE_DAILY, SUPPLIER_DAILY, TILL_DAILY,
};
use tally_domain::event::{SaleRecorded, SoldLine, StockAdjusted};
use tally_domain::values::{
    AdjustmentId, AdjustmentReason, Cents, ItemId, Quantity, SaleId, StockDelta, StoreId,
    SupplierId,
};

fn sale(n: u64) -> (u64, Event) {
    let event = Event::SaleRecorded(SaleRecorded {
        sale_id: SaleId::parse(format!("x{n}")).unwrap(),
        store_id: StoreId::parse("s1").unwrap(),
        business_date: "2026-11-02".parse().unwrap(),
        lines: vec![SoldLine {
            item_id: ItemId::parse("a").unwrap(),
            supplier_id: SupplierId::parse("acme").unwrap(),
            quantity: Quantity::new(1).unwrap(),
            unit_price_cents: Cents::new(100).unwrap(),
            discount_cents: Cents::new(0).unwrap(),
        }],
        till_id: None,
    });
    (n, event)
}

fn adjustment(n: u64) -> (u64, Event) {
    let event = Event::StockAdjusted(StockAdjusted {
        adjustment_id: AdjustmentId::parse(format!("j{n}")).unwrap(),
        store_id: StoreId::parse("s1").unwrap(),
        item_id: ItemId::parse("a").unwrap(),
        delta: StockDelta::new(5).unwrap(),
        reason: AdjustmentReason::Damage,
        business_date: "2026-11-02".parse().unwrap(),
    });
    (n, event)
}

/// Item daily sales stand where supplier days do.
fn checkpoints(inventory: u64, store: u64, supplier: u64) -> HashMap<String, u64> {
    [
        (INVENTORY, inventory),
        (STORE_DAILY, store),
        (SUPPLIER_DAILY, supplier),
        (REFERENCE, supplier),
        (ITEM_DAILY, supplier),
        (TILL_DAILY, supplier),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_owned(), p))
    .collect()
}

#[test]
fn batches_folded_into_one_update_equal_one_big_batch() {
    let events: Vec<_> = (1..=6)
        .map(|n| if n % 3 == 0 { adjustment(n) } else { sale(n) })
        .collect();
    let mut whole = Pending::new(
        &checkpoints(0, 0, 0),
        &Default::default(),
        &Default::default(),
    );
    whole.fold(&events).expect("folds");
    let mut parts = Pending::new(
        &checkpoints(0, 0, 0),
        &Default::default(),
        &Default::default(),
    );
    parts.fold(&events[..2]).expect("folds");
    parts.fold(&events[2..5]).expect("folds");
    parts.fold(&events[5..]).expect("folds");
    assert_eq!(parts.to, 6);
    assert_eq!(parts.finish(), whole.finish());
}

#[test]
fn each_projection_starts_after_its_own_checkpoint() {
    let events: Vec<_> = (1..=4).map(sale).collect();
    // inventory has seen 3 events, store days 1, supplier days all 4.
    let mut pending = Pending::new(
        &checkpoints(3, 1, 4),
        &Default::default(),
        &Default::default(),
    );
    pending.fold(&events).expect("folds");
    let updates = pending.finish();
    let names: Vec<_> = updates.iter().map(|u| u.projection.as_str()).collect();
    assert_eq!(
        names,
        [INVENTORY, STORE_DAILY],
        "supplier and item days and the reference data have nothing new"
    );
    let Delta::Inventory(stock) = &updates[0].delta else {
        panic!("wrong delta")
    };
    assert_eq!((updates[0].from, updates[0].to), (3, 4));
    assert_eq!(stock.get(&("s1".to_owned(), "a".to_owned())), Some(&-1));
    let Delta::StoreDaily(days) = &updates[1].delta else {
        panic!("wrong delta")
    };
    assert_eq!((updates[1].from, updates[1].to), (1, 4));
    let day = days
        .get(&("s1".to_owned(), "2026-11-02".parse().unwrap()))
        .unwrap();
    assert_eq!(day.transactions, 3);
}
