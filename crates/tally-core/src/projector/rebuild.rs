//! Rebuilds that never take a read model away, after Marten's blue/green projections. A rebuild
//! folds the log from the start into the projection's shadow tables ([`shadow`]), applying every
//! [`FLUSH_EVERY`] with its shadow checkpoint in the same transaction, while the serving version
//! goes on being updated and queried. Once the shadow is near the head, the live projector is asked
//! to hold that projection ([`Holds`]), the shadow catches up to the head, and the sink swaps it in
//! atomically (`ProjectionSink::swap_rebuild`): queries see the old version, then the new one at a
//! position at least as far, never an empty or partial one. A crash leaves the old version serving
//! and the shadow at its checkpoint, from which the next holder of the projector lease resumes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tally_domain::Event;
use tokio::sync::{Notify, watch};

use crate::ports::{Error, EventStore, ProjectionSink, ReadModels};
use crate::readmodel::shadow;
use crate::readmodel::{Accumulator, ProjectionUpdate};

/// A rebuild applies what it folded at most this often: each shadow row is written once per
/// interval, and a crash loses at most this much folding.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often the projector's holder looks for rebuilds asked for by another process.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a query's knowledge of which projections are back-filling may be old.
const BACK_FILL_TTL: Duration = Duration::from_secs(1);
/// The largest batch a paced rebuild reads.
pub const PACED_BATCH: usize = 1000;
/// Swaps tried before a rebuild gives up for now (each catches the shadow up to the head first).
const SWAP_ATTEMPTS: usize = 100;

/// Projections the live projector leaves alone for now (one being swapped in), shared by the
/// rebuilder and the projector of one process. Every change bumps a generation, which the projector
/// checks before each step (and then reads its checkpoints again).
#[derive(Debug, Default)]
pub struct Holds {
    held: Mutex<HashSet<&'static str>>,
    generation: AtomicU64,
}

impl Holds {
    fn change(&self, f: impl FnOnce(&mut HashSet<&'static str>)) {
        f(&mut self.held.lock().unwrap_or_else(|p| p.into_inner()));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
    pub fn hold(&self, projection: &'static str) {
        self.change(|h| {
            h.insert(projection);
        });
    }
    pub fn release(&self, projection: &str) {
        self.change(|h| {
            h.remove(projection);
        });
    }
    pub fn held(&self) -> HashSet<&'static str> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
    /// Has the projector read its checkpoints and faults again before its next step (an operator
    /// retried or skipped a fault).
    pub fn bump(&self) {
        self.change(|_| {});
    }
}

/// How far a rebuild run by this process has got.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The shadow version's position (what it has folded, applied or not).
    pub position: u64,
    /// The log's head when last read.
    pub head: u64,
    pub started_at: Timestamp,
    /// Events folded per second since this run started.
    pub events_per_s: f64,
}

impl Progress {
    /// Seconds until the shadow reaches the head at the current rate (`None` before a rate is
    /// known).
    pub fn eta_seconds(&self) -> Option<f64> {
        (self.events_per_s > 0.0)
            .then(|| self.head.saturating_sub(self.position) as f64 / self.events_per_s)
    }
}

/// What one process knows of rebuilds: the holds, the progress of those it runs, a wake-up for
/// its rebuilder, and (for queries) which projections are back-filling.
#[derive(Debug, Default)]
pub struct Status {
    pub holds: Holds,
    progress: Mutex<HashMap<&'static str, Progress>>,
    wake: Notify,
    back_filling: std::sync::RwLock<Option<(Instant, HashSet<&'static str>)>>,
}

impl Status {
    /// The progress of the rebuilds this process runs.
    pub fn progress(&self) -> HashMap<&'static str, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn set_progress(&self, projection: &'static str, progress: Option<Progress>) {
        let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        match progress {
            Some(p) => all.insert(projection, p),
            None => all.remove(projection),
        };
    }
    /// A rebuild was asked for in this process: its rebuilder looks now rather than at its next
    /// round.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Forgets which projections are back-filling (one was just swapped in).
    fn swapped(&self) {
        *self.back_filling.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The first of `projections` being back-filled (no serving version yet), from the
    /// checkpoints as read at most [`BACK_FILL_TTL`] ago: a query of it has nothing right to answer
    /// from. On every query's path: a read lock, and a read of the checkpoints once a second.
    pub async fn back_filling(
        &self,
        read: &dyn ReadModels,
        projections: &[&str],
    ) -> Result<Option<&'static str>, Error> {
        let first =
            |names: &HashSet<&'static str>| projections.iter().find_map(|p| names.get(*p).copied());
        if let Some((at, names)) = self
            .back_filling
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < BACK_FILL_TTL
        {
            return Ok(first(names));
        }
        let c = read.checkpoints().await?;
        let names: HashSet<&'static str> = crate::readmodel::PROJECTIONS
            .into_iter()
            .filter(|p| shadow::unbuilt(&c, p))
            .collect();
        let answer = first(&names);
        *self.back_filling.write().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), names));
        Ok(answer)
    }
}

