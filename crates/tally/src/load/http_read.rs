//! The query API as a [`ReadModels`] port, for [`tally_core::workload::verify`]: the books of a load
//! run are checked through the same HTTP answers clients get. Every answer waits for the read models
//! to reach the run's last position (`min_position`), retrying while they catch up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::civil::Date;
use serde_json::Value;
use tally_core::ports::{Error, ReadModels, Result};
use tally_core::readmodel::{DayFigures, ItemDay, SupplierDay};
use tally_core::rows::{
    Catalog, DateRange, Dated, ItemSales, Positioned, RawCatalog, StockRow, StoreSales, TopItem,
    TopItemsQuery,
};
use tally_core::timetravel::{item_id, store_id, supplier_id};
use tally_domain::values::{ItemId, StoreId, SupplierId};

pub struct HttpReadModels {
    pub client: crate::client::Client,
    pub min_position: u64,
}

fn int(v: &Value, field: &str) -> Result<i64> {
    v[field]
        .as_i64()
        .ok_or_else(|| Error::Corrupt(format!("no integer {field} in {v}")))
}

fn text<'v>(v: &'v Value, field: &str) -> Result<&'v str> {
    v[field]
        .as_str()
        .ok_or_else(|| Error::Corrupt(format!("no {field} in {v}")))
}

fn list<'v>(v: &'v Value, field: &str) -> Result<&'v Vec<Value>> {
    v[field]
        .as_array()
        .ok_or_else(|| Error::Corrupt(format!("no {field} in {v}")))
}

fn date_of(v: &Value) -> Result<Date> {
    text(v, "date")?
        .parse()
        .map_err(|e| Error::Corrupt(format!("date in {v}: {e}")))
}

fn position(v: &Value) -> Result<u64> {
    v["position"]
        .as_u64()
        .ok_or_else(|| Error::Corrupt(format!("no position in {v}")))
}

/// `&from=…&to=…` for the ends a range has.
fn range_query(range: DateRange) -> String {
    let mut q = String::new();
    if let Some(f) = range.from {
        q.push_str(&format!("&from={f}"));
    }
    if let Some(t) = range.to {
        q.push_str(&format!("&to={t}"));
    }
    q
}

fn stock_rows(v: &Value) -> Result<Vec<StockRow>> {
    list(v, "items")?
        .iter()
        .map(|i| {
            Ok(StockRow {
                item_id: item_id(text(i, "item_id")?)?,
                on_hand: int(i, "on_hand")?,
            })
        })
        .collect()
}

/// An answer's `days`, each with its date and the figures `figures` reads from it.
fn days<F>(v: &Value, figures: impl Fn(&Value) -> Result<F>) -> Result<Vec<Dated<F>>> {
    list(v, "days")?
        .iter()
        .map(|d| {
            Ok(Dated {
                date: date_of(d)?,
                figures: figures(d)?,
            })
        })
        .collect()
}

fn day_figures(d: &Value) -> Result<DayFigures> {
    Ok(DayFigures {
        transactions: int(d, "transactions")?,
        units_sold: int(d, "units_sold")?,
        gross_cents: int(d, "gross_cents")?,
        returned_units: int(d, "returned_units")?,
        returned_cents: int(d, "returned_cents")?,
        discount_cents: int(d, "discount_cents")?,
    })
}

impl HttpReadModels {
    async fn get(&self, path: &str) -> Result<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}min_position={}", self.min_position);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.get_once(&path).await {
                Ok(v) => return Ok(v),
                // The read models may still be catching up (min_position answers 503 after 10 s).
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "read model not there yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(Error::Unavailable(format!("{e:#}"))),
            }
        }
    }

    async fn get_once(&self, path: &str) -> anyhow::Result<Value> {
        self.client.get_json(path).await
    }
}

#[async_trait]
impl ReadModels for HttpReadModels {
    /// From `/readyz`, which lists each read model's position.
    async fn checkpoints(&self) -> Result<HashMap<String, u64>> {
        let v = self
            .get_once("/readyz")
            .await
            .map_err(|e| Error::Unavailable(format!("{e:#}")))?;
        list(&v["checks"]["projections"], "models")?
            .iter()
            .map(|m| Ok((text(m, "model")?.to_owned(), position(m)?)))
            .collect()
    }

    async fn inventory(&self, store: &StoreId) -> Result<Positioned<Vec<StockRow>>> {
        let v = self.get(&format!("/v1/inventory/{store}")).await?;
        Ok(Positioned::new(position(&v)?, stock_rows(&v)?))
    }

    async fn inventory_item(&self, store: &StoreId, item: &ItemId) -> Result<Positioned<i64>> {
        let v = self
            .get(&format!("/v1/inventory/{store}/items/{item}"))
            .await?;
        Ok(Positioned::new(position(&v)?, int(&v, "on_hand")?))
    }

