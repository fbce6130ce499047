//! The aggregates' state, as folded from their streams. Each stream folds into one aggregate: `store-*`
//! into a store with its stock, `sale-*` into a sale with what was returned of it, and so on. An event
//! that belongs to several streams is applied to each of them separately, so a stream loaded on its own
//! (the processor loads lazily) gets exactly its own events and nothing twice.

use foldhash::{HashMap, HashSet};

use jiff::civil::Date;

use crate::event::{DeliveredLine, Event, SoldLine, StreamId};
use crate::values::{DeliveryId, ItemId, SaleId, StoreId, SupplierId, TillId, TimeZoneName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    pub timezone: TimeZoneName,
    /// On-hand quantity per item; an item never moved is absent (zero).
    pub stock: HashMap<ItemId, i64>,
}

impl StoreState {
    pub fn on_hand(&self, item: &ItemId) -> i64 {
        self.stock.get(item).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub supplier_id: SupplierId,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleState {
    pub store_id: StoreId,
    pub business_date: Date,
    pub lines: Vec<SoldLine>,
    pub till_id: Option<TillId>,
    pub returned: HashMap<ItemId, i64>,
    pub voided: bool,
}

impl SaleState {
    pub fn line(&self, item: &ItemId) -> Option<&SoldLine> {
        self.lines.iter().find(|l| &l.item_id == item)
    }
    pub fn returned_of(&self, item: &ItemId) -> i64 {
        self.returned.get(item).copied().unwrap_or(0)
    }
}

/// A delivery as last corrected, folded from its `delivery-*` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub supplier_id: SupplierId,
    pub store_id: StoreId,
    pub business_date: Date,
    /// The lines as last corrected (no line of quantity 0).
    pub lines: Vec<DeliveredLine>,
}

impl DeliveryState {
    pub fn line(&self, item: &ItemId) -> Option<&DeliveredLine> {
        self.lines.iter().find(|l| &l.item_id == item)
    }
}

/// The state of every aggregate the holder has loaded, with each stream's version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    versions: HashMap<StreamId, u64>,
    suppliers: HashSet<SupplierId>,
    stores: HashMap<StoreId, StoreState>,
    items: HashMap<ItemId, ItemState>,
    sales: HashMap<SaleId, SaleState>,
    deliveries: HashMap<DeliveryId, DeliveryState>,
}

