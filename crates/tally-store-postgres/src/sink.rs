//! The projector's side of the read models. An update locks its projection's checkpoint row, checks
//! it, applies the delta as one upsert per table and moves the checkpoint, all in one transaction; two
//! projectors racing (which the projector lease prevents) could not both apply a batch.

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use tally_core::ports::{Error, Journal, ProjectionSink, Result};
use tally_core::projector::poison::Fault;
use tally_core::readmodel::journal::{JOURNAL, StoredChunk};
use tally_core::readmodel::shadow;
use tally_core::readmodel::{Delta, ItemDailyDelta, ProjectionUpdate, Registered};
use tokio_postgres::Transaction;

use crate::{Postgres, pg_error, to_i64, to_u64};

/// A statement on the serving tables, or (`shadow`) rewritten onto their shadows.
fn on(shadow: bool, sql: &'static str) -> Cow<'static, str> {
    if shadow {
        Cow::Owned(shadow::rewrite(sql))
    } else {
        Cow::Borrowed(sql)
    }
}

pub(crate) async fn apply_update(tx: &Transaction<'_>, u: &ProjectionUpdate) -> Result<()> {
    // An update of a shadow checkpoint writes the shadow tables ([`shadow`]).
    let shadow = shadow::shadowed(&u.projection).is_some();
    tx.execute(
        &*on(
            shadow,
            "INSERT INTO checkpoints (projection, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        ),
        &[&u.projection],
    )
    .await
    .map_err(|e| pg_error("creating a checkpoint", e))?;
    let at: i64 = tx
        .query_one(
            &*on(
                shadow,
                "SELECT position FROM checkpoints WHERE projection = $1 FOR UPDATE",
            ),
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
            tx.execute(&*on(shadow, "INSERT INTO rm_inventory (store_id, item_id, on_hand) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
                 ON CONFLICT (store_id, item_id) DO UPDATE SET on_hand = rm_inventory.on_hand + excluded.on_hand"),
                &[&stores, &items, &deltas],
            )
            .await
            .map_err(|e| pg_error("updating inventory", e))?;
        }
        Delta::StoreDaily(rows) if !rows.is_empty() => {
            let mut cols: (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
            let mut f: [Vec<i64>; 6] = Default::default();
            for ((store, date), d) in rows {
                cols.0.push(store.as_str());
                cols.1.push(date.to_string());
                for (i, v) in d.values().into_iter().enumerate() {
                    f[i].push(v);
                }
            }
            tx.execute(&*on(shadow, "INSERT INTO rm_store_daily (store_id, date, transactions, units_sold, gross_cents, returned_units, returned_cents, \
                 discount_cents) \
                 SELECT s, d::date, a, b, c, e, g, h FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[]) AS r(s, d, a, b, c, e, g, h) \
                 ON CONFLICT (store_id, date) DO UPDATE SET \
                 transactions = rm_store_daily.transactions + excluded.transactions, \
                 units_sold = rm_store_daily.units_sold + excluded.units_sold, \
                 gross_cents = rm_store_daily.gross_cents + excluded.gross_cents, \
                 returned_units = rm_store_daily.returned_units + excluded.returned_units, \
                 returned_cents = rm_store_daily.returned_cents + excluded.returned_cents, \
                 discount_cents = rm_store_daily.discount_cents + excluded.discount_cents"),
                &[&cols.0, &cols.1, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5]],
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
                for (i, v) in d.values().into_iter().enumerate() {
                    f[i].push(v);
                }
            }
            tx.execute(&*on(shadow, "INSERT INTO rm_supplier_daily (supplier_id, date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents) \
                 SELECT s, d::date, a, b, c, e, g FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::bigint[]) AS r(s, d, a, b, c, e, g) \
                 ON CONFLICT (supplier_id, date) DO UPDATE SET \
                 deliveries = rm_supplier_daily.deliveries + excluded.deliveries, \
                 units_supplied = rm_supplier_daily.units_supplied + excluded.units_supplied, \
                 supply_cost_cents = rm_supplier_daily.supply_cost_cents + excluded.supply_cost_cents, \
                 units_sold = rm_supplier_daily.units_sold + excluded.units_sold, \
                 sales_cents = rm_supplier_daily.sales_cents + excluded.sales_cents"),
                &[&cols.0, &cols.1, &f[0], &f[1], &f[2], &f[3], &f[4]],
            )
            .await
            .map_err(|e| pg_error("updating supplier daily reports", e))?;
        }
        Delta::TillDaily(rows) if !rows.is_empty() => {
            let (mut stores, mut tills, mut dates) = (Vec::new(), Vec::new(), Vec::new());
            let mut f: [Vec<i64>; 3] = Default::default();
            for ((store, till, date), d) in rows {
                stores.push(store.as_str());
                tills.push(till.as_str());
                dates.push(date.to_string());
                for (column, v) in f.iter_mut().zip(d.values()) {
                    column.push(v);
                }
            }
            tx.execute(&*on(shadow, "INSERT INTO rm_till_daily (store_id, till_id, date, transactions, gross_cents, discount_cents) \
                 SELECT s, t, d::date, a, b, c FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], \
                 $5::bigint[], $6::bigint[]) AS r(s, t, d, a, b, c) \
                 ON CONFLICT (store_id, till_id, date) DO UPDATE SET \
                 transactions = rm_till_daily.transactions + excluded.transactions, \
                 gross_cents = rm_till_daily.gross_cents + excluded.gross_cents, \
                 discount_cents = rm_till_daily.discount_cents + excluded.discount_cents"),
                &[&stores, &tills, &dates, &f[0], &f[1], &f[2]],
            )
            .await
            .map_err(|e| pg_error("updating till daily sales", e))?;
        }
        Delta::ItemDaily(delta) => apply_item_daily(tx, shadow, delta).await?,
        Delta::Reference(rows) if !rows.is_empty() => apply_reference(tx, shadow, rows).await?,
        Delta::Journal(chunks) if !chunks.is_empty() => {
            let stores: Vec<&str> = chunks.iter().map(|c| c.store.as_str()).collect();
            let starts = chunks
                .iter()
                .map(|c| to_i64(c.interval_start, "interval start"))
                .collect::<Result<Vec<_>>>()?;
            let ends = chunks
                .iter()
                .map(|c| to_i64(c.interval_end, "interval end"))
                .collect::<Result<Vec<_>>>()?;
            let heads: Vec<&[u8]> = chunks.iter().map(|c| c.head.as_slice()).collect();
            let moves: Vec<&[u8]> = chunks.iter().map(|c| c.moves.as_slice()).collect();
            tx.execute(&*on(shadow, "INSERT INTO rm_journal (store_id, interval_start, interval_end, head, moves) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[])"),
                &[&stores, &starts, &ends, &heads, &moves],
            )
            .await
            .map_err(|e| pg_error("writing journal chunks", e))?;
        }
        _ => {}
    }
    tx.execute(
        &*on(
            shadow,
            "UPDATE checkpoints SET position = $2 WHERE projection = $1",
        ),
        &[&u.projection, &to_i64(u.to, "checkpoint")?],
    )
    .await
    .map_err(|e| pg_error("moving a checkpoint", e))?;
    Ok(())
}

/// Item daily rows: the sales figures and the deliveries, each upserted only when the delta has
/// some (a batch may carry deliveries and no sales, or the reverse).
/// Sales and deliveries (with their corrections) in the same rows, one per key: a day with
/// deliveries and no sales has a row whose sales figures are 0, which the item reports leave out
/// (the view `supplier_item_daily` shows it).
async fn apply_item_daily(
    tx: &Transaction<'_>,
    shadow: bool,
    delta: &ItemDailyDelta,
) -> Result<()> {
    let changes = delta.changes();
    if changes.is_empty() {
        return Ok(());
    }
    let (mut stores, mut items, mut dates, mut suppliers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut f: [Vec<i64>; 7] = Default::default();
    for c in &changes {
        stores.push(c.store);
        items.push(c.item);
        dates.push(c.date.to_string());
        suppliers.push(c.supplier);
        for (column, v) in f.iter_mut().zip(c.figures()) {
            column.push(v);
        }
    }
    tx.execute(&*on(shadow, "INSERT INTO rm_item_daily (store_id, item_id, date, supplier_id, units_sold, gross_cents, returned_units, returned_cents, \
         units_supplied, supply_cost_cents, discount_cents) \
         SELECT s, i, d::date, p, a, b, c, e, g, h, k FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[]) \
         AS r(s, i, d, p, a, b, c, e, g, h, k) \
         ON CONFLICT (store_id, item_id, date) DO UPDATE SET \
         units_sold = rm_item_daily.units_sold + excluded.units_sold, \
         gross_cents = rm_item_daily.gross_cents + excluded.gross_cents, \
         returned_units = rm_item_daily.returned_units + excluded.returned_units, \
         returned_cents = rm_item_daily.returned_cents + excluded.returned_cents, \
         units_supplied = rm_item_daily.units_supplied + excluded.units_supplied, \
         supply_cost_cents = rm_item_daily.supply_cost_cents + excluded.supply_cost_cents, \
         discount_cents = rm_item_daily.discount_cents + excluded.discount_cents"),
        &[&stores, &items, &dates, &suppliers, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6]],
    )
    .await
    .map_err(|e| pg_error("updating item daily sales", e))?;
    let totals = ItemDailyDelta::totals(&changes);
    let (mut items, mut dates, mut suppliers) = (Vec::new(), Vec::new(), Vec::new());
    let mut f: [Vec<i64>; 7] = Default::default();
    for t in &totals {
        items.push(t.item);
        dates.push(t.date.to_string());
        suppliers.push(t.supplier);
        for (column, v) in f.iter_mut().zip(t.figures) {
            column.push(v);
        }
    }
    tx.execute(&*on(shadow, "INSERT INTO rm_item_totals (item_id, date, supplier_id, units_sold, gross_cents, returned_units, returned_cents, \
         units_supplied, supply_cost_cents, discount_cents) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
         $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) \
         ON CONFLICT (item_id, date) DO UPDATE SET \
         units_sold = rm_item_totals.units_sold + excluded.units_sold, \
         gross_cents = rm_item_totals.gross_cents + excluded.gross_cents, \
         returned_units = rm_item_totals.returned_units + excluded.returned_units, \
         returned_cents = rm_item_totals.returned_cents + excluded.returned_cents, \
         units_supplied = rm_item_totals.units_supplied + excluded.units_supplied, \
         supply_cost_cents = rm_item_totals.supply_cost_cents + excluded.supply_cost_cents, \
         discount_cents = rm_item_totals.discount_cents + excluded.discount_cents"),
        &[&items, &dates, &suppliers, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6]],
    )
    .await
    .map_err(|e| pg_error("updating item totals", e))?;
    Ok(())
}

/// Registrations, one upsert per table. An id is registered once, but a batch folded again after a
/// reset may carry one twice: the last wins (one row per key, or the upsert would touch a row
/// twice), as a replayed registration writes the same row again.
async fn apply_reference(tx: &Transaction<'_>, shadow: bool, rows: &[Registered]) -> Result<()> {
    let mut suppliers: HashMap<&str, &str> = HashMap::new();
    let mut stores: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut items: HashMap<&str, (&str, &str, i64)> = HashMap::new();
    for r in rows {
        match r {
            Registered::Supplier { supplier_id, name } => {
                suppliers.insert(supplier_id, name);
            }
            Registered::Store {
                store_id,
                name,
                timezone,
            } => {
                stores.insert(store_id, (name, timezone));
            }
            Registered::Item {
                item_id,
                name,
                supplier_id,
                unit_price_cents,
            } => {
                items.insert(item_id, (name, supplier_id, *unit_price_cents));
            }
        }
    }
    if !suppliers.is_empty() {
        let (ids, names): (Vec<&str>, Vec<&str>) = suppliers.into_iter().unzip();
        tx.execute(&*on(shadow, "INSERT INTO rm_suppliers (supplier_id, name) SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT (supplier_id) DO UPDATE SET name = excluded.name"),
            &[&ids, &names],
        )
        .await
        .map_err(|e| pg_error("registering suppliers", e))?;
    }
    if !stores.is_empty() {
        let (mut ids, mut names, mut zones) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (name, zone)) in stores {
            ids.push(id);
            names.push(name);
            zones.push(zone);
        }
        tx.execute(&*on(shadow, "INSERT INTO rm_stores (store_id, name, timezone) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (store_id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone"),
            &[&ids, &names, &zones],
        )
        .await
        .map_err(|e| pg_error("registering stores", e))?;
    }
    if !items.is_empty() {
        let (mut ids, mut names, mut suppliers, mut prices) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, (name, supplier, price)) in items {
            ids.push(id);
            names.push(name);
            suppliers.push(supplier);
            prices.push(price);
        }
        tx.execute(&*on(shadow, "INSERT INTO rm_items (item_id, name, supplier_id, unit_price_cents) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
             ON CONFLICT (item_id) DO UPDATE SET name = excluded.name, supplier_id = excluded.supplier_id, \
             unit_price_cents = excluded.unit_price_cents"),
            &[&ids, &names, &suppliers, &prices],
        )
        .await
        .map_err(|e| pg_error("registering items", e))?;
    }
    Ok(())
}

