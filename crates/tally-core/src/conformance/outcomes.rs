//! [`EventStore::commit`](crate::EventStore::commit) as the keeper of outcomes: a batch goes in whole
//! or not at all, and its outcomes become the [`CommandLog`](crate::CommandLog) statuses of commands
//! the [`Intake`](crate::Intake) accepted.

use tally_domain::{Rejection, RejectionCode};
use uuid::Uuid;

use super::support::{accept, as_accepted, batch, event, processed, sorted, stream};
use crate::model::{CommandStatus, CommitBatch, Decision, OutcomeRecord};
use crate::{Backend, Error};

pub async fn conflict_writes_nothing(b: &Backend) {
    let first = b
        .events
        .commit(batch(vec![event("store-s", 1, "one")]))
        .await;
    let head = *first.expect("commit").last().expect("a position");
    let command = accept(b, 1).await[0];
    let stale = CommitBatch {
        events: vec![event("fresh", 1, "fresh"), event("store-s", 1, "stale")],
        outcomes: vec![processed(command, 1)],
        reads: Vec::new(),
    };
    let got = b.events.commit(stale.clone()).await;
    assert_eq!(
        got,
        Err(Error::Conflict {
            stream: "store-s".to_owned()
        })
    );

    assert_eq!(b.events.head().await, Ok(head));
    assert_eq!(b.events.read_all(0, 100).await.expect("read_all").len(), 1);
    assert_eq!(b.events.read_stream(&stream("fresh")).await, Ok(Vec::new()));
    assert_eq!(b.events.decided(&[command]).await, Ok(Vec::new()));
    let status = b
        .commands
        .status(command)
        .await
        .expect("status")
        .expect("accepted record");
    assert_eq!(status.status, CommandStatus::Accepted);

    // Nothing of the failed batch lingers: retried at the right version, all of it goes in.
    let mut retry = stale;
    retry.events[1].streams[0].1 = 2;
    b.events.commit(retry).await.expect("retry commits");
    assert_eq!(b.events.decided(&[command]).await, Ok(vec![command]));
}

pub async fn already_decided_writes_nothing(b: &Backend) {
    let ids = accept(b, 2).await;
    let (done, open) = (ids[0], ids[1]);
    let rejection = Rejection {
        code: RejectionCode::UnknownStore,
        message: "no store s9".to_owned(),
    };
    let reject = CommitBatch {
        events: Vec::new(),
        outcomes: vec![OutcomeRecord {
            command_id: done,
            accepted: Some(as_accepted()),
            decision: Decision::Rejected(rejection),
        }],
        reads: Vec::new(),
    };
    b.events.commit(reject).await.expect("commit outcome");
    let head = b.events.head().await.expect("head");

    let again = CommitBatch {
        events: vec![event("fresh", 1, "fresh")],
        outcomes: vec![processed(open, 0), processed(done, 0)],
        reads: Vec::new(),
    };
    let got = b.events.commit(again).await;
    assert_eq!(got, Err(Error::AlreadyDecided { command_id: done }));
    assert_eq!(b.events.head().await, Ok(head));
    assert_eq!(b.events.read_stream(&stream("fresh")).await, Ok(Vec::new()));
    assert_eq!(b.events.decided(&[done, open]).await, Ok(vec![done]));
    let open_status = b
        .commands
        .status(open)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(open_status.status, CommandStatus::Accepted);
    let done_status = b
        .commands
        .status(done)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(
        done_status.status,
        CommandStatus::Rejected {
            code: "unknown_store".to_owned(),
            message: "no store s9".to_owned()
        }
    );
}

