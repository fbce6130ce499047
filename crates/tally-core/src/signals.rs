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
