//! The projector as a service: following the log while holding the projector lease, with the
//! rebuilder beside it, and backing off on failures.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{LEASE_RETRY, LIVE_INTERVAL, PROJECTOR_LEASE, Projector};
use crate::lease::Leases;
use crate::ports::Error;
use crate::signals::{Cadence, changed_or_poll};

impl Projector {
    /// Follows the log until `shutdown` turns true, but only while holding the [`PROJECTOR_LEASE`]:
    /// one projector applies to the read models at a time, however many processes run one. The others
    /// wait and try again every [`LEASE_RETRY`]; when the holder dies its lease ends with its database
    /// session and another takes over from the checkpoints.
    pub async fn run_leader(
        mut self,
        leases: Arc<dyn Leases>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut waiting_logged = false;
        while !*shutdown.borrow() {
            let lease = match leases.try_acquire(PROJECTOR_LEASE).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!("another projector is active; standing by");
                        waiting_logged = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not ask for the projector lease; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            waiting_logged = false;
            tracing::info!("projector lease taken; following the log");
            // Whatever was cached may be stale: another projector may have moved on meanwhile.
            self.forget();
            // New read models of this build are back-filled beside the others, never by holding
            // them up; rebuilds asked for (or left half done by the last holder) run beside it.
            let rebuilder = self.rebuilder();
            if let Err(e) = rebuilder.plan_back_fills().await {
                tracing::warn!(error = %e, "could not plan the back-fill of new read models");
            }
            let rebuilds = AbortOnDrop(tokio::spawn(rebuilder.run_forever(shutdown.clone())));
            let mut lease = lease;
            tokio::select! {
                _ = self.follow(&mut shutdown) => {}
                _ = lease.lost() => {
                    tracing::warn!("projector lease lost; stopping until it can be taken again");
                }
            }
            // Rebuilds stop with the lease (an apply in flight commits or not, as a whole); the
            // next holder resumes them from their shadow checkpoints.
            drop(rebuilds);
            drop(lease);
        }
        tracing::info!("projector stopped");
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.follow(&mut shutdown).await;
        tracing::info!("projector stopped");
    }

    async fn follow(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut head = self.signals.watch_head();
        let mut backoff = Duration::from_millis(50);
        let mut cadence = Cadence::new(LIVE_INTERVAL);
        while !*shutdown.borrow() {
            let started = cadence.wait(shutdown).await;
            match self.step().await {
                Ok(0) => {
                    tokio::select! {
                        _ = changed_or_poll(&mut head) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(n) => {
                    backoff = Duration::from_millis(50);
                    cadence.ran(started, n, self.live_batch());
                }
                Err(e @ Error::Corrupt(_)) => {
                    // An event it cannot read (say, of a schema version from a newer build): the
                    // read models stop before it rather than skip it, and say so until it is dealt
                    // with (an upgraded binary, a repaired row).
                    backoff = Duration::from_secs(5);
                    tracing::error!(
                        error = %e,
                        "the projector cannot go past this event; the read models stay before it \
                         (nothing is skipped); retrying every 5 s"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "projector step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // What the slow projection folded goes in before the process stops (else it is folded
        // again from its checkpoint after the next start).
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "could not apply the last item daily sales at shutdown");
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