/// Releases its holds when dropped, however the rebuild ends.
struct Held<'a> {
    holds: &'a Holds,
    names: Vec<&'static str>,
}

impl Held<'_> {
    fn add(&mut self, name: &'static str) {
        if !self.names.contains(&name) {
            self.holds.hold(name);
            self.names.push(name);
        }
    }
    fn release(&mut self, name: &'static str) {
        self.names.retain(|n| *n != name);
        self.holds.release(name);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            self.holds.release(name);
        }
    }
}

/// One projection being rebuilt: its shadow checkpoint (what is applied) and what is folded since.
struct Job {
    name: &'static str,
    from: u64,
    acc: Accumulator,
    /// Positions the serving version went on without ([`super::poison`]): the new one does too.
    parked: HashSet<u64>,
}

/// Builds shadow versions and swaps them in.
pub struct Rebuilder {
    store: Arc<dyn EventStore>,
    sink: Arc<dyn ProjectionSink>,
    status: Arc<Status>,
    batch_size: usize,
    pace: Duration,
}

impl Rebuilder {
    pub fn new(
        store: Arc<dyn EventStore>,
        sink: Arc<dyn ProjectionSink>,
        status: Arc<Status>,
    ) -> Self {
        Self {
            store,
            sink,
            status,
            batch_size: 20_000,
            pace: Duration::ZERO,
        }
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Waits this long after each batch read: a rebuild that leaves the database to live traffic
    /// (and, in tests, one slow enough to be caught in the middle). A paced rebuild reads batches of
    /// at most [`PACED_BATCH`] events, so that it takes the database in small slices.
    pub fn with_pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        if !pace.is_zero() {
            self.batch_size = self.batch_size.min(PACED_BATCH);
        }
        self
    }

