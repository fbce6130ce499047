//! tally's embedded backend: every port in two SQLite files (WAL, `synchronous=FULL`) in the data
//! dir, each with one writer thread that group-commits whatever is waiting (one fsync for many).
//!
//! - `intake.db` holds what a command is until it is decided: the durable command queue, the
//!   idempotency keys, dead letters and the broker outbox. A request's 202 waits for this file's
//!   commit only, which carries nothing else.
//! - `tally.db` holds the rest: the event log with the commands' outcomes (appended in one
//!   transaction, which is what makes each command's effect exactly-once), read models,
//!   checkpoints and API keys. Its writer commits the processor's appends and the projector's updates,
//!   a millisecond or more each, without holding up the intake.
//!
//! A command's status comes from `tally.db` once decided, else from its message in `intake.db`. The
//! processor commits an outcome before it acks the message, so the status is never missing between
//! the two.
//!
//! Not for several processes: one process owns the files (the queue's in-flight set lives in memory).
//! Scale-out is the PostgreSQL backend's job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tally_core::{Backend, Error};

mod checkpoint;
mod dataservices;
mod events;
mod faults;
mod keys;
mod lease;
mod queue;
mod read;
mod schema;
mod sink;
mod verify;
mod writer;

use writer::{Writer, sql_error};

/// The SQLite backend. Cheap to share behind an `Arc`; every port is implemented on it.
pub struct Sqlite {
    /// Commits to `tally.db`: appends, outcomes, read models, keys.
    writer: Writer,
    readers: Readers,
    /// Commits to `intake.db`: the queue, idempotency keys, dead letters, the outbox.
    intake: Writer,
    intake_readers: Readers,
    /// The data services' connections: read-only, the views alone readable ([`dataservices`]).
    data: Readers<dataservices::Guarded>,
    queue: Arc<queue::Mem>,
    /// Single submissions waiting for the intake's writer ([`queue::Gather`]).
    gather: Arc<queue::Gather>,
    /// Dropping them stops the checkpoint threads.
    _checkpointers: [checkpoint::Handle; 2],
    /// Locks on files of the data dir, so that no two processes on it hold one lease ([`lease`]).
    leases: lease::FileLeases,
}

/// A writer's connection, with a page cache of `cache_kib`. For `tally.db` that is 8 MiB: the working
/// set is the tails of the tables and the read models' pages, and SQLite scans the whole cache at the
/// end of any transaction in which a B-tree balance moved pages (it parks one at the lock-byte page
/// number, far past the end), which at 32 MiB was 3.5 % of the writer's time. The intake's file needs
/// only the tails of its three tables: 2 MiB.
fn open_for_writing(path: &Path, cache_kib: u32) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA busy_timeout=5000;
         PRAGMA cache_size=-{cache_kib};
         PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint=0;
         PRAGMA journal_size_limit=67108864;"
    ))
    .map_err(sql_error)?;
    // rusqlite keeps 16 prepared statements by default; the writer runs more than that, and a
    // statement evicted from the cache is parsed again on its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The nice value of the threads of `tally.db` (its writer and checkpoints). A request waits for the
/// intake's commit, not for these: the processor's appends and the projector's updates can wait a few
/// milliseconds for a core, and when they do, more arrives meanwhile and goes into the same commit. On
/// 2 cores under W1 over HTTP the threads at 10 gave 23,300–28,200 commands/s against 23,100–25,400
/// at 0 (ahead in 6 of 7 alternating runs), the visibility lag at most 250 ms (BENCHMARKS.md, seventh
/// pass). Should processing fall behind for want of CPU, the queue's depth grows and the gateway sheds
/// load at its high-water mark.
const BACKGROUND_NICENESS: i32 = 10;

/// The intake's tables, which a data dir written before `intake.db` existed holds in `tally.db`.
const INTAKE_TABLES: [&str; 4] = ["queue", "dead_letters", "idempotency", "outbox"];

