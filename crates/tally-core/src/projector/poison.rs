//! Poison events: an event one projection cannot fold (a bug in its code, which panics) is retried
//! with back-off ([`STRIKES`] times), then dealt with by that projection's policy: `stop` (the
//! default) halts that projection alone before the event, `park` records the event and goes on
//! without it. Either way the fault is a row of the store's `projection_faults`, so every process
//! (and `tally projections parked`) sees it, and the other projections go on. An operator retries a
//! fault (a stopped projection tries again; a parked event is folded and applied on its own, its
//! figures being additive) or skips it (a stopped projection goes on without the event, which stays
//! listed as parked; a parked one is dismissed, and `tally verify` will then name what it lacks).
//!
//! A corrupt stored event (one no build can decode) is not a projection's poison: every projection
//! needs it, so the projector stops before it and says so (`Projector::follow`).

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Duration;

use jiff::Timestamp;
use tally_domain::Event;

use crate::Backend;
use crate::ports::Error;
use crate::readmodel::{Accumulator, PROJECTIONS, ProjectionUpdate};

/// Failed folds of one event by one projection before its policy applies.
pub const STRIKES: u32 = 3;
/// The back-off after the first failure (doubled after each).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultState {
    /// The projection halts before the event.
    Stopped,
    /// The projection went on without the event.
    Parked,
}

impl FaultState {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultState::Stopped => "stopped",
            FaultState::Parked => "parked",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "stopped" => Ok(FaultState::Stopped),
            "parked" => Ok(FaultState::Parked),
            other => Err(Error::Corrupt(format!("fault state {other:?}"))),
        }
    }
}

/// An event a projection could not fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub projection: String,
    pub position: u64,
    pub state: FaultState,
    pub reason: String,
    pub at: Timestamp,
}

/// What each projection does with an event it cannot fold, once retried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    park: HashSet<&'static str>,
}

impl Policies {
    /// `park` names the projections that park (the others stop); an unknown name is an error
    /// naming the projections.
    pub fn parking(park: &[String]) -> Result<Self, String> {
        let mut out = HashSet::new();
        for name in park {
            let Some(p) = PROJECTIONS.into_iter().find(|p| p == name) else {
                return Err(format!(
                    "no projection named {name:?}; the projections are {}",
                    PROJECTIONS.join(", ")
                ));
            };
            out.insert(p);
        }
        Ok(Self { park: out })
    }
    pub fn parks(&self, projection: &str) -> bool {
        self.park.contains(projection)
    }
}

/// The faults of a store, as the projector uses them.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Projections halted, with the position they halt before.
    pub stopped: HashMap<String, u64>,
    /// Per projection, the positions it goes on without.
    pub parked: HashMap<String, HashSet<u64>>,
}

impl Faults {
    pub fn of(faults: &[Fault]) -> Self {
        let mut out = Self::default();
        for f in faults {
            match f.state {
                FaultState::Stopped => {
                    let at = out
                        .stopped
                        .entry(f.projection.clone())
                        .or_insert(f.position);
                    *at = (*at).min(f.position);
                }
                FaultState::Parked => {
                    out.parked
                        .entry(f.projection.clone())
                        .or_default()
                        .insert(f.position);
                }
            }
        }
        out
    }
}

impl Faults {
    /// The positions `projection` goes on without.
    pub fn parked_of(&self, projection: &str) -> HashSet<u64> {
        self.parked.get(projection).cloned().unwrap_or_default()
    }
}

/// Whether `position` is one of `parked`, looked up only when there are any (this is on the
/// fold's path, once per event and projection).
pub fn is_parked(parked: &HashSet<u64>, position: u64) -> bool {
    !parked.is_empty() && parked.contains(&position)
}

/// The test hook that plants a poison event: with `TALLY_TEST_POISON_PROJECTION` set to a
/// projection's name, that projection's fold fails on every sale whose id starts with `poison`.
/// Unset (always, outside tests), it does nothing.
fn planted() -> Option<&'static str> {
    static PLANTED: OnceLock<Option<String>> = OnceLock::new();
    PLANTED
        .get_or_init(|| std::env::var("TALLY_TEST_POISON_PROJECTION").ok())
        .as_deref()
}

