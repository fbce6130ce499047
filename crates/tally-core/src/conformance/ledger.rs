//! [`IntakeLedger`](crate::IntakeLedger) checks, and the intake checks again through
//! [`BrokerIntake`](crate::intake::BrokerIntake): the backend's ledger in front of a queue (here the
//! backend's own, standing in for a broker). A queue that refuses stands in for a broker that is down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::support::{consume, envelope, submission};
use crate::Backend;
use crate::intake::relay_once;
use crate::model::{CommandEnvelope, CommandStatus, DeadLetter, Delivery, QueueMessage};
use crate::ports::{CommandQueue, Error, Result, Submitted};

/// The backend with [`BrokerIntake`](crate::intake::BrokerIntake) in front of its own queue.
fn brokered(b: &Backend) -> Backend {
    b.clone().with_broker(b.queue.clone())
}

pub async fn broker_intake_accepts_and_records_the_command(b: &Backend) {
    super::intake::accepts_and_records_the_command(&brokered(b)).await;
    // The outbox row goes once the publish is confirmed (just after the answer).
    let deadline = tokio::time::Instant::now() + super::support::PATIENCE;
    while b.ledger.unpublished(Duration::ZERO, 10).await != Ok(Vec::new()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a confirmed publish leaves no outbox row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn broker_intake_replays_the_same_key_and_request(b: &Backend) {
    super::intake::replays_the_same_key_and_request(&brokered(b)).await;
}

pub async fn broker_intake_refuses_a_reused_key(b: &Backend) {
    super::intake::refuses_a_reused_key(&brokered(b)).await;
}

pub async fn broker_intake_scopes_idempotency_keys_per_api_key(b: &Backend) {
    super::intake::scopes_idempotency_keys_per_api_key(&brokered(b)).await;
}

pub async fn broker_intake_submit_many_returns_each_result(b: &Backend) {
    super::intake::submit_many_returns_each_result(&brokered(b)).await;
}

pub async fn records_without_queueing(b: &Backend) {
    let env = envelope("key-a", "sup-1");
    let got = b.ledger.record(vec![submission(env.clone(), None)]).await;
    assert_eq!(
        got,
        Ok(vec![Submitted::Accepted {
            command_id: env.command_id
        }])
    );
    let record = b.commands.status(env.command_id).await.expect("status");
    assert_eq!(record.map(|r| r.status), Some(CommandStatus::Accepted));
    assert_eq!(b.queue.depth().await, Ok(0), "the ledger enqueues nothing");
    let pending = b
        .ledger
        .unpublished(Duration::ZERO, 10)
        .await
        .expect("unpublished");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, env.command_id);
    assert_eq!(pending[0].partition_key, env.command.partition_key());
    assert_eq!(
        CommandEnvelope::decode(&pending[0].payload).ok(),
        Some(env.clone())
    );
    assert_eq!(
        b.ledger.unpublished(Duration::from_secs(3600), 10).await,
        Ok(Vec::new()),
        "not older than an hour"
    );
    b.ledger
        .published(&[env.command_id])
        .await
        .expect("published");
    assert_eq!(
        b.ledger.unpublished(Duration::ZERO, 10).await,
        Ok(Vec::new())
    );
}

/// A queue that is down: every enqueue fails; nothing else is called.
struct Down;

#[async_trait]
impl CommandQueue for Down {
    async fn enqueue(&self, _: Vec<QueueMessage>) -> Result<()> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Delivery>> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn ack(&self, _: &[u64]) -> Result<()> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn nack(&self, _: u64, _: &str, _: Duration) -> Result<()> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn depth(&self) -> Result<u64> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Err(Error::Unavailable("broker down".into()))
    }
    async fn replay_dead_letter(&self, _: Uuid) -> Result<bool> {
        Err(Error::Unavailable("broker down".into()))
    }
}

pub async fn keeps_what_the_broker_refused_and_publishes_it_on_retry(b: &Backend) {
    let down = b.clone().with_broker(Arc::new(Down));
    let env = envelope("key-a", "sup-1");
    let got = down
        .intake
        .submit(submission(env.clone(), Some(("idem-9", 1))))
        .await;
    assert!(
        matches!(got, Err(Error::Unavailable(_))),
        "no 202 the broker did not confirm: {got:?}"
    );
    // The command was recorded; it is kept for the relay, not lost.
    let pending = b
        .ledger
        .unpublished(Duration::ZERO, 10)
        .await
        .expect("unpublished");
    assert_eq!(
        pending.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [env.command_id]
    );
    // The broker is back and the client retries with the same key: the same command, and its 202
    // now means the broker has it (published on the spot, not left for the relay).
    let retry = envelope("key-a", "sup-1");
    let again = brokered(b)
        .intake
        .submit(submission(retry, Some(("idem-9", 1))))
        .await;
    assert_eq!(
        again,
        Ok(Submitted::Replayed {
            command_id: env.command_id
        })
    );
    let got = consume(b.queue.as_ref(), 1).await;
    assert_eq!(got[0].message_id, env.command_id);
    let deadline = tokio::time::Instant::now() + super::support::PATIENCE;
    while b.ledger.unpublished(Duration::ZERO, 10).await != Ok(Vec::new()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox row goes once published"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.ledger.outbox(&[env.command_id]).await, Ok(Vec::new()));
}

pub async fn the_relay_sends_what_the_outbox_holds(b: &Backend) {
    let down = b.clone().with_broker(Arc::new(Down));
    let env = envelope("key-a", "sup-2");
    let got = down.intake.submit(submission(env.clone(), None)).await;
    assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
    assert_eq!(
        b.ledger
            .outbox(&[env.command_id, Uuid::now_v7()])
            .await
            .map(|m| m.len()),
        Ok(1)
    );
    // Not yet RELAY_AFTER old: the relay leaves it to the gateway that owns it.
    assert_eq!(relay_once(b.ledger.as_ref(), b.queue.as_ref()).await, Ok(0));
    let pending = b
        .ledger
        .unpublished(Duration::ZERO, 10)
        .await
        .expect("unpublished");
    b.queue.enqueue(pending).await.expect("enqueue");
    b.ledger
        .published(&[env.command_id])
        .await
        .expect("published");
    let got = consume(b.queue.as_ref(), 1).await;
    assert_eq!(got[0].message_id, env.command_id);
}
