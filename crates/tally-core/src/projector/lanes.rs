//! What the projector folds between two applies: [`Pending`], the update of the projections applied
//! with every batch, and [`Slow`], a projection whose rows are many and scattered (item daily sales:
//! a row per store, item and business date) applied at most every [`SLOW_INTERVAL`], live and in
//! catch-up, so that each of its rows is written once per interval rather than once per batch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tally_domain::Event;

use super::poison::{Faults, is_parked};
use crate::readmodel::{Accumulator, ITEM_DAILY, LIVE, ProjectionUpdate};

/// The slow projection is applied at most this often (and at the end of a catch-up). Its rows (W1:
/// 20 stores × 1,000 items × the business dates) are touched all over the table by every batch of
/// sales: applied with each 20 ms batch, it wrote most of its pages every time, and the projector
/// fell seconds behind under W1 over HTTP. In catch-up, applied with each update, W1's 124,000 rows
/// were written three times (316 ms of a 0.73 s catch-up); once at the end, 157 ms. Its checkpoint
/// lags by up to this much (plus an apply); `min_position` on its queries waits for it.
pub const SLOW_INTERVAL: Duration = Duration::from_secs(2);

/// An update being folded: one accumulator per projection, each from its own checkpoint (events at
/// or before it are skipped, and those it parked), up to the last event folded.
pub(super) struct Pending {
    projections: Vec<Lane>,
    pub(super) to: u64,
}

/// One projection of an update.
struct Lane {
    name: &'static str,
    from: u64,
    acc: Accumulator,
    /// Positions this projection goes on without ([`super::poison`]).
    parked: HashSet<u64>,
}

/// An event a projection's fold failed on (panicked, or a planted poison): the update holding it
/// is not to be trusted, and is folded again once the fault is dealt with.
#[derive(Debug, Clone)]
pub(super) struct Poisoned {
    pub(super) position: u64,
    pub(super) event: Box<Event>,
    /// The projections folding it when it failed.
    pub(super) folding: Vec<&'static str>,
}

/// Whether the test hook planted a poison in this event for one of `names` (never, unless set).
fn planted(event: &Event, names: impl FnOnce() -> Vec<&'static str>) -> bool {
    super::poison::maybe_planted(event) && !super::poison::culprits(&names(), event).is_empty()
}

/// Runs a fold; false when it panicked.
fn folds(fold: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(fold)).is_ok()
}

impl Lane {
    fn takes(&self, position: u64) -> bool {
        position > self.from && !is_parked(&self.parked, position)
    }
}

fn taking(lanes: &[Lane], position: u64) -> Vec<&'static str> {
    lanes
        .iter()
        .filter(|l| l.takes(position))
        .map(|l| l.name)
        .collect()
}

impl Pending {
    /// An update of the projections of [`LIVE`] but those `excluded`.
    pub(super) fn new(
        checkpoints: &HashMap<String, u64>,
        excluded: &HashSet<&'static str>,
        faults: &Faults,
    ) -> Self {
        let projections = LIVE
            .iter()
            .filter(|name| !excluded.contains(*name))
            .filter_map(|name| {
                let from = checkpoints.get(*name).copied().unwrap_or(0);
                Accumulator::for_projection(name).map(|acc| Lane {
                    name,
                    from,
                    acc,
                    parked: faults.parked_of(name),
                })
            })
            .collect();
        Self { projections, to: 0 }
    }

    /// Folds the next events of the log (in order, after those folded before). Each event's moves
    /// are worked out once and go to every projection whose checkpoint is before it.
    pub(super) fn fold(&mut self, events: &[(u64, Event)]) -> Result<(), Poisoned> {
        for (position, event) in events {
            let p = *position;
            let ok = !planted(event, || taking(&self.projections, p)) && {
                let lanes = &mut self.projections;
                folds(|| Accumulator::fold_into(event, lanes, |l| l.takes(p), |l| &mut l.acc))
            };
            if !ok {
                return Err(Poisoned {
                    position: p,
                    event: Box::new(event.clone()),
                    folding: taking(&self.projections, p),
                });
            }
        }
        if let Some((last, _)) = events.last() {
            self.to = self.to.max(*last);
        }
        Ok(())
    }

    /// One update per projection that has events past its checkpoint.
    pub(super) fn finish(self) -> Vec<ProjectionUpdate> {
        let to = self.to;
        self.projections
            .into_iter()
            .filter(|l| to > l.from)
            .map(|l| ProjectionUpdate {
                projection: l.name.to_owned(),
                from: l.from,
                to,
                delta: l.acc.finish(),
            })
            .collect()
    }
}

/// The slow projection's fold since its checkpoint, kept across batches.
pub(super) struct Slow {
    from: u64,
    folded: u64,
    acc: Accumulator,
    since: Instant,
    parked: HashSet<u64>,
}

impl Slow {
    pub(super) fn new(checkpoints: &HashMap<String, u64>, faults: &Faults) -> Option<Self> {
        let from = checkpoints.get(ITEM_DAILY).copied();
        // Without a checkpoint yet (a new store), its first update goes with the others' first, so
        // that no projection of a store in use lacks a checkpoint (which would mean it is new to
        // this build: `shadow::to_back_fill`).
        let now = Instant::now();
        let since = match from {
            Some(_) => now,
            None => now.checked_sub(SLOW_INTERVAL).unwrap_or(now),
        };
        let from = from.unwrap_or(0);
        Some(Self {
            from,
            folded: from,
            acc: Accumulator::for_projection(ITEM_DAILY)?,
            since,
            parked: faults.parked_of(ITEM_DAILY),
        })
    }

    /// The last position folded.
    pub(super) fn folded(&self) -> u64 {
        self.folded
    }

    /// The checkpoint as of the last update taken.
    pub(super) fn checkpoint(&self) -> u64 {
        self.from
    }

    pub(super) fn fold(&mut self, events: &[(u64, Event)]) -> Result<(), Poisoned> {
        let from = self.folded;
        for (position, event) in events.iter().filter(|(p, _)| *p > from) {
            if !is_parked(&self.parked, *position) {
                let acc = &mut self.acc;
                if planted(event, || vec![ITEM_DAILY]) || !folds(|| acc.fold(event)) {
                    return Err(Poisoned {
                        position: *position,
                        event: Box::new(event.clone()),
                        folding: vec![ITEM_DAILY],
                    });
                }
            }
            self.folded = *position;
        }
        Ok(())
    }

    /// Its update, when it has folded anything and is due (`now`, or its interval has passed).
    pub(super) fn take(&mut self, now: bool) -> Option<ProjectionUpdate> {
        if self.folded <= self.from || !(now || self.since.elapsed() >= SLOW_INTERVAL) {
            return None;
        }
        let acc = Accumulator::for_projection(ITEM_DAILY)?;
        let update = ProjectionUpdate {
            projection: ITEM_DAILY.to_owned(),
            from: self.from,
            to: self.folded,
            delta: std::mem::replace(&mut self.acc, acc).finish(),
        };
        self.from = self.folded;
        self.since = Instant::now();
        Some(update)
    }
}
