//! The intake when the command queue is a broker (ActiveMQ, RabbitMQ, NATS): the database records the
//! command as accepted, with its idempotency key and an outbox row, then the broker takes the message
//! (persistent, confirmed), and only then does the gateway answer 202. When the broker cannot confirm,
//! the gateway answers 503; the outbox row stays and the [`relay`] publishes it once the broker is back,
//! so a command recorded as accepted is never lost. A message published twice (a confirm lost, a relay
//! racing a slow publish) is harmless: outcomes are keyed by command id, so the second copy is acked
//! without effect.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::QueueMessage;
use crate::ports::{CommandQueue, Error, Intake, IntakeLedger, Result, Submission, Submitted};

pub struct BrokerIntake {
    ledger: Arc<dyn IntakeLedger>,
    queue: Arc<dyn CommandQueue>,
}

impl BrokerIntake {
    pub fn new(ledger: Arc<dyn IntakeLedger>, queue: Arc<dyn CommandQueue>) -> Self {
        Self { ledger, queue }
    }
}

#[async_trait]
impl Intake for BrokerIntake {
    async fn submit(&self, submission: Submission) -> Result<Submitted> {
        let mut out = self.submit_many(vec![submission]).await?;
        out.pop()
            .ok_or_else(|| Error::Corrupt("the ledger returned no result".into()))
    }

    async fn submit_many(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        let messages: Vec<(Uuid, QueueMessage)> = submissions
            .iter()
            .map(|s| {
                (
                    s.envelope.command_id,
                    QueueMessage {
                        message_id: s.envelope.command_id,
                        partition_key: s.partition_key.clone(),
                        payload: s.envelope.encode(),
                    },
                )
            })
            .collect();
        let results = self.ledger.record(submissions).await?;
        let accepted: Vec<QueueMessage> = messages
            .into_iter()
            .filter(|(id, _)| {
                results
                    .iter()
                    .any(|r| matches!(r, Submitted::Accepted { command_id } if command_id == id))
            })
            .map(|(_, m)| m)
            .collect();
        if accepted.is_empty() {
            return Ok(results);
        }
        let ids: Vec<Uuid> = accepted.iter().map(|m| m.message_id).collect();
        self.queue.enqueue(accepted).await.map_err(|e| {
            Error::Unavailable(format!(
                "the command queue did not confirm the command (it is kept and sent when the queue is back): {e}"
            ))
        })?;
        if let Err(e) = self.ledger.published(&ids).await {
            // Confirmed by the broker, so the 202 stands; the relay will send a harmless second copy.
            tracing::warn!(error = %e, "could not clear the outbox after a confirmed publish");
        }
        Ok(results)
    }
}

/// How long an outbox row may wait for its own publish before the relay sends it.
pub const RELAY_AFTER: Duration = Duration::from_secs(5);

/// Publishes what the outbox still holds (publishes that failed, gateways that died) until `shutdown`.
/// Every gateway runs one; two relays sending the same row only make a duplicate, which is harmless.
pub async fn relay(
    ledger: Arc<dyn IntakeLedger>,
    queue: Arc<dyn CommandQueue>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match relay_once(ledger.as_ref(), queue.as_ref()).await {
            Ok(n) if n > 0 => {
                tracing::info!(messages = n, "relayed commands the queue had not confirmed");
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One pass of the relay: returns how many messages it published.
pub async fn relay_once(ledger: &dyn IntakeLedger, queue: &dyn CommandQueue) -> Result<usize> {
    let pending = ledger.unpublished(RELAY_AFTER, 1000).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = pending.iter().map(|m| m.message_id).collect();
    queue.enqueue(pending).await?;
    ledger.published(&ids).await?;
    Ok(ids.len())
}