    /// Starts a shadow version of each new projection of this build (one without a checkpoint on
    /// a store whose others have applied events): they are back-filled while the others serve.
    pub async fn plan_back_fills(&self) -> Result<Vec<&'static str>, Error> {
        let c = self.sink.checkpoints().await?;
        let new = shadow::to_back_fill(&c);
        for p in &new {
            self.sink.start_rebuild(p).await?;
            tracing::info!(
                projection = p,
                "new read model: back-filling it from the log"
            );
        }
        Ok(new)
    }

    /// Runs every rebuild the checkpoints say is under way, to its swap; returns the projections
    /// swapped in (none when there is no rebuild).
    pub async fn run_pending(&self) -> Result<Vec<&'static str>, Error> {
        let todo = shadow::rebuilding(&self.sink.checkpoints().await?);
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        self.run(todo).await
    }

    async fn run(&self, todo: Vec<(&'static str, u64)>) -> Result<Vec<&'static str>, Error> {
        let faults = super::poison::Faults::of(&self.sink.faults().await?);
        let mut jobs = todo
            .iter()
            .filter_map(|(name, from)| {
                Accumulator::for_projection(name).map(|acc| Job {
                    name,
                    from: *from,
                    acc,
                    parked: faults.parked_of(name),
                })
            })
            .collect::<Vec<_>>();
        let first = jobs.iter().map(|j| j.from).min().unwrap_or(0);
        let names: Vec<&'static str> = jobs.iter().map(|j| j.name).collect();
        tracing::info!(projections = ?names, from = first, "rebuilding into shadow tables");
        let started = (Instant::now(), Timestamp::now());
        let mut cursor = first;
        let mut head = self.store.head().await?;
        let mut held = Held {
            holds: &self.status.holds,
            names: Vec::new(),
        };
        let progress = |cursor: u64, head: u64| {
            let secs = started.0.elapsed().as_secs_f64();
            for name in &names {
                self.status.set_progress(
                    name,
                    Some(Progress {
                        position: cursor,
                        head,
                        started_at: started.1,
                        events_per_s: if secs > 0.0 {
                            cursor.saturating_sub(first) as f64 / secs
                        } else {
                            0.0
                        },
                    }),
                );
            }
        };
        // Far from the head: fold and apply in the background of the live projector.
        let mut flushed = Instant::now();
        loop {
            let read = self.fold_next(&mut jobs, &mut cursor).await?;
            if cursor > head {
                head = self.store.head().await?;
            }
            progress(cursor, head);
            if flushed.elapsed() >= FLUSH_EVERY {
                self.flush(&mut jobs, cursor).await?;
                flushed = Instant::now();
            }
            if read < self.batch_size {
                break; // at the head as it was when read
            }
            if !self.pace.is_zero() {
                tokio::time::sleep(self.pace).await;
            }
        }
        // Near the head: the live projector leaves these alone, the shadow catches up, swap.
        for j in &jobs {
            held.add(j.name);
        }
        let mut swapped = Vec::new();
        for _ in 0..SWAP_ATTEMPTS {
            while self.fold_next(&mut jobs, &mut cursor).await? == self.batch_size {}
            self.flush(&mut jobs, cursor).await?;
            let mut left = Vec::new();
            for j in std::mem::take(&mut jobs) {
                match self.sink.swap_rebuild(j.name).await? {
                    Some(at) => {
                        held.release(j.name);
                        self.status.set_progress(j.name, None);
                        self.status.swapped();
                        tracing::info!(
                            projection = j.name,
                            position = at,
                            "rebuilt read model swapped in"
                        );
                        swapped.push(j.name);
                    }
                    None => left.push(j),
                }
            }
            jobs = left;
            if jobs.is_empty() {
                return Ok(swapped);
            }
        }
        Err(Error::Unavailable(format!(
            "the rebuilt versions of {:?} did not catch up with the serving ones in {SWAP_ATTEMPTS} \
             attempts; the rebuild goes on from its shadow checkpoint",
            jobs.iter().map(|j| j.name).collect::<Vec<_>>()
        )))
    }

    /// Reads and folds the next batch after `cursor`; returns how many events it read.
    async fn fold_next(&self, jobs: &mut [Job], cursor: &mut u64) -> Result<usize, Error> {
        let payloads = self.store.read_payloads(*cursor, self.batch_size).await?;
        let read = payloads.len();
        let Some(last) = payloads.last().map(|p| p.position) else {
            return Ok(0);
        };
        let events: Vec<(u64, Event)> =
            tokio::task::spawn_blocking(move || super::decode(payloads))
                .await
                .map_err(|e| Error::Unavailable(format!("decoding task failed: {e}")))??;
        for (position, event) in &events {
            let takes =
                |j: &Job| *position > j.from && !super::poison::is_parked(&j.parked, *position);
            let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Accumulator::fold_into(event, &mut *jobs, takes, |j| &mut j.acc)
            }));
            if folded.is_err() {
                // The live projector deals with a poison event by its policy; the rebuild waits.
                return Err(Error::Unavailable(format!(
                    "a rebuild could not fold the event at position {position}; it goes on from its \
                     shadow checkpoint once the projector has dealt with it"
                )));
            }
        }
        *cursor = last;
        Ok(read)
    }

    /// Applies what each job folded up to `cursor` to its shadow tables, moving the shadow
    /// checkpoints, in one transaction.
    async fn flush(&self, jobs: &mut [Job], cursor: u64) -> Result<(), Error> {
        let mut updates = Vec::new();
        for j in jobs.iter_mut().filter(|j| cursor > j.from) {
            let fresh = Accumulator::for_projection(j.name)
                .ok_or_else(|| Error::Corrupt(format!("no projection {}", j.name)))?;
            updates.push(ProjectionUpdate {
                projection: shadow::checkpoint_of(j.name),
                from: j.from,
                to: cursor,
                delta: std::mem::replace(&mut j.acc, fresh).finish(),
            });
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.sink.apply(updates).await?;
        for j in jobs.iter_mut() {
            j.from = j.from.max(cursor);
        }
        Ok(())
    }

    /// Runs rebuilds as they are asked for (in this process: at once; in another: within
    /// [`LOOK_EVERY`]) until `shutdown`. A failed rebuild is retried from its shadow checkpoint.
    pub async fn run_forever(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = LOOK_EVERY;
        let mut faults = None;
        while !*shutdown.borrow() {
            // Faults retried or skipped by an operator (here or in another process): the live
            // projector reads them again.
            if let Ok(now) = self.sink.faults().await {
                if faults.as_ref().is_some_and(|f| *f != now) {
                    self.status.holds.bump();
                }
                faults = Some(now);
            }
            match self.run_pending().await {
                Ok(_) => backoff = LOOK_EVERY,
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "rebuild failed; retrying from its shadow checkpoint");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.status.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
