//! Every row of a read-model table, for `tally verify`.

use async_trait::async_trait;
use tally_core::ports::{ReadModelRows, Result};
use tally_core::rows::Positioned;
use tally_core::verify::{Row, Table};

use crate::{Postgres, pg_error};

#[async_trait]
impl ReadModelRows for Postgres {
    async fn table_rows(&self, table: &Table) -> Result<Positioned<Vec<Row>>> {
        // Keys and texts as text (dates as `YYYY-MM-DD`, as on SQLite), figures as bigint.
        let columns: Vec<String> = table
            .keys
            .iter()
            .chain(table.texts)
            .map(|c| format!("{c}::text"))
            .chain(table.figures.iter().map(|c| format!("{c}::bigint")))
            .collect();
        let sql = format!("SELECT {} FROM {}", columns.join(", "), table.name);
        let answer = self.snapshot(table.projection, &sql, &[]).await?;
        let (k, t) = (table.keys.len(), table.texts.len());
        let get = |e| pg_error("reading a read-model row", e);
        let rows = answer
            .rows
            .iter()
            .map(|r| {
                Ok(Row::new(
                    (0..k)
                        .map(|i| r.try_get(i).map_err(get))
                        .collect::<Result<Vec<String>>>()?,
                    (k..k + t)
                        .map(|i| r.try_get(i).map_err(get))
                        .collect::<Result<Vec<String>>>()?,
                    (k + t..k + t + table.figures.len())
                        .map(|i| r.try_get(i).map_err(get))
                        .collect::<Result<Vec<i64>>>()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Positioned::new(answer.position, rows))
    }
}
