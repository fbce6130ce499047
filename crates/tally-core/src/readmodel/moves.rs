//! What an event does to the read models, one effect at a time. This is the one translation of
//! events into read-model arithmetic: the projector folds these moves into the live read models, the
//! journal stores them compactly per store ([`super::journal`]), and time travel folds them back,
//! so a figure as of any moment is computed by the same code as the figure now.

use jiff::civil::Date;
use tally_domain::Event;
use tally_domain::event::SoldLine;

/// What kind of effect a [`Move`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// One delivery counted on the supplier's day (`qty` 1).
    DeliveryCount = 0,
    /// A delivered line: stock in, and the supplier's units and cost supplied.
    Delivered = 1,
    /// One sale counted on the store's day (`qty` 1, or −1 for a void).
    SaleCount = 2,
    /// A sold line (negative for a voided sale's line, on the sale's own date).
    Sold = 3,
    /// A returned line: stock back, counted in the store's and the item's returns.
    Returned = 4,
    /// A stock adjustment: stock only.
    Adjusted = 5,
    /// A delivery correction's change of one line, on the delivery's own date.
    Corrected = 6,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::DeliveryCount,
        Kind::Delivered,
        Kind::SaleCount,
        Kind::Sold,
        Kind::Returned,
        Kind::Adjusted,
        Kind::Corrected,
    ];

    pub fn from_code(code: u8) -> Option<Kind> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Whether the move changes a store's daily sales.
    pub fn is_store_day(self) -> bool {
        matches!(self, Kind::SaleCount | Kind::Sold | Kind::Returned)
    }

    /// Whether the move changes a supplier's daily report.
    pub fn is_supplier_day(self) -> bool {
        matches!(
            self,
            Kind::DeliveryCount | Kind::Delivered | Kind::Sold | Kind::Corrected
        )
    }
}

/// One effect of an event on the read models. `item` and `supplier` are empty where the kind names
/// none (a sale's count has no item); `date` is the business date the figures count on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move<'e> {
    pub kind: Kind,
    pub store: &'e str,
    pub item: &'e str,
    pub supplier: &'e str,
    pub date: Date,
    pub qty: i64,
    /// A sold line: its list value (quantity × unit price); a returned line: what it refunds;
    /// deliveries and corrections: their cost.
    pub cents: i64,
    /// A sold line's discount (0 on every other kind).
    pub discount: i64,
}

impl Move<'_> {
    /// How the move changes the store's stock of its item, if it does: sold lines leave it (a
    /// voided one, negative, comes back); deliveries, returns, adjustments and corrections move it
    /// by their quantity; a correction of cost only does not move it.
    pub fn stock_change(&self) -> Option<i64> {
        match self.kind {
            Kind::Delivered | Kind::Returned | Kind::Adjusted => Some(self.qty),
            Kind::Corrected => (self.qty != 0).then_some(self.qty),
            Kind::Sold => Some(-self.qty),
            Kind::DeliveryCount | Kind::SaleCount => None,
        }
    }
}

fn sold<'e>(store: &'e str, date: Date, l: &'e SoldLine, sign: i64) -> Move<'e> {
    Move {
        kind: Kind::Sold,
        store,
        item: l.item_id.as_str(),
        supplier: l.supplier_id.as_str(),
        date,
        qty: sign * l.quantity.get(),
        cents: sign.saturating_mul(l.amount_cents()),
        discount: sign.saturating_mul(l.discount_cents.get()),
    }
}

/// Calls `f` with every move of `event`, in a fixed order. Reference data moves nothing.
pub fn moves<'e>(event: &'e Event, mut f: impl FnMut(Move<'e>)) {
    match event {
        Event::GoodsDelivered(e) => {
            let (store, supplier) = (e.store_id.as_str(), e.supplier_id.as_str());
            f(Move {
                kind: Kind::DeliveryCount,
                store,
                item: "",
                supplier,
                date: e.business_date,
                qty: 1,
                cents: 0,
                discount: 0,
            });
            for l in &e.lines {
                let qty = l.quantity.get();
                f(Move {
                    kind: Kind::Delivered,
                    store,
                    item: l.item_id.as_str(),
                    supplier,
                    date: e.business_date,
                    qty,
                    cents: qty.saturating_mul(l.unit_cost_cents.get()),
                    discount: 0,
                });
            }
        }
        Event::SaleRecorded(e) => sale(e.store_id.as_str(), e.business_date, &e.lines, 1, f),
        // A void takes the sale out of its own date, as if it never happened.
        Event::SaleVoided(e) => sale(e.store_id.as_str(), e.sale_business_date, &e.lines, -1, f),
        Event::ReturnRecorded(e) => {
            for l in &e.lines {
                f(Move {
                    kind: Kind::Returned,
                    store: e.store_id.as_str(),
                    item: l.item_id.as_str(),
                    supplier: l.supplier_id.as_str(),
                    date: e.business_date,
                    qty: l.quantity.get(),
                    cents: l.paid_cents(),
                    discount: 0,
                });
            }
        }
        Event::StockAdjusted(e) => f(Move {
            kind: Kind::Adjusted,
            store: e.store_id.as_str(),
            item: e.item_id.as_str(),
            supplier: "",
            date: e.business_date,
            qty: e.delta.get(),
            cents: 0,
            discount: 0,
        }),
        // On the corrected delivery's own date; it is still one delivery.
        Event::DeliveryCorrected(e) => {
            for c in &e.changes {
                f(Move {
                    kind: Kind::Corrected,
                    store: e.store_id.as_str(),
                    item: c.item_id.as_str(),
                    supplier: e.supplier_id.as_str(),
                    date: e.business_date,
                    qty: c.quantity_change,
                    cents: c.cost_change_cents,
                    discount: 0,
                });
            }
        }
        Event::SupplierRegistered(_) | Event::StoreRegistered(_) | Event::ItemRegistered(_) => {}
    }
}

fn sale<'e>(
    store: &'e str,
    date: Date,
    lines: &'e [SoldLine],
    sign: i64,
    mut f: impl FnMut(Move<'e>),
) {
    f(Move {
        kind: Kind::SaleCount,
        store,
        item: "",
        supplier: "",
        date,
        qty: sign,
        cents: 0,
        discount: 0,
    });
    for l in lines {
        f(sold(store, date, l, sign));
    }
}
