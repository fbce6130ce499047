//! tally's PostgreSQL backend: every port of `tally_core` on one PostgreSQL database, shared by as
//! many tally processes as the site runs (gateways, processors, projectors, query servers).
//!
//! Layout:
//! - [`schema`]: versioned migrations, safe to run from several processes at once;
//! - `events`: the event log and command outcomes. Appends are serialized by a row lock on the log's
//!   head, taken first in every append transaction and held to its commit, so positions are handed
//!   out in commit order, densely: a reader can never see position n+1 before n (see ARCHITECTURE.md);
//! - `queue`: the intake (idempotency, `accepted` record and queue row in one transaction) and the
//!   command queue, with per-partition leases so that each partition is worked by one consumer at a
//!   time across processes;
//! - `read`: read models and checkpoints; `keys`: API keys;
//! - `lease`: session advisory locks, so that one projector runs per database;
//! - `dataservices`: operators' SQL over the read-model views, as a role that can read them alone.
//!
//! Everything lives in one schema (`tally` unless configured), so tests can give each case its own;
//! the data services' views in `<schema>_views`, read by the role `<schema>_query`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use jiff::Timestamp;
use postgres_types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};
use tally_core::Backend;
use tally_core::ports::Error;
use tokio_postgres::NoTls;

mod dataservices;
mod events;
mod faults;
mod keys;
mod lease;
mod queue;
mod read;
pub mod schema;
mod sink;
mod verify;

pub use dataservices::{query_role, views_schema};
pub use lease::PgLeases;
pub use tokio_postgres::config::{Config as PgConfig, Host as PgHost};

/// How to reach the database and how much of it to use.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/database` (libpq URL or key=value form).
    pub url: String,
    /// The schema holding tally's tables; created when missing. Letters, digits and `_` only.
    pub schema: String,
    /// Most connections this process opens (bounded pool).
    pub pool_size: usize,
    /// How long a caller waits for a free connection before getting `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a consumer keeps a queue partition after its last sign of life; a consumer that died
    /// holding one loses it after this long, and its unacked messages are delivered again.
    pub queue_lease: Duration,
    /// Run the migrations when connecting.
    pub migrate: bool,
    /// The login data services connect with (`database.query_url`): a URL whose user is the
    /// schema's query role, `<schema>_query`. Without it they try that role on the same server with
    /// no password (it works where `pg_hba.conf` lets the role in), and else run as the connecting
    /// user with `SET LOCAL ROLE` ([`dataservices`]).
    pub query_url: Option<String>,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "tally".to_owned(),
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            queue_lease: Duration::from_secs(30),
            migrate: true,
            query_url: None,
        }
    }
}

/// A bounded pool of connections made with `config` (none until one is asked for).
fn pool_of(
    config: tokio_postgres::Config,
    size: usize,
    acquire_timeout: Duration,
) -> Result<Pool, Error> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(acquire_timeout))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| Error::Unavailable(format!("building the connection pool: {e}")))
}

/// The PostgreSQL backend. Cheap to share: clone the `Arc`.
pub struct Postgres {
    pub(crate) pool: Pool,
    pub(crate) options: PgOptions,
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) queue: queue::QueueState,
    /// Concurrent submits share one intake transaction (group commit).
    pub(crate) intake: tally_core::intake::Grouped,
    /// The data services' views, role and permits ([`dataservices`]).
    pub(crate) data: dataservices::DataState,
    /// Connections logged in as the query role, for data services (made only when they are used).
    pub(crate) query_pool: Pool,
}

