//! `tally verify`: the read models against a fresh fold of the log. Every read-model table is read
//! with its projection's checkpoint in one snapshot; the log is folded from the start to each
//! checkpoint by the projections' own accumulators into memory (the scratch copy); then each table
//! is compared row by row, with a hash of each side first. With an `as_of_position`, time travel
//! (the journal's chunks and the log after them) is compared with the fold of that prefix too.
//!
//! The server may run meanwhile: the fold stops at the position each table was read at. Memory is
//! the size of the read models, not of the log: the log is read a page at a time.

mod tables;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

pub use tables::{Row, Rows, TABLES, Table, expected};

use crate::Backend;
use crate::ports::{Error, Result};
use crate::readmodel::{Accumulator, INVENTORY, STORE_DAILY, SUPPLIER_DAILY};
use crate::rows::DateRange;
use crate::timetravel::TimeTravel;

/// How many differing rows a table's report names (all are counted).
pub const NAMED: usize = 20;

/// What `verify` does.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Also compare time travel as of this position with a fold of the log up to it.
    pub as_of_position: Option<u64>,
    /// Events read from the log at a time.
    pub page: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            as_of_position: None,
            page: 10_000,
        }
    }
}

/// A row that differs: present on one side only, or on both with other values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: Vec<String>,
    pub stored: Option<Row>,
    pub expected: Option<Row>,
}

/// One table compared.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// The table, or for time travel `as_of <table>`.
    pub table: String,
    pub projection: &'static str,
    /// The position both sides stand at.
    pub position: u64,
    pub stored_rows: usize,
    pub expected_rows: usize,
    pub stored_hash: u64,
    pub expected_hash: u64,
    /// How many rows differ; the first [`NAMED`] of them in `differences`.
    pub differing: usize,
    pub differences: Vec<Difference>,
}

impl TableReport {
    pub fn ok(&self) -> bool {
        self.differing == 0
    }
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Report {
    pub tables: Vec<TableReport>,
    /// Events folded.
    pub events: u64,
    pub seconds: f64,
    /// Of those, reading the tables, folding the log, and comparing.
    pub phases: Phases,
}

/// Where a verify's time went, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    pub read: f64,
    pub fold: f64,
    pub compare: f64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.tables.iter().all(TableReport::ok)
    }
}

/// FNV-1a over a table's rows in key order: equal tables hash equal on every backend.
fn hash(rows: &[Row]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    for row in rows {
        feed(row.joined_key().as_bytes());
        feed(row.joined_texts().as_bytes());
        row.figures.iter().for_each(|f| feed(&f.to_le_bytes()));
    }
    h
}

/// The rows that mean something, in key order.
fn canonical(table: &Table, mut rows: Rows) -> Rows {
    if table.drops_zero_rows() {
        rows.retain(|r| r.figures.iter().any(|f| *f != 0));
    }
    rows.sort_unstable_by(|a, b| a.joined_key().cmp(b.joined_key()));
    rows
}

/// Compares one table's stored rows with the expected ones.
pub fn compare(
    table: &Table,
    label: String,
    position: u64,
    stored: Rows,
    expected: Rows,
) -> TableReport {
    let (stored, expected) = (canonical(table, stored), canonical(table, expected));
    let (stored_hash, expected_hash) = (hash(&stored), hash(&expected));
    let mut differing = 0;
    let mut differences = Vec::new();
    let mut differ = |row: &Row, s: Option<&Row>, e: Option<&Row>| {
        differing += 1;
        if differences.len() < NAMED {
            differences.push(Difference {
                key: row.key().into_iter().map(str::to_owned).collect(),
                stored: s.cloned(),
                expected: e.cloned(),
            });
        }
    };
    if stored_hash != expected_hash || stored.len() != expected.len() {
        // Both in key order: one walk.
        let (mut s, mut e) = (stored.iter().peekable(), expected.iter().peekable());
        loop {
            match (s.peek(), e.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.joined_key() == b.joined_key() => {
                    if a != b {
                        differ(a, Some(a), Some(b));
                    }
                    s.next();
                    e.next();
                }
                (Some(a), b) if b.is_none_or(|b| a.joined_key() < b.joined_key()) => {
                    differ(a, Some(a), None);
                    s.next();
                }
                (_, Some(b)) => {
                    differ(b, None, Some(b));
                    e.next();
                }
                (Some(_), None) => unreachable!("handled above"),
            }
        }
    }
    TableReport {
        table: label,
        projection: table.projection,
        position,
        stored_rows: stored.len(),
        expected_rows: expected.len(),
        stored_hash,
        expected_hash,
        differing,
        differences,
    }
}

/// A projection folded up to a position.
struct Fold {
    projection: &'static str,
    upto: u64,
    acc: Accumulator,
}

