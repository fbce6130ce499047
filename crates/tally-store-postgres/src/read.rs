//! Read models and checkpoints. An update locks its projection's checkpoint row, checks it, applies
//! the delta as one upsert per table and moves the checkpoint, all in one transaction; two projectors
//! racing (which the projector lease prevents) could not both apply a batch. Each query runs in one
//! repeatable-read transaction, so its rows and the position it reports come from the same snapshot.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::civil::Date;
use tally_core::ports::{Error, ReadStore, Result};
use tally_core::readmodel::{
    DayFigures, Delta, INVENTORY, ProjectionUpdate, STORE_DAILY, SUPPLIER_DAILY, SupplierDay,
};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::{Postgres, pg_error, to_i64, to_u64};

fn parse_date(raw: &str) -> Result<Date> {
    raw.parse()
        .map_err(|e| Error::Corrupt(format!("date {raw:?}: {e}")))
}

async fn apply_update(tx: &Transaction<'_>, u: &ProjectionUpdate) -> Result<()> {
    tx.execute(
        "INSERT INTO checkpoints (projection, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        &[&u.projection],
    )
    .await
    .map_err(|e| pg_error("creating a checkpoint", e))?;
    let at: i64 = tx
        .query_one(
            "SELECT position FROM checkpoints WHERE projection = $1 FOR UPDATE",
            &[&u.projection],
        )
        .await
        .map_err(|e| pg_error("locking a checkpoint", e))?
        .get(0);
    if to_u64(at, "checkpoint")? != u.from {
        return Err(Error::CheckpointMoved {
            projection: u.projection.clone(),
            expected: u.from,
        });
    }
    match &u.delta {
        Delta::Inventory(rows) if !rows.is_empty() => {
            let (mut stores, mut items, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
            for ((store, item), d) in rows {
                stores.push(store.as_str());
                items.push(item.as_str());
                deltas.push(*d);
            }
            tx.execute(
                "INSERT INTO rm_inventory (store_id, item_id, on_hand) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
                 ON CONFLICT (store_id, item_id) DO UPDATE SET on_hand = rm_inventory.on_hand + excluded.on_hand",
                &[&stores, &items, &deltas],
            )
            .await
            .map_err(|e| pg_error("updating inventory", e))?;
        }
        Delta::StoreDaily(rows) if !rows.is_empty() => {
            let mut cols: (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
            let mut f: [Vec<i64>; 5] = Default::default();
            for ((store, date), d) in rows {
                cols.0.push(store.as_str());
                cols.1.push(date.to_string());
                for (i, v) in [
                    d.transactions,
                    d.units_sold,
                    d.gross_cents,
                    d.returned_units,
                    d.returned_cents,
                ]
                .into_iter()
                .enumerate()
                {
                    f[i].push(v);
                }
            }
            tx.execute(
                "INSERT INTO rm_store_daily (store_id, date, transactions, units_sold, gross_cents, returned_units, returned_cents) \
                 SELECT s, d::date, a, b, c, e, g FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::bigint[]) AS r(s, d, a, b, c, e, g) \
                 ON CONFLICT (store_id, date) DO UPDATE SET \
                 transactions = rm_store_daily.transactions + excluded.transactions, \
                 units_sold = rm_store_daily.units_sold + excluded.units_sold, \
                 gross_cents = rm_store_daily.gross_cents + excluded.gross_cents, \
                 returned_units = rm_store_daily.returned_units + excluded.returned_units, \
                 returned_cents = rm_store_daily.returned_cents + excluded.returned_cents",
                &[&cols.0, &cols.1, &f[0], &f[1], &f[2], &f[3], &f[4]],
            )
            .await
            .map_err(|e| pg_error("updating store daily sales", e))?;
        }
        Delta::SupplierDaily(rows) if !rows.is_empty() => {
            let mut cols: (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
            let mut f: [Vec<i64>; 5] = Default::default();
            for ((supplier, date), d) in rows {
                cols.0.push(supplier.as_str());
                cols.1.push(date.to_string());
                for (i, v) in [
                    d.deliveries,
                    d.units_supplied,
                    d.supply_cost_cents,
                    d.units_sold,
                    d.sales_cents,
                ]
                .into_iter()
                .enumerate()
                {
                    f[i].push(v);
                }
            }
            tx.execute(
                "INSERT INTO rm_supplier_daily (supplier_id, date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents) \
                 SELECT s, d::date, a, b, c, e, g FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::bigint[]) AS r(s, d, a, b, c, e, g) \
                 ON CONFLICT (supplier_id, date) DO UPDATE SET \
                 deliveries = rm_supplier_daily.deliveries + excluded.deliveries, \
                 units_supplied = rm_supplier_daily.units_supplied + excluded.units_supplied, \
                 supply_cost_cents = rm_supplier_daily.supply_cost_cents + excluded.supply_cost_cents, \
                 units_sold = rm_supplier_daily.units_sold + excluded.units_sold, \
                 sales_cents = rm_supplier_daily.sales_cents + excluded.sales_cents",
                &[&cols.0, &cols.1, &f[0], &f[1], &f[2], &f[3], &f[4]],
            )
            .await
            .map_err(|e| pg_error("updating supplier daily reports", e))?;
        }
        _ => {}
    }
    tx.execute(
        "UPDATE checkpoints SET position = $2 WHERE projection = $1",
        &[&u.projection, &to_i64(u.to, "checkpoint")?],
    )
    .await
    .map_err(|e| pg_error("moving a checkpoint", e))?;
    Ok(())
}

fn day_figures(r: &tokio_postgres::Row, at: usize) -> DayFigures {
    DayFigures {
        transactions: r.get(at),
        units_sold: r.get(at + 1),
        gross_cents: r.get(at + 2),
        returned_units: r.get(at + 3),
        returned_cents: r.get(at + 4),
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

fn range(from: Option<Date>, to: Option<Date>) -> (String, String) {
    (
        from.map_or_else(|| "0001-01-01".to_owned(), |d| d.to_string()),
        to.map_or_else(|| "9999-12-31".to_owned(), |d| d.to_string()),
    )
}

impl Postgres {
    /// In one snapshot: the checkpoint of `projection` and the rows of `sql`.
    async fn snapshot(
        &self,
        projection: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(u64, Vec<tokio_postgres::Row>)> {
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
        Ok((to_u64(at, "checkpoint")?, rows))
    }
}

#[async_trait]
impl ReadStore for Postgres {
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

    async fn apply(&self, updates: Vec<ProjectionUpdate>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a projection update", e))?;
        // Checkpoint rows are locked in name order, so two appliers cannot deadlock.
        let mut updates = updates;
        updates.sort_by(|a, b| a.projection.cmp(&b.projection));
        for u in &updates {
            apply_update(&tx, u).await?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a projection update", e))
    }

    async fn reset(&self, projection: &str) -> Result<()> {
        let table = match projection {
            INVENTORY => "rm_inventory",
            STORE_DAILY => "rm_store_daily",
            SUPPLIER_DAILY => "rm_supplier_daily",
            other => return Err(Error::Corrupt(format!("no projection {other:?}"))),
        };
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a reset", e))?;
        tx.execute(
            "INSERT INTO checkpoints (projection, position) VALUES ($1, 0) \
             ON CONFLICT (projection) DO UPDATE SET position = 0",
            &[&projection],
        )
        .await
        .map_err(|e| pg_error("resetting a checkpoint", e))?;
        tx.batch_execute(&format!("DELETE FROM {table}"))
            .await
            .map_err(|e| pg_error("emptying a read model", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a reset", e))
    }

    async fn inventory(&self, store_id: &str) -> Result<(u64, Vec<(String, i64)>)> {
        let (at, rows) = self
            .snapshot(
                INVENTORY,
                "SELECT item_id, on_hand FROM rm_inventory WHERE store_id = $1 ORDER BY item_id",
                &[&store_id],
            )
            .await?;
        Ok((at, rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    async fn inventory_item(&self, store_id: &str, item_id: &str) -> Result<(u64, i64)> {
        let (at, rows) = self
            .snapshot(
                INVENTORY,
                "SELECT on_hand FROM rm_inventory WHERE store_id = $1 AND item_id = $2",
                &[&store_id, &item_id],
            )
            .await?;
        Ok((at, rows.first().map(|r| r.get(0)).unwrap_or(0)))
    }

    async fn store_daily(
        &self,
        store_id: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<(u64, Vec<(Date, DayFigures)>)> {
        let (from, to) = range(from, to);
        let (at, rows) = self
            .snapshot(
                STORE_DAILY,
                "SELECT date::text, transactions, units_sold, gross_cents, returned_units, returned_cents \
                 FROM rm_store_daily WHERE store_id = $1 AND date >= $2::text::date AND date <= $3::text::date \
                 ORDER BY date",
                &[&store_id, &from, &to],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let f = day_figures(r, 1);
            if !f.is_empty() {
                out.push((parse_date(r.get(0))?, f));
            }
        }
        Ok((at, out))
    }

    async fn daily_sales(&self, date: Date) -> Result<(u64, Vec<(String, DayFigures)>)> {
        let date = date.to_string();
        let (at, rows) = self
            .snapshot(
                STORE_DAILY,
                "SELECT store_id, transactions, units_sold, gross_cents, returned_units, returned_cents \
                 FROM rm_store_daily WHERE date = $1::text::date ORDER BY store_id",
                &[&date],
            )
            .await?;
        Ok((
            at,
            rows.iter()
                .map(|r| (r.get(0), day_figures(r, 1)))
                .filter(|(_, f): &(String, DayFigures)| !f.is_empty())
                .collect(),
        ))
    }

    async fn supplier_daily(
        &self,
        supplier_id: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<(u64, Vec<(Date, SupplierDay)>)> {
        let (from, to) = range(from, to);
        let (at, rows) = self
            .snapshot(
                SUPPLIER_DAILY,
                "SELECT date::text, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents \
                 FROM rm_supplier_daily WHERE supplier_id = $1 AND date >= $2::text::date AND date <= $3::text::date \
                 ORDER BY date",
                &[&supplier_id, &from, &to],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let f = supplier_day(r, 1);
            if !f.is_empty() {
                out.push((parse_date(r.get(0))?, f));
            }
        }
        Ok((at, out))
    }
}
