//! The queries' side of the read models. Each query runs in one repeatable-read transaction, so its
//! rows and the position it reports come from the same snapshot. Ids sort byte-wise (`COLLATE "C"`),
//! as they do on SQLite and in the log's folds, whatever the database's collation.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::civil::Date;
use tally_core::ports::{Error, Journal, ReadModels, Result};
use tally_core::readmodel::journal::{JOURNAL, StoredChunk};
use tally_core::readmodel::{
    DayFigures, INVENTORY, ITEM_DAILY, ItemDay, REFERENCE, STORE_DAILY, SUPPLIER_DAILY, SupplierDay,
};
use tally_core::rows::{
    Catalog, DateRange, Dated, ItemSales, Positioned, RawCatalog, StockRow, StoreSales, TopItem,
    TopItemsQuery,
};
use tally_core::timetravel::{item_id, store_id, supplier_id};
use tally_domain::values::{ItemId, StoreId, SupplierId};
use tokio_postgres::types::ToSql;

use crate::{Postgres, pg_error, to_u64};

fn parse_date(raw: &str) -> Result<Date> {
    raw.parse()
        .map_err(|e| Error::Corrupt(format!("date {raw:?}: {e}")))
}

fn day_figures(r: &tokio_postgres::Row, at: usize) -> DayFigures {
    DayFigures {
        transactions: r.get(at),
        units_sold: r.get(at + 1),
        gross_cents: r.get(at + 2),
        returned_units: r.get(at + 3),
        returned_cents: r.get(at + 4),
        discount_cents: r.get(at + 5),
    }
}

fn supplier_day(r: &tokio_postgres::Row, at: usize) -> SupplierDay {
    SupplierDay {
        deliveries: r.get(at),
        units_supplied: r.get(at + 1),
        supply_cost_cents: r.get(at + 2),
        units_sold: r.get(at + 3),
        sales_cents: r.get(at + 4),
    }
}

fn bounds(range: DateRange) -> (String, String) {
    (
        range
            .from
            .map_or_else(|| "0001-01-01".to_owned(), |d| d.to_string()),
        range
            .to
            .map_or_else(|| "9999-12-31".to_owned(), |d| d.to_string()),
    )
}

fn item_day(r: &tokio_postgres::Row, at: usize) -> ItemDay {
    ItemDay {
        units_sold: r.get(at),
        gross_cents: r.get(at + 1),
        returned_units: r.get(at + 2),
        returned_cents: r.get(at + 3),
        discount_cents: r.get(at + 4),
    }
}

/// Rows whose first column is a date as text, with all-zero figures left out.
fn dated<F>(
    rows: &[tokio_postgres::Row],
    figures: impl Fn(&tokio_postgres::Row) -> F,
    empty: impl Fn(&F) -> bool,
) -> Result<Vec<Dated<F>>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let f = figures(r);
        if !empty(&f) {
            out.push(Dated {
                date: parse_date(r.get(0))?,
                figures: f,
            });
        }
    }
    Ok(out)
}

fn stock_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<StockRow>> {
    rows.iter()
        .map(|r| {
            Ok(StockRow {
                item_id: item_id(r.get(0))?,
                on_hand: r.get(1),
            })
        })
        .collect()
}

impl Postgres {
    /// In one snapshot: the checkpoint of `projection` and the rows of `sql`.
    pub(crate) async fn snapshot(
        &self,
        projection: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Positioned<Vec<tokio_postgres::Row>>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| pg_error("starting a query", e))?;
        let at = tx
            .query_opt(
                "SELECT position FROM checkpoints WHERE projection = $1",
                &[&projection],
            )
            .await
            .map_err(|e| pg_error("reading a checkpoint", e))?
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        let rows = tx
            .query(sql, params)
            .await
            .map_err(|e| pg_error("querying a read model", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("ending a query", e))?;
        Ok(Positioned::new(to_u64(at, "checkpoint")?, rows))
    }
}

/// The columns of [`item_day`], summed.
const ITEM_FIGURES: &str = "sum(units_sold)::bigint, sum(gross_cents)::bigint, sum(returned_units)::bigint, \
     sum(returned_cents)::bigint, sum(discount_cents)::bigint";

