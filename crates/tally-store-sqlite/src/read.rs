//! Read models and checkpoints. Each query runs in one read transaction, so its rows and the position
//! it reports come from the same snapshot.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::civil::Date;
use rusqlite::{Connection, OptionalExtension, params};
use tally_core::ports::{Error, ReadStore, Result};
use tally_core::readmodel::{
    DayFigures, Delta, INVENTORY, ProjectionUpdate, STORE_DAILY, SUPPLIER_DAILY, SupplierDay,
};

use crate::Sqlite;
use crate::writer::sql_error;

fn checkpoint(conn: &Connection, projection: &str) -> Result<u64> {
    conn.prepare_cached("SELECT position FROM checkpoints WHERE projection = ?1")
        .map_err(sql_error)?
        .query_row(params![projection], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(sql_error)
        .map(|p| p.unwrap_or(0) as u64)
}

fn parse_date(raw: &str) -> Result<Date> {
    raw.parse()
        .map_err(|e| Error::Corrupt(format!("date {raw:?}: {e}")))
}

/// Runs `f` in one read transaction.
fn snapshot<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("BEGIN").map_err(sql_error)?;
    let r = f(conn);
    let _ = conn.execute_batch("COMMIT");
    r
}

fn apply_update(conn: &Connection, u: &ProjectionUpdate) -> Result<()> {
    let at = checkpoint(conn, &u.projection)?;
    if at != u.from {
        return Err(Error::CheckpointMoved {
            projection: u.projection.clone(),
            expected: u.from,
        });
    }
    match &u.delta {
        Delta::Inventory(rows) => {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO rm_inventory (store_id, item_id, on_hand) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (store_id, item_id) DO UPDATE SET on_hand = on_hand + excluded.on_hand",
                )
                .map_err(sql_error)?;
            for ((store, item), d) in rows {
                stmt.execute(params![store, item, d]).map_err(sql_error)?;
            }
        }
        Delta::StoreDaily(rows) => {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO rm_store_daily (store_id, date, transactions, units_sold, gross_cents, returned_units, returned_cents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (store_id, date) DO UPDATE SET \
                     transactions = transactions + excluded.transactions, units_sold = units_sold + excluded.units_sold, \
                     gross_cents = gross_cents + excluded.gross_cents, returned_units = returned_units + excluded.returned_units, \
                     returned_cents = returned_cents + excluded.returned_cents",
                )
                .map_err(sql_error)?;
            for ((store, date), f) in rows {
                stmt.execute(params![
                    store,
                    date.to_string(),
                    f.transactions,
                    f.units_sold,
                    f.gross_cents,
                    f.returned_units,
                    f.returned_cents
                ])
                .map_err(sql_error)?;
            }
        }
        Delta::SupplierDaily(rows) => {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO rm_supplier_daily (supplier_id, date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (supplier_id, date) DO UPDATE SET \
                     deliveries = deliveries + excluded.deliveries, units_supplied = units_supplied + excluded.units_supplied, \
                     supply_cost_cents = supply_cost_cents + excluded.supply_cost_cents, \
                     units_sold = units_sold + excluded.units_sold, sales_cents = sales_cents + excluded.sales_cents",
                )
                .map_err(sql_error)?;
            for ((supplier, date), f) in rows {
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
    conn.prepare_cached(
        "INSERT INTO checkpoints (projection, position) VALUES (?1, ?2) \
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
    )
    .map_err(sql_error)?
    .execute(params![u.projection, u.to as i64])
    .map_err(sql_error)?;
    Ok(())
}

fn day_figures(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<DayFigures> {
    Ok(DayFigures {
        transactions: r.get(at)?,
        units_sold: r.get(at + 1)?,
        gross_cents: r.get(at + 2)?,
        returned_units: r.get(at + 3)?,
        returned_cents: r.get(at + 4)?,
    })
}

fn range(from: Option<Date>, to: Option<Date>) -> (String, String) {
    (
        from.map_or_else(|| "0000-00-00".to_owned(), |d| d.to_string()),
        to.map_or_else(|| "9999-99-99".to_owned(), |d| d.to_string()),
    )
}

#[async_trait]
impl ReadStore for Sqlite {
    async fn checkpoints(&self) -> Result<HashMap<String, u64>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT projection, position FROM checkpoints")
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .map_err(sql_error)?;
                rows.map(|r| r.map_err(sql_error)).collect()
            })
            .await
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
        let table = match projection {
            INVENTORY => "rm_inventory",
            STORE_DAILY => "rm_store_daily",
            SUPPLIER_DAILY => "rm_supplier_daily",
            other => return Err(Error::Corrupt(format!("no projection {other:?}"))),
        };
        let projection = projection.to_owned();
        self.writer
            .write(move |conn| {
                conn.execute(&format!("DELETE FROM {table}"), [])
                    .map_err(sql_error)?;
                conn.execute(
                    "DELETE FROM checkpoints WHERE projection = ?1",
                    params![projection],
                )
                .map_err(sql_error)?;
                Ok(())
            })
            .await
    }

    async fn inventory(&self, store_id: &str) -> Result<(u64, Vec<(String, i64)>)> {
        let store_id = store_id.to_owned();
        self.readers
            .read(move |conn| {
                snapshot(conn, |conn| {
                    let position = checkpoint(conn, INVENTORY)?;
                    let mut stmt = conn
                        .prepare_cached("SELECT item_id, on_hand FROM rm_inventory WHERE store_id = ?1 ORDER BY item_id")
                        .map_err(sql_error)?;
                    let rows = stmt
                        .query_map(params![store_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(sql_error)?;
                    let rows = rows.map(|r| r.map_err(sql_error)).collect::<Result<Vec<_>>>()?;
                    Ok((position, rows))
                })
            })
            .await
    }

    async fn inventory_item(&self, store_id: &str, item_id: &str) -> Result<(u64, i64)> {
        let (store_id, item_id) = (store_id.to_owned(), item_id.to_owned());
        self.readers
            .read(move |conn| {
                snapshot(conn, |conn| {
                    let position = checkpoint(conn, INVENTORY)?;
                    let on_hand = conn
                        .prepare_cached(
                            "SELECT on_hand FROM rm_inventory WHERE store_id = ?1 AND item_id = ?2",
                        )
                        .map_err(sql_error)?
                        .query_row(params![store_id, item_id], |r| r.get::<_, i64>(0))
                        .optional()
                        .map_err(sql_error)?;
                    Ok((position, on_hand.unwrap_or(0)))
                })
            })
            .await
    }

    async fn store_daily(
        &self,
        store_id: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<(u64, Vec<(Date, DayFigures)>)> {
        let (store_id, (from, to)) = (store_id.to_owned(), range(from, to));
        self.readers
            .read(move |conn| {
                report(
                    conn,
                    STORE_DAILY,
                    "SELECT date, transactions, units_sold, gross_cents, returned_units, returned_cents \
                     FROM rm_store_daily WHERE store_id = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date",
                    params![store_id, from, to],
                    |r| day_figures(r, 1),
                    |date| parse_date(&date),
                )
            })
            .await
    }

    async fn daily_sales(&self, date: Date) -> Result<(u64, Vec<(String, DayFigures)>)> {
        let date = date.to_string();
        self.readers
            .read(move |conn| {
                report(
                    conn,
                    STORE_DAILY,
                    "SELECT store_id, transactions, units_sold, gross_cents, returned_units, returned_cents \
                     FROM rm_store_daily WHERE date = ?1 ORDER BY store_id",
                    params![date],
                    |r| day_figures(r, 1),
                    Ok,
                )
            })
            .await
    }

    async fn supplier_daily(
        &self,
        supplier_id: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<(u64, Vec<(Date, SupplierDay)>)> {
        let (supplier_id, (from, to)) = (supplier_id.to_owned(), range(from, to));
        self.readers
            .read(move |conn| {
                report(
                    conn,
                    SUPPLIER_DAILY,
                    "SELECT date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents \
                     FROM rm_supplier_daily WHERE supplier_id = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date",
                    params![supplier_id, from, to],
                    |r| {
                        Ok(SupplierDay {
                            deliveries: r.get(1)?,
                            units_supplied: r.get(2)?,
                            supply_cost_cents: r.get(3)?,
                            units_sold: r.get(4)?,
                            sales_cents: r.get(5)?,
                        })
                    },
                    |date| parse_date(&date),
                )
            })
            .await
    }
}

/// Something a report row holds; rows whose figures are all zero (a day whose only sale was voided)
/// are left out of reports.
trait Figures {
    fn is_empty(&self) -> bool;
}

impl Figures for DayFigures {
    fn is_empty(&self) -> bool {
        DayFigures::is_empty(self)
    }
}

impl Figures for SupplierDay {
    fn is_empty(&self) -> bool {
        SupplierDay::is_empty(self)
    }
}

/// A report: in one snapshot, the projection's checkpoint and the non-empty rows of `sql`, whose first
/// column is the row's key.
fn report<K, F: Figures>(
    conn: &Connection,
    projection: &str,
    sql: &str,
    params: impl rusqlite::Params,
    figures: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<F>,
    key: impl Fn(String) -> Result<K>,
) -> Result<(u64, Vec<(K, F)>)> {
    snapshot(conn, |conn| {
        let position = checkpoint(conn, projection)?;
        let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
        let rows = stmt
            .query_map(params, |r| Ok((r.get::<_, String>(0)?, figures(r)?)))
            .map_err(sql_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (k, f) = row.map_err(sql_error)?;
            if !f.is_empty() {
                out.push((key(k)?, f));
            }
        }
        Ok((position, out))
    })
}
