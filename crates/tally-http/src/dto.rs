//! The wire format of commands, and their validation into domain commands. Every invalid field is
//! reported, by its path, in one 422 answer.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tally_domain::values::{
    AdjustmentId, AdjustmentReason, Cents, CorrectedQuantity, CorrectionId, DeliveryId,
    InvalidValue, ItemId, Quantity, ReturnId, SaleId, StockDelta, StoreId, SupplierId, Text,
    TillId, TimeZoneName,
};
use tally_domain::{Command, CorrectedLine, DeliveryLine, ReturnLine, SaleLine};
use utoipa::ToSchema;

use crate::error::{ApiError, FieldError};

pub const MAX_LINES: usize = 1000;

/// Collects field errors while values are built.
#[derive(Default)]
pub struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    pub fn field<T>(&mut self, name: &str, r: Result<T, InvalidValue>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError::new(name, e.0));
                None
            }
        }
    }
    pub fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(name, message));
    }
    /// The built value, or every error found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(ApiError::invalid("body", "invalid request")),
            _ => Err(ApiError::Invalid(self.errors)),
        }
    }

    fn occurred_at(&mut self, raw: &Option<String>, now: Timestamp) -> Option<Timestamp> {
        match raw {
            None => Some(now),
            Some(s) => {
                match s.parse::<Timestamp>() {
                    Ok(t) => Some(t),
                    Err(_) => {
                        self.fail("occurred_at", "must be an RFC 3339 time with an offset, like 2026-11-02T09:30:00+01:00");
                        None
                    }
                }
            }
        }
    }

    fn lines<L, T>(
        &mut self,
        lines: &[L],
        item: impl Fn(&L) -> &str,
        build: impl Fn(&mut Check, usize, &L) -> Option<T>,
    ) -> Option<Vec<T>> {
        if lines.is_empty() || lines.len() > MAX_LINES {
            self.fail("lines", format!("must have 1 to {MAX_LINES} lines"));
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            if !seen.insert(item(l)) {
                self.fail(
                    &format!("lines[{i}].item_id"),
                    "each line must name a different item",
                );
            }
            out.push(build(self, i, l));
        }
        out.into_iter().collect()
    }
}

/// `POST /v1/suppliers`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"supplier_id": "acme", "name": "Acme Foods"}))]
pub struct NewSupplier {
    pub supplier_id: String,
    pub name: String,
}

/// `POST /v1/stores`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"store_id": "berlin-1", "name": "Berlin Mitte", "timezone": "Europe/Berlin"}))]
pub struct NewStore {
    pub store_id: String,
    pub name: String,
    /// An IANA time zone name: the store's business day is local to it.
    pub timezone: String,
}

/// `POST /v1/items`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"item_id": "sku-1", "name": "Coffee 1kg", "supplier_id": "acme", "unit_price_cents": 1299}))]
pub struct NewItem {
    pub item_id: String,
    pub name: String,
    pub supplier_id: String,
    pub unit_price_cents: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeliveryLineIn {
    pub item_id: String,
    pub quantity: i64,
    pub unit_cost_cents: i64,
}

/// `POST /v1/deliveries`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"delivery_id": "d-1", "supplier_id": "acme", "store_id": "berlin-1",
    "occurred_at": "2026-11-02T07:00:00+01:00", "lines": [{"item_id": "sku-1", "quantity": 40, "unit_cost_cents": 780}]}))]
pub struct NewDelivery {
    pub delivery_id: String,
    pub supplier_id: String,
    pub store_id: String,
    /// RFC 3339 with offset; defaults to the time the request was received.
    pub occurred_at: Option<String>,
    pub lines: Vec<DeliveryLineIn>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CorrectedLineIn {
    pub item_id: String,
    /// 0 removes the item from the delivery.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub quantity: i64,
    pub unit_cost_cents: i64,
}

/// `POST /v1/deliveries/{delivery_id}/corrections`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"correction_id": "c-1", "reason": "recounted at the store",
    "lines": [{"item_id": "sku-1", "quantity": 38, "unit_cost_cents": 780}]}))]
pub struct CorrectDelivery {
    pub correction_id: String,
    pub reason: String,
    /// The corrected delivery note: it replaces the delivery's lines as last corrected (an item of
    /// the delivery that it leaves out, or lists with quantity 0, is removed).
    pub lines: Vec<CorrectedLineIn>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SaleLineIn {
    pub item_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    /// Off the line's list value (`quantity × unit_price_cents`), 0 up to all of it [default: 0].
    #[serde(default)]
    pub discount_cents: Option<i64>,
}

/// `POST /v1/sales`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"sale_id": "s-1", "store_id": "berlin-1", "occurred_at": "2026-11-02T10:15:00+01:00",
    "till_id": "till-3", "lines": [{"item_id": "sku-1", "quantity": 2, "unit_price_cents": 1299, "discount_cents": 200}]}))]