impl State {
    /// The number of events in a stream (0: the stream does not exist).
    pub fn version(&self, stream: &StreamId) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }
    pub fn exists(&self, stream: &StreamId) -> bool {
        self.version(stream) > 0
    }
    pub fn has_supplier(&self, id: &SupplierId) -> bool {
        self.suppliers.contains(id)
    }
    pub fn store(&self, id: &StoreId) -> Option<&StoreState> {
        self.stores.get(id)
    }
    pub fn item(&self, id: &ItemId) -> Option<&ItemState> {
        self.items.get(id)
    }
    pub fn sale(&self, id: &SaleId) -> Option<&SaleState> {
        self.sales.get(id)
    }
    pub fn stores(&self) -> impl Iterator<Item = (&StoreId, &StoreState)> {
        self.stores.iter()
    }
    pub fn delivery(&self, id: &DeliveryId) -> Option<&DeliveryState> {
        self.deliveries.get(id)
    }
    pub fn deliveries(&self) -> impl Iterator<Item = (&DeliveryId, &DeliveryState)> {
        self.deliveries.iter()
    }

    /// Applies a newly decided event to every stream it belongs to.
    pub fn apply(&mut self, event: &Event) {
        for stream in event.streams() {
            let version = self.version(&stream) + 1;
            self.apply_to(&stream, version, event);
        }
    }

    /// Applies an event to one of its streams only, as the `version`-th event of that stream. Applying
    /// cannot fail: the event is a fact.
    pub fn apply_to(&mut self, stream: &StreamId, version: u64, event: &Event) {
        self.versions.insert(stream.clone(), version);
        let s = stream.as_str();
        match event {
            Event::SupplierRegistered(e) => {
                self.suppliers.insert(e.supplier_id.clone());
            }
            Event::StoreRegistered(e) => {
                self.stores.insert(
                    e.store_id.clone(),
                    StoreState {
                        timezone: e.timezone.clone(),
                        stock: HashMap::default(),
                    },
                );
            }
            Event::ItemRegistered(e) => {
                self.items.insert(
                    e.item_id.clone(),
                    ItemState {
                        supplier_id: e.supplier_id.clone(),
                        unit_price_cents: e.unit_price_cents.get(),
                    },
                );
            }
            Event::GoodsDelivered(e) if s.starts_with("store-") => {
                for l in &e.lines {
                    self.move_stock(&e.store_id, &l.item_id, l.quantity.get());
                }
            }
            Event::GoodsDelivered(e) => {
                self.deliveries.insert(
                    e.delivery_id.clone(),
                    DeliveryState {
                        supplier_id: e.supplier_id.clone(),
                        store_id: e.store_id.clone(),
                        business_date: e.business_date,
                        lines: e.lines.clone(),
                    },
                );
            }
            Event::DeliveryCorrected(e) if s.starts_with("store-") => {
                for c in &e.changes {
                    self.move_stock(&e.store_id, &c.item_id, c.quantity_change);
                }
            }
            Event::DeliveryCorrected(e) if s.starts_with("delivery-") => {
                if let Some(delivery) = self.deliveries.get_mut(&e.delivery_id) {
                    delivery.lines.clone_from(&e.lines);
                }
            }
            Event::SaleRecorded(e) if s.starts_with("store-") => {
                for l in &e.lines {
                    self.move_stock(&e.store_id, &l.item_id, -l.quantity.get());
                }
            }
            Event::SaleRecorded(e) => {
                self.sales.insert(
                    e.sale_id.clone(),
                    SaleState {
                        store_id: e.store_id.clone(),
                        business_date: e.business_date,
                        lines: e.lines.clone(),
                        till_id: e.till_id.clone(),
                        returned: HashMap::default(),
                        voided: false,
                    },
                );
            }
            Event::SaleVoided(e) if s.starts_with("store-") => {
                for l in &e.lines {
                    self.move_stock(&e.store_id, &l.item_id, l.quantity.get());
                }
            }
            Event::SaleVoided(e) => {
                if let Some(sale) = self.sales.get_mut(&e.sale_id) {
                    sale.voided = true;
                }
            }
            Event::ReturnRecorded(e) if s.starts_with("store-") => {
                for l in &e.lines {
                    self.move_stock(&e.store_id, &l.item_id, l.quantity.get());
                }
            }
            Event::ReturnRecorded(e) if s.starts_with("sale-") => {
                if let Some(sale) = self.sales.get_mut(&e.sale_id) {
                    for l in &e.lines {
                        *sale.returned.entry(l.item_id.clone()).or_insert(0) += l.quantity.get();
                    }
                }
            }
            Event::StockAdjusted(e) if s.starts_with("store-") => {
                self.move_stock(&e.store_id, &e.item_id, e.delta.get());
            }
            // The id streams (return-*, adjustment-*, correction-*) only record that the id is used.
            Event::ReturnRecorded(_) | Event::StockAdjusted(_) | Event::DeliveryCorrected(_) => {}
        }
    }

    fn move_stock(&mut self, store: &StoreId, item: &ItemId, delta: i64) {
        if let Some(st) = self.stores.get_mut(store) {
            *st.stock.entry(item.clone()).or_insert(0) += delta;
        }
    }

    /// Drops a stream's aggregate and version, so that the holder loads it again (after a conflict).
    pub fn forget(&mut self, stream: &StreamId) {
        self.versions.remove(stream);
        let s = stream.as_str();
        if let Some(Ok(id)) = s.strip_prefix("store-").map(StoreId::parse) {
            self.stores.remove(&id);
        } else if let Some(Ok(id)) = s.strip_prefix("sale-").map(SaleId::parse) {
            self.sales.remove(&id);
        } else if let Some(Ok(id)) = s.strip_prefix("item-").map(ItemId::parse) {
            self.items.remove(&id);
        } else if let Some(Ok(id)) = s.strip_prefix("supplier-").map(SupplierId::parse) {
            self.suppliers.remove(&id);
        } else if let Some(Ok(id)) = s.strip_prefix("delivery-").map(DeliveryId::parse) {
            self.deliveries.remove(&id);
        }
    }
}
