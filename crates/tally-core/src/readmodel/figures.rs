//! The figures a read-model row holds. Each is additive: a projection's delta is figures to add.

use serde::Serialize;

/// A store's figures for one business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DayFigures {
    pub transactions: i64,
    pub units_sold: i64,
    /// List value of what was sold: quantity × unit price, before discounts.
    pub gross_cents: i64,
    pub returned_units: i64,
    /// What returns refunded (the paid share of the units returned).
    pub returned_cents: i64,
    /// Discounts given on the day's sales.
    pub discount_cents: i64,
}

impl DayFigures {
    /// What the day's sales brought in: gross − discounts − refunds.
    pub fn net_cents(&self) -> i64 {
        self.gross_cents - self.discount_cents - self.returned_cents
    }
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// The figures in the columns' order: transactions, units sold, gross, returned units,
    /// returned cents, discounts.
    pub fn values(&self) -> [i64; 6] {
        [
            self.transactions,
            self.units_sold,
            self.gross_cents,
            self.returned_units,
            self.returned_cents,
            self.discount_cents,
        ]
    }
    pub fn add(&mut self, o: &DayFigures) {
        self.transactions = self.transactions.saturating_add(o.transactions);
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.gross_cents = self.gross_cents.saturating_add(o.gross_cents);
        self.returned_units = self.returned_units.saturating_add(o.returned_units);
        self.returned_cents = self.returned_cents.saturating_add(o.returned_cents);
        self.discount_cents = self.discount_cents.saturating_add(o.discount_cents);
    }
}

/// A supplier's figures for one business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SupplierDay {
    pub deliveries: i64,
    pub units_supplied: i64,
    pub supply_cost_cents: i64,
    pub units_sold: i64,
    /// What the supplier's items sold for, after discounts (voids taken out; returns not).
    pub sales_cents: i64,
}

impl SupplierDay {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// The figures in the columns' order: deliveries, units supplied, cost, units sold, sales.
    pub fn values(&self) -> [i64; 5] {
        [
            self.deliveries,
            self.units_supplied,
            self.supply_cost_cents,
            self.units_sold,
            self.sales_cents,
        ]
    }
    pub fn add(&mut self, o: &SupplierDay) {
        self.deliveries = self.deliveries.saturating_add(o.deliveries);
        self.units_supplied = self.units_supplied.saturating_add(o.units_supplied);
        self.supply_cost_cents = self.supply_cost_cents.saturating_add(o.supply_cost_cents);
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.sales_cents = self.sales_cents.saturating_add(o.sales_cents);
    }
}

/// One item's sales in one store on one business date (voided sales drop out of their date; returns
/// count on the return's date).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ItemDay {
    pub units_sold: i64,
    pub gross_cents: i64,
    pub returned_units: i64,
    pub returned_cents: i64,
    pub discount_cents: i64,
}

impl ItemDay {
    pub fn net_cents(&self) -> i64 {
        self.gross_cents - self.discount_cents - self.returned_cents
    }
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    pub fn add(&mut self, o: &ItemDay) {
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.gross_cents = self.gross_cents.saturating_add(o.gross_cents);
        self.returned_units = self.returned_units.saturating_add(o.returned_units);
        self.returned_cents = self.returned_cents.saturating_add(o.returned_cents);
        self.discount_cents = self.discount_cents.saturating_add(o.discount_cents);
    }
}

/// One till's sales in one store on one business date (voids taken out of the sale's date). Sales
/// without a till count under the till `""` (the views show it as NULL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TillDay {
    pub transactions: i64,
    pub gross_cents: i64,
    pub discount_cents: i64,
}

impl TillDay {
    /// Whether the event changes a till's figures (a sale or a void).
    pub fn concerns(event: &tally_domain::Event) -> bool {
        matches!(
            event,
            tally_domain::Event::SaleRecorded(_) | tally_domain::Event::SaleVoided(_)
        )
    }
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// The figures in the columns' order: transactions, gross, discounts.
    pub fn values(&self) -> [i64; 3] {
        [self.transactions, self.gross_cents, self.discount_cents]
    }
    pub fn add(&mut self, o: &TillDay) {
        self.transactions = self.transactions.saturating_add(o.transactions);
        self.gross_cents = self.gross_cents.saturating_add(o.gross_cents);
        self.discount_cents = self.discount_cents.saturating_add(o.discount_cents);
    }
}
