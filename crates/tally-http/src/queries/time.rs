//! Which knowledge a query answers from: the read models as they are (waiting for `min_position`
//! first), or the log's prefix as known at `as_of` or up to `as_of_position`; and the business-time
//! cut-off `at` of the inventory endpoints. Every bad combination is a 422 naming the field.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use tally_core::timetravel::TimeTravel;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;

const MAX_WAIT: Duration = Duration::from_secs(10);

/// The parameters every query takes to choose what it answers from.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeParams {
    /// Wait until the read model reflects at least this global position (read your writes). With
    /// `as_of` or `as_of_position`: at most the prefix's last position (else 422).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub min_position: Option<String>,
    /// Answer as the system knew it at this instant (RFC 3339 with offset, not in the future): from
    /// exactly the events recorded at or before it. The answer carries it back, in UTC.
    #[param(value_type = String, required = false, format = DateTime)]
    pub as_of: Option<String>,
    /// Answer from exactly the events at positions up to this one (at most the log's head). Not
    /// together with `as_of`.
    #[param(value_type = u64, required = false, minimum = 0)]
    pub as_of_position: Option<String>,
}

/// What a query answers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// The read models as they are, after any `min_position` wait.
    Current,
    /// The fold of the log up to `position`; `as_of` when asked by instant.
    Prefix {
        position: u64,
        as_of: Option<Timestamp>,
    },
}

impl Knowledge {
    /// The instant asked for, for the answer's `as_of` field.
    pub fn as_of(&self) -> Option<String> {
        match self {
            Knowledge::Prefix { as_of: Some(t), .. } => Some(t.to_string()),
            _ => None,
        }
    }
}

fn position(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, "must be a non-negative integer"))
}

/// An RFC 3339 instant with an offset.
pub fn instant(field: &str, raw: &str) -> Result<Timestamp, ApiError> {
    raw.parse::<Timestamp>().map_err(|_| {
        ApiError::invalid(
            field,
            "must be an RFC 3339 instant with an offset, e.g. 2026-03-14T18:00:00Z",
        )
    })
}

/// Checks the parameters and decides what the query answers from; for [`Knowledge::Current`],
/// waits for `min_position` first (for `projection`, the read model the query reads).
pub async fn knowledge(
    s: &AppState,
    p: &TimeParams,
    projection: &str,
) -> Result<Knowledge, ApiError> {
    let min = p
        .min_position
        .as_deref()
        .map(|r| position("min_position", r))
        .transpose()?;
    let prefix = match (p.as_of.as_deref(), p.as_of_position.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "as_of_position",
                "as_of and as_of_position cannot be combined: give one",
            ));
        }
        (Some(raw), None) => {
            let at = instant("as_of", raw)?;
            if at > Timestamp::now() {
                return Err(ApiError::invalid(
                    "as_of",
                    "is in the future: the log cannot know it yet",
                ));
            }
            let position = s.backend.events.position_at(at).await?;
            Some(Knowledge::Prefix {
                position,
                as_of: Some(at),
            })
        }
        (None, Some(raw)) => {
            let wanted = position("as_of_position", raw)?;
            let head = s.backend.events.head().await?;
            if wanted > head {
                return Err(ApiError::invalid(
                    "as_of_position",
                    format!("is beyond the log's last position ({head})"),
                ));
            }
            Some(Knowledge::Prefix {
                position: wanted,
                as_of: None,
            })
        }
        (None, None) => None,
    };
    if prefix.is_none() {
        not_back_filling(s, &[projection]).await?;
    }
    match (prefix, min) {
        (Some(Knowledge::Prefix { position, .. }), Some(min)) if min > position => {
            Err(ApiError::invalid(
                "min_position",
                format!("is beyond the prefix asked for, which ends at position {position}"),
            ))
        }
        (Some(k), _) => Ok(k),
        (None, Some(min)) => {
            wait_for(s, projection, min).await?;
            Ok(Knowledge::Current)
        }
        (None, None) => Ok(Knowledge::Current),
    }
}

/// 503 with `Retry-After` while one of `projections` is being built for the first time: it has no
/// version yet whose figures are right. (Time travel folds the log, so `as_of` still answers.)
pub(crate) async fn not_back_filling(s: &AppState, projections: &[&str]) -> Result<(), ApiError> {
    let read = s.backend.read.as_ref();
    if let Some(projection) = s.signals.rebuilds().back_filling(read, projections).await? {
        return Err(ApiError::Unavailable {
            detail: format!(
                "the read model {projection} is being built from the log for the first time; \
                 GET /v1/admin/projections shows its progress"
            ),
            retry_after_s: 5,
        });
    }
    Ok(())
}

async fn wait_for(s: &AppState, projection: &str, position: u64) -> Result<(), ApiError> {
    wait_for_all(s, &[projection], position).await
}

/// Waits (up to 10 s) until every one of `projections` has reached `position`; 503 when not.
pub(crate) async fn wait_for_all(
    s: &AppState,
    projections: &[&str],
    position: u64,
) -> Result<(), ApiError> {
    let read = s.backend.read.as_ref();
    let wait = tally_core::wait::projected(read, &s.signals, projections, position, MAX_WAIT);
    let reached = tokio::select! {
        r = wait => r?,
        _ = crate::shutting_down(s) => false,
    };
    if reached {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            detail: format!("the read models have not reached position {position} yet"),
            retry_after_s: 1,
        })
    }
}

/// The position a fold answers up to: the prefix asked for, or, for the read models as they are
/// (a business-time `at`, a history), what `projection` reflects, so the answer agrees with them.
pub async fn fold_upto(
    s: &AppState,
    knowledge: Knowledge,
    projection: &str,
) -> Result<u64, ApiError> {
    match knowledge {
        Knowledge::Prefix { position, .. } => Ok(position),
        Knowledge::Current => Ok(s
            .backend
            .read
            .checkpoints()
            .await?
            .get(projection)
            .copied()
            .unwrap_or(0)),
    }
}

pub fn travel(s: &AppState) -> TimeTravel {
    TimeTravel::new(s.backend.events.clone(), s.backend.journal.clone())
}