pub struct NewSale {
    pub sale_id: String,
    pub store_id: String,
    pub occurred_at: Option<String>,
    /// The POS terminal the sale was rung up on (an id), if the store tracks tills.
    #[serde(default)]
    pub till_id: Option<String>,
    pub lines: Vec<SaleLineIn>,
}

/// `POST /v1/sales/{sale_id}/void`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"reason": "rung up twice"}))]
pub struct VoidSale {
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReturnLineIn {
    pub item_id: String,
    pub quantity: i64,
}

/// `POST /v1/returns`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"return_id": "r-1", "sale_id": "s-1", "store_id": "berlin-1", "lines": [{"item_id": "sku-1", "quantity": 1}]}))]
pub struct NewReturn {
    pub return_id: String,
    pub sale_id: String,
    pub store_id: String,
    pub occurred_at: Option<String>,
    pub lines: Vec<ReturnLineIn>,
}

/// `POST /v1/stock-adjustments`
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"adjustment_id": "a-1", "store_id": "berlin-1", "item_id": "sku-1", "delta": -2, "reason": "damage"}))]
pub struct NewAdjustment {
    pub adjustment_id: String,
    pub store_id: String,
    pub item_id: String,
    /// A non-zero integer between -1000000 and 1000000.
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub delta: i64,
    /// One of `damage`, `theft`, `count_correction`, `other`.
    pub reason: String,
}

/// The answer to every accepted command.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"command_id": "0193a5b0-7c1e-7000-8000-000000000000", "status": "accepted",
    "status_url": "/v1/commands/0193a5b0-7c1e-7000-8000-000000000000"}))]
pub struct AcceptedBody {
    pub command_id: String,
    pub status: String,
    pub status_url: String,
}

impl NewSupplier {
    pub fn into_command(self) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let supplier_id = c.field("supplier_id", SupplierId::parse(self.supplier_id));
        let name = c.field("name", Text::parse(self.name));
        let cmd = (|| {
            Some(Command::RegisterSupplier {
                supplier_id: supplier_id?,
                name: name?,
            })
        })();
        c.finish(cmd)
    }
}

impl NewStore {
    pub fn into_command(self) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let store_id = c.field("store_id", StoreId::parse(self.store_id));
        let name = c.field("name", Text::parse(self.name));
        let timezone = c.field("timezone", TimeZoneName::parse(self.timezone));
        let cmd = (|| {
            Some(Command::RegisterStore {
                store_id: store_id?,
                name: name?,
                timezone: timezone?,
            })
        })();
        c.finish(cmd)
    }
}

impl NewItem {
    pub fn into_command(self) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let item_id = c.field("item_id", ItemId::parse(self.item_id));
        let name = c.field("name", Text::parse(self.name));
        let supplier_id = c.field("supplier_id", SupplierId::parse(self.supplier_id));
        let price = c.field("unit_price_cents", Cents::new(self.unit_price_cents));
        let cmd = (|| {
            Some(Command::RegisterItem {
                item_id: item_id?,
                name: name?,
                supplier_id: supplier_id?,
                unit_price_cents: price?,
            })
        })();
        c.finish(cmd)
    }
}

impl NewDelivery {
    pub fn into_command(self, now: Timestamp) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let delivery_id = c.field("delivery_id", DeliveryId::parse(self.delivery_id));
        let supplier_id = c.field("supplier_id", SupplierId::parse(self.supplier_id));
        let store_id = c.field("store_id", StoreId::parse(self.store_id));
        let occurred_at = c.occurred_at(&self.occurred_at, now);
        let lines = c.lines(
            &self.lines,
            |l| &l.item_id,
            |c, i, l| {
                let item_id = c.field(
                    &format!("lines[{i}].item_id"),
                    ItemId::parse(l.item_id.clone()),
                );
                let quantity = c.field(&format!("lines[{i}].quantity"), Quantity::new(l.quantity));
                let cost = c.field(
                    &format!("lines[{i}].unit_cost_cents"),
                    Cents::new(l.unit_cost_cents),
                );
                Some(DeliveryLine {
                    item_id: item_id?,
                    quantity: quantity?,
                    unit_cost_cents: cost?,
                })
            },
        );
        let cmd = (|| {
            Some(Command::RecordDelivery {
                delivery_id: delivery_id?,
                supplier_id: supplier_id?,
                store_id: store_id?,
                occurred_at: occurred_at?,
                lines: lines?,
            })
        })();
        c.finish(cmd)
    }
}

