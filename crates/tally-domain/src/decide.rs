//! The rules: given the state of the aggregates a command reads, decide which events it causes or why
//! it is rejected. Pure: no clock, no I/O; the business time comes with the command.

mod correction;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::event::{
    DeliveredLine, Event, GoodsDelivered, ItemRegistered, ReturnRecorded, SaleRecorded, SaleVoided,
    SoldLine, StockAdjusted, StoreRegistered, StreamId, SupplierRegistered,
};
use crate::state::State;
use crate::values::Cents;

/// What the processor does with a sale that would take stock below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockPolicy {
    /// Reject it with `insufficient_stock` (the default).
    #[default]
    Reject,
    /// Accept it; stock may go negative (an alert for the store to count).
    AllowNegative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    UnknownStore,
    UnknownItem,
    UnknownSupplier,
    ItemNotFromSupplier,
    DuplicateId,
    InsufficientStock,
    UnknownSale,
    ReturnExceedsSale,
    SaleVoided,
    SaleHasReturns,
    UnknownDelivery,
    DiscountExceedsLine,
}

impl RejectionCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::UnknownStore => "unknown_store",
            RejectionCode::UnknownItem => "unknown_item",
            RejectionCode::UnknownSupplier => "unknown_supplier",
            RejectionCode::ItemNotFromSupplier => "item_not_from_supplier",
            RejectionCode::DuplicateId => "duplicate_id",
            RejectionCode::InsufficientStock => "insufficient_stock",
            RejectionCode::UnknownSale => "unknown_sale",
            RejectionCode::ReturnExceedsSale => "return_exceeds_sale",
            RejectionCode::SaleVoided => "sale_voided",
            RejectionCode::SaleHasReturns => "sale_has_returns",
            RejectionCode::UnknownDelivery => "unknown_delivery",
            RejectionCode::DiscountExceedsLine => "discount_exceeds_line",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw)
    }
    pub const ALL: [RejectionCode; 12] = [
        RejectionCode::UnknownStore,
        RejectionCode::UnknownItem,
        RejectionCode::UnknownSupplier,
        RejectionCode::ItemNotFromSupplier,
        RejectionCode::DuplicateId,
        RejectionCode::InsufficientStock,
        RejectionCode::UnknownSale,
        RejectionCode::ReturnExceedsSale,
        RejectionCode::SaleVoided,
        RejectionCode::SaleHasReturns,
        RejectionCode::UnknownDelivery,
        RejectionCode::DiscountExceedsLine,
    ];
}

/// A business rule said no. The message is for people; the code is for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

pub(crate) fn reject<T>(code: RejectionCode, message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        code,
        message: message.into(),
    })
}

/// The id's stream must not exist yet. `what` names the id, only built when the id is taken.
pub(crate) fn unused(
    state: &State,
    stream: StreamId,
    what: impl FnOnce() -> String,
) -> Result<(), Rejection> {
    if state.exists(&stream) {
        return reject(
            RejectionCode::DuplicateId,
            format!("{} is already used", what()),
        );
    }
    Ok(())
}

