//! Time travel: the read models as the system knew them at an earlier moment, folded from the log.
//!
//! An answer "as of" a position `P` is the fold of exactly the events at positions `1..=P`, with the
//! same folds ([`Accumulator`]) the projector applies to the live read models, so the two can never
//! disagree on arithmetic. `recorded_at` never decreases along the log ([`EventStore::commit`]), so
//! "as known at instant T" is the prefix up to [`EventStore::position_at`]`(T)`. Business time
//! (`at`) is a filter on that prefix: only movements that happened (`occurred_at`) at or before it.
//!
//! What is folded is the journal ([`crate::readmodel::journal`]): each store's moves, sealed per
//! interval of the log in compact binary chunks, so a store's whole history is a few rows to decode
//! rather than thousands of JSON payloads; and after the journal's last sealed interval, the log
//! itself (a store's stream from the version the chunks add up to, or the log's tail). Business time
//! (`at`) needs each movement's `occurred_at`, which the journal does not keep: it folds the store's
//! stream from the log. See ARCHITECTURE.md, "Time travel".

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use tally_domain::values::{ItemId, StoreId, SupplierId};
use tally_domain::{Event, StreamId};
use uuid::Uuid;

use crate::model::RecordedEvent;
use crate::ports::{Error, EventStore, Journal, Result};
use crate::readmodel::journal::{Chunk, Head, StoredChunk};
use crate::readmodel::{
    Accumulator, DayFigures, Delta, INVENTORY, ITEM_DAILY, ItemDay, Move, STORE_DAILY,
    SUPPLIER_DAILY, SupplierDay, moves,
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

/// The fold of a prefix of the log, from the journal and the log after it.
pub struct TimeTravel {
    events: Arc<dyn EventStore>,
    journal: Arc<dyn Journal>,
}

impl TimeTravel {
    pub fn new(events: Arc<dyn EventStore>, journal: Arc<dyn Journal>) -> Self {
        Self { events, journal }
    }

    /// The prefix "as known at" `at`: its last position.
    pub async fn position_at(&self, at: Timestamp) -> Result<u64> {
        self.events.position_at(at).await
    }

    /// Calls `f` with every move of `store` (or of every store) at positions up to `upto`: from the
    /// journal's chunks, then from the log after them. Each move comes with its position, and with
    /// its event's record when it was read from the log. In log order per store.
    async fn each_move(
        &self,
        store: Option<&StoreId>,
        upto: u64,
        mut f: impl FnMut(u64, &Move<'_>, Option<&RecordedEvent>),
    ) -> Result<()> {
        let journal = self.journal.chunks(store, upto, 0).await?;
        // With a store, its stream's version where the chunks end: where the log takes over.
        let mut version = 0;
        for stored in &journal.rows {
            let chunk = Chunk::decode(stored).map_err(|e| bad_chunk(stored, e))?;
            version += chunk.head().events;
            chunk.each(&stored.store, upto, |p, m| f(p, m, None));
        }
        self.each_move_after(store, version, journal.position, upto, f)
            .await
    }

    /// [`TimeTravel::each_move`] after the journal: the moves of the events after `sealed` up to
    /// `upto`, read from the log (a store's stream after version `after`, or the log's tail).
    async fn each_move_after(
        &self,
        store: Option<&StoreId>,
        after: u64,
        sealed: u64,
        upto: u64,
        mut f: impl FnMut(u64, &Move<'_>, Option<&RecordedEvent>),
    ) -> Result<()> {
        if upto <= sealed {
            return Ok(());
        }
        match store {
            Some(store) => {
                let stream = StreamId::store(store);
                for r in self.events.read_stream_after(&stream, after, upto).await? {
                    let event = decode(&r)?;
                    moves(&event, |m| f(r.position, &m, Some(&r)));
                }
                Ok(())
            }
            None => {
                self.each_in_log(sealed, upto, |r, event| {
                    moves(event, |m| f(r.position, &m, Some(r)));
                })
                .await
            }
        }
    }

    /// Folds the moves of `store` (or every store) up to `upto` that `keep` accepts (the question's
    /// item, dates or supplier, so the rows folded are the ones asked for) into one projection.
    async fn fold_where(
        &self,
        store: Option<&StoreId>,
        projection: &str,
        upto: u64,
        keep: impl Fn(&Move<'_>) -> bool,
    ) -> Result<Delta> {
        let mut acc = accumulator(projection)?;
        self.each_move(store, upto, |_, m, _| {
            if keep(m) {
                acc.fold_move(m)
            }
        })
        .await?;
        Ok(acc.finish())
    }

    /// Folds the store's stream from the log up to `upto`, only the movements that happened at or
    /// before `at` (business time needs each event's `occurred_at`, which only the log keeps).
    async fn fold_business_time(
        &self,
        store: &StoreId,
        projection: &str,
        upto: u64,
        at: Timestamp,
    ) -> Result<Delta> {
        let mut acc = accumulator(projection)?;
        let mut clock = BusinessClock::new();
        let stream = StreamId::store(store);
        for recorded in self.events.read_stream_after(&stream, 0, upto).await? {
            let event = decode(&recorded)?;
            if clock.occurred(&recorded, &event) <= at {
                acc.fold(&event);
            }
        }
        Ok(acc.finish())
    }

    /// Calls `f` with every event of the log after `after` up to `upto`, in order.
    async fn each_in_log(
        &self,
        mut after: u64,
        upto: u64,
        mut f: impl FnMut(&RecordedEvent, &Event),
    ) -> Result<()> {
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

    /// A store's stock as of `upto` (of `item` alone, when given): the stock in the head of its last
    /// chunk sealed at or before `upto`, the moves of the interval holding `upto`, and the log after
    /// the journal.
    async fn stock(
        &self,
        store: &StoreId,
        item: Option<&ItemId>,
        upto: u64,
    ) -> Result<HashMap<String, i64>> {
        let wanted = |i: &str| item.is_none_or(|x| x.as_str() == i);
        let mut stock: HashMap<String, i64> = HashMap::new();
        let mut add = |i: &str, change: i64| {
            if wanted(i) {
                *stock.entry(i.to_owned()).or_default() += change;
            }
        };
        let journal = self.journal.stock_chunks(Some(store), upto).await?;
        let mut version = 0;
        for stored in &journal.rows {
            if stored.interval_end <= upto {
                let head = Head::decode(stored).map_err(|e| bad_chunk(stored, e))?;
                version = head.version;
                head.each_stock(&mut add);
            } else {
                let chunk = Chunk::decode(stored).map_err(|e| bad_chunk(stored, e))?;
                version += chunk.head().events;
                chunk.each(&stored.store, upto, |_, m| {
                    if let Some(change) = m.stock_change() {
                        add(m.item, change);
                    }
                });
            }
        }
        self.each_move_after(Some(store), version, journal.position, upto, |_, m, _| {
            if let Some(change) = m.stock_change() {
                add(m.item, change);
            }
        })
        .await?;
        Ok(stock)
    }

    pub async fn inventory(
        &self,
        store: &StoreId,
        upto: u64,
        at: Option<Timestamp>,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let rows: Vec<(String, i64)> = match at {
            None => self.stock(store, None, upto).await?.into_iter().collect(),
            Some(at) => match self.fold_business_time(store, INVENTORY, upto, at).await? {
                Delta::Inventory(rows) => rows
                    .into_iter()
                    .filter(|((s, _), _)| s == store.as_str())
                    .map(|((_, item), n)| (item, n))
                    .collect(),
                _ => return Err(wrong_delta(INVENTORY)),
            },
        };
        let mut out = rows
            .into_iter()
            .map(|(item, on_hand)| {
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
        let on_hand = match at {
            None => self
                .stock(store, Some(item), upto)
                .await?
                .get(item.as_str())
                .copied(),
            Some(at) => match self.fold_business_time(store, INVENTORY, upto, at).await? {
                Delta::Inventory(rows) => rows.get(&(store.to_string(), item.to_string())).copied(),
                _ => return Err(wrong_delta(INVENTORY)),
            },
        };
        Ok(Positioned::new(upto, on_hand.unwrap_or(0)))
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
        let dates = |m: &Move<'_>| range.contains(m.date);
        let delta = self
            .fold_where(Some(store), STORE_DAILY, upto, dates)
            .await?;
        let Delta::StoreDaily(rows) = delta else {
            return Err(wrong_delta(STORE_DAILY));
        };
        let days = rows
            .into_iter()
            .filter(|((s, d), f)| s == store.as_str() && range.contains(*d) && !f.is_empty())
            .map(|((_, date), figures)| Dated { date, figures });
        Ok(Positioned::new(upto, by_date(days)))
    }

    pub async fn daily_sales(&self, date: Date, upto: u64) -> Result<Positioned<Vec<StoreSales>>> {
        let on = |m: &Move<'_>| m.date == date;
        let Delta::StoreDaily(rows) = self.fold_where(None, STORE_DAILY, upto, on).await? else {
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
        let asked = |m: &Move<'_>| m.supplier == supplier.as_str() && range.contains(m.date);
        let delta = self.fold_where(None, SUPPLIER_DAILY, upto, asked).await?;
        let Delta::SupplierDaily(rows) = delta else {
            return Err(wrong_delta(SUPPLIER_DAILY));
        };
        let days = rows
            .into_iter()
            .filter(|((s, d), f)| s == supplier.as_str() && range.contains(*d) && !f.is_empty())
            .map(|((_, date), figures)| Dated { date, figures });
        Ok(Positioned::new(upto, by_date(days)))
    }

    pub async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
        upto: u64,
    ) -> Result<Positioned<ItemSales>> {
        let asked = |m: &Move<'_>| m.item == item.as_str() && range.contains(m.date);
        let Delta::ItemDaily(delta) = self.fold_where(store, ITEM_DAILY, upto, asked).await? else {
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
        let dates = |m: &Move<'_>| query.range.contains(m.date);
        let store = query.store.as_ref();
        let Delta::ItemDaily(delta) = self.fold_where(store, ITEM_DAILY, upto, dates).await? else {
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
        let mut changes: Changes<DayFigures> = Changes::default();
        self.each_move(Some(store), upto, |p, m, r| {
            if m.kind.is_store_day() && m.date == date {
                changes.add(p, r, m, STORE_DAILY);
            }
        })
        .await?;
        let versions = changes.versions(self, |acc| match acc.finish() {
            Delta::StoreDaily(rows) => rows.into_values().next(),
            _ => None,
        });
        Ok(Positioned::new(upto, versions.await?))
    }

    /// Every version of a supplier's figures on one business date, in the order the log learned them.
    pub async fn supplier_day_history(
        &self,
        supplier: &SupplierId,
        date: Date,
        upto: u64,
    ) -> Result<Positioned<Vec<Version<SupplierDay>>>> {
        let mut changes: Changes<SupplierDay> = Changes::default();
        self.each_move(None, upto, |p, m, r| {
            if m.kind.is_supplier_day() && m.date == date && m.supplier == supplier.as_str() {
                changes.add(p, r, m, SUPPLIER_DAILY);
            }
        })
        .await?;
        let versions = changes.versions(self, |acc| match acc.finish() {
            Delta::SupplierDaily(rows) => rows.into_values().next(),
            _ => None,
        });
        Ok(Positioned::new(upto, versions.await?))
    }
}

/// The changes one day's figures took, by the position of the event that made each.
struct Changes<F> {
    by_position: std::collections::BTreeMap<u64, (Option<RecordedEvent>, Accumulator)>,
    _figures: std::marker::PhantomData<F>,
}

impl<F> Default for Changes<F> {
    fn default() -> Self {
        Self {
            by_position: Default::default(),
            _figures: std::marker::PhantomData,
        }
    }
}

impl<F: Copy + Default + PartialEq + Add> Changes<F> {
    fn add(
        &mut self,
        position: u64,
        record: Option<&RecordedEvent>,
        m: &Move<'_>,
        projection: &str,
    ) {
        let entry = self.by_position.entry(position).or_insert_with(|| {
            let acc = Accumulator::for_projection(projection)
                .unwrap_or_else(|| unreachable!("a projection of this module"));
            (record.cloned(), acc)
        });
        entry.1.fold_move(m);
    }

    /// The figures after each change, with its event's record (read from the log for the positions
    /// the journal gave).
    async fn versions(
        self,
        travel: &TimeTravel,
        change: impl Fn(Accumulator) -> Option<F>,
    ) -> Result<Vec<Version<F>>> {
        let missing: Vec<u64> = self
            .by_position
            .iter()
            .filter(|(_, (r, _))| r.is_none())
            .map(|(p, _)| *p)
            .collect();
        let mut records: HashMap<u64, RecordedEvent> = travel
            .events
            .read_positions(&missing)
            .await?
            .into_iter()
            .map(|r| (r.position, r))
            .collect();
        let mut figures = F::default();
        let mut out = Vec::with_capacity(self.by_position.len());
        for (position, (record, acc)) in self.by_position {
            let record = match record.or_else(|| records.remove(&position)) {
                Some(r) => r,
                None => {
                    return Err(Error::Corrupt(format!(
                        "event {position} is not in the log"
                    )));
                }
            };
            let before = figures;
            if let Some(c) = change(acc) {
                figures.add(&c);
            }
            // An event whose moves cancel out on this day did not change it.
            if figures != before {
                out.push(version(&record, figures));
            }
        }
        Ok(out)
    }
}

/// Figures that add up.
trait Add {
    fn add(&mut self, other: &Self);
}

impl Add for DayFigures {
    fn add(&mut self, other: &Self) {
        DayFigures::add(self, other)
    }
}

impl Add for SupplierDay {
    fn add(&mut self, other: &Self) {
        SupplierDay::add(self, other)
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

fn bad_chunk(stored: &StoredChunk, e: postcard::Error) -> Error {
    Error::Corrupt(format!(
        "journal chunk of {} ending at {}: {e}",
        stored.store, stored.interval_end
    ))
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