impl Postgres {
    /// Connects and, unless `options.migrate` is off, creates the schema if needed and brings it up to
    /// date. With migrations off, the schema must exist (`tally migrate`).
    pub async fn connect(options: PgOptions) -> Result<Arc<Self>, Error> {
        if !schema::valid_name(&options.schema) {
            return Err(Error::Unavailable(format!(
                "invalid schema name {:?}: use letters, digits and _",
                options.schema
            )));
        }
        let mut pg_config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| Error::Unavailable(format!("invalid database URL: {e}")))?;
        // Notices (such as DROP ... CASCADE listing what it dropped) are not errors: keep them out of logs.
        pg_config.options(format!(
            "-c search_path={} -c client_min_messages=warning",
            options.schema
        ));
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("tally");
        }
        pg_config.connect_timeout(Duration::from_secs(5));
        pg_config.keepalives_idle(Duration::from_secs(10));
        let pool = pool_of(
            pg_config.clone(),
            options.pool_size.max(2),
            options.acquire_timeout,
        )?;
        let query_pool = pool_of(
            dataservices::login_config(&options, &pg_config)?,
            dataservices::MAX_DATA_QUERIES.max(2),
            options.acquire_timeout,
        )?;
        let store = Arc::new_cyclic(|weak: &std::sync::Weak<Self>| Self {
            pool,
            query_pool,
            pg_config,
            queue: queue::QueueState::default(),
            data: dataservices::DataState::new(options.pool_size),
            intake: {
                // A weak handle: the grouping task must not keep the backend alive.
                let weak = weak.clone();
                tally_core::intake::Grouped::start(move |submissions| {
                    let store = weak.upgrade();
                    async move {
                        match store {
                            Some(pg) => {
                                pg.submit_group(submissions, queue::Destination::Queue)
                                    .await
                            }
                            None => Err(Error::Unavailable("the backend was closed".into())),
                        }
                    }
                })
            },
            options,
        });
        if store.options.migrate {
            store.migrate().await?;
        }
        // The views follow the binary, migrations or not. Data services failing to set up leave the
        // rest of the backend working: their calls try again and answer why.
        if let Err(e) = store.data_ready().await {
            tracing::warn!(error = %e, "data services are unavailable");
        }
        Ok(store)
    }

    /// Brings the schema up to date (see [`schema`]); safe to run twice or from two processes at once.
    pub async fn migrate(&self) -> Result<schema::Migrated, Error> {
        let mut client = self.client().await?;
        schema::migrate(&mut client, &self.options.schema).await
    }

    /// The ports, for the processor, projector, gateway and queries.
    pub fn backend(self: &Arc<Self>) -> Backend {
        Backend {
            events: self.clone(),
            commands: self.clone(),
            intake: self.clone(),
            queue: self.clone(),
            sink: self.clone(),
            read: self.clone(),
            journal: self.clone(),
            keys: self.clone(),
            leases: Arc::new(PgLeases::new(self.pg_config.clone(), &self.options.schema)),
            ledger: self.clone(),
            data: self.clone(),
            rows: self.clone(),
        }
    }

    /// The options this backend was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// A pooled connection, or `Unavailable` when none frees up within the acquire timeout.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(format!("no database connection: {e}")))
    }

    /// Drops this backend's schema and everything in it (benchmarks' scratch schemas), with its
    /// views and their role.
    pub async fn drop_schema(&self) -> Result<(), Error> {
        let schema = &self.options.schema;
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {schema} CASCADE",
                views_schema(schema)
            ))
            .await
            .map_err(|e| pg_error("dropping the schema", e))?;
        // A role is the cluster's: the same schema in another database may still use it.
        match client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", query_role(schema)))
            .await
        {
            Err(e)
                if e.code()
                    != Some(&tokio_postgres::error::SqlState::DEPENDENT_OBJECTS_STILL_EXIST) =>
            {
                Err(pg_error("dropping the data services' role", e))
            }
            _ => Ok(()),
        }
    }

    /// The bytes each table of the schema takes with its indexes and TOAST (for benchmarks).
    pub async fn table_bytes(&self) -> Result<Vec<(String, u64)>, Error> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&self.options.schema],
            )
            .await
            .map_err(|e| pg_error("measuring the tables", e))?;
        rows.iter()
            .map(|r| Ok((r.get(0), to_u64(r.get(1), "table size")?)))
            .collect()
    }

    /// Whether the database answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg_error("pinging the database", e))?;
        Ok(())
    }
}

/// A database error, as the ports see it: everything PostgreSQL can say here is either transient
/// (connection lost, server shutting down, lock or serialization failure) or a bug; both are reported
/// as `Unavailable` with what was being done, so callers retry and operators can read why.
pub(crate) fn pg_error(context: &str, e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Unavailable(format!(
            "{context}: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        )),
        None => Error::Unavailable(format!("{context}: {e}")),
    }
}

/// A timestamp in PostgreSQL's binary `timestamptz` form (microseconds since 2000-01-01 UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ts(pub Timestamp);

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

impl ToSql for Ts {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let us = self.0.as_microsecond() - PG_EPOCH_US;
        out.extend_from_slice(&us.to_be_bytes());
        Ok(IsNull::No)
    }
    accepts!(TIMESTAMPTZ, TIMESTAMP);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Ts {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("timestamp of {} bytes", raw.len()))?;
        let us = i64::from_be_bytes(bytes);
        if us == i64::MAX || us == i64::MIN {
            return Err("infinite timestamp".into());
        }
        Ok(Ts(Timestamp::from_microsecond(us + PG_EPOCH_US)?))
    }
    accepts!(TIMESTAMPTZ, TIMESTAMP);
}

/// A position or count from a `bigint` column, which tally never makes negative.
pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("negative {what}: {n}")))
}

pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("{what} out of range: {n}")))
}
