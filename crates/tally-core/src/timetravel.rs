//! Time travel: the read models as the system knew them at an earlier moment, folded from the log.
//!
//! An answer "as of" a position `P` is the fold of exactly the events at positions `1..=P`, with the
//! same folds ([`Accumulator`]) the projector applies to the live read models, so the two can never
//! disagree on arithmetic. `recorded_at` never decreases along the log ([`EventStore::commit`]), so
//! "as known at instant T" is the prefix up to [`EventStore::position_at`]`(T)`. Business time
//! (`at`) is a filter on that prefix: only movements that happened (`occurred_at`) at or before it.
//!
//! What is folded is as little of the log as answers the question: a store's questions fold that
//! store's stream (every event that moves its stock or its figures belongs to it); a supplier's, or
//! every store's, fold the log's prefix. This is exact by construction and costs nothing on the write
//! path or the projector; its cost is the length of what it folds (ARCHITECTURE.md, "Time travel").

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use tally_domain::values::{ItemId, StoreId, SupplierId};
use tally_domain::{Event, StreamId};
use uuid::Uuid;

use crate::model::RecordedEvent;
use crate::ports::{Error, EventStore, Result};
use crate::readmodel::{
    Accumulator, DayFigures, Delta, INVENTORY, ITEM_DAILY, ItemDay, STORE_DAILY, SUPPLIER_DAILY,
    SupplierDay,
};
use crate::rows::{
    DateRange, Dated, ItemSales, Positioned, StockRow, StoreSales, TopItem, TopItemsQuery, rank,
};

/// Events read per step when folding the log's prefix.
const LOG_BATCH: usize = 5_000;

/// One version of a day's figures: the figures right after the event that changed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<F> {
    pub position: u64,
    pub recorded_at: Timestamp,
    pub command_id: Uuid,
    pub event_type: String,
    pub figures: F,
}

fn corrupt(position: u64, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("event {position}: {e}"))
}

fn decode(e: &RecordedEvent) -> Result<Event> {
    e.decode().map_err(|err| corrupt(e.position, err))
}

/// When a movement of stock happened in business time. A delivery correction moves stock on the
/// original delivery's behalf (the corrected delivery note replaces it), so it counts at that
/// delivery's `occurred_at`, which the fold has seen earlier in the same store's stream.
struct BusinessClock {
    deliveries: HashMap<String, Timestamp>,
}

impl BusinessClock {
    fn new() -> Self {
        Self {
            deliveries: HashMap::new(),
        }
    }

    fn occurred(&mut self, recorded: &RecordedEvent, event: &Event) -> Timestamp {
        match event {
            Event::GoodsDelivered(d) => {
                self.deliveries
                    .insert(d.delivery_id.as_str().to_owned(), recorded.occurred_at);
                recorded.occurred_at
            }
            Event::DeliveryCorrected(c) => self
                .deliveries
                .get(c.delivery_id.as_str())
                .copied()
                .unwrap_or(recorded.occurred_at),
            _ => recorded.occurred_at,
        }
    }
}

/// The fold of a prefix of the log, or of a store's stream.
pub struct TimeTravel {
    events: Arc<dyn EventStore>,
}

