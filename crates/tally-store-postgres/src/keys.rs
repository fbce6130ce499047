//! API keys, by the SHA-256 of their secret.

use async_trait::async_trait;
use jiff::Timestamp;
use tally_core::model::{ApiKey, KeyUsage, Role};
use tally_core::ports::{Error, KeyStore, Result};

use crate::{Postgres, Ts, pg_error, to_u64};

const COLUMNS: &str = "key_id, role, scope, rate_per_second, created_at, revoked_at";

fn key(r: &tokio_postgres::Row) -> Result<ApiKey> {
    let get = |e: tokio_postgres::Error| Error::Corrupt(format!("API key row: {e}"));
    let key_id: String = r.try_get(0).map_err(get)?;
    let role: String = r.try_get(1).map_err(get)?;
    let rate: Option<i64> = r.try_get(3).map_err(get)?;
    Ok(ApiKey {
        role: Role::parse(&role)
            .ok_or_else(|| Error::Corrupt(format!("role {role:?} of key {key_id}")))?,
        scope: r.try_get(2).map_err(get)?,
        rate_per_second: rate
            .map(|n| {
                u32::try_from(n).map_err(|_| Error::Corrupt(format!("rate {n} of key {key_id}")))
            })
            .transpose()?,
        created_at: r.try_get::<_, Ts>(4).map_err(get)?.0,
        revoked_at: r.try_get::<_, Option<Ts>>(5).map_err(get)?.map(|t| t.0),
        key_id,
    })
}

#[async_trait]
impl KeyStore for Postgres {
    async fn create(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (key_id, secret_hash, role, scope, rate_per_second, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key.key_id,
                    &secret_hash.as_slice(),
                    &key.role.as_str(),
                    &key.scope,
                    &key.rate_per_second.map(i64::from),
                    &Ts(key.created_at),
                ],
            )
            .await
            .map_err(|e| pg_error("storing an API key", e))?;
        Ok(())
    }

    async fn find(&self, secret_hash: [u8; 32]) -> Result<Option<ApiKey>> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
                ),
                &[&secret_hash.as_slice()],
            )
            .await
            .map_err(|e| pg_error("looking up an API key", e))?
            .as_ref()
            .map(key)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, key_id"),
                &[],
            )
            .await
            .map_err(|e| pg_error("listing API keys", e))?
            .iter()
            .map(key)
            .collect()
    }

    async fn revoke(&self, key_id: &str, at: Timestamp) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                &[&key_id, &Ts(at)],
            )
            .await
            .map_err(|e| pg_error("revoking an API key", e))?;
        Ok(n > 0)
    }

    async fn record_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = usage.iter().map(|u| u.key_id.as_str()).collect();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let requests: Vec<i64> = usage.iter().map(|u| count(u.requests)).collect();
        let rejections: Vec<i64> = usage.iter().map(|u| count(u.rejections)).collect();
        let last: Vec<Option<Ts>> = usage.iter().map(|u| u.last_used_at.map(Ts)).collect();
        let client = self.client().await?;
        // One statement: rows of one key are summed first (an UPDATE … FROM joins each row once).
        client
            .execute(
                "UPDATE api_keys k SET requests = k.requests + u.requests, \
                 rejections = k.rejections + u.rejections, \
                 last_used_at = GREATEST(k.last_used_at, u.last_used_at) \
                 FROM (SELECT key_id, sum(requests)::bigint AS requests, \
                              sum(rejections)::bigint AS rejections, max(last_used_at) AS last_used_at \
                       FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[]) \
                            AS t(key_id, requests, rejections, last_used_at) \
                       GROUP BY key_id) u \
                 WHERE k.key_id = u.key_id",
                &[&ids, &requests, &rejections, &last],
            )
            .await
            .map_err(|e| pg_error("recording API key usage", e))?;
        Ok(())
    }

    async fn usage(&self) -> Result<Vec<KeyUsage>> {
        let client = self.client().await?;
        let get = |e: tokio_postgres::Error| Error::Corrupt(format!("API key usage row: {e}"));
        client
            .query(
                "SELECT key_id, requests, rejections, last_used_at FROM api_keys ORDER BY key_id",
                &[],
            )
            .await
            .map_err(|e| pg_error("reading API key usage", e))?
            .iter()
            .map(|r| {
                Ok(KeyUsage {
                    key_id: r.try_get(0).map_err(get)?,
                    requests: to_u64(r.try_get(1).map_err(get)?, "request count")?,
                    rejections: to_u64(r.try_get(2).map_err(get)?, "rejection count")?,
                    last_used_at: r.try_get::<_, Option<Ts>>(3).map_err(get)?.map(|t| t.0),
                })
            })
            .collect()
    }
}
