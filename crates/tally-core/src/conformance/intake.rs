//! [`Intake`](crate::Intake) checks: what `submit` promises about the queue, the command log and
//! idempotency keys (scoped per API key).

use uuid::Uuid;

use super::support::{consume, envelope, submission};
use crate::Backend;
use crate::model::{CommandEnvelope, CommandStatus};
use crate::ports::Submitted;

fn accepted(env: &CommandEnvelope) -> Submitted {
    Submitted::Accepted {
        command_id: env.command_id,
    }
}

fn replayed(env: &CommandEnvelope) -> Submitted {
    Submitted::Replayed {
        command_id: env.command_id,
    }
}

pub async fn accepts_and_records_the_command(b: &Backend) {
    let env = envelope("key-a", "sup-1");
    let got = b.intake.submit(submission(env.clone(), None)).await;
    assert_eq!(got, Ok(accepted(&env)));

    let record = b.commands.status(env.command_id).await.expect("status");
    let record = record.expect("an accepted command has a record");
    assert_eq!(record.command_id, env.command_id);
    assert_eq!(record.kind, "register_supplier");
    assert_eq!(record.principal, env.principal);
    assert_eq!(record.status, CommandStatus::Accepted);
    assert_eq!(b.commands.status(Uuid::now_v7()).await, Ok(None));

    assert_eq!(b.queue.depth().await, Ok(1));
    let got = consume(b.queue.as_ref(), 1).await;
    assert_eq!(got[0].partition_key, env.command.partition_key());
    let decoded = CommandEnvelope::decode(&got[0].payload).expect("payload is the envelope");
    assert_eq!(decoded, env);
}

pub async fn replays_the_same_key_and_request(b: &Backend) {
    let first = envelope("key-a", "sup-1");
    let retry = envelope("key-a", "sup-1");
    let got = b
        .intake
        .submit(submission(first.clone(), Some(("idem-1", 7))))
        .await;
    assert_eq!(got, Ok(accepted(&first)));
    let got = b
        .intake
        .submit(submission(retry.clone(), Some(("idem-1", 7))))
        .await;
    assert_eq!(got, Ok(replayed(&first)));

    assert_eq!(b.queue.depth().await, Ok(1), "a replay enqueues nothing");
    assert_eq!(b.commands.status(retry.command_id).await, Ok(None));
}

pub async fn refuses_a_reused_key(b: &Backend) {
    let first = envelope("key-a", "sup-1");
    let other = envelope("key-a", "sup-2");
    let got = b
        .intake
        .submit(submission(first.clone(), Some(("idem-1", 7))))
        .await;
    assert_eq!(got, Ok(accepted(&first)));
    let got = b
        .intake
        .submit(submission(other.clone(), Some(("idem-1", 8))))
        .await;
    assert_eq!(got, Ok(Submitted::KeyReused));

    assert_eq!(
        b.queue.depth().await,
        Ok(1),
        "a reused key enqueues nothing"
    );
    assert_eq!(b.commands.status(other.command_id).await, Ok(None));
}

pub async fn scopes_idempotency_keys_per_api_key(b: &Backend) {
    let from_a = envelope("key-a", "sup-1");
    let from_b = envelope("key-b", "sup-1");
    let got = b
        .intake
        .submit(submission(from_a.clone(), Some(("idem-1", 7))))
        .await;
    assert_eq!(got, Ok(accepted(&from_a)));
    let got = b
        .intake
        .submit(submission(from_b.clone(), Some(("idem-1", 7))))
        .await;
    assert_eq!(
        got,
        Ok(accepted(&from_b)),
        "another key's idempotency key is its own"
    );

    let b_again = submission(envelope("key-b", "sup-9"), Some(("idem-1", 9)));
    assert_eq!(b.intake.submit(b_again).await, Ok(Submitted::KeyReused));
    let a_again = submission(envelope("key-a", "sup-1"), Some(("idem-1", 7)));
    assert_eq!(b.intake.submit(a_again).await, Ok(replayed(&from_a)));
    assert_eq!(b.queue.depth().await, Ok(2));
}

pub async fn submit_many_returns_each_result(b: &Backend) {
    let earlier = envelope("key-a", "sup-0");
    let got = b
        .intake
        .submit(submission(earlier.clone(), Some(("idem-1", 1))))
        .await;
    assert_eq!(got, Ok(accepted(&earlier)));

    let plain = envelope("key-a", "sup-1");
    let keyed = envelope("key-a", "sup-2");
    let replay = envelope("key-a", "sup-0");
    let reuse = envelope("key-a", "sup-3");
    let batch = vec![
        submission(plain.clone(), None),
        submission(keyed.clone(), Some(("idem-2", 2))),
        submission(replay.clone(), Some(("idem-1", 1))),
        submission(reuse.clone(), Some(("idem-1", 9))),
    ];
    let got = b.intake.submit_many(batch).await;
    let want = vec![
        accepted(&plain),
        accepted(&keyed),
        replayed(&earlier),
        Submitted::KeyReused,
    ];
    assert_eq!(got, Ok(want));

    assert_eq!(b.queue.depth().await, Ok(3));
    for env in [&plain, &keyed] {
        let record = b.commands.status(env.command_id).await.expect("status");
        assert_eq!(record.map(|r| r.status), Some(CommandStatus::Accepted));
    }
    for env in [&replay, &reuse] {
        assert_eq!(b.commands.status(env.command_id).await, Ok(None));
    }
    assert_eq!(b.intake.submit_many(Vec::new()).await, Ok(Vec::new()));
    assert_eq!(b.queue.depth().await, Ok(3));
}
