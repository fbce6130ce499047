//! The journal: every store's [`Move`]s, kept compactly so that time travel folds a store's history
//! from a few binary rows instead of decoding its events' JSON.
//!
//! The log is cut into intervals of [`INTERVAL`] positions. When the projector has folded an
//! interval to its end, it seals it: one chunk per store that moved in it, holding that store's moves
//! (postcard, ids interned per chunk, about 12 bytes a move) and how many events of the store's stream
//! the interval holds. A chunk is written once and never changed, in the same transaction as the other
//! read models' updates; the journal's checkpoint is the end of the last sealed interval. What lies
//! after it (at most one interval, plus whatever the projector has not reached) is read from the log,
//! the store's stream from the version the chunks add up to.
//!
//! Each chunk's head also carries the store's whole stock at its interval's end and its stream's
//! version there, so that a store's stock as of a position is one head, the moves of the one
//! interval holding the position, and the log after the journal: never every interval before it.
//! The builder keeps each store's stock as of its last sealed chunk for that ([`Builder::resume`]
//! reads it back from the heads at a start).

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tally_domain::Event;

use super::{Kind, Move, moves};

/// The journal's projection name (its checkpoint is the end of the last sealed interval).
pub const JOURNAL: &str = "journal";

/// Positions per interval, by default. A store's open interval is read from the log by time travel:
/// at W1's 20 stores, about 800 events. Smaller intervals mean more, smaller chunks. Each chunk
/// records where its interval starts, so readers need not know the length.
pub const INTERVAL: u64 = 16_384;

/// A sealed chunk as stored: one store's moves over one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub store: String,
    /// The position before the interval's first (the previous interval's end).
    pub interval_start: u64,
    /// The last position of the interval.
    pub interval_end: u64,
    /// The encoded [`Head`].
    pub head: Vec<u8>,
    /// The encoded moves (empty when a reader asked for the head alone).
    pub moves: Vec<u8>,
}

/// A move as encoded: ids as indexes into the chunk's tables, the date as days since 1970-01-01.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Encoded {
    position: u64,
    kind: u8,
    item: u32,
    supplier: u32,
    days: i32,
    qty: i64,
    cents: i64,
    /// Added with sales' schema version 2; chunks written before it were emptied by the stores'
    /// migrations and folded again from the log.
    discount: i64,
}

/// A chunk's contents.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    head: Head,
    moves: Vec<Encoded>,
}

/// What a chunk says before its moves, readable without them: a store's stock as of a position is
/// the stock in the head of its last chunk sealed before the position, and the moves of one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Head {
    /// How many events of the store's stream lie in the interval (its version grows by this much).
    pub events: u64,
    /// The store's stream version at the interval's end: its events in this and every earlier
    /// interval.
    pub version: u64,
    ids: Vec<String>,
    /// Each item's stock in the store at the interval's end (every item it ever moved), by item
    /// index, in index order.
    stock: Vec<(u32, i64)>,
}

impl Head {
    pub fn decode(stored: &StoredChunk) -> Result<Self, postcard::Error> {
        postcard::from_bytes(&stored.head)
    }

    /// Calls `f` with each item's stock in the store at the interval's end.
    pub fn each_stock(&self, mut f: impl FnMut(&str, i64)) {
        for (item, on_hand) in &self.stock {
            f(
                self.ids.get(*item as usize).map_or("", String::as_str),
                *on_hand,
            );
        }
    }
}

/// A store as of its last sealed chunk: its stream's version and each item's stock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sealed {
    version: u64,
    stock: hashbrown::HashMap<String, i64>,
}

/// Days from 1970-01-01 to `date` (negative before it), by the civil calendar's arithmetic
/// (H. Hinnant's `days_from_civil`): a few integer operations, where a jiff span between two dates
/// cost most of the journal's fold.
fn days_of(date: Date) -> i32 {
    let (m, d) = (i32::from(date.month()), i32::from(date.day()));
    let y = i32::from(date.year()) - i32::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (`civil_from_days`, the inverse of [`days_of`]); `None` outside
/// the dates jiff represents.
fn date_of(days: i32) -> Option<Date> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i32::from(m <= 2);
    Date::new(i16::try_from(y).ok()?, m as i8, d as i8).ok()
}