#[async_trait]
impl ReadModels for Postgres {
    async fn checkpoints(&self) -> Result<HashMap<String, u64>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT projection, position FROM checkpoints", &[])
            .await
            .map_err(|e| pg_error("reading checkpoints", e))?;
        rows.iter()
            .map(|r| Ok((r.get(0), to_u64(r.get(1), "checkpoint")?)))
            .collect()
    }

    async fn inventory(&self, store: &StoreId) -> Result<Positioned<Vec<StockRow>>> {
        let a = self
            .snapshot(
                INVENTORY,
                "SELECT item_id, on_hand FROM rm_inventory WHERE store_id = $1 ORDER BY item_id COLLATE \"C\"",
                &[&store.as_str()],
            )
            .await?;
        Ok(Positioned::new(a.position, stock_rows(&a.rows)?))
    }

    async fn inventory_item(&self, store: &StoreId, item: &ItemId) -> Result<Positioned<i64>> {
        let a = self
            .snapshot(
                INVENTORY,
                "SELECT on_hand FROM rm_inventory WHERE store_id = $1 AND item_id = $2",
                &[&store.as_str(), &item.as_str()],
            )
            .await?;
        Ok(Positioned::new(
            a.position,
            a.rows.first().map(|r| r.get(0)).unwrap_or(0),
        ))
    }

    async fn low_stock(
        &self,
        store: &StoreId,
        threshold: i64,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let a = self
            .snapshot(
                INVENTORY,
                "SELECT item_id, on_hand FROM rm_inventory WHERE store_id = $1 AND on_hand <= $2 \
                 ORDER BY on_hand, item_id COLLATE \"C\"",
                &[&store.as_str(), &threshold],
            )
            .await?;
        Ok(Positioned::new(a.position, stock_rows(&a.rows)?))
    }

    async fn store_daily(
        &self,
        store: &StoreId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<DayFigures>>>> {
        let (from, to) = bounds(range);
        let a = self
            .snapshot(
                STORE_DAILY,
                "SELECT date::text, transactions, units_sold, gross_cents, returned_units, returned_cents, \
                 discount_cents FROM rm_store_daily WHERE store_id = $1 AND date >= $2::text::date AND date <= $3::text::date \
                 ORDER BY date",
                &[&store.as_str(), &from, &to],
            )
            .await?;
        Ok(Positioned::new(
            a.position,
            dated(&a.rows, |r| day_figures(r, 1), DayFigures::is_empty)?,
        ))
    }

    async fn daily_sales(&self, date: Date) -> Result<Positioned<Vec<StoreSales>>> {
        let date = date.to_string();
        let a = self
            .snapshot(
                STORE_DAILY,
                "SELECT store_id, transactions, units_sold, gross_cents, returned_units, returned_cents, \
                 discount_cents FROM rm_store_daily WHERE date = $1::text::date ORDER BY store_id COLLATE \"C\"",
                &[&date],
            )
            .await?;
        let mut out = Vec::with_capacity(a.rows.len());
        for r in &a.rows {
            let figures = day_figures(r, 1);
            if !figures.is_empty() {
                out.push(StoreSales {
                    store_id: store_id(r.get(0))?,
                    figures,
                });
            }
        }
        Ok(Positioned::new(a.position, out))
    }

    async fn supplier_daily(
        &self,
        supplier: &SupplierId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<SupplierDay>>>> {
        let (from, to) = bounds(range);
        let a = self
            .snapshot(
                SUPPLIER_DAILY,
                "SELECT date::text, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents \
                 FROM rm_supplier_daily WHERE supplier_id = $1 AND date >= $2::text::date AND date <= $3::text::date \
                 ORDER BY date",
                &[&supplier.as_str(), &from, &to],
            )
            .await?;
        Ok(Positioned::new(
            a.position,
            dated(&a.rows, |r| supplier_day(r, 1), SupplierDay::is_empty)?,
        ))
    }

    async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
    ) -> Result<Positioned<ItemSales>> {
        let (from, to) = bounds(range);
        // The supplier comes along on every row (an item has one); `min` picks it per date. One
        // store's days from its rows of item daily sales (one range of the key), every store's
        // from the item's totals (whose date is text).
        let a = match store {
            Some(store) => {
                self.snapshot(
                    ITEM_DAILY,
                    &format!(
                        "SELECT date::text, {ITEM_FIGURES}, min(supplier_id) FROM rm_item_daily \
                         WHERE store_id = $1 AND item_id = $2 AND date >= $3::text::date \
                         AND date <= $4::text::date GROUP BY date ORDER BY date"
                    ),
                    &[&store.as_str(), &item.as_str(), &from, &to],
                )
                .await?
            }
            None => {
                self.snapshot(
                    ITEM_DAILY,
                    &format!(
                        "SELECT date, {ITEM_FIGURES}, min(supplier_id) FROM rm_item_totals \
                         WHERE item_id = $1 AND date >= $2::text AND date <= $3::text \
                         GROUP BY date ORDER BY date"
                    ),
                    &[&item.as_str(), &from, &to],
                )
                .await?
            }
        };
        let supplier = a.rows.first().map(|r| supplier_id(r.get(6))).transpose()?;
        let supplier = match supplier {
            Some(s) => Some(s),
            None => {
                // No row in the range: the item's supplier from any of its rows.
                let b = self
                    .snapshot(
                        ITEM_DAILY,
                        "SELECT supplier_id FROM rm_item_totals WHERE item_id = $1 LIMIT 1",
                        &[&item.as_str()],
                    )
                    .await?;
                b.rows.first().map(|r| supplier_id(r.get(0))).transpose()?
            }
        };
        Ok(Positioned::new(
            a.position,
            ItemSales {
                supplier_id: supplier,
                days: dated(&a.rows, |r| item_day(r, 1), ItemDay::is_empty)?,
            },
        ))
    }

    async fn top_items(&self, query: &TopItemsQuery) -> Result<Positioned<Vec<TopItem>>> {
        let (from, to) = bounds(query.range);
        let store = query.store.as_ref().map(|s| s.as_str());
        let supplier = query.supplier.as_ref().map(|s| s.as_str());
        let limit = query.limit as i64;
        // A store's items from its range of item daily sales; the chain's from the item totals
        // (a store count fewer rows, dates as text).
        let (table, date_is, store_is) = match store {
            Some(_) => (
                "rm_item_daily",
                "date >= $1::text::date AND date <= $2::text::date",
                "store_id = $3",
            ),
            None => (
                "rm_item_totals",
                "date >= $1::text AND date <= $2::text",
                "$3::text IS NULL",
            ),
        };
        let a = self
            .snapshot(
                ITEM_DAILY,
                &format!(
                    "SELECT item_id, sum(units_sold)::bigint AS units, \
                     (sum(gross_cents) - sum(discount_cents) - sum(returned_cents))::bigint AS net \
                     FROM {table} WHERE {store_is} AND {date_is} \
                     AND ($4::text IS NULL OR supplier_id = $4) \
                     GROUP BY item_id \
                     HAVING sum(units_sold) <> 0 OR sum(gross_cents) - sum(discount_cents) - sum(returned_cents) <> 0 \
                     ORDER BY units DESC, item_id COLLATE \"C\" LIMIT $5"
                ),
                &[&from, &to, &store, &supplier, &limit],
            )
            .await?;
        let items = a
            .rows
            .iter()
            .map(|r| {
                Ok(TopItem {
                    item_id: item_id(r.get(0))?,
                    units_sold: r.get(1),
                    net_cents: r.get(2),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Positioned::new(a.position, items))
    }

    async fn catalog(&self) -> Result<Positioned<Catalog>> {
        // The three tables in one snapshot: one statement, each row tagged with its table.
        let a = self
            .snapshot(
                REFERENCE,
                "SELECT * FROM (SELECT 0 AS kind, store_id AS id, name, timezone AS extra, 0::bigint AS price \
                 FROM rm_stores \
                 UNION ALL SELECT 1, supplier_id, name, '', 0 FROM rm_suppliers \
                 UNION ALL SELECT 2, item_id, name, supplier_id, unit_price_cents FROM rm_items) r \
                 ORDER BY kind, id COLLATE \"C\"",
                &[],
            )
            .await?;
        let mut raw: RawCatalog = Default::default();
        for r in &a.rows {
            let (id, name) = (r.get::<_, String>(1), r.get::<_, String>(2));
            match r.get::<_, i32>(0) {
                0 => raw.0.push((id, name, r.get(3))),
                1 => raw.1.push((id, name)),
                _ => raw.2.push((id, name, r.get(3), r.get(4))),
            }
        }
        Ok(Positioned::new(a.position, Catalog::parse(raw)?))
    }
}

#[async_trait]
impl Journal for Postgres {
    async fn chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
        heads_upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>> {
        let store = store.map(|s| s.as_str());
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let heads_upto = i64::try_from(heads_upto).unwrap_or(i64::MAX);
        let a = self
            .snapshot(
                JOURNAL,
                "SELECT store_id, interval_start, interval_end, head, \
                 CASE WHEN interval_end > $3 THEN moves ELSE ''::bytea END FROM rm_journal \
                 WHERE ($1::text IS NULL OR store_id = $1) AND interval_start < $2 \
                 ORDER BY store_id COLLATE \"C\", interval_start",
                &[&store, &upto, &heads_upto],
            )
            .await?;
        let chunks = a
            .rows
            .iter()
            .map(stored_chunk)
            .collect::<Result<Vec<_>>>()?;
        Ok(Positioned::new(a.position, chunks))
    }

    async fn stock_chunks(
        &self,
        store: Option<&StoreId>,
        upto: u64,
    ) -> Result<Positioned<Vec<StoredChunk>>> {
        let store = store.map(|s| s.as_str());
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let a = self
            .snapshot(
                JOURNAL,
                "SELECT store_id, interval_start, interval_end, head, \
                 CASE WHEN interval_end > $2 THEN moves ELSE ''::bytea END FROM rm_journal j \
                 WHERE ($1::text IS NULL OR store_id = $1) AND interval_start < $2 \
                 AND (interval_end > $2 OR interval_start = (SELECT max(interval_start) \
                      FROM rm_journal k WHERE k.store_id = j.store_id AND k.interval_end <= $2)) \
                 ORDER BY store_id COLLATE \"C\", interval_start",
                &[&store, &upto],
            )
            .await?;
        let chunks = a
            .rows
            .iter()
            .map(stored_chunk)
            .collect::<Result<Vec<_>>>()?;
        Ok(Positioned::new(a.position, chunks))
    }
}

fn stored_chunk(r: &tokio_postgres::Row) -> Result<StoredChunk> {
    Ok(StoredChunk {
        store: r.get(0),
        interval_start: to_u64(r.get(1), "interval start")?,
        interval_end: to_u64(r.get(2), "interval end")?,
        head: r.get(3),
        moves: r.get(4),
    })
}
