//! The connections a data services statement runs on: logged in as the query role where it can
//! (the session user itself restricted), else the backend's own under `SET LOCAL ROLE`; lent one
//! statement at a time, with the settings each runs under.

use std::time::Duration;

use deadpool_postgres::Object;
use tally_core::dataservices::{Bind, Query, RunError, Table};
use tally_core::ports::Error;
use tokio::sync::SemaphorePermit;
use tokio_postgres::IsolationLevel;

use super::{fetch, position, query_role, views_schema};
use crate::{Postgres, pg_error};

/// A read-only, repeatable-read transaction on `client`: the snapshot a statement's rows and the
/// read models' position come from.
pub(super) async fn repeatable_read(
    client: &mut Object,
) -> Result<deadpool_postgres::Transaction<'_>, Error> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg_error("starting a data services query", e))
}

/// The connection settings of the data services' own login: `query_url` when given, else the
/// backend's server and database as the schema's query role, without a password.
pub(crate) fn login_config(
    options: &crate::PgOptions,
    backend: &tokio_postgres::Config,
) -> Result<tokio_postgres::Config, Error> {
    let mut config = match &options.query_url {
        Some(url) => url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| Error::Unavailable(format!("invalid database.query_url: {e}")))?,
        None => {
            let mut c = tokio_postgres::Config::new();
            for host in backend.get_hosts() {
                match host {
                    tokio_postgres::config::Host::Tcp(h) => c.host(h),
                    tokio_postgres::config::Host::Unix(p) => c.host_path(p),
                };
            }
            for port in backend.get_ports() {
                c.port(*port);
            }
            if let Some(db) = backend.get_dbname() {
                c.dbname(db);
            }
            c.user(query_role(&options.schema));
            c
        }
    };
    config.application_name(backend.get_application_name().unwrap_or("tally"));
    config.connect_timeout(Duration::from_secs(5));
    Ok(config)
}

impl Postgres {
    /// Whether data services log in as the query role: tried once, when the views and the role
    /// are ready (the role can log in where tally made it, or a DBA let it).
    pub(super) async fn logs_in(&self) -> Result<bool, Error> {
        self.data
            .login
            .get_or_try_init(|| async {
                let role = query_role(&self.options.schema);
                let client = match self.query_pool.get().await {
                    Ok(client) => client,
                    // The server refused the login itself (no LOGIN, pg_hba.conf, a password):
                    // that stays so until a DBA changes it. Anything else (the server away) is
                    // tried again by the next statement, never taken for a refusal.
                    Err(deadpool_postgres::PoolError::Backend(e)) if refused_login(&e) => {
                        tracing::warn!(%role, error = %e, "data services cannot log in as their role (give database.query_url, or let the role in through pg_hba.conf): they run as the connecting user with SET LOCAL ROLE, the role's escape closed by name only");
                        return Ok(false);
                    }
                    Err(e) => {
                        return Err(Error::Unavailable(format!(
                            "no data services connection: {e}"
                        )));
                    }
                };
                let user: String = client
                    .query_one("SELECT session_user::text", &[])
                    .await
                    .map_err(|e| pg_error("reading the data services' login", e))?
                    .get(0);
                if user != role {
                    tracing::warn!(%user, %role, "database.query_url logs in as another user than the query role: data services run as the connecting user with SET LOCAL ROLE");
                }
                Ok(user == role)
            })
            .await
            .copied()
    }