pub async fn records_outcomes_as_statuses(b: &Backend) {
    // Two events first, so an outcome's position cannot pass for its index in the batch.
    let warmup = vec![event("w", 1, "w1"), event("w", 2, "w2")];
    b.events.commit(batch(warmup)).await.expect("commit");
    let ids = accept(b, 3).await;
    let before = b
        .commands
        .status(ids[0])
        .await
        .expect("status")
        .expect("record");
    let outcomes = CommitBatch {
        events: vec![
            event("x", 1, "x1"),
            event("x", 2, "x2"),
            event("y", 1, "y1"),
        ],
        outcomes: vec![
            processed(ids[0], 1),
            processed(ids[1], 2),
            OutcomeRecord {
                command_id: ids[2],
                accepted: Some(as_accepted()),
                decision: Decision::Rejected(Rejection {
                    code: RejectionCode::InsufficientStock,
                    message: "only 2 of item i1 in store s1".to_owned(),
                }),
            },
        ],
        reads: Vec::new(),
    };
    let p = b.events.commit(outcomes).await.expect("commit");

    let status = |id| async move {
        b.commands
            .status(id)
            .await
            .expect("status")
            .expect("record")
    };
    let first = status(ids[0]).await;
    assert_eq!(first.status, CommandStatus::Processed { position: p[1] });
    assert_eq!(
        (first.kind.as_str(), &first.principal),
        (before.kind.as_str(), &before.principal)
    );
    assert_eq!(first.command_id, ids[0]);
    assert_eq!(
        status(ids[1]).await.status,
        CommandStatus::Processed { position: p[2] }
    );
    assert_eq!(
        status(ids[2]).await.status,
        CommandStatus::Rejected {
            code: "insufficient_stock".to_owned(),
            message: "only 2 of item i1 in store s1".to_owned(),
        }
    );
    assert_eq!(b.commands.status(Uuid::now_v7()).await, Ok(None));
}

pub async fn reports_decided_commands(b: &Backend) {
    let ids = accept(b, 3).await;
    let outcomes = CommitBatch {
        events: vec![event("x", 1, "x1")],
        outcomes: vec![
            processed(ids[0], 0),
            OutcomeRecord {
                command_id: ids[2],
                accepted: Some(as_accepted()),
                decision: Decision::Rejected(Rejection {
                    code: RejectionCode::DuplicateId,
                    message: "sale s1 exists".to_owned(),
                }),
            },
        ],
        reads: Vec::new(),
    };
    b.events.commit(outcomes).await.expect("commit");
    let asked = [ids[0], ids[1], ids[2], Uuid::now_v7()];
    let got = b.events.decided(&asked).await.expect("decided");
    assert_eq!(sorted(got), sorted(vec![ids[0], ids[2]]));
    assert_eq!(b.events.decided(&[]).await, Ok(Vec::new()));
}

/// A rejection for `command_id`: a decision that appends nothing, which only `reads` can guard.
fn rejected(command_id: Uuid) -> OutcomeRecord {
    OutcomeRecord {
        command_id,
        accepted: Some(as_accepted()),
        decision: Decision::Rejected(Rejection {
            code: RejectionCode::InsufficientStock,
            message: "only 5 of item i1 in store s".to_owned(),
        }),
    }
}

/// Checks that a failed commit left the log at `head`, the `fresh` stream absent and `commands` open.
async fn assert_nothing_written(b: &Backend, head: u64, commands: &[Uuid]) {
    assert_eq!(b.events.head().await, Ok(head));
    assert_eq!(b.events.read_stream(&stream("fresh")).await, Ok(Vec::new()));
    assert_eq!(b.events.decided(commands).await, Ok(Vec::new()));
    for id in commands {
        let status = b
            .commands
            .status(*id)
            .await
            .expect("status")
            .expect("accepted record");
        assert_eq!(status.status, CommandStatus::Accepted);
    }
}