impl Chunk {
    pub fn decode(stored: &StoredChunk) -> Result<Self, postcard::Error> {
        Ok(Self {
            head: postcard::from_bytes(&stored.head)?,
            moves: postcard::from_bytes(&stored.moves)?,
        })
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Calls `f` with each move of `store` at or before `upto`, with its position, in log order.
    pub fn each(&self, store: &str, upto: u64, mut f: impl FnMut(u64, &Move<'_>)) {
        let id = |i: u32| self.head.ids.get(i as usize).map_or("", String::as_str);
        for e in self.moves.iter().take_while(|e| e.position <= upto) {
            let (Some(kind), Some(date)) = (Kind::from_code(e.kind), date_of(e.days)) else {
                continue;
            };
            let m = Move {
                kind,
                store,
                item: id(e.item),
                supplier: id(e.supplier),
                date,
                qty: e.qty,
                cents: e.cents,
                discount: e.discount,
            };
            f(e.position, &m);
        }
    }
}

/// A chunk being filled.
#[derive(Default)]
struct Open {
    chunk: Chunk,
    index: hashbrown::HashMap<String, u32>,
    stock: hashbrown::HashMap<u32, i64>,
}

impl Open {
    fn id(&mut self, raw: &str) -> u32 {
        if let Some(i) = self.index.get(raw) {
            return *i;
        }
        let i = self.chunk.head.ids.len() as u32;
        self.chunk.head.ids.push(raw.to_owned());
        self.index.insert(raw.to_owned(), i);
        i
    }

    /// The chunk's head and moves, encoded: `store` (as of its previous chunk) moved on by this
    /// interval, whose version and whole stock the head carries.
    fn seal(mut self, store: &mut Sealed) -> (Vec<u8>, Vec<u8>) {
        store.version += self.chunk.head.events;
        for (item, change) in std::mem::take(&mut self.stock) {
            let id = self
                .chunk
                .head
                .ids
                .get(item as usize)
                .map_or("", String::as_str);
            *store.stock.entry_ref(id).or_insert(0) += change;
        }
        let mut stock: Vec<(u32, i64)> = Vec::with_capacity(store.stock.len());
        for (item, on_hand) in &store.stock {
            stock.push((self.id(item), *on_hand));
        }
        stock.sort_unstable();
        self.chunk.head.stock = stock;
        self.chunk.head.version = store.version;
        // Plain structs of integers and strings always serialize.
        let head = postcard::to_stdvec(&self.chunk.head).unwrap_or_default();
        let moves = postcard::to_stdvec(&self.chunk.moves).unwrap_or_default();
        (head, moves)
    }

    fn push(&mut self, position: u64, m: &Move<'_>) {
        let days = days_of(m.date);
        let (item, supplier) = (self.id(m.item), self.id(m.supplier));
        if let Some(change) = m.stock_change() {
            *self.stock.entry(item).or_insert(0) += change;
        }
        self.chunk.moves.push(Encoded {
            position,
            kind: m.kind as u8,
            item,
            supplier,
            days,
            qty: m.qty,
            cents: m.cents,
            discount: m.discount,
        });
    }
}

/// The projector's journal: the moves of the intervals it has not sealed yet, by interval and store,
/// and each store as of its last sealed chunk.
pub struct Builder {
    interval: u64,
    sealed: u64,
    folded: u64,
    open: BTreeMap<u64, hashbrown::HashMap<String, Open>>,
    stores: hashbrown::HashMap<String, Sealed>,
}

impl Builder {
    /// A builder of an empty journal, cutting intervals of `interval` positions.
    pub fn new(interval: u64) -> Self {
        Self {
            interval: interval.max(1),
            sealed: 0,
            folded: 0,
            open: BTreeMap::new(),
            stores: hashbrown::HashMap::new(),
        }
    }

    /// A builder whose journal is sealed up to `checkpoint`, each store as its last chunk's head
    /// in `last` says (each store's chunk with the greatest interval, heads alone).
    pub fn resume(
        checkpoint: u64,
        interval: u64,
        last: &[StoredChunk],
    ) -> Result<Self, postcard::Error> {
        let mut builder = Self::new(interval);
        builder.sealed = checkpoint;
        builder.folded = checkpoint;
        // A chunk of an interval past the checkpoint (none, when it is an interval's end) is not
        // sealed as far as this builder knows.
        for stored in last.iter().filter(|c| c.interval_end <= checkpoint) {
            let head = Head::decode(stored)?;
            let store = builder.stores.entry_ref(stored.store.as_str()).or_default();
            store.version = head.version;
            store.stock.clear();
            head.each_stock(|item, on_hand| {
                store.stock.insert(item.to_owned(), on_hand);
            });
        }
        Ok(builder)
    }

    /// The end of the last sealed interval: the journal's checkpoint.
    pub fn sealed(&self) -> u64 {
        self.sealed
    }

    /// The last position folded.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Folds the next events (those at or before what it folded already are skipped).
    pub fn fold(&mut self, events: &[(u64, Event)]) {
        let from = self.folded;
        for (position, event) in events.iter().filter(|(p, _)| *p > from) {
            let end = self.end_of(*position);
            let stores = self.open.entry(end).or_default();
            if let Some(store) = event.store() {
                let open = stores.entry_ref(store.as_str()).or_default();
                open.chunk.head.events += 1;
                moves(event, |m| open.push(*position, &m));
            }
            self.folded = *position;
        }
    }

    /// The end of the interval holding `position` (past the last sealed one).
    fn end_of(&self, position: u64) -> u64 {
        let past = position.saturating_sub(self.sealed + 1);
        self.sealed + (past / self.interval + 1) * self.interval
    }

    /// The chunks of every interval folded to its end, as one update from the last sealed interval,
    /// or `None` when no interval ended since.
    pub fn seal(&mut self) -> Option<(u64, u64, Vec<StoredChunk>)> {
        let whole = (self.folded - self.sealed) / self.interval;
        let last = self.sealed + whole * self.interval;
        if last <= self.sealed {
            return None;
        }
        let interval = self.interval;
        let from = self.sealed;
        let later = self.open.split_off(&(last + 1));
        let done = std::mem::replace(&mut self.open, later);
        // Interval by interval, in order: each store's chunk moves it on from its previous one.
        let mut chunks = Vec::new();
        for (end, stores) in done {
            for (store, open) in stores {
                let sealed = self.stores.entry_ref(store.as_str()).or_default();
                let (head, moves) = open.seal(sealed);
                chunks.push(StoredChunk {
                    store,
                    interval_start: end - interval,
                    interval_end: end,
                    head,
                    moves,
                });
            }
        }
        self.sealed = last;
        Some((from, last, chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_match_the_calendar() {
        let epoch = Date::constant(1970, 1, 1);
        let mut date = Date::constant(1600, 1, 1);
        let end = Date::constant(2400, 12, 31);
        while date <= end {
            let days = days_of(date);
            let expected = date.since(epoch).map(|s| s.get_days()).ok();
            assert_eq!(Some(days), expected, "{date}");
            assert_eq!(date_of(days), Some(date), "{days}");
            date = date.tomorrow().expect("in range");
        }
        assert_eq!(date_of(i32::MAX), None);
    }
}