fn planted_in(projection: &str, event: &Event) -> bool {
    planted() == Some(projection)
        && matches!(event, Event::SaleRecorded(s) if s.sale_id.as_str().starts_with("poison"))
}

/// Whether a planted poison could concern this event at all (the hook is set and it is a sale).
pub(crate) fn maybe_planted(event: &Event) -> bool {
    planted().is_some() && matches!(event, Event::SaleRecorded(_))
}

/// Folds `event` into a fresh accumulator of `projection`: `Err` with the reason when its fold
/// panics (or the test hook plants a poison there).
pub fn try_fold(projection: &str, event: &Event) -> Result<Accumulator, String> {
    if planted_in(projection, event) {
        return Err(format!(
            "{projection}: a poison event planted by the test hook"
        ));
    }
    let mut acc = Accumulator::for_projection(projection)
        .ok_or_else(|| format!("no projection {projection}"))?;
    catch_unwind(AssertUnwindSafe(|| acc.fold(event)))
        .map(|()| acc)
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            format!("{projection}: its fold panicked: {what}")
        })
}

/// Of `projections`, those that cannot fold `event`, each with why.
pub fn culprits(projections: &[&'static str], event: &Event) -> Vec<(&'static str, String)> {
    projections
        .iter()
        .filter_map(|p| try_fold(p, event).err().map(|e| (*p, e)))
        .collect()
}

/// Why an operator's retry or skip could not be done.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no fault of {projection} at position {position}")]
    NoSuchFault { projection: String, position: u64 },
    #[error("the event at position {0} still cannot be folded: {1}")]
    StillFails(u64, String),
    #[error(
        "{projection} has not gone past position {position} yet (it is at {at}); retry once it has"
    )]
    NotYetPast {
        projection: String,
        position: u64,
        at: u64,
    },
    #[error(transparent)]
    Store(#[from] Error),
}

/// Retries a fault. Stopped: the row goes, and the projector tries the event again. Parked: the
/// event is folded on its own and applied at the projection's checkpoint (its figures are
/// additive), and the row goes, in one transaction.
pub async fn retry(b: &Backend, projection: &str, position: u64) -> Result<FaultState, Refused> {
    let fault = find(b, projection, position).await?;
    match fault.state {
        FaultState::Stopped => {
            b.sink.clear_fault(projection, position, None).await?;
        }
        FaultState::Parked => {
            let events = b.events.read_positions(&[position]).await?;
            let event = events
                .first()
                .ok_or(Refused::NoSuchFault {
                    projection: projection.to_owned(),
                    position,
                })?
                .decode()
                .map_err(|e| Refused::StillFails(position, e.to_string()))?;
            let acc = try_fold(projection, &event).map_err(|e| Refused::StillFails(position, e))?;
            let at = b
                .sink
                .checkpoints()
                .await?
                .get(projection)
                .copied()
                .unwrap_or(0);
            if at < position {
                // The projector may still fold it: applying it here too would count it twice.
                return Err(Refused::NotYetPast {
                    projection: projection.to_owned(),
                    position,
                    at,
                });
            }
            let update = ProjectionUpdate {
                projection: projection.to_owned(),
                from: at,
                to: at,
                delta: acc.finish(),
            };
            b.sink
                .clear_fault(projection, position, Some(update))
                .await?;
        }
    }
    Ok(fault.state)
}

/// Skips a fault. Stopped: the projection goes on without the event, which stays listed as parked.
/// Parked: the row is dismissed (the model lacks the event for good).
pub async fn skip(b: &Backend, projection: &str, position: u64) -> Result<FaultState, Refused> {
    let fault = find(b, projection, position).await?;
    match fault.state {
        FaultState::Stopped => {
            b.sink
                .record_fault(Fault {
                    state: FaultState::Parked,
                    reason: format!("{} (skipped by an operator)", fault.reason),
                    at: Timestamp::now(),
                    ..fault.clone()
                })
                .await?;
        }
        FaultState::Parked => {
            b.sink.clear_fault(projection, position, None).await?;
        }
    }
    Ok(fault.state)
}

async fn find(b: &Backend, projection: &str, position: u64) -> Result<Fault, Refused> {
    b.sink
        .faults()
        .await?
        .into_iter()
        .find(|f| f.projection == projection && f.position == position)
        .ok_or(Refused::NoSuchFault {
            projection: projection.to_owned(),
            position,
        })
}
