//! One writer per SQLite file: a dedicated thread owns the only write connection and runs every write
//! job that is waiting in one transaction, with one fsync for all of them (group commit). Each job runs
//! in its own savepoint, so a job that fails is rolled back alone; its caller gets its error, the others
//! commit. A caller hears of its job only once the transaction that holds it has committed.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tally_core::Error;
use tokio::sync::oneshot;

use crate::checkpoint::Pass;

/// Runs on the writer thread with the outcome of the transaction that held the job.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), Error>) + Send>;
/// Runs on the writer thread inside a transaction; what it returns runs once that transaction ends.
pub(crate) type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// Most jobs in one transaction; bounds how long one commit can take.
const MAX_JOBS_PER_COMMIT: usize = 1024;

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Joined on drop: the thread finishes every queued job and empties the WAL first.
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Closes the queue and waits for the thread, so that a clean stop leaves every commit in the
    /// database file (a backup of the `.db` files alone is then whole) rather than in a WAL that a
    /// process exiting under the thread left behind.
    fn drop(&mut self) {
        let (jobs, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, jobs));
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the sqlite writer thread panicked");
        }
    }
}

pub(crate) fn sql_error(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("sqlite: {e}"))
}

impl Writer {
    /// Starts the writer thread, named `name`, on `conn`, at `niceness` (see [`lower_priority`]).
    pub(crate) fn start(
        conn: Connection,
        checkpoints: Pass,
        name: &str,
        niceness: i32,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            lower_priority(niceness);
            run(conn, rx, checkpoints)
        })?;
        Ok(Self {
            jobs,
            thread: Some(thread),
        })
    }

    /// Runs `f` inside the next group-committed transaction and returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, Error>>();
        self.send(Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |committed: Result<(), Error>| {
                let _ = tx.send(committed.and(result));
            })
        }))?;
        rx.await
            .map_err(|_| Error::Unavailable("sqlite writer dropped a job".into()))?
    }

    /// Queues a job for the next transaction. Its completion runs on the writer thread once that
    /// transaction has committed (or failed), before any later transaction begins.
    pub(crate) fn send(&self, job: Job) -> Result<(), Error> {
        self.jobs
            .send(job)
            .map_err(|_| Error::Unavailable("sqlite writer has stopped".into()))
    }
}

/// Runs `f` in a savepoint of the writer's transaction: if it fails, what it wrote is rolled back and
/// the rest of the transaction stands.
pub(crate) fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    exec_cached(conn, "SAVEPOINT job")?;
    let r = f(conn);
    let end = if r.is_ok() {
        exec_cached(conn, "RELEASE job")
    } else {
        exec_cached(conn, "ROLLBACK TO job").and_then(|()| exec_cached(conn, "RELEASE job"))
    };
    end.and(r)
}

impl Writer {
    /// Queues `f` for the next transaction without waiting for it: for writes whose loss in a crash is
    /// harmless (an ack lost is a redelivery, which idempotency absorbs). Failures are logged.
    pub(crate) fn write_detached<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&Connection) -> Result<(), Error> + Send + 'static,
    {
        let job: Job = Box::new(move |conn: &Connection| {
            let result = f(conn);
            Box::new(move |committed: Result<(), Error>| {
                if let Err(e) = committed.and(result) {
                    tracing::warn!(error = %e, what, "detached write failed");
                }
            })
        });
        if self.jobs.send(job).is_err() {
            tracing::warn!(what, "sqlite writer has stopped; detached write dropped");
        }
    }
}

/// Makes the calling thread yield the CPU to the rest of the process when both want it: `niceness` 0
/// leaves it as it is, 10 gives it about a tenth of a core that a thread at 0 also wants (Linux sets
/// the nice value per thread). For the threads whose work can wait (see `Sqlite::open`). A failure
/// only costs that preference, so it is logged.
pub(crate) fn lower_priority(niceness: i32) {
    if niceness == 0 {
        return;
    }
    let thread = Some(rustix::thread::gettid());
    if let Err(e) = rustix::process::setpriority_process(thread, niceness) {
        tracing::warn!(error = %e, niceness, "could not lower this thread's priority");
    }
}

/// A statement without results, prepared once per connection (jobs run thousands of times a second).
fn exec_cached(conn: &Connection, sql: &str) -> Result<(), Error> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(sql_error)
}

fn run(conn: Connection, jobs: mpsc::Receiver<Job>, checkpoints: Pass) {
    while let Ok(first) = jobs.recv() {
        if let Err(err) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            let done = first(&conn);
            done(Err(err));
            continue;
        }
        let mut completions = vec![first(&conn)];
        while completions.len() < MAX_JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => completions.push(job(&conn)),
                Err(_) => break,
            }
        }
        let t = std::time::Instant::now();
        let committed = exec_cached(&conn, "COMMIT");
        tracing::trace!(jobs = completions.len(), commit = ?t.elapsed(), "group commit");
        if committed.is_err() {
            let _ = exec_cached(&conn, "ROLLBACK");
        }
        for done in completions {
            done(committed.clone());
        }
        checkpoints.finish(&conn);
    }
    // Every job is done: copy the whole WAL into the database file and empty it (readers are idle
    // by now; the busy timeout waits out a checkpoint thread's last pass).
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => tracing::debug!("sqlite writer stopped; the WAL is empty"),
        Ok(_) => {
            tracing::warn!("sqlite writer stopped; the WAL was busy and keeps its last commits")
        }
        Err(e) => tracing::warn!(error = %e, "sqlite writer stopped; the last checkpoint failed"),
    }
}