impl TimeTravel {
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self { events }
    }

    /// The prefix "as known at" `at`: its last position.
    pub async fn position_at(&self, at: Timestamp) -> Result<u64> {
        self.events.position_at(at).await
    }

    /// The store's events up to `upto`, decoded, each with its record.
    async fn store_events(
        &self,
        store: &StoreId,
        upto: u64,
    ) -> Result<Vec<(RecordedEvent, Event)>> {
        let recorded = self
            .events
            .read_stream_upto(&StreamId::store(store), upto)
            .await?;
        recorded
            .into_iter()
            .map(|r| decode(&r).map(|e| (r, e)))
            .collect()
    }

    /// Folds the store's stream up to `upto` into one projection; with `at`, only the movements
    /// that happened at or before it.
    async fn fold_store(
        &self,
        store: &StoreId,
        projection: &str,
        upto: u64,
        at: Option<Timestamp>,
    ) -> Result<Delta> {
        let mut acc = accumulator(projection)?;
        let mut clock = BusinessClock::new();
        for (recorded, event) in self.store_events(store, upto).await? {
            let occurred = clock.occurred(&recorded, &event);
            if at.is_none_or(|at| occurred <= at) {
                acc.fold(&event);
            }
        }
        Ok(acc.finish())
    }

    /// Calls `f` with every event of the log up to `upto`, in order.
    async fn each_in_log(
        &self,
        upto: u64,
        mut f: impl FnMut(&RecordedEvent, &Event),
    ) -> Result<()> {
        let mut after = 0;
        while after < upto {
            let limit = usize::try_from(upto - after).map_or(LOG_BATCH, |n| n.min(LOG_BATCH));
            let batch = self.events.read_all(after, limit).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for r in batch.iter().filter(|r| r.position <= upto) {
                f(r, &decode(r)?);
            }
        }
        Ok(())
    }

    /// Folds the log's prefix up to `upto` into one projection.
    async fn fold_log(&self, projection: &str, upto: u64) -> Result<Delta> {
        let mut acc = accumulator(projection)?;
        self.each_in_log(upto, |_, e| acc.fold(e)).await?;
        Ok(acc.finish())
    }

    pub async fn inventory(
        &self,
        store: &StoreId,
        upto: u64,
        at: Option<Timestamp>,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let Delta::Inventory(rows) = self.fold_store(store, INVENTORY, upto, at).await? else {
            return Err(wrong_delta(INVENTORY));
        };
        let mut out = rows
            .into_iter()
            .filter(|((s, _), _)| s == store.as_str())
            .map(|((_, item), on_hand)| {
                Ok(StockRow {
                    item_id: item_id(&item)?,
                    on_hand,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.item_id.as_str().cmp(b.item_id.as_str()));
        Ok(Positioned::new(upto, out))
    }

    pub async fn inventory_item(
        &self,
        store: &StoreId,
        item: &ItemId,
        upto: u64,
        at: Option<Timestamp>,
    ) -> Result<Positioned<i64>> {
        let all = self.inventory(store, upto, at).await?;
        let on_hand = all
            .rows
            .iter()
            .find(|r| &r.item_id == item)
            .map_or(0, |r| r.on_hand);
        Ok(Positioned::new(upto, on_hand))
    }

    pub async fn low_stock(
        &self,
        store: &StoreId,
        threshold: i64,
        upto: u64,
        at: Option<Timestamp>,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let all = self.inventory(store, upto, at).await?;
        Ok(Positioned::new(upto, low(all.rows, threshold)))
    }

    pub async fn store_daily(
        &self,
        store: &StoreId,
        range: DateRange,
        upto: u64,
    ) -> Result<Positioned<Vec<Dated<DayFigures>>>> {
        let Delta::StoreDaily(rows) = self.fold_store(store, STORE_DAILY, upto, None).await? else {
            return Err(wrong_delta(STORE_DAILY));
        };
        let days = rows
            .into_iter()
            .filter(|((s, d), f)| s == store.as_str() && range.contains(*d) && !f.is_empty())
            .map(|((_, date), figures)| Dated { date, figures });
        Ok(Positioned::new(upto, by_date(days)))
    }

    pub async fn daily_sales(&self, date: Date, upto: u64) -> Result<Positioned<Vec<StoreSales>>> {
        let Delta::StoreDaily(rows) = self.fold_log(STORE_DAILY, upto).await? else {
            return Err(wrong_delta(STORE_DAILY));
        };
        let mut out = rows
            .into_iter()
            .filter(|((_, d), f)| *d == date && !f.is_empty())
            .map(|((store, _), figures)| {
                Ok(StoreSales {
                    store_id: store_id(&store)?,
                    figures,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.store_id.as_str().cmp(b.store_id.as_str()));
        Ok(Positioned::new(upto, out))
    }

    pub async fn supplier_daily(
        &self,
        supplier: &SupplierId,
        range: DateRange,
        upto: u64,
    ) -> Result<Positioned<Vec<Dated<SupplierDay>>>> {
        let Delta::SupplierDaily(rows) = self.fold_log(SUPPLIER_DAILY, upto).await? else {
            return Err(wrong_delta(SUPPLIER_DAILY));
        };
        let days = rows
            .into_iter()
            .filter(|((s, d), f)| s == supplier.as_str() && range.contains(*d) && !f.is_empty())
            .map(|((_, date), figures)| Dated { date, figures });
        Ok(Positioned::new(upto, by_date(days)))
    }

    /// Item daily rows of the prefix: the store's stream when one is named, else the whole log.
    async fn item_rows(&self, store: Option<&StoreId>, upto: u64) -> Result<Delta> {
        match store {
            Some(store) => self.fold_store(store, ITEM_DAILY, upto, None).await,
            None => self.fold_log(ITEM_DAILY, upto).await,
        }
    }

    pub async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
        upto: u64,
    ) -> Result<Positioned<ItemSales>> {
        let Delta::ItemDaily(delta) = self.item_rows(store, upto).await? else {
            return Err(wrong_delta(ITEM_DAILY));
        };
        let mut days: HashMap<Date, ItemDay> = HashMap::new();
        for ((_, i, date), f) in &delta.rows {
            if i == item.as_str() && range.contains(*date) {
                days.entry(*date).or_default().add(f);
            }
        }
        let supplier_id = delta
            .suppliers
            .get(item.as_str())
            .map(|s| supplier_id(s))
            .transpose()?;
        let days = days
            .into_iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(date, figures)| Dated { date, figures });
        Ok(Positioned::new(
            upto,
            ItemSales {
                supplier_id,
                days: by_date(days),
            },
        ))
    }

    pub async fn top_items(
        &self,
        query: &TopItemsQuery,
        upto: u64,
    ) -> Result<Positioned<Vec<TopItem>>> {
        let Delta::ItemDaily(delta) = self.item_rows(query.store.as_ref(), upto).await? else {
            return Err(wrong_delta(ITEM_DAILY));
        };
        let mut totals: HashMap<&str, ItemDay> = HashMap::new();
        for ((_, item, date), f) in &delta.rows {
            let of_supplier = query
                .supplier
                .as_ref()
                .is_none_or(|s| delta.suppliers.get(item).is_some_and(|x| x == s.as_str()));
            if query.range.contains(*date) && of_supplier {
                totals.entry(item.as_str()).or_default().add(f);
            }
        }
        let items = totals
            .into_iter()
            .map(|(item, f)| {
                Ok(TopItem {
                    item_id: item_id(item)?,
                    units_sold: f.units_sold,
                    net_cents: f.net_cents(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Positioned::new(upto, rank(items, query.limit)))
    }

    /// Every version of a store's figures on one business date, in the order the log learned them.
    pub async fn store_day_history(
        &self,
        store: &StoreId,
        date: Date,
        upto: u64,
    ) -> Result<Positioned<Vec<Version<DayFigures>>>> {
        let mut figures = DayFigures::default();
        let mut versions = Vec::new();
        for (recorded, event) in self.store_events(store, upto).await? {
            if let Some((s, d, change)) = crate::readmodel::store_day_change(&event)
                && s == store.as_str()
                && d == date
            {
                figures.add(&change);
                versions.push(version(&recorded, figures));
            }
        }
        Ok(Positioned::new(upto, versions))
    }

    /// Every version of a supplier's figures on one business date, in the order the log learned them.
    pub async fn supplier_day_history(
        &self,
        supplier: &SupplierId,
        date: Date,
        upto: u64,
    ) -> Result<Positioned<Vec<Version<SupplierDay>>>> {
        let mut figures = SupplierDay::default();
        let mut versions = Vec::new();
        let key = (supplier.as_str().to_owned(), date);
        self.each_in_log(upto, |recorded, event| {
            let mut acc = Accumulator::SupplierDaily(Default::default());
            acc.fold(event);
            if let Delta::SupplierDaily(rows) = acc.finish()
                && let Some(change) = rows.get(&key)
            {
                figures.add(change);
                versions.push(version(recorded, figures));
            }
        })
        .await?;
        Ok(Positioned::new(upto, versions))
    }
}

fn version<F>(recorded: &RecordedEvent, figures: F) -> Version<F> {
    Version {
        position: recorded.position,
        recorded_at: recorded.recorded_at,
        command_id: recorded.metadata.command_id,
        event_type: recorded.event_type.clone(),
        figures,
    }
}

fn accumulator(projection: &str) -> Result<Accumulator> {
    Accumulator::for_projection(projection)
        .ok_or_else(|| Error::Corrupt(format!("no projection {projection:?}")))
}

fn wrong_delta(projection: &str) -> Error {
    Error::Corrupt(format!(
        "{projection} folded into another projection's rows"
    ))
}

fn by_date<F>(days: impl Iterator<Item = Dated<F>>) -> Vec<Dated<F>> {
    let mut days: Vec<_> = days.collect();
    days.sort_by_key(|d| d.date);
    days
}

/// The rows at or under `threshold`, by on hand, then item id.
pub fn low(mut rows: Vec<StockRow>, threshold: i64) -> Vec<StockRow> {
    rows.retain(|r| r.on_hand <= threshold);
    rows.sort_by(|a, b| {
        a.on_hand
            .cmp(&b.on_hand)
            .then_with(|| a.item_id.as_str().cmp(b.item_id.as_str()))
    });
    rows
}

/// Ids as stored, parsed back into domain types.
pub fn item_id(raw: &str) -> Result<ItemId> {
    ItemId::parse(raw).map_err(|e| Error::Corrupt(format!("item id {raw:?}: {e}")))
}
pub fn store_id(raw: &str) -> Result<StoreId> {
    StoreId::parse(raw).map_err(|e| Error::Corrupt(format!("store id {raw:?}: {e}")))
}
pub fn supplier_id(raw: &str) -> Result<SupplierId> {
    SupplierId::parse(raw).map_err(|e| Error::Corrupt(format!("supplier id {raw:?}: {e}")))
}
