//! How the load generator paces its commands: an open-loop schedule fixed in advance (or as fast
//! as answered), and a pool of workers, each on its own connection, taking the next command when
//! done with the last.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::client::{Shared, WorkerReport, send_one};
use super::http1::Conn;

/// How the commands of a phase are paced.
#[derive(Clone, Copy)]
pub(super) struct Pace {
    pub(super) start: Instant,
    /// Commands per second; none: as fast as answered.
    pub(super) rate: Option<f64>,
    /// No command is sent that is due after this.
    pub(super) until: Option<Instant>,
}

impl Pace {
    pub(super) fn due(&self, n: usize) -> Instant {
        match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(n as f64 / rate),
            None => Instant::now(),
        }
    }
}

/// The items a pool of workers shares: each takes the next one when done with the last.
pub(super) struct Shares<T> {
    pub(super) items: Arc<Vec<T>>,
    pub(super) next: Arc<AtomicUsize>,
}

impl<T> Shares<T> {
    /// The next item and its index, if any is left.
    pub(super) fn take(&self) -> Option<(usize, &T)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.items.get(n).map(|item| (n, item))
    }
    /// No worker takes another item.
    pub(super) fn close(&self) {
        self.next.store(self.items.len(), Ordering::Relaxed);
    }
}

/// Works through `items` on `connections` workers, each with its own connection, so a slow answer
/// holds up only its own worker; returns what each worker gathered.
pub(super) async fn on_workers<T, R, F, Fut>(
    shared: &Arc<Shared>,
    items: Arc<Vec<T>>,
    connections: usize,
    work: F,
) -> anyhow::Result<Vec<R>>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(Arc<Shared>, Conn, Shares<T>) -> Fut,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let shares = Shares {
                items: items.clone(),
                next: next.clone(),
            };
            let conn = Conn::new(shared.target.clone());
            tokio::spawn(work(shared.clone(), conn, shares))
        })
        .collect();
    let mut gathered = Vec::with_capacity(workers.len());
    for w in workers {
        gathered.push(w.await.context("load worker")??);
    }
    Ok(gathered)
}

/// Sends `indices` on `connections` workers; returns what they saw.
pub(super) async fn spread(
    shared: &Arc<Shared>,
    indices: Arc<Vec<usize>>,
    connections: usize,
    pace: Pace,
) -> anyhow::Result<WorkerReport> {
    let reports = on_workers(
        shared,
        indices,
        connections,
        |shared, mut conn, shares| async move {
            let mut report = WorkerReport::default();
            while let Some((n, &index)) = shares.take() {
                let due = pace.due(n);
                let now = Instant::now();
                if pace.until.is_some_and(|until| due.max(now) > until) {
                    // Later commands are due later still: the run is over.
                    shares.close();
                    break;
                }
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                send_one(&shared, &mut conn, index, due, &mut report).await?;
            }
            Ok(report)
        },
    )
    .await?;
    let mut all = WorkerReport::default();
    reports.into_iter().for_each(|r| all.merge(r));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_schedule_is_fixed_in_advance() {
        let start = Instant::now();
        let pace = Pace {
            start,
            rate: Some(5000.0),
            until: None,
        };
        assert_eq!(pace.due(0), start);
        assert_eq!(pace.due(5000), start + Duration::from_secs(1));
        assert_eq!(pace.due(2500), start + Duration::from_millis(500));
        // Without a rate every command is due when it is taken.
        let closed = Pace { rate: None, ..pace };
        assert!(closed.due(1_000_000) >= start);
        assert!(closed.due(1_000_000) < start + Duration::from_secs(60));
    }
}
