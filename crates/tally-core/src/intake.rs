//! The intake when the command queue is a broker (ActiveMQ, RabbitMQ, NATS): the database records the
//! command as accepted, with its idempotency key and an outbox row, then the broker takes the message
//! (persistent, confirmed), and only then does the gateway answer 202. When the broker cannot confirm,
//! the gateway answers 503; the outbox row stays and the [`relay`] publishes it once the broker is back,
//! so a command recorded as accepted is never lost. A message published twice (a confirm lost, a relay
//! racing a slow publish) is harmless: outcomes are keyed by command id, so the second copy is acked
//! without effect.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::model::QueueMessage;
use crate::ports::{CommandQueue, Error, Intake, IntakeLedger, Result, Submission, Submitted};

/// Group commit for intakes: concurrent `submit` calls are gathered (up to [`GROUP`] at a time,
/// whatever is waiting) and handed to `commit` together, with up to [`GROUPS_IN_FLIGHT`] groups
/// committing at once; each caller gets its own result. Used by every intake that pays a durable
/// step per call (the PostgreSQL intake, the broker intake).
pub struct Grouped {
    tx: mpsc::Sender<(Submission, oneshot::Sender<Result<Submitted>>)>,
}

/// Most submissions per group, and groups committing at once.
pub const GROUP: usize = 1024;
pub const GROUPS_IN_FLIGHT: usize = 4;

impl Grouped {
    /// Starts the grouping task on the current tokio runtime; it ends when this is dropped.
    pub fn start<F, Fut>(commit: F) -> Self
    where
        F: Fn(Vec<Submission>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Submitted>>> + Send + 'static,
    {
        let (tx, mut rx) =
            mpsc::channel::<(Submission, oneshot::Sender<Result<Submitted>>)>(GROUP * 4);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
            while let Some(first) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < GROUP {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (submissions, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let committing = commit(submissions);
                tokio::spawn(async move {
                    match committing.await {
                        Ok(results) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Submits one command as part of the next group.
    pub async fn submit(&self, submission: Submission) -> Result<Submitted> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((submission, reply))
            .await
            .map_err(|_| Error::Unavailable("the intake has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the intake dropped a submission".into()))?
    }
}

pub struct BrokerIntake {
    inner: Arc<Inner>,
    grouped: Grouped,
}

struct Inner {
    ledger: Arc<dyn IntakeLedger>,
    queue: Arc<dyn CommandQueue>,
}

impl BrokerIntake {
    /// Starts the grouping task on the current tokio runtime.
    pub fn new(ledger: Arc<dyn IntakeLedger>, queue: Arc<dyn CommandQueue>) -> Self {
        let inner = Arc::new(Inner { ledger, queue });
        let committer = inner.clone();
        let grouped = Grouped::start(move |submissions| {
            let inner = committer.clone();
            async move {
                let (results, published) = inner.submit_group(submissions).await?;
                // The outbox rows go after the answers: the broker has confirmed these already.
                tokio::spawn(async move { inner.clear_outbox(&published).await });
                Ok(results)
            }
        });
        Self { inner, grouped }
    }
}

impl Inner {
    /// Records the group, then publishes its accepted commands; returns the results and the ids
    /// whose outbox rows can go.
    async fn submit_group(
        &self,
        submissions: Vec<Submission>,
    ) -> Result<(Vec<Submitted>, Vec<Uuid>)> {
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
        let mut accepted: Vec<QueueMessage> = messages
            .into_iter()
            .zip(&results)
            .filter(
                |((id, _), r)| matches!(r, Submitted::Accepted { command_id } if command_id == id),
            )
            .map(|((_, m), _)| m)
            .collect();
        // A replayed command whose first publish was never confirmed (the client got a 503 and
        // retried) is published now: its 202 must mean the broker has it too, and before the
        // client's next command.
        let replayed: Vec<Uuid> = results
            .iter()
            .filter_map(|r| match r {
                Submitted::Replayed { command_id } => Some(*command_id),
                _ => None,
            })
            .collect();
        if !replayed.is_empty() {
            for m in self.ledger.outbox(&replayed).await? {
                if !accepted.iter().any(|a| a.message_id == m.message_id) {
                    accepted.push(m);
                }
            }
        }
        if accepted.is_empty() {
            return Ok((results, Vec::new()));
        }
        let ids: Vec<Uuid> = accepted.iter().map(|m| m.message_id).collect();
        self.queue.enqueue(accepted).await.map_err(|e| {
            Error::Unavailable(format!(
                "the command queue did not confirm the command (it is kept and sent when the queue is back): {e}"
            ))
        })?;
        Ok((results, ids))
    }

    /// After the 202s: the broker confirmed these, so their outbox rows go.
    async fn clear_outbox(&self, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.ledger.published(ids).await {
            // Confirmed by the broker, so the 202 stands; the relay will send a harmless second copy.
            tracing::warn!(error = %e, "could not clear the outbox after a confirmed publish");
        }
    }
}

#[async_trait]
impl Intake for BrokerIntake {
    async fn submit(&self, submission: Submission) -> Result<Submitted> {
        self.grouped.submit(submission).await
    }

    async fn submit_many(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        let (results, published) = self.inner.submit_group(submissions).await?;
        self.inner.clear_outbox(&published).await;
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
