//! tally's embedded backend: every port in one SQLite file (WAL, `synchronous=FULL`). The event log,
//! command statuses, the durable command queue, read models, checkpoints and API keys share the file,
//! so the gateway's enqueue, the processor's append and the projector's checkpoint are each one local
//! transaction — and all of them share fsyncs through the single writer thread.
//!
//! Not for several processes: one process owns the file (the queue's in-flight set lives in memory).
//! Scale-out is the PostgreSQL backend's job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tally_core::{Backend, Error};

mod checkpoint;
mod events;
mod keys;
mod queue;
mod read;
mod schema;
mod writer;

use writer::{Writer, sql_error};

/// The SQLite backend. Cheap to share behind an `Arc`; every port is implemented on it.
pub struct Sqlite {
    writer: Writer,
    readers: Readers,
    queue: Arc<queue::Mem>,
    /// Single submissions waiting for the writer ([`queue::Gather`]).
    gather: Arc<queue::Gather>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: checkpoint::Handle,
    /// One process serves the file, so leases live in memory.
    leases: tally_core::LocalLeases,
}

impl Sqlite {
    /// Opens (creating if needed) `tally.db` in `dir`, migrates it and loads the pending queue.
    pub fn open(dir: &Path) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("tally.db");
        let mut conn = Connection::open(&path).map_err(sql_error)?;
        // The writer's page cache is 8 MiB: its working set is the tails of the tables and the read
        // models' pages, and SQLite scans the whole cache at the end of any transaction in which a
        // B-tree balance moved pages (it parks one at the lock-byte page number, far past the end),
        // which at 32 MiB was 3.5 % of the writer's time.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             PRAGMA cache_size=-8192;
             PRAGMA temp_store=MEMORY;
             PRAGMA wal_autocheckpoint=0;
             PRAGMA journal_size_limit=67108864;",
        )
        .map_err(sql_error)?;
        schema::migrate(&mut conn).map_err(sql_error)?;
        // rusqlite keeps 16 prepared statements by default; the writer runs more than that, and a
        // statement evicted from the cache is parsed again on its next use.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let pending = queue::load(&conn)?;
        let checkpoints = checkpoint::Pass::default();
        let writer = Writer::start(conn, checkpoints.clone())
            .map_err(|e| Error::Unavailable(format!("starting sqlite writer: {e}")))?;
        let checkpointer = checkpoint::start(&path, checkpoints)?;
        Ok(Arc::new(Self {
            writer,
            readers: Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(MAX_READERS),
            },
            queue: Arc::new(queue::Mem::new(pending)),
            gather: Arc::default(),
            _checkpointer: checkpointer,
            leases: tally_core::LocalLeases::default(),
        }))
    }

    /// Every port of this backend.
    pub fn backend(self: &Arc<Self>) -> Backend {
        Backend {
            events: self.clone(),
            commands: self.clone(),
            intake: self.clone(),
            queue: self.clone(),
            read: self.clone(),
            keys: self.clone(),
            leases: Arc::new(self.leases.clone()),
            ledger: self.clone(),
        }
    }
}

/// Read-only connections, reused; each read runs on the blocking pool. At most `MAX_READERS` reads
/// run at once and every connection opened is kept: opening one parses the schema, which costs more
/// than most reads, so callers beyond the limit wait for a connection instead of opening another.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

const MAX_READERS: usize = 8;

/// Prepared statements kept per connection: more than the backend has.
const STATEMENT_CACHE: usize = 128;

impl Readers {
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("sqlite readers are closed".into()))?;
        let conn = match self.idle.lock().map(|mut idle| idle.pop()) {
            Ok(Some(conn)) => conn,
            _ => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sql_error)?;
                conn.execute_batch("PRAGMA busy_timeout=5000;")
                    .map_err(sql_error)?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                conn
            }
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite reader task failed: {e}")))?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_READERS
        {
            idle.push(conn);
        }
        result
    }
}

/// Timestamps are stored as integer nanoseconds since the Unix epoch.
pub(crate) fn ts_to_sql(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

pub(crate) fn ts_from_sql(n: i64) -> Result<jiff::Timestamp, Error> {
    jiff::Timestamp::from_nanosecond(i128::from(n))
        .map_err(|e| Error::Corrupt(format!("timestamp {n}: {e}")))
}

pub(crate) fn uuid_from_sql(bytes: &[u8]) -> Result<uuid::Uuid, Error> {
    uuid::Uuid::from_slice(bytes).map_err(|e| Error::Corrupt(format!("uuid: {e}")))
}
