//! Leases as PostgreSQL session advisory locks. Each held lease has its own connection, outside the
//! pool: the lock lives exactly as long as that session, so when the holder's process dies (or its
//! network does) the server ends the session and the lock is free for the next process. The holder
//! checks its connection every second and gives up the role as soon as the check fails.

use std::time::Duration;

use async_trait::async_trait;
use tally_core::ports::{Error, Result};
use tally_core::{Lease, Leases};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::pg_error;

/// How often a holder makes sure its lock's session is alive.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct PgLeases {
    config: tokio_postgres::Config,
    schema: String,
}

impl PgLeases {
    pub fn new(config: tokio_postgres::Config, schema: &str) -> Self {
        Self {
            config,
            schema: schema.to_owned(),
        }
    }
}

struct PgLease {
    client: Client,
    connection: JoinHandle<()>,
}

#[async_trait]
impl Leases for PgLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| pg_error("connecting for a lease", e))?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "lease connection ended");
            }
        });
        // Scoped to the schema, so deployments (and tests) sharing a database do not exclude each other.
        let key = format!("{}:lease:{name}", self.schema);
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .await
            .map_err(|e| pg_error("taking a lease", e))?
            .get(0);
        if !got {
            connection.abort();
            return Ok(None);
        }
        Ok(Some(Box::new(PgLease { client, connection })))
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn lost(&mut self) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let alive = tokio::time::timeout(CHECK_EVERY, self.client.simple_query("SELECT 1"))
                .await
                .map_err(|_| Error::Unavailable("lease check timed out".into()))
                .and_then(|r| r.map_err(|e| pg_error("checking a lease", e)));
            if let Err(e) = alive {
                tracing::warn!(error = %e, "lost a lease");
                return;
            }
        }
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        // Ending the session releases the lock.
        self.connection.abort();
    }
}