#[async_trait]
impl ProjectionSink for Postgres {
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
        let tables = match projection {
            JOURNAL => vec!["rm_journal"],
            other => shadow::known_tables(other)?,
        };
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a reset", e))?;
        tx.execute(
            "DELETE FROM checkpoints WHERE projection = $1",
            &[&projection],
        )
        .await
        .map_err(|e| pg_error("resetting a checkpoint", e))?;
        let empty: Vec<String> = tables.iter().map(|t| format!("DELETE FROM {t}")).collect();
        tx.batch_execute(&empty.join("; "))
            .await
            .map_err(|e| pg_error("emptying a read model", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a reset", e))
    }

    async fn start_rebuild(&self, projection: &str) -> Result<()> {
        let tables = shadow::known_tables(projection)?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a rebuild", e))?;
        let mut ddl = Vec::new();
        for table in tables {
            let shadow = shadow::table_of(table);
            ddl.push(format!(
                "{}; CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)",
                shadow::drop_sql(table)
            ));
        }
        tx.batch_execute(&ddl.join("; "))
            .await
            .map_err(|e| pg_error("creating shadow tables", e))?;
        set_checkpoint(&tx, &shadow::checkpoint_of(projection), 0).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing the start of a rebuild", e))
    }

    async fn swap_rebuild(&self, projection: &str) -> Result<Option<u64>> {
        let tables = shadow::known_tables(projection)?;
        let name = shadow::checkpoint_of(projection);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a swap", e))?;
        // The serving checkpoint's row locked first (as an update locks it), so the projector
        // cannot apply to this projection between the check and the swap.
        tx.execute(
            "INSERT INTO checkpoints (projection, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&projection],
        )
        .await
        .map_err(|e| pg_error("creating a checkpoint", e))?;
        let rows = tx
            .query(
                "SELECT projection, position FROM checkpoints WHERE projection = ANY($1) \
                 ORDER BY projection FOR UPDATE",
                &[&vec![projection.to_owned(), name.clone()]],
            )
            .await
            .map_err(|e| pg_error("locking checkpoints", e))?;
        let mut serving = 0u64;
        let mut at = None;
        for r in &rows {
            let position = to_u64(r.get(1), "checkpoint")?;
            if r.get::<_, String>(0) == name {
                at = Some(position);
            } else {
                serving = position;
            }
        }
        let Some(at) = at else {
            return Err(Error::Corrupt(format!(
                "no rebuild of {projection} to swap in"
            )));
        };
        if serving > at {
            return Ok(None);
        }
        let copy: Vec<String> = tables.iter().map(|t| shadow::swap_sql(t)).collect();
        tx.batch_execute(&copy.join("; "))
            .await
            .map_err(|e| pg_error("swapping a rebuilt read model in", e))?;
        set_checkpoint(&tx, projection, at).await?;
        tx.execute("DELETE FROM checkpoints WHERE projection = $1", &[&name])
            .await
            .map_err(|e| pg_error("dropping a shadow checkpoint", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a swap", e))?;
        Ok(Some(at))
    }

    async fn journal_heads(&self, upto: u64) -> Result<Vec<StoredChunk>> {
        Ok(Journal::stock_chunks(self, None, upto).await?.rows)
    }

    async fn faults(&self) -> Result<Vec<Fault>> {
        self.read_faults().await
    }

    async fn record_fault(&self, fault: Fault) -> Result<()> {
        self.write_fault(&fault).await
    }

    async fn clear_fault(
        &self,
        projection: &str,
        position: u64,
        update: Option<ProjectionUpdate>,
    ) -> Result<bool> {
        self.remove_fault(projection, position, update).await
    }

    async fn cancel_rebuild(&self, projection: &str) -> Result<bool> {
        let tables = shadow::known_tables(projection)?;
        let name = shadow::checkpoint_of(projection);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a cancel", e))?;
        let was = tx
            .execute("DELETE FROM checkpoints WHERE projection = $1", &[&name])
            .await
            .map_err(|e| pg_error("dropping a shadow checkpoint", e))?
            > 0;
        let drop: Vec<String> = tables.iter().map(|t| shadow::drop_sql(t)).collect();
        tx.batch_execute(&drop.join("; "))
            .await
            .map_err(|e| pg_error("dropping shadow tables", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a cancel", e))?;
        Ok(was)
    }
}

async fn set_checkpoint(tx: &Transaction<'_>, projection: &str, position: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO checkpoints (projection, position) VALUES ($1, $2) \
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
        &[&projection, &to_i64(position, "checkpoint")?],
    )
    .await
    .map_err(|e| pg_error("setting a checkpoint", e))?;
    Ok(())
}
