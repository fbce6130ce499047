//! What the projector folds between two applies: [`Pending`], the update of the projections applied
//! with every batch, and [`Slow`], a projection whose rows are many and scattered (item daily sales:
//! a row per store, item and business date) applied at most every [`SLOW_INTERVAL`], live and in
//! catch-up, so that each of its rows is written once per interval rather than once per batch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tally_domain::Event;

use crate::readmodel::{Accumulator, ITEM_DAILY, LIVE, ProjectionUpdate};

/// The slow projection is applied at most this often (and at the end of a catch-up). Its rows (W1:
/// 20 stores × 1,000 items × the business dates) are touched all over the table by every batch of
/// sales: applied with each 20 ms batch, it wrote most of its pages every time, and the projector
/// fell seconds behind under W1 over HTTP. In catch-up, applied with each update, W1's 124,000 rows
/// were written three times (316 ms of a 0.73 s catch-up); once at the end, 157 ms. Its checkpoint
/// lags by up to this much (plus an apply); `min_position` on its queries waits for it.
pub const SLOW_INTERVAL: Duration = Duration::from_secs(2);

/// An update being folded: one accumulator per projection, each from its own checkpoint (events at
/// or before it are skipped), up to the last event folded.
pub(super) struct Pending {
    projections: Vec<(&'static str, u64, Accumulator)>,
    pub(super) to: u64,
}

impl Pending {
    /// An update of the projections of [`LIVE`] but those `excluded`.
    pub(super) fn new(
        checkpoints: &HashMap<String, u64>,
        excluded: &HashSet<&'static str>,
    ) -> Self {
        let projections = LIVE
            .iter()
            .filter(|name| !excluded.contains(*name))
            .filter_map(|name| {
                let from = checkpoints.get(*name).copied().unwrap_or(0);
                Accumulator::for_projection(name).map(|acc| (*name, from, acc))
            })
            .collect();
        Self { projections, to: 0 }
    }

    /// Folds the next events of the log (in order, after those folded before). Each event's moves
    /// are worked out once and go to every projection whose checkpoint is before it.
    pub(super) fn fold(&mut self, events: &[(u64, Event)]) {
        for (position, event) in events {
            Accumulator::fold_into(
                event,
                &mut self.projections,
                |(_, from, _)| *position > *from,
                |(_, _, acc)| acc,
            );
        }
        if let Some((last, _)) = events.last() {
            self.to = self.to.max(*last);
        }
    }

    /// One update per projection that has events past its checkpoint.
    pub(super) fn finish(self) -> Vec<ProjectionUpdate> {
        let to = self.to;
        self.projections
            .into_iter()
            .filter(|(_, from, _)| to > *from)
            .map(|(name, from, acc)| ProjectionUpdate {
                projection: name.to_owned(),
                from,
                to,
                delta: acc.finish(),
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
}

impl Slow {
    pub(super) fn new(checkpoints: &HashMap<String, u64>) -> Option<Self> {
        let from = checkpoints.get(ITEM_DAILY).copied().unwrap_or(0);
        Some(Self {
            from,
            folded: from,
            acc: Accumulator::for_projection(ITEM_DAILY)?,
            since: Instant::now(),
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

    pub(super) fn fold(&mut self, events: &[(u64, Event)]) {
        let from = self.folded;
        for (position, event) in events.iter().filter(|(p, _)| *p > from) {
            self.acc.fold(event);
            self.folded = *position;
        }
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
