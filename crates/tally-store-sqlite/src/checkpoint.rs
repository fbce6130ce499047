//! WAL checkpoints, shared between a thread of their own and the writer.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so one unlucky
//! commit (and every caller waiting on it) pays for copying the WAL into the database file and
//! fsyncing it. Here the writer never checkpoints on commit: this thread runs a passive checkpoint,
//! which never blocks the writer or readers, a few times a second, and copies the bulk of the WAL.
//!
//! A passive checkpoint alone never lets the WAL start over under a steady stream of commits: the WAL
//! is rewound from its start only by a write transaction that begins when every frame in it has been
//! copied, and with a commit every millisecond or two some frames always arrive while the thread
//! copies. The WAL then grows for as long as the stream lasts (1.4 GB in 24 s at 5,000 commands/s).
//! So after each pass of this thread the writer, between two of its transactions, runs a passive
//! checkpoint of its own: it copies only what arrived during the pass, nothing can arrive while it
//! runs, and the writer's next transaction rewinds the WAL. `journal_size_limit` then cuts back a WAL
//! file that a burst left large.
//!
//! Every request waiting for the writer waits for that checkpoint too, so the thread leaves it as
//! little as it can: after a pass, it runs more passes while more than [`LEFT_FOR_WRITER`] frames
//! arrived during the last one, each shorter than the one before. Before, the writer copied what
//! arrived during one whole pass: under W1 over HTTP (23,000 commands/s) that took it 4.4 ms at the
//! median and up to 10.6 ms, five times a second. (Rewinding only once the
//! WAL held 32 MiB, so that the writer paid for it about once a second instead of five times, made
//! the steady stream's p99.9 worse, not better: 29–59 ms against 10–31 ms in alternating runs.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use tally_core::Error;

use crate::writer::sql_error;

const EVERY: Duration = Duration::from_millis(200);
/// A pass is followed by more passes while more than this many frames arrived during the last one…
const LEFT_FOR_WRITER: i64 = 64;
/// …at most this many.
const MAX_CATCH_UPS: usize = 8;

/// What the writer needs to finish each pass: a flag this thread raises after a pass.
#[derive(Clone, Default)]
pub(crate) struct Pass {
    done: Arc<AtomicBool>,
}

impl Pass {
    /// On the writer, between transactions: once per pass of the checkpoint thread, copies the frames
    /// that arrived during it, so the next transaction can rewind the WAL.
    pub(crate) fn finish(&self, conn: &Connection) {
        if !self.done.swap(false, Ordering::AcqRel) {
            return;
        }
        let started = std::time::Instant::now();
        match checkpoint(conn) {
            Ok(Outcome {
                busy: false,
                log,
                copied,
            }) => {
                tracing::debug!(log, copied, took = ?started.elapsed(), "the writer finished a checkpoint; the WAL rewinds");
            }
            // Another checkpoint holds the lock (a shutdown pass): the next pass tries again.
            Ok(Outcome { busy: true, .. }) => {}
            Err(e) => tracing::warn!(error = %e, "wal checkpoint on the writer failed"),
        }
    }
}

struct Outcome {
    busy: bool,
    /// Frames in the WAL.
    log: i64,
    /// Frames of it copied into the database file.
    copied: i64,
}

fn checkpoint(conn: &Connection) -> Result<Outcome, Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Outcome {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
    .map_err(sql_error)
}

/// One pass of the checkpoint thread: a passive checkpoint, then more while many frames arrived
/// during the last one, so that what is left for the writer to copy is about one commit's frames.
/// Returns whether the last checkpoint ran (was not busy).
fn catch_up(conn: &Connection) -> Result<bool, Error> {
    let mut seen = match checkpoint(conn)? {
        Outcome { busy: true, .. } => return Ok(false),
        Outcome { log, .. } => log,
    };
    for _ in 0..MAX_CATCH_UPS {
        match checkpoint(conn)? {
            Outcome { busy: true, .. } => return Ok(false),
            // The WAL was rewound meanwhile (the writer finished an earlier pass): this checkpoint
            // copied what the new WAL holds, and the writer's pass is as short as can be.
            Outcome { log, .. } if log < seen => return Ok(true),
            Outcome { log, .. } => {
                let arrived = log - seen;
                seen = log;
                if arrived <= LEFT_FOR_WRITER {
                    break;
                }
            }
        }
    }
    Ok(true)
}

/// Stops the thread when dropped.
pub(crate) struct Handle {
    _stop: mpsc::Sender<()>,
}

/// Starts the checkpoint thread of the file at `path`, named `name`, at `niceness`.
pub(crate) fn start(path: &Path, pass: Pass, name: &str, niceness: i32) -> Result<Handle, Error> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")
        .map_err(sql_error)?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::writer::lower_priority(niceness);
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                match catch_up(&conn) {
                    Ok(true) => pass.done.store(true, Ordering::Release),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
                }
            }
            // A last full pass on the way out, so a clean stop leaves a short WAL.
            let _ = checkpoint(&conn);
        })
        .map_err(|e| Error::Unavailable(format!("starting the checkpoint thread: {e}")))?;
    Ok(Handle { _stop: stop })
}