impl NewSale {
    pub fn into_command(self, now: Timestamp) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let sale_id = c.field("sale_id", SaleId::parse(self.sale_id));
        let store_id = c.field("store_id", StoreId::parse(self.store_id));
        let occurred_at = c.occurred_at(&self.occurred_at, now);
        let lines = c.lines(
            &self.lines,
            |l| &l.item_id,
            |c, i, l| {
                let item_id = c.field(
                    &format!("lines[{i}].item_id"),
                    ItemId::parse(l.item_id.clone()),
                );
                let quantity = c.field(&format!("lines[{i}].quantity"), Quantity::new(l.quantity));
                let price = c.field(
                    &format!("lines[{i}].unit_price_cents"),
                    Cents::new(l.unit_price_cents),
                );
                let discount_field = format!("lines[{i}].discount_cents");
                let discount = c.field(&discount_field, Cents::new(l.discount_cents.unwrap_or(0)));
                let line = SaleLine {
                    item_id: item_id?,
                    quantity: quantity?,
                    unit_price_cents: price?,
                    discount_cents: discount?,
                };
                if !line.discount_fits() {
                    c.fail(
                        &discount_field,
                        "must not be more than the line's value (quantity × unit_price_cents)",
                    );
                    return None;
                }
                Some(line)
            },
        );
        let till_id = match self.till_id {
            Some(raw) => c.field("till_id", TillId::parse(raw)).map(Some),
            None => Some(None),
        };
        let cmd = (|| {
            Some(Command::RecordSale {
                sale_id: sale_id?,
                store_id: store_id?,
                occurred_at: occurred_at?,
                lines: lines?,
                till_id: till_id?,
            })
        })();
        c.finish(cmd)
    }
}

impl VoidSale {
    pub fn into_command(
        self,
        sale_id: String,
        only_store: Option<StoreId>,
        now: Timestamp,
    ) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let sale_id = c.field("sale_id", SaleId::parse(sale_id));
        let reason = c.field("reason", Text::parse(self.reason));
        let cmd = (|| {
            Some(Command::VoidSale {
                sale_id: sale_id?,
                reason: reason?,
                occurred_at: now,
                only_store,
            })
        })();
        c.finish(cmd)
    }
}

impl CorrectDelivery {
    pub fn into_command(
        self,
        delivery_id: String,
        only_supplier: Option<SupplierId>,
    ) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let delivery_id = c.field("delivery_id", DeliveryId::parse(delivery_id));
        let correction_id = c.field("correction_id", CorrectionId::parse(self.correction_id));
        let reason = c.field("reason", Text::parse(self.reason));
        let lines = c.lines(
            &self.lines,
            |l| &l.item_id,
            |c, i, l| {
                let item_id = c.field(
                    &format!("lines[{i}].item_id"),
                    ItemId::parse(l.item_id.clone()),
                );
                let quantity = c.field(
                    &format!("lines[{i}].quantity"),
                    CorrectedQuantity::new(l.quantity),
                );
                let cost = c.field(
                    &format!("lines[{i}].unit_cost_cents"),
                    Cents::new(l.unit_cost_cents),
                );
                Some(CorrectedLine {
                    item_id: item_id?,
                    quantity: quantity?,
                    unit_cost_cents: cost?,
                })
            },
        );
        let cmd = (|| {
            Some(Command::CorrectDelivery {
                correction_id: correction_id?,
                delivery_id: delivery_id?,
                reason: reason?,
                lines: lines?,
                only_supplier,
            })
        })();
        c.finish(cmd)
    }
}

impl NewReturn {
    pub fn into_command(self, now: Timestamp) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let return_id = c.field("return_id", ReturnId::parse(self.return_id));
        let sale_id = c.field("sale_id", SaleId::parse(self.sale_id));
        let store_id = c.field("store_id", StoreId::parse(self.store_id));
        let occurred_at = c.occurred_at(&self.occurred_at, now);
        let lines = c.lines(
            &self.lines,
            |l| &l.item_id,
            |c, i, l| {
                let item_id = c.field(
                    &format!("lines[{i}].item_id"),
                    ItemId::parse(l.item_id.clone()),
                );
                let quantity = c.field(&format!("lines[{i}].quantity"), Quantity::new(l.quantity));
                Some(ReturnLine {
                    item_id: item_id?,
                    quantity: quantity?,
                })
            },
        );
        let cmd = (|| {
            Some(Command::RecordReturn {
                return_id: return_id?,
                sale_id: sale_id?,
                store_id: store_id?,
                occurred_at: occurred_at?,
                lines: lines?,
            })
        })();
        c.finish(cmd)
    }
}

impl NewAdjustment {
    pub fn into_command(self, now: Timestamp) -> Result<Command, ApiError> {
        let mut c = Check::default();
        let adjustment_id = c.field("adjustment_id", AdjustmentId::parse(self.adjustment_id));
        let store_id = c.field("store_id", StoreId::parse(self.store_id));
        let item_id = c.field("item_id", ItemId::parse(self.item_id));
        let delta = c.field("delta", StockDelta::new(self.delta));
        let reason = c.field("reason", AdjustmentReason::parse(&self.reason));
        let cmd = (|| {
            Some(Command::AdjustStock {
                adjustment_id: adjustment_id?,
                store_id: store_id?,
                item_id: item_id?,
                delta: delta?,
                reason: reason?,
                occurred_at: now,
            })
        })();
        c.finish(cmd)
    }
}