    /// A connection for one data services statement, once a permit is free: logged in as the
    /// query role (`login`), or the backend's own.
    pub(super) async fn lend(&self, login: bool) -> Result<Lent<'_>, Error> {
        let permit =
            tokio::time::timeout(self.options.acquire_timeout, self.data.permits.acquire())
                .await
                .map_err(|_| Error::Unavailable("every data services connection is busy".into()))?
                .map_err(|_| Error::Unavailable("data services are closed".into()))?;
        let client = if login {
            self.query_pool
                .get()
                .await
                .map_err(|e| Error::Unavailable(format!("no data services connection: {e}")))?
        } else {
            self.client().await?
        };
        Ok(Lent {
            client: Some(client),
            _permit: permit,
        })
    }

    /// What each statement runs under, set after anything it reads as the connecting user (a
    /// login as the role is the role already).
    pub(super) fn restrictions(&self, timeout: Duration, login: bool) -> String {
        let schema = &self.options.schema;
        // 0 would be no limit at all.
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        let role = if login {
            String::new()
        } else {
            format!("SET LOCAL ROLE {}; ", query_role(schema))
        };
        // The views show dates as `date::text`, which is `YYYY-MM-DD` under the ISO date style
        // (and far cheaper than to_char, row by row): set here, whatever the server's default.
        // No parallel workers: named queries are many small statements at once, behind an API,
        // where starting workers costs more than they save (a third of a store's week of item
        // sales at 1,000,000 events) and takes the cores the writers need.
        format!(
            "{role}SET LOCAL search_path = {}; SET LOCAL statement_timeout = {ms}; \
             SET LOCAL datestyle = 'ISO, YMD'; SET LOCAL max_parallel_workers_per_gather = 0",
            views_schema(schema)
        )
    }
}

/// A pooled connection lent to one statement. It goes back to the pool only once [`Lent::release`]d
/// after its transaction was rolled back; dropped before (an error on the way out, a caller that gave
/// up mid-statement), it is taken out of the pool and closed, so that no connection goes back with a
/// transaction, a role, a setting or a lock of a query's.
pub(super) struct Lent<'a> {
    client: Option<Object>,
    _permit: SemaphorePermit<'a>,
}

impl Lent<'_> {
    pub(super) fn get(&mut self) -> Result<&mut Object, Error> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::Unavailable("the data services connection was released".into()))
    }

    pub(super) async fn release(mut self) {
        if let Some(client) = &self.client {
            // Session advisory locks outlive a rollback (and are refused by name, but none may
            // stay with the pool whatever a query found).
            if client
                .batch_execute("SELECT pg_advisory_unlock_all()")
                .await
                .is_ok()
            {
                drop(self.client.take());
            }
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl Postgres {
    /// [`DataServices::run`] on a connection logged in as the query role: the read models'
    /// position is read on one of the backend's connections, in a repeatable-read transaction
    /// whose snapshot the statement's transaction imports, so that both see the same data.
    pub(super) async fn run_logged_in(
        &self,
        query: &Query,
        sql: &str,
        binds: &[Bind],
        limit: usize,
    ) -> Result<Table, RunError> {
        let mut own = self.client().await?;
        let exporter = repeatable_read(&mut own).await?;
        let checkpoints = exporter
            .simple_query(&format!(
                "SELECT projection, position FROM {}.checkpoints",
                self.options.schema
            ))
            .await
            .map_err(|e| pg_error("reading the read models' position", e))?;
        let position = position(&checkpoints)?;
        let snapshot: String = exporter
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| pg_error("exporting the query's snapshot", e))?
            .get(0);
        // A snapshot's name is hex digits and dashes; it is spliced, so nothing else may pass.
        if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(RunError::Storage(Error::Corrupt(format!(
                "an exported snapshot named {snapshot:?}"
            ))));
        }
        let mut lent = self.lend(true).await?;
        let answer = {
            let tx = repeatable_read(lent.get()?).await?;
            tx.batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT '{snapshot}'; {}",
                self.restrictions(query.timeout, true)
            ))
            .await
            .map_err(|e| pg_error("starting a data services query", e))?;
            let answer = fetch(&tx, sql, binds, limit, query.timeout)
                .await
                .map(|table| Table { position, ..table });
            tx.rollback()
                .await
                .map_err(|e| pg_error("ending a data services query", e))?;
            answer
        };
        lent.release().await;
        exporter
            .rollback()
            .await
            .map_err(|e| pg_error("ending a data services query", e))?;
        answer
    }
}

/// Whether the server refused a login as such (authorization, not an outage).
fn refused_login(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_PASSWORD,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ]
        .contains(c)
    })
}