pub async fn stale_read_writes_nothing(b: &Backend) {
    let setup = vec![
        event("store-s", 1, "d1"),
        event("store-s", 2, "d2"),
        event("item-i", 1, "i"),
    ];
    let head = *b
        .events
        .commit(batch(setup))
        .await
        .expect("commit")
        .last()
        .expect("a position");
    let ids = accept(b, 2).await;

    // A rejection decided on store-s as it was at version 1: it appends nothing, so only the read
    // version can tell that it is stale. The conflict names the stale stream, not the current one.
    let stale_rejection = CommitBatch {
        events: Vec::new(),
        outcomes: vec![rejected(ids[0])],
        reads: vec![(stream("item-i"), 1), (stream("store-s"), 1)],
    };
    let got = b.events.commit(stale_rejection).await;
    assert_eq!(
        got,
        Err(Error::Conflict {
            stream: "store-s".to_owned()
        })
    );
    assert_nothing_written(b, head, &ids).await;

    // The same with events to append to other streams: none of them is written either.
    let stale = CommitBatch {
        events: vec![event("fresh", 1, "fresh")],
        outcomes: vec![processed(ids[1], 0), rejected(ids[0])],
        reads: vec![(stream("store-s"), 1)],
    };
    let got = b.events.commit(stale.clone()).await;
    assert_eq!(
        got,
        Err(Error::Conflict {
            stream: "store-s".to_owned()
        })
    );
    assert_nothing_written(b, head, &ids).await;

    // Decided again on the current state, the batch goes in whole.
    let mut retry = stale;
    retry.reads[0].1 = 2;
    b.events.commit(retry).await.expect("current reads commit");
    assert_eq!(
        sorted(b.events.decided(&ids).await.expect("decided")),
        sorted(ids)
    );
    assert_eq!(
        b.events
            .read_stream(&stream("fresh"))
            .await
            .expect("read")
            .len(),
        1
    );
}

pub async fn read_of_a_stream_created_since_conflicts(b: &Backend) {
    let ids = accept(b, 1).await;
    // Decided while item-i did not exist (version 0); then someone registered it.
    let head = b
        .events
        .commit(batch(vec![event("item-i", 1, "i")]))
        .await
        .expect("commit")[0];
    let stale = CommitBatch {
        events: vec![event("fresh", 1, "fresh")],
        outcomes: vec![processed(ids[0], 0)],
        reads: vec![(stream("absent"), 0), (stream("item-i"), 0)],
    };
    let got = b.events.commit(stale).await;
    assert_eq!(
        got,
        Err(Error::Conflict {
            stream: "item-i".to_owned()
        })
    );
    assert_nothing_written(b, head, &ids).await;
}

pub async fn current_reads_commit(b: &Backend) {
    let setup = vec![
        event("store-s", 1, "d1"),
        event("store-s", 2, "d2"),
        event("item-i", 1, "i"),
    ];
    b.events.commit(batch(setup)).await.expect("commit");
    let ids = accept(b, 2).await;

    // Reads at the current versions, and 0 for a stream that still does not exist.
    let current = CommitBatch {
        events: vec![event("fresh", 1, "fresh")],
        outcomes: vec![processed(ids[0], 0)],
        reads: vec![
            (stream("item-i"), 1),
            (stream("never-written"), 0),
            (stream("store-s"), 2),
        ],
    };
    let positions = b
        .events
        .commit(current)
        .await
        .expect("current reads commit");
    assert_eq!(b.events.head().await, Ok(positions[0]));
    assert_eq!(b.events.decided(&ids[..1]).await, Ok(vec![ids[0]]));

    // A batch of rejections only, guarded by reads alone, commits too.
    let rejection = CommitBatch {
        events: Vec::new(),
        outcomes: vec![rejected(ids[1])],
        reads: vec![(stream("fresh"), 1), (stream("store-s"), 2)],
    };
    b.events
        .commit(rejection)
        .await
        .expect("current reads commit");
    let status = b
        .commands
        .status(ids[1])
        .await
        .expect("status")
        .expect("record");
    assert_eq!(
        status.status,
        CommandStatus::Rejected {
            code: "insufficient_stock".to_owned(),
            message: "only 5 of item i1 in store s".to_owned(),
        }
    );
    // The reads were only checked: nothing was appended to the streams they name.
    assert_eq!(
        b.events.read_stream(&stream("never-written")).await,
        Ok(Vec::new())
    );
    assert_eq!(
        b.events
            .read_stream(&stream("store-s"))
            .await
            .expect("read")
            .len(),
        2
    );
}