/// Compares every read-model table with a fold of the log (and, with `as_of_position`, time
/// travel with a fold of that prefix). `progress(position, upto)` is called after each page.
pub async fn verify(b: &Backend, options: Options, progress: impl Fn(u64, u64)) -> Result<Report> {
    let started = Instant::now();
    let mut stored: Vec<(Table, u64, Rows)> = Vec::new();
    for table in TABLES {
        let answer = b.rows.table_rows(&table).await?;
        stored.push((table, answer.position, answer.rows));
    }
    let read_done = Instant::now();
    // One fold per projection and position a table was read at (a running projector may have moved
    // between two tables of one projection), and the as-of prefix's.
    let mut folds: Vec<Fold> = Vec::new();
    let mut wanted: Vec<(&'static str, u64)> =
        stored.iter().map(|(t, p, _)| (t.projection, *p)).collect();
    if let Some(n) = options.as_of_position {
        wanted.extend([(INVENTORY, n), (STORE_DAILY, n), (SUPPLIER_DAILY, n)]);
    }
    for (projection, upto) in wanted {
        if folds
            .iter()
            .any(|f| f.projection == projection && f.upto == upto)
        {
            continue;
        }
        let acc = Accumulator::for_projection(projection)
            .ok_or_else(|| Error::Corrupt(format!("no projection {projection}")))?;
        folds.push(Fold {
            projection,
            upto,
            acc,
        });
    }
    let upto = folds.iter().map(|f| f.upto).max().unwrap_or(0);
    // The next page is read while this one is folded.
    let read = |after: u64| {
        let (log, page) = (b.events.clone(), options.page);
        tokio::spawn(async move { log.read_payloads(after, page).await })
    };
    let mut next = (upto > 0).then(|| read(0));
    let mut events = 0u64;
    while let Some(reading) = next.take() {
        let page = reading
            .await
            .map_err(|e| Error::Unavailable(format!("reading the log: {e}")))??;
        let Some(last) = page.last().map(|p| p.position) else {
            break;
        };
        if last < upto {
            next = Some(read(last));
        }
        for p in page.iter().take_while(|p| p.position <= upto) {
            let event = p
                .decode()
                .map_err(|e| Error::Corrupt(format!("event {}: {e}", p.position)))?;
            Accumulator::fold_into(&event, &mut folds, |f| p.position <= f.upto, |f| &mut f.acc);
            events += 1;
        }
        progress(last.min(upto), upto);
    }
    let fold_done = Instant::now();
    let mut expected_by: HashMap<(&'static str, u64), Vec<(&'static str, Rows)>> = HashMap::new();
    for f in folds {
        expected_by.insert((f.projection, f.upto), expected(f.acc.finish()));
    }
    // Time travel first: it copies the prefix's rows, which a table read at the same position
    // then takes.
    let travelled = match options.as_of_position {
        Some(n) => as_of(b, n, &expected_by).await?,
        None => Vec::new(),
    };
    let mut reports = Vec::new();
    for (table, position, rows) in stored {
        let want = expected_by
            .get_mut(&(table.projection, position))
            .and_then(|tables| tables.iter_mut().find(|(name, _)| *name == table.name))
            .map(|(_, rows)| std::mem::take(rows))
            .unwrap_or_default();
        reports.push(compare(&table, table.name.to_owned(), position, rows, want));
    }
    reports.extend(travelled);
    let phases = Phases {
        read: (read_done - started).as_secs_f64(),
        fold: (fold_done - read_done).as_secs_f64(),
        compare: fold_done.elapsed().as_secs_f64(),
    };
    Ok(Report {
        tables: reports,
        events,
        seconds: started.elapsed().as_secs_f64(),
        phases,
    })
}

/// Time travel as of `n` (inventory, store days, supplier days of every store and supplier the
/// prefix moved) against the fold of the prefix.
async fn as_of(
    b: &Backend,
    n: u64,
    expected_by: &HashMap<(&'static str, u64), Vec<(&'static str, Rows)>>,
) -> Result<Vec<TableReport>> {
    let travel = TimeTravel::new(b.events.clone(), b.journal.clone());
    let want = |projection: &'static str| -> Rows {
        expected_by
            .get(&(projection, n))
            .and_then(|t| t.first())
            .map(|(_, rows)| rows.clone())
            .unwrap_or_default()
    };
    let table = |name: &str| {
        TABLES
            .iter()
            .find(|t| t.name == name)
            .copied()
            .ok_or_else(|| Error::Corrupt(format!("no table {name}")))
    };
    let (inventory, days, suppliers) = (want(INVENTORY), want(STORE_DAILY), want(SUPPLIER_DAILY));
    let first_keys = |rows: &Rows| -> BTreeSet<String> {
        rows.iter()
            .filter_map(|r| r.key().first().map(|k| (*k).to_owned()))
            .collect()
    };
    let stores: BTreeSet<String> = first_keys(&inventory)
        .into_iter()
        .chain(first_keys(&days))
        .collect();
    let (mut got_stock, mut got_days, mut got_suppliers) = (Rows::new(), Rows::new(), Rows::new());
    for s in &stores {
        let store = crate::timetravel::store_id(s)?;
        for r in travel.inventory(&store, n, None).await?.rows {
            let key = vec![s.clone(), r.item_id.to_string()];
            got_stock.push(row(key, vec![r.on_hand]));
        }
        for d in travel
            .store_daily(&store, DateRange::default(), n)
            .await?
            .rows
        {
            let f = d.figures;
            let key = vec![s.clone(), d.date.to_string()];
            let figures = f.values().to_vec();
            got_days.push(row(key, figures));
        }
    }
    for s in first_keys(&suppliers) {
        let supplier = crate::timetravel::supplier_id(&s)?;
        let answer = travel
            .supplier_daily(&supplier, DateRange::default(), n)
            .await?;
        for d in answer.rows {
            let f = d.figures;
            let key = vec![s.clone(), d.date.to_string()];
            let figures = f.values().to_vec();
            got_suppliers.push(row(key, figures));
        }
    }
    let label = |t: &Table| format!("as_of {}", t.name);
    let (ti, ts, tp) = (
        table("rm_inventory")?,
        table("rm_store_daily")?,
        table("rm_supplier_daily")?,
    );
    Ok(vec![
        compare(&ti, label(&ti), n, got_stock, inventory),
        compare(&ts, label(&ts), n, got_days, days),
        compare(&tp, label(&tp), n, got_suppliers, suppliers),
    ])
}

fn row(key: Vec<String>, figures: Vec<i64>) -> Row {
    Row::new(key, std::iter::empty::<&str>(), figures)
}

#[cfg(test)]
mod tests;
