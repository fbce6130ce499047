//! In-process wake-ups: the processor tells waiters that outcomes and events were committed, the
//! projector tells queries how far it got. Waiters also poll, so a writer in another process (on a
//! shared database) is seen too, only later. The processor also leaves the events it committed, as it
//! decided them, in a [`Tail`] for the projector of the same process.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_domain::Event;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Signals {
    outcomes: watch::Sender<u64>,
    head: watch::Sender<u64>,
    projected: watch::Sender<u64>,
    tail: Arc<Tail>,
    rebuilds: Arc<crate::projector::rebuild::Status>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            outcomes: watch::channel(0).0,
            head: watch::channel(0).0,
            projected: watch::channel(0).0,
            tail: Arc::default(),
            rebuilds: Arc::default(),
        }
    }
}

/// How often a waiter looks again when no signal came (writers in other processes).
pub const POLL: Duration = Duration::from_millis(100);

impl Signals {
    /// The rebuilds of this process: holds, progress, wake-ups ([`crate::projector::rebuild`]).
    pub fn rebuilds(&self) -> &Arc<crate::projector::rebuild::Status> {
        &self.rebuilds
    }
    pub fn outcomes_committed(&self) {
        self.outcomes.send_modify(|n| *n += 1);
    }
    pub fn events_committed(&self, position: u64) {
        self.head.send_if_modified(|h| {
            let moved = position > *h;
            if moved {
                *h = position;
            }
            moved
        });
    }
    pub fn projected(&self, position: u64) {
        self.projected.send_if_modified(|p| {
            let moved = position > *p;
            if moved {
                *p = position;
            }
            moved
        });
    }
    pub fn watch_outcomes(&self) -> watch::Receiver<u64> {
        self.outcomes.subscribe()
    }
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
    pub fn watch_projected(&self) -> watch::Receiver<u64> {
        self.projected.subscribe()
    }
    /// The events of one commit, each at the position the store gave it.
    pub fn events_recorded(&self, events: Vec<(u64, Event)>) {
        self.tail.push(events);
    }
    /// See [`Tail::after`].
    pub fn recent_events(&self, after: u64, limit: usize) -> Option<Vec<Recent>> {
        self.tail.after(after, limit)
    }
}

/// Events committed lately by this process, decided and not yet encoded: the projector following the
/// log live folds them from here instead of reading them back from the store and decoding their JSON
/// (under W1 over HTTP that read and decode were about a tenth of the server's CPU).
///
/// Only what the store confirmed is here, in commits, each at the positions the store returned. The
/// projector takes events from here only when they continue exactly where its checkpoint is and run
/// on without a gap, so an event committed by anyone else (another process on a shared database, a
/// commit that was not recorded here) is never skipped: the projector reads the store instead. The
/// tail is bounded; the oldest commits are forgotten first.
#[derive(Default)]
pub struct Tail {
    held: Mutex<Held>,
}

/// The commits in a [`Tail`], oldest first, and how many events they hold together.
#[derive(Default)]
struct Held {
    commits: VecDeque<Commit>,
    events: usize,
}

/// One commit's events, at their positions.
type Commit = Arc<[(u64, Event)]>;

/// At most this many events stay in a [`Tail`] (two live batches of the projector).
pub const TAIL_EVENTS: usize = 10_000;

/// Part of one commit in a [`Tail`].
pub struct Recent {
    commit: Commit,
    from: usize,
    to: usize,
}

impl Deref for Recent {
    type Target = [(u64, Event)];
    fn deref(&self) -> &Self::Target {
        &self.commit[self.from..self.to]
    }
}

impl Tail {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // No code panics while holding the lock, so a poisoned one still holds a whole state.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one commit's events, whose positions must be consecutive (a commit's are); anything else
    /// is not kept.
    pub fn push(&self, events: Vec<(u64, Event)>) {
        let consecutive = events.windows(2).all(|w| w[1].0 == w[0].0 + 1);
        if events.is_empty() || !consecutive {
            return;
        }
        let mut held = self.held();
        held.events += events.len();
        held.commits.push_back(events.into());
        while held.events > TAIL_EVENTS
            && let Some(oldest) = held.commits.pop_front()
        {
            held.events -= oldest.len();
        }
    }

    /// The events from position `after + 1` on, at most `limit` of them, if this tail holds that
    /// position and every one after it up to where it stops (or to the limit); `None` otherwise.
    pub fn after(&self, after: u64, limit: usize) -> Option<Vec<Recent>> {
        let next = after.checked_add(1)?;
        let held = self.held();
        let commits = &held.commits;
        let start = commits.iter().position(|c| {
            c.first().is_some_and(|(p, _)| *p <= next) && c.last().is_some_and(|(p, _)| *p >= next)
        })?;
        let mut out = Vec::new();
        let (mut want, mut taken) = (next, 0usize);
        for commit in commits.iter().skip(start) {
            let Some((first, _)) = commit.first() else {
                break;
            };
            if *first > want || taken >= limit {
                break; // a gap (someone else's commit), or enough
            }
            let from = usize::try_from(want - first).ok()?;
            let to = commit.len().min(from + (limit - taken));
            if from >= to {
                break;
            }
            taken += to - from;
            want = commit[to - 1].0 + 1;
            out.push(Recent {
                commit: commit.clone(),
                from,
                to,
            });
        }
        Some(out)
    }
}

