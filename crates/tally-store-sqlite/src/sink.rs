//! The projector's side of the read models: updates applied with their checkpoints in one
//! transaction on the writer, and resets for a rebuild.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use tally_core::ports::{Error, Journal, ProjectionSink, Result};
use tally_core::projector::poison::Fault;
use tally_core::readmodel::journal::{JOURNAL, StoredChunk};
use tally_core::readmodel::shadow;
use tally_core::readmodel::{Delta, ItemDailyDelta, ProjectionUpdate, Registered};

use crate::Sqlite;
use crate::read::{checkpoint, checkpoints};
use crate::writer::sql_error;

/// A statement on the serving tables, or (`shadow`) rewritten onto their shadows.
fn prepare<'c>(
    conn: &'c Connection,
    shadow: bool,
    sql: &str,
) -> rusqlite::Result<CachedStatement<'c>> {
    if shadow {
        conn.prepare_cached(&shadow::rewrite(sql))
    } else {
        conn.prepare_cached(sql)
    }
}

pub(crate) fn apply_update(conn: &Connection, u: &ProjectionUpdate) -> Result<()> {
    // An update of a shadow checkpoint writes the shadow tables ([`shadow`]).
    let shadow = shadow::shadowed(&u.projection).is_some();
    let at = checkpoint(conn, &u.projection)?;
    if at != u.from {
        return Err(Error::CheckpointMoved {
            projection: u.projection.clone(),
            expected: u.from,
        });
    }
    match &u.delta {
        Delta::Inventory(rows) => {
            let mut stmt = prepare(conn, shadow,
                    "INSERT INTO rm_inventory (store_id, item_id, on_hand) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (store_id, item_id) DO UPDATE SET on_hand = on_hand + excluded.on_hand",
                )
                .map_err(sql_error)?;
            for ((store, item), d) in in_key_order(rows) {
                stmt.execute(params![store, item, d]).map_err(sql_error)?;
            }
        }
        Delta::StoreDaily(rows) => {
            let mut stmt = prepare(conn, shadow,
                    "INSERT INTO rm_store_daily (store_id, date, transactions, units_sold, gross_cents, returned_units, returned_cents, discount_cents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (store_id, date) DO UPDATE SET \
                     transactions = transactions + excluded.transactions, units_sold = units_sold + excluded.units_sold, \
                     gross_cents = gross_cents + excluded.gross_cents, returned_units = returned_units + excluded.returned_units, \
                     returned_cents = returned_cents + excluded.returned_cents, discount_cents = discount_cents + excluded.discount_cents",
                )
                .map_err(sql_error)?;
            for ((store, date), f) in in_key_order(rows) {
                stmt.execute(params![
                    store,
                    date.to_string(),
                    f.transactions,
                    f.units_sold,
                    f.gross_cents,
                    f.returned_units,
                    f.returned_cents,
                    f.discount_cents
                ])
                .map_err(sql_error)?;
            }
        }
        Delta::TillDaily(rows) => {
            let mut stmt = prepare(conn, shadow,
                    "INSERT INTO rm_till_daily (store_id, till_id, date, transactions, gross_cents, discount_cents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (store_id, till_id, date) DO UPDATE SET \
                     transactions = transactions + excluded.transactions, gross_cents = gross_cents + excluded.gross_cents, \
                     discount_cents = discount_cents + excluded.discount_cents",
                )
                .map_err(sql_error)?;
            for ((store, till, date), f) in in_key_order(rows) {
                stmt.execute(params![
                    store,
                    till,
                    date.to_string(),
                    f.transactions,
                    f.gross_cents,
                    f.discount_cents
                ])
                .map_err(sql_error)?;
            }
        }
        Delta::ItemDaily(delta) => apply_item_daily(conn, shadow, delta)?,
        Delta::Reference(rows) => apply_reference(conn, shadow, rows)?,
        Delta::Journal(chunks) => {
            let mut stmt = prepare(
                conn,
                shadow,
                "INSERT INTO rm_journal (store_id, interval_start, interval_end, head, moves) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(sql_error)?;
            for c in chunks {
                let start = i64::try_from(c.interval_start).unwrap_or(i64::MAX);
                let end = i64::try_from(c.interval_end).unwrap_or(i64::MAX);
                stmt.execute(params![c.store, start, end, c.head, c.moves])
                    .map_err(sql_error)?;
            }
        }
        Delta::SupplierDaily(rows) => {
            let mut stmt = prepare(conn, shadow,
                    "INSERT INTO rm_supplier_daily (supplier_id, date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (supplier_id, date) DO UPDATE SET \
                     deliveries = deliveries + excluded.deliveries, units_supplied = units_supplied + excluded.units_supplied, \
                     supply_cost_cents = supply_cost_cents + excluded.supply_cost_cents, \
                     units_sold = units_sold + excluded.units_sold, sales_cents = sales_cents + excluded.sales_cents",
                )
                .map_err(sql_error)?;
            for ((supplier, date), f) in in_key_order(rows) {
                stmt.execute(params![
                    supplier,
                    date.to_string(),
                    f.deliveries,
                    f.units_supplied,
                    f.supply_cost_cents,
                    f.units_sold,
                    f.sales_cents
                ])
                .map_err(sql_error)?;
            }
        }
    }
    set_checkpoint(conn, &u.projection, u.to)
}

/// A delta's rows in the order of their table's key: consecutive upserts then touch neighbouring
/// B-tree pages (mostly in the page cache already) instead of pages all over the table.
fn in_key_order<K: Ord, V>(rows: &HashMap<K, V>) -> Vec<(&K, &V)> {
    let mut sorted: Vec<(&K, &V)> = rows.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

fn apply_item_daily(conn: &Connection, shadow: bool, delta: &ItemDailyDelta) -> Result<()> {
    let mut stmt = prepare(conn, shadow,
            "INSERT INTO rm_item_daily (store_id, item_id, date, supplier_id, units_sold, gross_cents, returned_units, returned_cents, units_supplied, supply_cost_cents, discount_cents) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (store_id, item_id, date) DO UPDATE SET \
             discount_cents = discount_cents + excluded.discount_cents, \
             units_sold = units_sold + excluded.units_sold, gross_cents = gross_cents + excluded.gross_cents, \
             returned_units = returned_units + excluded.returned_units, returned_cents = returned_cents + excluded.returned_cents, \
             units_supplied = units_supplied + excluded.units_supplied, supply_cost_cents = supply_cost_cents + excluded.supply_cost_cents",
        )
        .map_err(sql_error)?;
    let changes = delta.changes();
    for c in &changes {
        let [a, b, d, e, g, h, k] = c.figures();
        stmt.execute(params![
            c.store,
            c.item,
            c.date.to_string(),
            c.supplier,
            a,
            b,
            d,
            e,
            g,
            h,
            k
        ])
        .map_err(sql_error)?;
    }
    let mut stmt = prepare(conn, shadow,
            "INSERT INTO rm_item_totals (item_id, date, supplier_id, units_sold, gross_cents, returned_units, returned_cents, units_supplied, supply_cost_cents, discount_cents) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (item_id, date) DO UPDATE SET \
             discount_cents = discount_cents + excluded.discount_cents, \
             units_sold = units_sold + excluded.units_sold, gross_cents = gross_cents + excluded.gross_cents, \
             returned_units = returned_units + excluded.returned_units, returned_cents = returned_cents + excluded.returned_cents, \
             units_supplied = units_supplied + excluded.units_supplied, supply_cost_cents = supply_cost_cents + excluded.supply_cost_cents",
        )
        .map_err(sql_error)?;
    for t in ItemDailyDelta::totals(&changes) {
        let [a, b, d, e, g, h, k] = t.figures;
        stmt.execute(params![
            t.item,
            t.date.to_string(),
            t.supplier,
            a,
            b,
            d,
            e,
            g,
            h,
            k
        ])
        .map_err(sql_error)?;
    }
    Ok(())
}

/// Registrations: each id is registered once; a replayed one writes the same row again.
fn apply_reference(conn: &Connection, shadow: bool, rows: &[Registered]) -> Result<()> {
    for r in rows {
        match r {
            Registered::Supplier { supplier_id, name } => prepare(conn, shadow, "INSERT OR REPLACE INTO rm_suppliers (supplier_id, name) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![supplier_id, name])),
            Registered::Store { store_id, name, timezone } => prepare(conn, shadow, "INSERT OR REPLACE INTO rm_stores (store_id, name, timezone) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![store_id, name, timezone])),
            Registered::Item { item_id, name, supplier_id, unit_price_cents } => prepare(conn, shadow, "INSERT OR REPLACE INTO rm_items (item_id, name, supplier_id, unit_price_cents) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut s| s.execute(params![item_id, name, supplier_id, unit_price_cents])),
        }
        .map_err(sql_error)?;
    }
    Ok(())
}

#[async_trait]
impl ProjectionSink for Sqlite {
    async fn checkpoints(&self) -> Result<HashMap<String, u64>> {
        self.readers.read(checkpoints).await
    }

    async fn apply(&self, updates: Vec<ProjectionUpdate>) -> Result<()> {
        self.writer
            .write(move |conn| {
                for u in &updates {
                    apply_update(conn, u)?;
                }
                Ok(())
            })
            .await
    }

    async fn reset(&self, projection: &str) -> Result<()> {
        let tables = match projection {
            JOURNAL => vec!["rm_journal"],
            other => shadow::known_tables(other)?,
        };
        let projection = projection.to_owned();
        self.writer
            .write(move |conn| {
                for table in tables {
                    conn.execute(&format!("DELETE FROM {table}"), [])
                        .map_err(sql_error)?;
                }
                conn.execute(
                    "DELETE FROM checkpoints WHERE projection = ?1",
                    params![projection],
                )
                .map_err(sql_error)?;
                Ok(())
            })
            .await
    }

    async fn start_rebuild(&self, projection: &str) -> Result<()> {
        let tables = shadow::known_tables(projection)?;
        let checkpoint = shadow::checkpoint_of(projection);
        self.writer
            .write(move |conn| {
                for table in tables {
                    let shadow = shadow::table_of(table);
                    conn.execute(&shadow::drop_sql(table), [])
                        .map_err(sql_error)?;
                    // The serving table's own definition (with every column a migration added),
                    // under the shadow's name.
                    let create: String = conn
                        .query_row(
                            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                            params![table],
                            |r| r.get(0),
                        )
                        .map_err(sql_error)?;
                    conn.execute(&create.replacen(table, &shadow, 1), [])
                        .map_err(sql_error)?;
                }
                set_checkpoint(conn, &checkpoint, 0)
            })
            .await
    }

    async fn swap_rebuild(&self, projection: &str) -> Result<Option<u64>> {
        let tables = shadow::known_tables(projection)?;
        let projection = projection.to_owned();
        self.writer
            .write(move |conn| {
                let name = shadow::checkpoint_of(&projection);
                let Some(at) = shadow_checkpoint(conn, &name)? else {
                    return Err(Error::Corrupt(format!(
                        "no rebuild of {projection} to swap in"
                    )));
                };
                if checkpoint(conn, &projection)? > at {
                    return Ok(None);
                }
                for table in tables {
                    conn.execute_batch(&shadow::swap_sql(table))
                        .map_err(sql_error)?;
                }
                set_checkpoint(conn, &projection, at)?;
                conn.execute(
                    "DELETE FROM checkpoints WHERE projection = ?1",
                    params![name],
                )
                .map_err(sql_error)?;
                Ok(Some(at))
            })
            .await
    }

    async fn journal_heads(&self, upto: u64) -> Result<Vec<StoredChunk>> {
        Ok(Journal::stock_chunks(self, None, upto).await?.rows)
    }

    async fn faults(&self) -> Result<Vec<Fault>> {
        self.readers.read(crate::faults::faults).await
    }

    async fn record_fault(&self, fault: Fault) -> Result<()> {
        self.writer
            .write(move |conn| crate::faults::record(conn, &fault))
            .await
    }

    async fn clear_fault(
        &self,
        projection: &str,
        position: u64,
        update: Option<ProjectionUpdate>,
    ) -> Result<bool> {
        let projection = projection.to_owned();
        self.writer
            .write(move |conn| crate::faults::clear(conn, &projection, position, update.as_ref()))
            .await
    }

    async fn cancel_rebuild(&self, projection: &str) -> Result<bool> {
        let tables = shadow::known_tables(projection)?;
        let name = shadow::checkpoint_of(projection);
        self.writer
            .write(move |conn| {
                let was = shadow_checkpoint(conn, &name)?.is_some();
                for table in tables {
                    conn.execute(&shadow::drop_sql(table), [])
                        .map_err(sql_error)?;
                }
                conn.execute(
                    "DELETE FROM checkpoints WHERE projection = ?1",
                    params![name],
                )
                .map_err(sql_error)?;
                Ok(was)
            })
            .await
    }
}

fn shadow_checkpoint(conn: &Connection, name: &str) -> Result<Option<u64>> {
    conn.query_row(
        "SELECT position FROM checkpoints WHERE projection = ?1",
        params![name],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map_err(sql_error)
    .map(|p| p.map(|p| p as u64))
}

fn set_checkpoint(conn: &Connection, projection: &str, position: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (projection, position) VALUES (?1, ?2) \
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
    )
    .map_err(sql_error)?
    .execute(params![projection, position as i64])
    .map_err(sql_error)?;
    Ok(())
}
