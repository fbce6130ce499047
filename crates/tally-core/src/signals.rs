//! In-process wake-ups: the processor tells waiters that outcomes and events were committed, the
//! projector tells queries how far it got. Waiters also poll, so a writer in another process (on a
//! shared database) is seen too, only later.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Signals {
    outcomes: watch::Sender<u64>,
    head: watch::Sender<u64>,
    projected: watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            outcomes: watch::channel(0).0,
            head: watch::channel(0).0,
            projected: watch::channel(0).0,
        }
    }
}

/// How often a waiter looks again when no signal came (writers in other processes).
pub const POLL: Duration = Duration::from_millis(100);

impl Signals {
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