/// Moves the intake's rows of an older data dir from `tally.db` into `intake.db` (once; a no-op after).
/// Copied first and deleted after, in two transactions: a crash between them leaves the rows in both
/// files, and the next start copies nothing twice (`INSERT OR IGNORE` on the same keys) and deletes.
/// Commands accepted before the move keep their `accepted` records in `tally.db`, where the
/// processor's outcome then updates them.
fn move_intake_rows(main: &Connection, intake_path: &Path) -> Result<(), Error> {
    let mut left = 0i64;
    for table in INTAKE_TABLES {
        left += main
            .query_row(&format!("SELECT COUNT(*) FROM main.{table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sql_error)?;
    }
    if left == 0 {
        return Ok(());
    }
    tracing::info!(
        rows = left,
        "moving the intake's rows from tally.db to intake.db"
    );
    main.execute(
        "ATTACH DATABASE ?1 AS intake",
        [intake_path.to_string_lossy().as_ref()],
    )
    .map_err(sql_error)?;
    let moved = (|| {
        let copy: String = INTAKE_TABLES
            .iter()
            .map(|t| format!("INSERT OR IGNORE INTO intake.{t} SELECT * FROM main.{t};"))
            .collect();
        main.execute_batch(&format!("BEGIN IMMEDIATE; {copy} COMMIT;"))?;
        let delete: String = INTAKE_TABLES
            .iter()
            .map(|t| format!("DELETE FROM main.{t};"))
            .collect();
        main.execute_batch(&format!("BEGIN IMMEDIATE; {delete} COMMIT;"))
    })();
    if moved.is_err() {
        let _ = main.execute_batch("ROLLBACK;");
    }
    let detached = main.execute_batch("DETACH DATABASE intake;");
    moved.and(detached).map_err(sql_error)
}

impl Sqlite {
    /// Opens (creating if needed) `tally.db` and `intake.db` in `dir`, migrates them and loads the
    /// pending queue.
    pub fn open(dir: &Path) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("tally.db");
        let intake_path = dir.join("intake.db");
        let mut conn = open_for_writing(&path, 8192)?;
        schema::migrate(&mut conn).map_err(sql_error)?;
        let mut intake_conn = open_for_writing(&intake_path, 2048)?;
        schema::migrate_intake(&mut intake_conn).map_err(sql_error)?;
        move_intake_rows(&conn, &intake_path)?;
        let pending = queue::load(&intake_conn)?;
        // Thread names: Linux shows the first 15 bytes.
        let start = |conn, path: &Path, name: &str, niceness| -> Result<_, Error> {
            let checkpoints = checkpoint::Pass::default();
            let writer = Writer::start(
                conn,
                checkpoints.clone(),
                &format!("{name}-writer"),
                niceness,
            )
            .map_err(|e| {
                Error::Unavailable(format!("starting the writer of {}: {e}", path.display()))
            })?;
            let checkpointer =
                checkpoint::start(path, checkpoints, &format!("{name}-checkpoint"), niceness)?;
            Ok((writer, checkpointer))
        };
        let (writer, checkpointer) = start(conn, &path, "tally-sqlite", BACKGROUND_NICENESS)?;
        let (intake, intake_checkpointer) = start(intake_conn, &intake_path, "tally-intake", 0)?;
        Ok(Arc::new(Self {
            writer,
            data: dataservices::readers(path.clone()),
            readers: Readers::new(path),
            intake,
            intake_readers: Readers::new(intake_path),
            queue: Arc::new(queue::Mem::new(pending)),
            gather: Arc::default(),
            _checkpointers: [checkpointer, intake_checkpointer],
            leases: lease::FileLeases::new(dir.to_path_buf()),
        }))
    }

    /// The bytes each table and index of `tally.db` takes, by name (for benchmarks; SQLite's
    /// `dbstat`).
    pub async fn table_bytes(&self) -> Result<Vec<(String, u64)>, Error> {
        self.readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
                    .map_err(writer::sql_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .map_err(writer::sql_error)?;
                rows.map(|r| r.map_err(writer::sql_error)).collect()
            })
            .await
    }

    /// Every port of this backend.
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
            leases: Arc::new(self.leases.clone()),
            ledger: self.clone(),
            data: self.clone(),
            rows: self.clone(),
        }
    }
}

/// Read-only connections, reused; each read runs on the blocking pool. At most `max` reads run at
/// once and every connection opened is kept: opening one parses the schema, which costs more than
/// most reads, so callers beyond the limit wait for a connection instead of opening another. The
/// queries' connections are plain read-only ones; the data services' are guarded
/// ([`dataservices::Guarded`]), opened by their own `open`.
struct Readers<C = Connection> {
    path: PathBuf,
    idle: Mutex<Vec<C>>,
    permits: tokio::sync::Semaphore,
    max: usize,
    open: fn(&Path) -> Result<C, Error>,
}

const MAX_READERS: usize = 8;

/// Prepared statements kept per connection: more than the backend has.
const STATEMENT_CACHE: usize = 128;

/// A read-only connection to `path`.
fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error)?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")
        .map_err(sql_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Readers<Connection> {
    fn new(path: PathBuf) -> Self {
        Self::with(path, MAX_READERS, open_reader)
    }
}

impl<C: Send + 'static> Readers<C> {
    fn with(path: PathBuf, max: usize, open: fn(&Path) -> Result<C, Error>) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(max),
            max,
            open,
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&C) -> Result<T, Error> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("sqlite readers are closed".into()))?;
        let conn = match self.idle.lock().map(|mut idle| idle.pop()) {
            Ok(Some(conn)) => conn,
            _ => (self.open)(&self.path)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("sqlite reader task failed: {e}")))?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max
        {
            idle.push(conn);
        }
        result
    }
}

/// Timestamps are stored as integer nanoseconds since the Unix epoch. One beyond what that holds
/// (before 1677 or after 2262) saturates towards its own side, so comparisons with it stay right.
pub(crate) fn ts_to_sql(t: jiff::Timestamp) -> i64 {
    let n = t.as_nanosecond();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn ts_from_sql(n: i64) -> Result<jiff::Timestamp, Error> {
    jiff::Timestamp::from_nanosecond(i128::from(n))
        .map_err(|e| Error::Corrupt(format!("timestamp {n}: {e}")))
}

pub(crate) fn uuid_from_sql(bytes: &[u8]) -> Result<uuid::Uuid, Error> {
    uuid::Uuid::from_slice(bytes).map_err(|e| Error::Corrupt(format!("uuid: {e}")))
}
