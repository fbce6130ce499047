//! Long polls: a command's outcome (`wait_ms`) and a read model's position (`min_position`).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::model::{CommandRecord, CommandStatus};
use crate::ports::{CommandLog, Error, ReadModels};
use crate::signals::{Signals, changed_or_poll};

/// The command's record once it has left `accepted`, or as it is when `wait` has passed.
pub async fn command_outcome(
    log: &dyn CommandLog,
    signals: &Signals,
    command_id: Uuid,
    wait: Duration,
) -> Result<Option<CommandRecord>, Error> {
    let deadline = Instant::now() + wait;
    let mut outcomes = signals.watch_outcomes();
    loop {
        outcomes.borrow_and_update();
        let record = log.status(command_id).await?;
        let done = !matches!(
            record,
            Some(CommandRecord {
                status: CommandStatus::Accepted,
                ..
            })
        );
        if done || Instant::now() >= deadline {
            return Ok(record);
        }
        let _ = tokio::time::timeout_at(deadline, changed_or_poll(&mut outcomes)).await;
    }
}

/// Waits until each of `projections` has reached `position`; false if `wait` passed first.
pub async fn projected(
    read: &dyn ReadModels,
    signals: &Signals,
    projections: &[&str],
    position: u64,
    wait: Duration,
) -> Result<bool, Error> {
    let deadline = Instant::now() + wait;
    let mut projected = signals.watch_projected();
    loop {
        projected.borrow_and_update();
        let reached = read.checkpoints().await?;
        let lowest = projections
            .iter()
            .map(|p| reached.get(*p).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        if lowest >= position {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        let _ = tokio::time::timeout_at(deadline, changed_or_poll(&mut projected)).await;
    }
}
