//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the commit that
//! crosses the threshold, so one unlucky commit (and every caller waiting on it) pays for copying the
//! WAL into the database file and fsyncing it. Here the writer never checkpoints; this thread runs a
//! passive checkpoint, which never blocks the writer or readers, a few times a second.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use tally_core::Error;

use crate::writer::sql_error;

const EVERY: Duration = Duration::from_millis(200);

/// Stops the thread when dropped.
pub(crate) struct Handle {
    _stop: mpsc::Sender<()>,
}

pub(crate) fn start(path: &Path) -> Result<Handle, Error> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")
        .map_err(sql_error)?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("tally-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
            // A last full pass on the way out, so a clean stop leaves a short WAL.
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        })
        .map_err(|e| Error::Unavailable(format!("starting the checkpoint thread: {e}")))?;
    Ok(Handle { _stop: stop })
}