/// Decides a command against the current state. The caller must have loaded every stream of
/// [`Command::streams_read`] and [`Command::dependent_streams`] into `state`.
pub fn decide(
    state: &State,
    command: &Command,
    policy: StockPolicy,
) -> Result<Vec<Event>, Rejection> {
    use RejectionCode as C;
    // The gateway refuses repeated items with 422; any other entry point is refused here.
    let repeated = match command {
        Command::RecordDelivery { lines, .. } => {
            first_repeated_item(lines.iter().map(|l| &l.item_id))
        }
        Command::RecordSale { lines, .. } => first_repeated_item(lines.iter().map(|l| &l.item_id)),
        Command::RecordReturn { lines, .. } => {
            first_repeated_item(lines.iter().map(|l| &l.item_id))
        }
        Command::CorrectDelivery { lines, .. } => {
            first_repeated_item(lines.iter().map(|l| &l.item_id))
        }
        _ => None,
    };
    if let Some(i) = repeated {
        return reject(
            C::DuplicateId,
            format!("line {i} repeats an item of an earlier line"),
        );
    }
    match command {
        Command::RegisterSupplier { supplier_id, name } => {
            unused(state, StreamId::supplier(supplier_id), || {
                format!("supplier {supplier_id}")
            })?;
            Ok(vec![Event::SupplierRegistered(SupplierRegistered {
                supplier_id: supplier_id.clone(),
                name: name.clone(),
            })])
        }
        Command::RegisterStore {
            store_id,
            name,
            timezone,
        } => {
            unused(state, StreamId::store(store_id), || {
                format!("store {store_id}")
            })?;
            Ok(vec![Event::StoreRegistered(StoreRegistered {
                store_id: store_id.clone(),
                name: name.clone(),
                timezone: timezone.clone(),
            })])
        }
        Command::RegisterItem {
            item_id,
            name,
            supplier_id,
            unit_price_cents,
        } => {
            unused(state, StreamId::item(item_id), || format!("item {item_id}"))?;
            if !state.has_supplier(supplier_id) {
                return reject(C::UnknownSupplier, format!("no supplier {supplier_id}"));
            }
            Ok(vec![Event::ItemRegistered(ItemRegistered {
                item_id: item_id.clone(),
                name: name.clone(),
                supplier_id: supplier_id.clone(),
                unit_price_cents: *unit_price_cents,
            })])
        }
        Command::RecordDelivery {
            delivery_id,
            supplier_id,
            store_id,
            occurred_at,
            lines,
        } => {
            unused(state, StreamId::delivery(delivery_id), || {
                format!("delivery {delivery_id}")
            })?;
            if !state.has_supplier(supplier_id) {
                return reject(C::UnknownSupplier, format!("no supplier {supplier_id}"));
            }
            let Some(store) = state.store(store_id) else {
                return reject(C::UnknownStore, format!("no store {store_id}"));
            };
            for line in lines {
                let Some(item) = state.item(&line.item_id) else {
                    return reject(C::UnknownItem, format!("no item {}", line.item_id));
                };
                if &item.supplier_id != supplier_id {
                    return reject(
                        C::ItemNotFromSupplier,
                        format!(
                            "item {} is supplied by {}, not {supplier_id}",
                            line.item_id, item.supplier_id
                        ),
                    );
                }
            }
            Ok(vec![Event::GoodsDelivered(GoodsDelivered {
                delivery_id: delivery_id.clone(),
                supplier_id: supplier_id.clone(),
                store_id: store_id.clone(),
                business_date: store.timezone.business_date(*occurred_at),
                lines: lines
                    .iter()
                    .map(|l| DeliveredLine {
                        item_id: l.item_id.clone(),
                        quantity: l.quantity,
                        unit_cost_cents: l.unit_cost_cents,
                    })
                    .collect(),
            })])
        }
        Command::RecordSale {
            sale_id,
            store_id,
            occurred_at,
            lines,
            till_id,
        } => {
            unused(state, StreamId::sale(sale_id), || format!("sale {sale_id}"))?;
            let Some(store) = state.store(store_id) else {
                return reject(C::UnknownStore, format!("no store {store_id}"));
            };
            let mut sold = Vec::with_capacity(lines.len());
            for line in lines {
                let Some(item) = state.item(&line.item_id) else {
                    return reject(C::UnknownItem, format!("no item {}", line.item_id));
                };
                if !line.discount_fits() {
                    return reject(
                        C::DiscountExceedsLine,
                        format!(
                            "the discount on item {} is more than the line's value",
                            line.item_id
                        ),
                    );
                }
                let on_hand = store.on_hand(&line.item_id);
                if policy == StockPolicy::Reject && on_hand < line.quantity.get() {
                    return reject(
                        C::InsufficientStock,
                        format!(
                            "item {} has {on_hand} on hand, the sale needs {}",
                            line.item_id,
                            line.quantity.get()
                        ),
                    );
                }
                sold.push(SoldLine {
                    item_id: line.item_id.clone(),
                    supplier_id: item.supplier_id.clone(),
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                    discount_cents: line.discount_cents,
                });
            }
            Ok(vec![Event::SaleRecorded(SaleRecorded {
                sale_id: sale_id.clone(),
                store_id: store_id.clone(),
                business_date: store.timezone.business_date(*occurred_at),
                lines: sold,
                till_id: till_id.clone(),
            })])
        }
        Command::VoidSale {
            sale_id,
            reason,
            only_store,
            ..
        } => {
            let sale = match state.sale(sale_id) {
                Some(sale) if only_store.as_ref().is_none_or(|s| s == &sale.store_id) => sale,
                _ => return reject(C::UnknownSale, format!("no sale {sale_id}")),
            };
            if sale.voided {
                return reject(C::SaleVoided, format!("sale {sale_id} is already voided"));
            }
            if !sale.returned.is_empty() {
                return reject(
                    C::SaleHasReturns,
                    format!("sale {sale_id} has returns and cannot be voided"),
                );
            }
            Ok(vec![Event::SaleVoided(SaleVoided {
                sale_id: sale_id.clone(),
                store_id: sale.store_id.clone(),
                reason: reason.clone(),
                sale_business_date: sale.business_date,
                lines: sale.lines.clone(),
                till_id: sale.till_id.clone(),
            })])
        }
        Command::RecordReturn {
            return_id,
            sale_id,
            store_id,
            occurred_at,
            lines,
        } => {
            unused(state, StreamId::return_(return_id), || {
                format!("return {return_id}")
            })?;
            let Some(store) = state.store(store_id) else {
                return reject(C::UnknownStore, format!("no store {store_id}"));
            };
            let sale = match state.sale(sale_id) {
                Some(sale) if &sale.store_id == store_id => sale,
                _ => {
                    return reject(
                        C::UnknownSale,
                        format!("no sale {sale_id} at store {store_id}"),
                    );
                }
            };
            if sale.voided {
                return reject(C::SaleVoided, format!("sale {sale_id} is voided"));
            }
            let mut returned = Vec::with_capacity(lines.len());
            for line in lines {
                if state.item(&line.item_id).is_none() {
                    return reject(C::UnknownItem, format!("no item {}", line.item_id));
                }
                let Some(sold) = sale.line(&line.item_id) else {
                    return reject(
                        C::ReturnExceedsSale,
                        format!("sale {sale_id} did not sell item {}", line.item_id),
                    );
                };
                let before = sale.returned_of(&line.item_id);
                let left = sold.quantity.get() - before;
                if line.quantity.get() > left {
                    return reject(
                        C::ReturnExceedsSale,
                        format!(
                            "only {left} of item {} from sale {sale_id} can still be returned",
                            line.item_id
                        ),
                    );
                }
                let refund = refund_cents(sold, before, line.quantity.get());
                let list = line
                    .quantity
                    .get()
                    .saturating_mul(sold.unit_price_cents.get());
                returned.push(SoldLine {
                    item_id: line.item_id.clone(),
                    supplier_id: sold.supplier_id.clone(),
                    quantity: line.quantity,
                    unit_price_cents: sold.unit_price_cents,
                    // 0 ≤ list − refund ≤ the line's discount (see `refund_cents`).
                    discount_cents: Cents::new(list - refund)
                        .unwrap_or_else(|e| unreachable!("a refund within the list value: {e}")),
                });
            }
            Ok(vec![Event::ReturnRecorded(ReturnRecorded {
                return_id: return_id.clone(),
                sale_id: sale_id.clone(),
                store_id: store_id.clone(),
                business_date: store.timezone.business_date(*occurred_at),
                lines: returned,
            })])
        }
        Command::AdjustStock {
            adjustment_id,
            store_id,
            item_id,
            delta,
            reason,
            occurred_at,
        } => {
            unused(state, StreamId::adjustment(adjustment_id), || {
                format!("adjustment {adjustment_id}")
            })?;
            let Some(store) = state.store(store_id) else {
                return reject(C::UnknownStore, format!("no store {store_id}"));
            };
            if state.item(item_id).is_none() {
                return reject(C::UnknownItem, format!("no item {item_id}"));
            }
            let on_hand = store.on_hand(item_id);
            if delta.get() < 0 && on_hand + delta.get() < 0 {
                return reject(
                    C::InsufficientStock,
                    format!(
                        "item {item_id} has {on_hand} on hand; {} would take it below zero",
                        delta.get()
                    ),
                );
            }
            Ok(vec![Event::StockAdjusted(StockAdjusted {
                adjustment_id: adjustment_id.clone(),
                store_id: store_id.clone(),
                item_id: item_id.clone(),
                delta: *delta,
                reason: *reason,
                business_date: store.timezone.business_date(*occurred_at),
            })])
        }
        Command::CorrectDelivery {
            correction_id,
            delivery_id,
            reason,
            lines,
            only_supplier,
        } => correction::decide(
            state,
            correction::Correction {
                correction_id,
                delivery_id,
                reason,
                lines,
                only_supplier: only_supplier.as_ref(),
            },
            policy,
        ),
    }
}