    async fn low_stock(
        &self,
        store: &StoreId,
        threshold: i64,
    ) -> Result<Positioned<Vec<StockRow>>> {
        let v = self
            .get(&format!(
                "/v1/inventory/{store}/low-stock?threshold={threshold}"
            ))
            .await?;
        Ok(Positioned::new(position(&v)?, stock_rows(&v)?))
    }

    async fn store_daily(
        &self,
        store: &StoreId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<DayFigures>>>> {
        let v = self
            .get(&format!(
                "/v1/reports/stores/{store}/daily-sales?{}",
                range_query(range)
            ))
            .await?;
        Ok(Positioned::new(position(&v)?, days(&v, day_figures)?))
    }

    async fn daily_sales(&self, date: Date) -> Result<Positioned<Vec<StoreSales>>> {
        let v = self
            .get(&format!("/v1/reports/daily-sales?date={date}"))
            .await?;
        let stores = list(&v, "stores")?
            .iter()
            .map(|s| {
                Ok(StoreSales {
                    store_id: store_id(text(s, "store_id")?)?,
                    figures: day_figures(s)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Positioned::new(position(&v)?, stores))
    }

    async fn supplier_daily(
        &self,
        supplier: &SupplierId,
        range: DateRange,
    ) -> Result<Positioned<Vec<Dated<SupplierDay>>>> {
        let v = self
            .get(&format!(
                "/v1/reports/suppliers/{supplier}/daily?{}",
                range_query(range)
            ))
            .await?;
        let days = days(&v, |d| {
            Ok(SupplierDay {
                deliveries: int(d, "deliveries")?,
                units_supplied: int(d, "units_supplied")?,
                supply_cost_cents: int(d, "supply_cost_cents")?,
                units_sold: int(d, "units_sold")?,
                sales_cents: int(d, "sales_cents")?,
            })
        })?;
        Ok(Positioned::new(position(&v)?, days))
    }

    async fn item_daily(
        &self,
        item: &ItemId,
        store: Option<&StoreId>,
        range: DateRange,
    ) -> Result<Positioned<ItemSales>> {
        let store = store.map(|s| format!("&store_id={s}")).unwrap_or_default();
        let v = self
            .get(&format!(
                "/v1/reports/items/{item}/daily-sales?{store}{}",
                range_query(range)
            ))
            .await?;
        let days = days(&v, |d| {
            Ok(ItemDay {
                units_sold: int(d, "units_sold")?,
                gross_cents: int(d, "gross_cents")?,
                returned_units: int(d, "returned_units")?,
                returned_cents: int(d, "returned_cents")?,
                discount_cents: int(d, "discount_cents")?,
            })
        })?;
        let supplier = v["supplier_id"].as_str().map(supplier_id).transpose()?;
        Ok(Positioned::new(
            position(&v)?,
            ItemSales {
                supplier_id: supplier,
                days,
            },
        ))
    }

    async fn top_items(&self, query: &TopItemsQuery) -> Result<Positioned<Vec<TopItem>>> {
        let mut q = format!("limit={}{}", query.limit, range_query(query.range));
        if let Some(s) = &query.store {
            q.push_str(&format!("&store_id={s}"));
        }
        if let Some(s) = &query.supplier {
            q.push_str(&format!("&supplier_id={s}"));
        }
        let v = self.get(&format!("/v1/reports/top-items?{q}")).await?;
        let items = list(&v, "items")?
            .iter()
            .map(|i| {
                Ok(TopItem {
                    item_id: item_id(text(i, "item_id")?)?,
                    units_sold: int(i, "units_sold")?,
                    net_cents: int(i, "net_cents")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Positioned::new(position(&v)?, items))
    }

    /// From `/v1/stores`, `/v1/suppliers` and `/v1/items`: three reads, so the position is the
    /// least of the three (each list holds at least what that position registered).
    async fn catalog(&self) -> Result<Positioned<Catalog>> {
        let (stores, suppliers, items) = (
            self.get("/v1/stores").await?,
            self.get("/v1/suppliers").await?,
            self.get("/v1/items").await?,
        );
        let mut raw: RawCatalog = Default::default();
        for s in list(&stores, "stores")? {
            let tz = text(s, "timezone")?.to_owned();
            raw.0.push((
                text(s, "store_id")?.to_owned(),
                text(s, "name")?.to_owned(),
                tz,
            ));
        }
        for s in list(&suppliers, "suppliers")? {
            raw.1.push((
                text(s, "supplier_id")?.to_owned(),
                text(s, "name")?.to_owned(),
            ));
        }
        for i in list(&items, "items")? {
            raw.2.push((
                text(i, "item_id")?.to_owned(),
                text(i, "name")?.to_owned(),
                text(i, "supplier_id")?.to_owned(),
                int(i, "unit_price_cents")?,
            ));
        }
        let at = position(&stores)?
            .min(position(&suppliers)?)
            .min(position(&items)?);
        Ok(Positioned::new(at, Catalog::parse(raw)?))
    }
}
