//! Scratch schemas on the test PostgreSQL server (`TALLY_TEST_DATABASE_URL`, by default the one this
//! machine and CI run at 127.0.0.1:5432). Every test gets its own schema, dropped when it ends, so
//! tests run in parallel. A server that cannot be reached fails the test: these suites never skip.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tally_store_postgres::{PgOptions, Postgres, query_role, views_schema};

pub fn url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema that is dropped (with everything in it, its data services' views and role) when this
/// is dropped.
pub struct Scratch {
    pub schema: String,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            schema: format!("t_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub fn options(&self) -> PgOptions {
        let mut o = PgOptions::new(url());
        o.schema = self.schema.clone();
        o.pool_size = 8;
        o
    }

    /// A backend on this schema, as a separate process would open it (its own pool and consumer id).
    pub async fn open(&self) -> Arc<Postgres> {
        self.open_with(|_| {}).await
    }

    pub async fn open_with(&self, tweak: impl FnOnce(&mut PgOptions)) -> Arc<Postgres> {
        let mut o = self.options();
        tweak(&mut o);
        match Postgres::connect(o).await {
            Ok(pg) => pg,
            Err(e) => panic!(
                "PostgreSQL at {} is needed by this test (set TALLY_TEST_DATABASE_URL): {e}",
                url()
            ),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        clean_up(async move {
            let Ok((client, conn)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(conn);
            // The role last, on its own (a failure must not keep the schemas): the views'
            // grants depend on it. Roles are the cluster's, so each scratch schema's would
            // otherwise stay behind.
            let _ = tokio::time::timeout(Duration::from_secs(20), async {
                let _ = client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {schema} CASCADE",
                        views_schema(&schema)
                    ))
                    .await;
                let _ = client
                    .batch_execute(&format!("DROP ROLE IF EXISTS {}", query_role(&schema)))
                    .await;
            })
            .await;
        });
    }
}

/// Runs `cleanup` to its end on a plain thread with a runtime of its own: a `Drop` may run while
/// the test's runtime is shutting down.
pub fn clean_up(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}