impl Command {
    /// Streams read by [`decide`] that can only be named once [`Command::streams_read`] is loaded: a void
    /// names the sale, and the sale names its store; a correction names the delivery, and the delivery
    /// names its store.
    pub fn dependent_streams(&self, state: &State) -> Vec<StreamId> {
        match self {
            Command::VoidSale { sale_id, .. } => state
                .sale(sale_id)
                .map(|s| vec![StreamId::store(&s.store_id)])
                .unwrap_or_default(),
            Command::CorrectDelivery { delivery_id, .. } => state
                .delivery(delivery_id)
                .map(|d| vec![StreamId::store(&d.store_id)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The business time of the command, when it has one (registrations and corrections happen when
    /// received; a correction still counts on its delivery's business date, which its event carries).
    pub fn occurred_at(&self) -> Option<jiff::Timestamp> {
        match self {
            Command::RegisterSupplier { .. }
            | Command::RegisterStore { .. }
            | Command::RegisterItem { .. }
            | Command::CorrectDelivery { .. } => None,
            Command::RecordDelivery { occurred_at, .. }
            | Command::RecordSale { occurred_at, .. }
            | Command::VoidSale { occurred_at, .. }
            | Command::RecordReturn { occurred_at, .. }
            | Command::AdjustStock { occurred_at, .. } => Some(*occurred_at),
        }
    }
}

/// What a return of `units` more units of a sold line refunds, when `before` of them were returned
/// already: what the customer paid for the line, `p × q − d`, shared out so that the refunds of the
/// first `R` units returned total `floor((p × q − d) × R / q)` (API.md, "Discounts and tills"). Each
/// return refunds the increase, so a fully returned line refunds exactly what was paid, and no
/// sequence of partial returns refunds more. Never more than the units' list value `p × units`:
/// `(p × q − d) / q ≤ p`, and a difference of floors is at most the ceiling of the difference.
pub fn refund_cents(line: &SoldLine, before: i64, units: i64) -> i64 {
    let q = i128::from(line.quantity.get());
    let paid = i128::from(line.paid_cents());
    let upto = |r: i64| paid * i128::from(r) / q;
    let refund = upto(before + units) - upto(before);
    // Bounded by the line's list value, itself at most 10^12 × 10^6.
    i64::try_from(refund).unwrap_or_else(|_| unreachable!("a refund within a line's value"))
}

/// Lines must name distinct items; the gateway refuses repeats before a command exists. Exposed so
/// every entry point applies the same rule.
pub fn first_repeated_item<'a>(
    items: impl IntoIterator<Item = &'a crate::values::ItemId>,
) -> Option<usize> {
    let mut seen = HashSet::new();
    items.into_iter().position(|i| !seen.insert(i))
}
