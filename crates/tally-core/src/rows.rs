//! The rows queries answer with, named: what the [`crate::ReadModels`] port returns for the read
//! models as they are, and what [`crate::timetravel`] returns for them as of an earlier moment. Ids
//! are domain types: an adapter that reads a malformed one from storage says so (`Error::Corrupt`).

use jiff::civil::Date;
use tally_domain::values::{ItemId, StoreId, SupplierId};

use crate::readmodel::{DayFigures, ItemDay};

/// An answer and the global position of the log it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positioned<T> {
    pub position: u64,
    pub rows: T,
}

impl<T> Positioned<T> {
    pub fn new(position: u64, rows: T) -> Self {
        Self { position, rows }
    }
}

/// Business dates from `from` to `to`, both inclusive; an absent end is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<Date>,
    pub to: Option<Date>,
}

impl DateRange {
    pub fn new(from: Option<Date>, to: Option<Date>) -> Self {
        Self { from, to }
    }
    pub fn day(date: Date) -> Self {
        Self::new(Some(date), Some(date))
    }
    pub fn contains(&self, date: Date) -> bool {
        self.from.is_none_or(|f| date >= f) && self.to.is_none_or(|t| date <= t)
    }
}

/// One business date's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dated<F> {
    pub date: Date,
    pub figures: F,
}

/// An item's stock in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    pub item_id: ItemId,
    pub on_hand: i64,
}

/// A store's figures on the date asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSales {
    pub store_id: StoreId,
    pub figures: DayFigures,
}

/// One item's daily sales, and its supplier (known once it has sold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemSales {
    pub supplier_id: Option<SupplierId>,
    pub days: Vec<Dated<ItemDay>>,
}

/// What the top-items ranking covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopItemsQuery {
    pub range: DateRange,
    pub store: Option<StoreId>,
    pub supplier: Option<SupplierId>,
    /// 1 to 100.
    pub limit: usize,
}

/// An item's place in a ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopItem {
    pub item_id: ItemId,
    pub units_sold: i64,
    pub net_cents: i64,
}

/// Ranks items by units sold (most first), then item id; keeps `limit`.
pub fn rank(mut items: Vec<TopItem>, limit: usize) -> Vec<TopItem> {
    items.retain(|i| i.units_sold != 0 || i.net_cents != 0);
    items.sort_by(|a, b| {
        b.units_sold
            .cmp(&a.units_sold)
            .then_with(|| a.item_id.as_str().cmp(b.item_id.as_str()))
    });
    items.truncate(limit);
    items
}

/// A registered store, as the reference read model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEntry {
    pub store_id: StoreId,
    pub name: String,
    /// The store's IANA time zone (its business dates are local dates there).
    pub timezone: String,
}

/// A registered supplier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupplierEntry {
    pub supplier_id: SupplierId,
    pub name: String,
}

/// A registered item with its list price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEntry {
    pub item_id: ItemId,
    pub name: String,
    pub supplier_id: SupplierId,
    pub unit_price_cents: i64,
}

/// Everything registered (the reference read model), each list by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub stores: Vec<StoreEntry>,
    pub suppliers: Vec<SupplierEntry>,
    pub items: Vec<ItemEntry>,
}

/// The reference tables' rows as an adapter reads them: (id, name, time zone), (id, name) and
/// (id, name, supplier id, price).
pub type RawCatalog = (
    Vec<(String, String, String)>,
    Vec<(String, String)>,
    Vec<(String, String, String, i64)>,
);

impl Catalog {
    /// The rows read from storage, their ids parsed (a malformed one is `Error::Corrupt`).
    pub fn parse((stores, suppliers, items): RawCatalog) -> crate::ports::Result<Self> {
        use crate::timetravel::{item_id, store_id, supplier_id};
        Ok(Self {
            stores: stores
                .into_iter()
                .map(|(id, name, timezone)| {
                    Ok(StoreEntry {
                        store_id: store_id(&id)?,
                        name,
                        timezone,
                    })
                })
                .collect::<crate::ports::Result<_>>()?,
            suppliers: suppliers
                .into_iter()
                .map(|(id, name)| {
                    Ok(SupplierEntry {
                        supplier_id: supplier_id(&id)?,
                        name,
                    })
                })
                .collect::<crate::ports::Result<_>>()?,
            items: items
                .into_iter()
                .map(|(id, name, supplier, unit_price_cents)| {
                    Ok(ItemEntry {
                        item_id: item_id(&id)?,
                        name,
                        supplier_id: supplier_id(&supplier)?,
                        unit_price_cents,
                    })
                })
                .collect::<crate::ports::Result<_>>()?,
        })
    }
}
