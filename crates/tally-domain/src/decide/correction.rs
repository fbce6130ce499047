//! The rules of a delivery correction: the corrected delivery note replaces the delivery's lines as
//! last corrected, and the stock moves by the difference.

use foldhash::{HashMap, HashSet};

use crate::command::CorrectedLine;
use crate::decide::{Rejection, RejectionCode as C, StockPolicy, reject, unused};
use crate::event::{DeliveredLine, DeliveryCorrected, DeliveryLineChange, Event, StreamId};
use crate::state::{DeliveryState, State};
use crate::values::{CorrectionId, DeliveryId, ItemId, SupplierId, Text};

/// The fields of [`crate::Command::CorrectDelivery`], borrowed.
pub(super) struct Correction<'c> {
    pub correction_id: &'c CorrectionId,
    pub delivery_id: &'c DeliveryId,
    pub reason: &'c Text,
    pub lines: &'c [CorrectedLine],
    pub only_supplier: Option<&'c SupplierId>,
}

pub(super) fn decide(
    state: &State,
    c: Correction<'_>,
    policy: StockPolicy,
) -> Result<Vec<Event>, Rejection> {
    unused(state, StreamId::correction(c.correction_id), || {
        format!("correction {}", c.correction_id)
    })?;
    // Another supplier's delivery does not exist for a supplier-scoped correction, as another store's
    // sale does not for a store-scoped void.
    let delivery = match state.delivery(c.delivery_id) {
        Some(d) if c.only_supplier.is_none_or(|s| s == &d.supplier_id) => d,
        _ => {
            return reject(C::UnknownDelivery, format!("no delivery {}", c.delivery_id));
        }
    };
    let Some(store) = state.store(&delivery.store_id) else {
        return reject(C::UnknownStore, format!("no store {}", delivery.store_id));
    };
    for line in c.lines {
        let Some(item) = state.item(&line.item_id) else {
            return reject(C::UnknownItem, format!("no item {}", line.item_id));
        };
        if item.supplier_id != delivery.supplier_id {
            return reject(
                C::ItemNotFromSupplier,
                format!(
                    "item {} is supplied by {}, not {}",
                    line.item_id, item.supplier_id, delivery.supplier_id
                ),
            );
        }
    }
    let changes = changes(delivery, c.lines);
    if policy == StockPolicy::Reject {
        for change in changes.iter().filter(|ch| ch.quantity_change < 0) {
            let on_hand = store.on_hand(&change.item_id);
            if on_hand + change.quantity_change < 0 {
                return reject(
                    C::InsufficientStock,
                    format!(
                        "item {} has {on_hand} on hand; the correction takes {} away",
                        change.item_id, -change.quantity_change
                    ),
                );
            }
        }
    }
    Ok(vec![Event::DeliveryCorrected(DeliveryCorrected {
        correction_id: c.correction_id.clone(),
        delivery_id: c.delivery_id.clone(),
        supplier_id: delivery.supplier_id.clone(),
        store_id: delivery.store_id.clone(),
        business_date: delivery.business_date,
        reason: c.reason.clone(),
        lines: c
            .lines
            .iter()
            .filter_map(|l| {
                Some(DeliveredLine {
                    item_id: l.item_id.clone(),
                    quantity: l.quantity.to_quantity()?,
                    unit_cost_cents: l.unit_cost_cents,
                })
            })
            .collect(),
        changes,
    })])
}

/// What the note changes, item by item: the items it names (in its order), then the delivery's items
/// it leaves out, which are removed. Items whose quantity and cost stay are left out.
fn changes(delivery: &DeliveryState, note: &[CorrectedLine]) -> Vec<DeliveryLineChange> {
    // Up to 1000 lines on each side: looked up by item, not searched.
    let before: HashMap<&ItemId, &DeliveredLine> =
        delivery.lines.iter().map(|l| (&l.item_id, l)).collect();
    let in_note: HashSet<&ItemId> = note.iter().map(|l| &l.item_id).collect();
    let cost = |quantity: i64, unit_cost: i64| quantity.saturating_mul(unit_cost);
    let named = note.iter().filter_map(|new| {
        let (old_qty, old_cost) = before
            .get(&new.item_id)
            .map_or((0, 0), |l| (l.quantity.get(), l.unit_cost_cents.get()));
        let (qty, unit_cost) = (new.quantity.get(), new.unit_cost_cents.get());
        // The cost of a line that is not there (0 units) does not count.
        let changed = qty != old_qty || (qty > 0 && unit_cost != old_cost);
        changed.then(|| DeliveryLineChange {
            item_id: new.item_id.clone(),
            quantity_change: qty - old_qty,
            cost_change_cents: cost(qty, unit_cost).saturating_sub(cost(old_qty, old_cost)),
        })
    });
    let left_out = delivery
        .lines
        .iter()
        .filter(|old| !in_note.contains(&old.item_id))
        .map(|old| DeliveryLineChange {
            item_id: old.item_id.clone(),
            quantity_change: -old.quantity.get(),
            cost_change_cents: -cost(old.quantity.get(), old.unit_cost_cents.get()),
        });
    named.chain(left_out).collect()
}
