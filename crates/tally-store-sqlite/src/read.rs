//! The queries' side of the read models. Each query runs in one read transaction, so its rows and the
//! position it reports come from the same snapshot.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::civil::Date;
use rusqlite::{Connection, OptionalExtension, params};
use tally_core::ports::{Error, Journal, ReadModels, Result};
use tally_core::readmodel::journal::{JOURNAL, StoredChunk};
use tally_core::readmodel::{
    DayFigures, INVENTORY, ITEM_DAILY, ItemDay, REFERENCE, STORE_DAILY, SUPPLIER_DAILY, SupplierDay,
};
use tally_core::rows::{
    Catalog, DateRange, Dated, ItemSales, Positioned, StockRow, StoreSales, TopItem, TopItemsQuery,
};
use tally_core::timetravel::{item_id, store_id, supplier_id};
use tally_domain::values::{ItemId, StoreId, SupplierId};

use crate::Sqlite;
use crate::writer::sql_error;

pub(crate) fn checkpoint(conn: &Connection, projection: &str) -> Result<u64> {
    conn.prepare_cached("SELECT position FROM checkpoints WHERE projection = ?1")
        .map_err(sql_error)?
        .query_row(params![projection], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(sql_error)
        .map(|p| p.unwrap_or(0) as u64)
}

pub(crate) fn checkpoints(conn: &Connection) -> Result<HashMap<String, u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT projection, position FROM checkpoints")
        .map_err(sql_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(sql_error)?;
    rows.map(|r| r.map_err(sql_error)).collect()
}

fn parse_date(raw: &str) -> Result<Date> {
    raw.parse()
        .map_err(|e| Error::Corrupt(format!("date {raw:?}: {e}")))
}

/// Runs `f` in one read transaction, with the projection's checkpoint read in it.
pub(crate) fn snapshot<T>(
    conn: &Connection,
    projection: &str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<Positioned<T>> {
    conn.execute_batch("BEGIN").map_err(sql_error)?;
    let r = checkpoint(conn, projection).and_then(|p| f(conn).map(|rows| Positioned::new(p, rows)));
    let _ = conn.execute_batch("COMMIT");
    r
}

/// Every row of `sql` through `row`, collected.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
    let rows = stmt.query_map(params, row).map_err(sql_error)?;
    rows.map(|r| r.map_err(sql_error)).collect()
}

fn day_figures(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<DayFigures> {
    Ok(DayFigures {
        transactions: r.get(at)?,
        units_sold: r.get(at + 1)?,
        gross_cents: r.get(at + 2)?,
        returned_units: r.get(at + 3)?,
        returned_cents: r.get(at + 4)?,
        discount_cents: r.get(at + 5)?,
    })
}

fn item_day(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ItemDay> {
    Ok(ItemDay {
        units_sold: r.get(at)?,
        gross_cents: r.get(at + 1)?,
        returned_units: r.get(at + 2)?,
        returned_cents: r.get(at + 3)?,
        discount_cents: r.get(at + 4)?,
    })
}

fn bounds(range: DateRange) -> (String, String) {
    (
        range
            .from
            .map_or_else(|| "0000-00-00".to_owned(), |d| d.to_string()),
        range
            .to
            .map_or_else(|| "9999-99-99".to_owned(), |d| d.to_string()),
    )
}

/// Rows keyed by a stored date, parsed, with all-zero figures left out.
fn dated<F>(raw: Vec<(String, F)>, empty: impl Fn(&F) -> bool) -> Result<Vec<Dated<F>>> {
    raw.into_iter()
        .filter(|(_, f)| !empty(f))
        .map(|(d, figures)| {
            Ok(Dated {
                date: parse_date(&d)?,
                figures,
            })
        })
        .collect()
}

fn stock_rows(raw: Vec<(String, i64)>) -> Result<Vec<StockRow>> {
    raw.into_iter()
        .map(|(item, on_hand)| {
            Ok(StockRow {
                item_id: item_id(&item)?,
                on_hand,
            })
        })
        .collect()
}

const ITEM_FIGURES: &str = "sum(units_sold), sum(gross_cents), sum(returned_units), sum(returned_cents), sum(discount_cents)";

#[async_trait]
impl ReadModels for Sqlite {
    async fn checkpoints(&self) -> Result<HashMap<String, u64>> {
        self.readers.read(checkpoints).await
    }

    async fn inventory(&self, store: &StoreId) -> Result<Positioned<Vec<StockRow>>> {
        let store = store.to_string();
        self.readers
            .read(move |conn| {
                snapshot(conn, INVENTORY, |conn| {
                    stock_rows(rows(
                        conn,
                        "SELECT item_id, on_hand FROM rm_inventory WHERE store_id = ?1 ORDER BY item_id",
                        params![store],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
            })
            .await
    }

    async fn inventory_item(&self, store: &StoreId, item: &ItemId) -> Result<Positioned<i64>> {
        let (store, item) = (store.to_string(), item.to_string());
        self.readers
            .read(move |conn| {
                snapshot(conn, INVENTORY, |conn| {
                    let on_hand = conn
                        .prepare_cached(
                            "SELECT on_hand FROM rm_inventory WHERE store_id = ?1 AND item_id = ?2",
                        )
                        .map_err(sql_error)?
                        .query_row(params![store, item], |r| r.get::<_, i64>(0))
                        .optional()
                        .map_err(sql_error)?;
                    Ok(on_hand.unwrap_or(0))
                })
            })
            .await
    }

    async fn low_stock(
        &self,
        store: &StoreId,
        threshold: i64,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let store = store.to_string();
        self.readers
            .read(move |conn| {
                snapshot(conn, INVENTORY, |conn| {
                    stock_rows(rows(
                        conn,
                        "SELECT item_id, on_hand FROM rm_inventory WHERE store_id = ?1 AND on_hand <= ?2 \
                         ORDER BY on_hand, item_id",
                        params![store, threshold],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
            })
            .await
    }

    async fn store_daily(
        &self,
        store: &StoreId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<DayFigures>>>> {
        let (store, (from, to)) = (store.to_string(), bounds(range));
        self.readers
            .read(move |conn| {
                snapshot(conn, STORE_DAILY, |conn| {
                    let raw = rows(
                        conn,
                        "SELECT date, transactions, units_sold, gross_cents, returned_units, returned_cents, discount_cents \
                         FROM rm_store_daily WHERE store_id = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date",
                        params![store, from, to],
                        |r| Ok((r.get(0)?, day_figures(r, 1)?)),
                    )?;
                    dated(raw, DayFigures::is_empty)
                })
            })
            .await
    }

    async fn daily_sales(&self, date: Date) -> Result<Positioned<Vec<StoreSales>>> {
        let date = date.to_string();
        self.readers
            .read(move |conn| {
                snapshot(conn, STORE_DAILY, |conn| {
                    let raw: Vec<(String, DayFigures)> = rows(
                        conn,
                        "SELECT store_id, transactions, units_sold, gross_cents, returned_units, returned_cents, discount_cents \
                         FROM rm_store_daily WHERE date = ?1 ORDER BY store_id",
                        params![date],
                        |r| Ok((r.get(0)?, day_figures(r, 1)?)),
                    )?;
                    raw.into_iter()
                        .filter(|(_, f)| !f.is_empty())
                        .map(|(s, figures)| {
                            Ok(StoreSales {
                                store_id: store_id(&s)?,
                                figures,
                            })
                        })
                        .collect()
                })
            })
            .await
    }

    async fn supplier_daily(
        &self,
        supplier: &SupplierId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<SupplierDay>>>> {
        let (supplier, (from, to)) = (supplier.to_string(), bounds(range));
        self.readers
            .read(move |conn| {
                snapshot(conn, SUPPLIER_DAILY, |conn| {
                    let raw = rows(
                        conn,
                        "SELECT date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents \
                         FROM rm_supplier_daily WHERE supplier_id = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date",
                        params![supplier, from, to],
                        |r| {
                            Ok((
                                r.get(0)?,
                                SupplierDay {
                                    deliveries: r.get(1)?,
                                    units_supplied: r.get(2)?,
                                    supply_cost_cents: r.get(3)?,
                                    units_sold: r.get(4)?,
                                    sales_cents: r.get(5)?,
                                },
                            ))
                        },
                    )?;
                    dated(raw, SupplierDay::is_empty)
                })
            })
            .await
    }

    async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
    ) -> Result<Positioned<ItemSales>> {
        let (item, store, (from, to)) = (
            item.to_string(),
            store.map(|s| s.to_string()),
            bounds(range),
        );
        self.readers
            .read(move |conn| {
                snapshot(conn, ITEM_DAILY, |conn| {
                    let supplier = conn
                        .prepare_cached("SELECT supplier_id FROM rm_item_totals WHERE item_id = ?1 LIMIT 1")
                        .map_err(sql_error)?
                        .query_row(params![item], |r| r.get::<_, String>(0))
                        .optional()
                        .map_err(sql_error)?;
                    // One store's days from its rows of item daily sales (one range of the key),
                    // every store's from the item's totals.
                    let day = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, item_day(r, 1)?));
                    let raw = match &store {
                        Some(store) => rows(
                            conn,
                            &format!(
                                "SELECT date, {ITEM_FIGURES} FROM rm_item_daily \
                                 WHERE store_id = ?1 AND item_id = ?2 AND date >= ?3 AND date <= ?4 \
                                 GROUP BY date ORDER BY date"
                            ),
                            params![store, item, from, to],
                            day,
                        )?,
                        None => rows(
                            conn,
                            &format!(
                                "SELECT date, {ITEM_FIGURES} FROM rm_item_totals \
                                 WHERE item_id = ?1 AND date >= ?2 AND date <= ?3 \
                                 GROUP BY date ORDER BY date"
                            ),
                            params![item, from, to],
                            day,
                        )?,
                    };
                    Ok(ItemSales {
                        supplier_id: supplier.map(|s| supplier_id(&s)).transpose()?,
                        days: dated(raw, ItemDay::is_empty)?,
                    })
                })
            })
            .await
    }

    async fn top_items(&self, query: &TopItemsQuery) -> Result<Positioned<Vec<TopItem>>> {
        let (from, to) = bounds(query.range);
        let store = query.store.as_ref().map(|s| s.to_string());
        let supplier = query.supplier.as_ref().map(|s| s.to_string());
        let limit = query.limit as i64;
        self.readers
            .read(move |conn| {
                snapshot(conn, ITEM_DAILY, |conn| {
                    // A store's items from its range of item daily sales; the chain's from the
                    // item totals (a store count fewer rows).
                    let (table, store_is) = match store {
                        Some(_) => ("rm_item_daily", "store_id = ?3"),
                        None => ("rm_item_totals", "?3 IS NULL"),
                    };
                    let raw: Vec<(String, i64, i64)> = rows(
                        conn,
                        &format!(
                            "SELECT item_id, sum(units_sold) AS units, sum(gross_cents) - sum(discount_cents) - sum(returned_cents) AS net \
                             FROM {table} WHERE {store_is} AND date >= ?1 AND date <= ?2 \
                             AND (?4 IS NULL OR supplier_id = ?4) \
                             GROUP BY item_id HAVING units <> 0 OR net <> 0 \
                             ORDER BY units DESC, item_id LIMIT ?5"
                        ),
                        params![from, to, store, supplier, limit],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                    raw.into_iter()
                        .map(|(item, units_sold, net_cents)| {
                            Ok(TopItem {
                                item_id: item_id(&item)?,
                                units_sold,
                                net_cents,
                            })
                        })
                        .collect()
                })
            })
            .await
    }

    async fn catalog(&self) -> Result<Positioned<Catalog>> {
        self.readers
            .read(|conn| {
                snapshot(conn, REFERENCE, |conn| {
                    Catalog::parse((
                        rows(
                            conn,
                            "SELECT store_id, name, timezone FROM rm_stores ORDER BY store_id",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )?,
                        rows(
                            conn,
                            "SELECT supplier_id, name FROM rm_suppliers ORDER BY supplier_id",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )?,
                        rows(
                            conn,
                            "SELECT item_id, name, supplier_id, unit_price_cents FROM rm_items ORDER BY item_id",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )?,
                    ))
                })
            })
            .await
    }
}

#[async_trait]
impl Journal for Sqlite {
    async fn chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
        heads_upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>> {
        let store = store.map(|s| s.to_string());
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let heads_upto = i64::try_from(heads_upto).unwrap_or(i64::MAX);
        self.readers
            .read(move |conn| {
                snapshot(conn, JOURNAL, |conn| {
                    rows(
                        conn,
                        "SELECT store_id, interval_start, interval_end, head, \
                         CASE WHEN interval_end > ?3 THEN moves ELSE x'' END FROM rm_journal \
                         WHERE (?1 IS NULL OR store_id = ?1) AND interval_start < ?2 \
                         ORDER BY store_id, interval_start",
                        params![store, upto, heads_upto],
                        stored_chunk,
                    )
                })
            })
            .await
    }

    async fn stock_chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>> {
        let store = store.map(|s| s.to_string());
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.readers
            .read(move |conn| {
                snapshot(conn, JOURNAL, |conn| {
                    rows(
                        conn,
                        "SELECT store_id, interval_start, interval_end, head, \
                         CASE WHEN interval_end > ?2 THEN moves ELSE x'' END FROM rm_journal j \
                         WHERE (?1 IS NULL OR store_id = ?1) AND interval_start < ?2 \
                         AND (interval_end > ?2 OR interval_start = (SELECT max(interval_start) \
                              FROM rm_journal k WHERE k.store_id = j.store_id AND k.interval_end <= ?2)) \
                         ORDER BY store_id, interval_start",
                        params![store, upto],
                        stored_chunk,
                    )
                })
            })
            .await
    }
}

fn stored_chunk(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredChunk> {
    Ok(StoredChunk {
        store: r.get(0)?,
        interval_start: r.get::<_, i64>(1)? as u64,
        interval_end: r.get::<_, i64>(2)? as u64,
        head: r.get(3)?,
        moves: r.get(4)?,
    })
}
