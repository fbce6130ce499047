//! API keys, by the SHA-256 of their secret.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use tally_core::model::{ApiKey, KeyUsage, Role};
use tally_core::ports::{Error, KeyStore, Result};

use crate::writer::sql_error;
use crate::{Sqlite, ts_from_sql, ts_to_sql};

const COLUMNS: &str = "key_id, role, scope, rate_per_second, created_at, revoked_at";

type RawKey = (
    String,
    String,
    Option<String>,
    Option<u32>,
    i64,
    Option<i64>,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn key((key_id, role, scope, rate_per_second, created_at, revoked_at): RawKey) -> Result<ApiKey> {
    Ok(ApiKey {
        role: Role::parse(&role)
            .ok_or_else(|| Error::Corrupt(format!("role {role:?} of key {key_id}")))?,
        key_id,
        scope,
        rate_per_second,
        created_at: ts_from_sql(created_at)?,
        revoked_at: revoked_at.map(ts_from_sql).transpose()?,
    })
}

#[async_trait]
impl KeyStore for Sqlite {
    async fn create(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<()> {
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (key_id, secret_hash, role, scope, rate_per_second, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        key.key_id,
                        secret_hash.as_slice(),
                        key.role.as_str(),
                        key.scope,
                        key.rate_per_second,
                        ts_to_sql(key.created_at)
                    ],
                )
                .map_err(sql_error)?;
                Ok(())
            })
            .await
    }

    async fn find(&self, secret_hash: [u8; 32]) -> Result<Option<ApiKey>> {
        self.readers
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE secret_hash = ?1 AND revoked_at IS NULL"
                ))
                .map_err(sql_error)?
                .query_row(params![secret_hash.as_slice()], raw)
                .optional()
                .map_err(sql_error)?
                .map(key)
                .transpose()
            })
            .await
    }

    async fn list(&self) -> Result<Vec<ApiKey>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, key_id"
                    ))
                    .map_err(sql_error)?;
                let rows = stmt.query_map([], raw).map_err(sql_error)?;
                rows.map(|r| r.map_err(sql_error).and_then(key)).collect()
            })
            .await
    }

    async fn revoke(&self, key_id: &str, at: Timestamp) -> Result<bool> {
        let key_id = key_id.to_owned();
        self.writer
            .write(move |conn| {
                let n = conn
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                        params![key_id, ts_to_sql(at)],
                    )
                    .map_err(sql_error)?;
                Ok(n > 0)
            })
            .await
    }

    async fn record_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let usage = usage.to_vec();
        self.writer
            .write(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "UPDATE api_keys SET requests = requests + ?2, rejections = rejections + ?3, \
                         last_used_at = CASE WHEN ?4 IS NOT NULL AND (last_used_at IS NULL OR last_used_at < ?4) \
                         THEN ?4 ELSE last_used_at END WHERE key_id = ?1",
                    )
                    .map_err(sql_error)?;
                for u in &usage {
                    stmt.execute(params![
                        u.key_id,
                        count_to_sql(u.requests),
                        count_to_sql(u.rejections),
                        u.last_used_at.map(ts_to_sql)
                    ])
                    .map_err(sql_error)?;
                }
                Ok(())
            })
            .await
    }

    async fn usage(&self) -> Result<Vec<KeyUsage>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key_id, requests, rejections, last_used_at FROM api_keys ORDER BY key_id",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    })
                    .map_err(sql_error)?;
                rows.map(|r| {
                    let (key_id, requests, rejections, last) = r.map_err(sql_error)?;
                    Ok(KeyUsage {
                        requests: count_from_sql(requests, &key_id)?,
                        rejections: count_from_sql(rejections, &key_id)?,
                        last_used_at: last.map(ts_from_sql).transpose()?,
                        key_id,
                    })
                })
                .collect()
            })
            .await
    }
}

/// Counts are `u64` in memory and `INTEGER` (i64) in SQLite; a total past i64::MAX stays there.
fn count_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count_from_sql(n: i64, key_id: &str) -> Result<u64> {
    u64::try_from(n)
        .map_err(|_| Error::Corrupt(format!("negative usage count {n} of key {key_id}")))
}