/// Waits until `rx` changes or `POLL` passes, whichever is first.
pub async fn changed_or_poll(rx: &mut watch::Receiver<u64>) {
    let _ = tokio::time::timeout(POLL, rx.changed()).await;
}

/// The pace of a loop that follows a stream of work (the processor, the projector): while the work
/// keeps coming in small batches, a round starts at most every `every`, so what arrives meanwhile is
/// one batch (one commit) instead of many small ones; after a quiet spell, or behind a backlog (a full
/// batch), the next round starts at once.
pub struct Cadence {
    every: Duration,
    /// When the last round started, if it found work but not a backlog.
    paced_since: Option<tokio::time::Instant>,
}

impl Cadence {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            paced_since: None,
        }
    }

    /// Waits (until `shutdown` turns, at the most) for the rest of the interval if the last round
    /// asked for it; returns when this round starts.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> tokio::time::Instant {
        if let Some(at) = self.paced_since.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(at + self.every) => {}
                _ = shutdown.changed() => {}
            }
        }
        tokio::time::Instant::now()
    }

    /// How the round that started at `started` went: `found` units of work out of at most `full`.
    pub fn ran(&mut self, started: tokio::time::Instant, found: usize, full: usize) {
        self.paced_since = (found > 0 && found < full).then_some(started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_domain::event::SupplierRegistered;
    use tally_domain::values::{SupplierId, Text};

    fn commit(positions: std::ops::RangeInclusive<u64>) -> Vec<(u64, Event)> {
        positions
            .map(|p| {
                let event = Event::SupplierRegistered(SupplierRegistered {
                    supplier_id: SupplierId::parse(format!("sup-{p}")).expect("valid id"),
                    name: Text::parse("A supplier").expect("valid name"),
                });
                (p, event)
            })
            .collect()
    }

    fn positions(recent: &[Recent]) -> Vec<u64> {
        recent
            .iter()
            .flat_map(|r| r.iter().map(|(p, _)| *p))
            .collect()
    }

    #[test]
    fn the_tail_hands_out_events_only_without_a_gap_from_the_position_asked() {
        let tail = Tail::default();
        tail.push(commit(1..=3));
        tail.push(commit(4..=5));
        // 6 and 7 were committed by someone else: not here.
        tail.push(commit(8..=9));
        assert_eq!(
            tail.after(0, 100).map(|r| positions(&r)),
            Some(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(
            tail.after(2, 100).map(|r| positions(&r)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(tail.after(1, 3).map(|r| positions(&r)), Some(vec![2, 3, 4]));
        assert!(
            tail.after(5, 100).is_none(),
            "6 is not here: read the store"
        );
        assert_eq!(tail.after(7, 100).map(|r| positions(&r)), Some(vec![8, 9]));
        assert!(tail.after(9, 100).is_none(), "nothing after the end");
        // The events are the ones pushed at those positions.
        let got = tail.after(3, 1).expect("4 is here");
        assert_eq!(got[0][0].1, commit(4..=4)[0].1);
    }

    #[test]
    fn the_tail_keeps_only_consecutive_commits_and_forgets_the_oldest_past_its_bound() {
        let tail = Tail::default();
        let mut gapped = commit(1..=2);
        gapped.extend(commit(4..=4));
        tail.push(gapped);
        assert!(
            tail.after(0, 10).is_none(),
            "a commit with a gap is not kept"
        );
        let size = TAIL_EVENTS as u64 / 2;
        tail.push(commit(1..=size));
        tail.push(commit(size + 1..=2 * size));
        tail.push(commit(2 * size + 1..=2 * size + 10));
        assert!(
            tail.after(0, 10).is_none(),
            "the oldest commit was forgotten"
        );
        assert_eq!(
            tail.after(size, 5).map(|r| positions(&r)),
            Some((size + 1..=size + 5).collect())
        );
    }

    #[tokio::test]
    async fn a_small_batch_paces_the_next_round_and_a_full_one_or_none_does_not() {
        let (_stop, mut shutdown) = watch::channel(false);
        let every = Duration::from_millis(200);
        let mut cadence = Cadence::new(every);
        let first = cadence.wait(&mut shutdown).await;
        cadence.ran(first, 3, 100);
        let second = cadence.wait(&mut shutdown).await;
        assert!(
            second >= first + every,
            "a small batch waits out the interval"
        );
        for (found, full) in [(100, 100), (0, 100)] {
            cadence.ran(second, found, full);
            let started = std::time::Instant::now();
            cadence.wait(&mut shutdown).await;
            // Not paced: no sleep at all (the bound is generous; the point is "not 200 ms later").
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(cadence.paced_since.is_none());
        }
    }

    #[tokio::test]
    async fn shutdown_cuts_the_wait_short() {
        let (stop, mut shutdown) = watch::channel(false);
        let mut cadence = Cadence::new(Duration::from_secs(3600));
        let first = cadence.wait(&mut shutdown).await;
        cadence.ran(first, 1, 10);
        stop.send(true).expect("the receiver is alive");
        let second = cadence.wait(&mut shutdown).await;
        assert!(second < first + Duration::from_secs(3600));
    }
}
