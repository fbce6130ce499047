//! Commands: what a client asks the ledger to do, in the imperative. A command is already well formed
//! (its values are validated types); whether it may happen is decided by [`crate::decide`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::values::{
    AdjustmentId, AdjustmentReason, Cents, CorrectedQuantity, CorrectionId, DeliveryId, ItemId,
    Quantity, ReturnId, SaleId, StockDelta, StoreId, SupplierId, Text, TillId, TimeZoneName,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLine {
    pub item_id: ItemId,
    pub quantity: Quantity,
    pub unit_cost_cents: Cents,
}

/// A line of a corrected delivery note: quantity 0 removes the item from the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectedLine {
    pub item_id: ItemId,
    pub quantity: CorrectedQuantity,
    pub unit_cost_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleLine {
    pub item_id: ItemId,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
    /// Off the line's list value (`quantity × unit_price_cents`), at most all of it. Absent in
    /// commands queued by a build before discounts: 0.
    #[serde(default = "no_discount")]
    pub discount_cents: Cents,
}

fn no_discount() -> Cents {
    Cents::ZERO
}

impl SaleLine {
    /// Whether the discount is within the line's list value (the gateway refuses it otherwise, and
    /// so does [`crate::decide`]).
    pub fn discount_fits(&self) -> bool {
        self.discount_cents.get()
            <= self
                .quantity
                .get()
                .saturating_mul(self.unit_price_cents.get())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnLine {
    pub item_id: ItemId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    RegisterSupplier {
        supplier_id: SupplierId,
        name: Text,
    },
    RegisterStore {
        store_id: StoreId,
        name: Text,
        timezone: TimeZoneName,
    },
    RegisterItem {
        item_id: ItemId,
        name: Text,
        supplier_id: SupplierId,
        unit_price_cents: Cents,
    },
    RecordDelivery {
        delivery_id: DeliveryId,
        supplier_id: SupplierId,
        store_id: StoreId,
        occurred_at: Timestamp,
        lines: Vec<DeliveryLine>,
    },
    RecordSale {
        sale_id: SaleId,
        store_id: StoreId,
        occurred_at: Timestamp,
        lines: Vec<SaleLine>,
        /// The POS terminal, when the store says.
        #[serde(default)]
        till_id: Option<TillId>,
    },
    /// A void names only the sale; `only_store` carries the scope of a store key, which may void only
    /// its own store's sales (any other sale is `unknown_sale` to it).
    VoidSale {
        sale_id: SaleId,
        reason: Text,
        occurred_at: Timestamp,
        only_store: Option<StoreId>,
    },
    RecordReturn {
        return_id: ReturnId,
        sale_id: SaleId,
        store_id: StoreId,
        occurred_at: Timestamp,
        lines: Vec<ReturnLine>,
    },
    AdjustStock {
        adjustment_id: AdjustmentId,
        store_id: StoreId,
        item_id: ItemId,
        delta: StockDelta,
        reason: AdjustmentReason,
        occurred_at: Timestamp,
    },
    /// Replaces a delivery's lines with the corrected delivery note: an item of the delivery that the
    /// note does not list, or lists with quantity 0, is removed; an item not in the delivery is added.
    /// It names only the delivery; `only_supplier` carries the scope of a supplier key, which may
    /// correct only its own supplier's deliveries (any other delivery is `unknown_delivery` to it).
    CorrectDelivery {
        correction_id: CorrectionId,
        delivery_id: DeliveryId,
        reason: Text,
        lines: Vec<CorrectedLine>,
        only_supplier: Option<SupplierId>,
    },
}

impl Command {
    /// Every command's [`Command::kind`], indexed by [`Command::kind_index`] (metrics keep one counter
    /// per kind in an array).
    pub const KINDS: [&'static str; 9] = [
        "register_supplier",
        "register_store",
        "register_item",
        "record_delivery",
        "record_sale",
        "void_sale",
        "record_return",
        "adjust_stock",
        "correct_delivery",
    ];

    /// The command's name as clients and metrics see it.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Where [`Command::kind`] stands in [`Command::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Command::RegisterSupplier { .. } => 0,
            Command::RegisterStore { .. } => 1,
            Command::RegisterItem { .. } => 2,
            Command::RecordDelivery { .. } => 3,
            Command::RecordSale { .. } => 4,
            Command::VoidSale { .. } => 5,
            Command::RecordReturn { .. } => 6,
            Command::AdjustStock { .. } => 7,
            Command::CorrectDelivery { .. } => 8,
        }
    }

    /// The key that orders commands: commands with the same key are applied in arrival order. It is the
    /// store for everything that happens in a store; reference data, voids and delivery corrections
    /// (which name no store) use a key of their own. All corrections of one delivery share a key, so
    /// each is decided after the one before it.
    pub fn partition_key(&self) -> String {
        match self {
            Command::RegisterSupplier { .. }
            | Command::RegisterStore { .. }
            | Command::RegisterItem { .. } => "reference".to_owned(),
            Command::RecordDelivery { store_id, .. }
            | Command::RecordSale { store_id, .. }
            | Command::RecordReturn { store_id, .. }
            | Command::AdjustStock { store_id, .. } => format!("store:{store_id}"),
            Command::VoidSale {
                only_store: Some(store_id),
                ..
            } => format!("store:{store_id}"),
            Command::VoidSale { sale_id, .. } => format!("sale:{sale_id}"),
            Command::CorrectDelivery { delivery_id, .. } => format!("delivery:{delivery_id}"),
        }
    }

    /// Every stream whose state [`crate::decide`] reads for this command. The processor makes sure each
    /// is loaded (or known not to exist) before it decides.
    pub fn streams_read(&self) -> Vec<crate::StreamId> {
        use crate::StreamId as S;
        match self {
            Command::RegisterSupplier { supplier_id, .. } => vec![S::supplier(supplier_id)],
            Command::RegisterStore { store_id, .. } => vec![S::store(store_id)],
            Command::RegisterItem {
                item_id,
                supplier_id,
                ..
            } => vec![S::item(item_id), S::supplier(supplier_id)],
            Command::RecordDelivery {
                delivery_id,
                supplier_id,
                store_id,
                lines,
                ..
            } => {
                let mut s = vec![
                    S::delivery(delivery_id),
                    S::supplier(supplier_id),
                    S::store(store_id),
                ];
                s.extend(lines.iter().map(|l| S::item(&l.item_id)));
                s
            }
            Command::RecordSale {
                sale_id,
                store_id,
                lines,
                ..
            } => {
                let mut s = vec![S::sale(sale_id), S::store(store_id)];
                s.extend(lines.iter().map(|l| S::item(&l.item_id)));
                s
            }
            Command::VoidSale { sale_id, .. } => vec![S::sale(sale_id)],
            Command::RecordReturn {
                return_id,
                sale_id,
                store_id,
                lines,
                ..
            } => {
                let mut s = vec![S::return_(return_id), S::sale(sale_id), S::store(store_id)];
                s.extend(lines.iter().map(|l| S::item(&l.item_id)));
                s
            }
            Command::AdjustStock {
                adjustment_id,
                store_id,
                item_id,
                ..
            } => vec![
                S::adjustment(adjustment_id),
                S::store(store_id),
                S::item(item_id),
            ],
            // The delivery names its store: see `Command::dependent_streams`.
            Command::CorrectDelivery {
                correction_id,
                delivery_id,
                lines,
                ..
            } => {
                let mut s = vec![S::correction(correction_id), S::delivery(delivery_id)];
                s.extend(lines.iter().map(|l| S::item(&l.item_id)));
                s
            }
        }
    }
}
