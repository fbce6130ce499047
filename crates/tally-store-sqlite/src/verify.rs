//! Every row of a read-model table, for `tally verify`.

use async_trait::async_trait;
use tally_core::ports::{ReadModelRows, Result};
use tally_core::rows::Positioned;
use tally_core::verify::{Row, Table};

use crate::Sqlite;
use crate::read::snapshot;
use crate::writer::sql_error;

#[async_trait]
impl ReadModelRows for Sqlite {
    async fn table_rows(&self, table: &Table) -> Result<Positioned<Vec<Row>>> {
        let table = *table;
        let columns: Vec<&str> = table
            .keys
            .iter()
            .chain(table.texts)
            .chain(table.figures)
            .copied()
            .collect();
        let sql = format!("SELECT {} FROM {}", columns.join(", "), table.name);
        self.readers
            .read(move |conn| {
                snapshot(conn, table.projection, |conn| {
                    let mut stmt = conn.prepare(&sql).map_err(sql_error)?;
                    let (k, t) = (table.keys.len(), table.texts.len());
                    let rows = stmt
                        .query_map([], |r| {
                            let key: Vec<String> =
                                (0..k).map(|i| r.get(i)).collect::<rusqlite::Result<_>>()?;
                            let texts: Vec<String> = (k..k + t)
                                .map(|i| r.get(i))
                                .collect::<rusqlite::Result<_>>()?;
                            let figures: Vec<i64> = (k + t..k + t + table.figures.len())
                                .map(|i| r.get(i))
                                .collect::<rusqlite::Result<_>>()?;
                            Ok(Row::new(key, texts, figures))
                        })
                        .map_err(sql_error)?;
                    rows.map(|r| r.map_err(sql_error)).collect()
                })
            })
            .await
    }
}
