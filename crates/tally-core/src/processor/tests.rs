#![allow(clippy::unwrap_used)]

use tally_domain::event::StockAdjusted;
use tally_domain::values::{AdjustmentReason, Cents, Quantity, StockDelta};
use tally_domain::{Command, DeliveryLine, Event, ReturnLine, SaleLine};

use super::memory::{MemoryQueue, MemoryStore, Outcome, Seen, Watched};
use super::*;
use crate::model::{Principal, QueueMessage, Role};

/// Bounds a step that would otherwise hang (a commit held for a read that never comes); nothing here
/// asserts how fast anything is.
const PATIENCE: Duration = Duration::from_secs(10);

struct Harness {
    memory: Arc<MemoryStore>,
    /// What the processors under test use: the memory store, watched.
    store: Arc<Watched>,
    queue: Arc<MemoryQueue>,
}

impl Harness {
    /// The ports, with the reference data and 10 of item `a` in each of stores s1, s2 and s3 already
    /// committed (8 events, by a processor of its own that bypasses [`Watched`]).
    async fn stocked() -> Self {
        let (memory, queue) = (
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryQueue::new(5)),
        );
        let store = Arc::new(Watched::new(memory.clone(), queue.clone()));
        let h = Self {
            memory,
            store,
            queue,
        };
        let supplier = || v("acme");
        let mut seed = vec![Command::RegisterSupplier {
            supplier_id: supplier(),
            name: v("Acme"),
        }];
        let stores = ["s1", "s2", "s3"];
        seed.extend(stores.map(|s| Command::RegisterStore {
            store_id: v(s),
            name: v("Shop"),
            timezone: v("UTC"),
        }));
        seed.push(Command::RegisterItem {
            item_id: v("a"),
            name: v("Apple"),
            supplier_id: supplier(),
            unit_price_cents: Cents::new(100).unwrap(),
        });
        seed.extend(stores.map(|s| Command::RecordDelivery {
            delivery_id: v(&format!("d-{s}")),
            supplier_id: supplier(),
            store_id: v(s),
            occurred_at: at(),
            lines: vec![DeliveryLine {
                item_id: v("a"),
                quantity: Quantity::new(10).unwrap(),
                unit_cost_cents: Cents::new(50).unwrap(),
            }],
        }));
        h.send(&seed.into_iter().map(envelope).collect::<Vec<_>>())
            .await;
        let (store, queue) = (h.memory.clone(), h.queue.clone());
        let mut p = Processor::new(store, queue, Signals::default(), config(64, 64));
        let report = p.step(PATIENCE).await.unwrap();
        assert_eq!((report.processed, h.memory.head().await), (8, Ok(8)));
        h
    }

    fn processor(&self, commit_size: usize, cached_streams: usize) -> Processor {
        let config = config(commit_size, cached_streams);
        Processor::new(
            self.store.clone(),
            self.queue.clone(),
            Signals::default(),
            config,
        )
    }

    async fn send(&self, envelopes: &[CommandEnvelope]) {
        let messages = envelopes.iter().map(|e| QueueMessage {
            message_id: Uuid::now_v7(),
            partition_key: e.command.partition_key(),
            payload: e.encode(),
        });
        self.queue.enqueue(messages.collect()).await.unwrap();
    }

    /// One step, which must succeed: how many commands it received, processed, rejected, found
    /// decided already, and could not decode.
    async fn step(&self, p: &mut Processor) -> [usize; 5] {
        let step = tokio::time::timeout(PATIENCE, p.step(Duration::ZERO)).await;
        let r = step.expect("the step hung").expect("the step failed");
        [r.received, r.processed, r.rejected, r.duplicates, r.poison]
    }

    fn outcomes(&self, envelopes: &[CommandEnvelope]) -> Vec<Option<Outcome>> {
        let ids = envelopes.iter().map(|e| e.command_id);
        ids.map(|id| self.memory.outcome(id)).collect()
    }

    /// How many events each command appended, as the log has them.
    fn events(&self, envelopes: &[CommandEnvelope]) -> Vec<usize> {
        let ids = envelopes.iter().map(|e| e.command_id);
        ids.map(|id| self.memory.events_of(id)).collect()
    }

    /// Item `a` on hand in a store, folded from the store's stream as the log has it.
    async fn on_hand(&self, store: &str) -> i64 {
        let mut state = State::default();
        let id = stream(&format!("store-{store}"));
        for e in self.memory.read_stream(&id).await.unwrap() {
            state.apply_to(&e.stream_id, e.version, &e.decode().unwrap());
        }
        state.store(&v(store)).unwrap().on_hand(&v("a"))
    }

    /// Whether a stream was read from the store (after the seeding).
    fn was_read(&self, s: &str) -> bool {
        let read = |t: &Seen| matches!(t, Seen::Read(r) if r.contains(&stream(s)));
        self.store.trace().iter().any(read)
    }

    async fn all_acked(&self) -> bool {
        let depth = self.queue.depth().await.unwrap();
        depth == 0 && self.queue.dead_letters().await.unwrap().is_empty()
    }
}

fn config(commit_size: usize, cached_streams: usize) -> ProcessorConfig {
    ProcessorConfig {
        batch_size: 64,
        commit_size,
        cached_streams,
        retry_after: Duration::ZERO,
        ..ProcessorConfig::default()
    }
}

fn v<T: TryFrom<String, Error: std::fmt::Debug>>(raw: &str) -> T {
    T::try_from(raw.to_owned()).unwrap()
}

fn stream(raw: &str) -> StreamId {
    StreamId::from_stored(raw)
}

fn at() -> Timestamp {
    "2026-11-02T15:00:00Z".parse().unwrap()
}

fn envelope(command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: Uuid::now_v7(),
        received_at: at(),
        principal: Principal {
            key_id: "test".into(),
            role: Role::Admin,
            scope: None,
        },
        correlation_id: None,
        command,
    }
}

/// A sale of `quantity` of item `a`.
fn sell(sale: &str, store: &str, quantity: i64) -> CommandEnvelope {
    envelope(Command::RecordSale {
        sale_id: v(sale),
        store_id: v(store),
        occurred_at: at(),
        lines: vec![SaleLine {
            item_id: v("a"),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price_cents: Cents::new(100).unwrap(),
            discount_cents: Cents::ZERO,
        }],
        till_id: None,
    })
}

/// A return to s1 of `quantity` of item `a`.
fn give_back(ret: &str, sale: &str, quantity: i64) -> CommandEnvelope {
    envelope(Command::RecordReturn {
        return_id: v(ret),
        sale_id: v(sale),
        store_id: v("s1"),
        occurred_at: at(),
        lines: vec![ReturnLine {
            item_id: v("a"),
            quantity: Quantity::new(quantity).unwrap(),
        }],
    })
}

fn void(sale: &str) -> CommandEnvelope {
    envelope(Command::VoidSale {
        sale_id: v(sale),
        reason: v("rung up twice"),
        occurred_at: at(),
        only_store: None,
    })
}

/// Another processor's adjustment of item `a` in a store.
fn adjusted(id: &str, store: &str, delta: i64) -> Event {
    Event::StockAdjusted(StockAdjusted {
        adjustment_id: v(id),
        store_id: v(store),
        item_id: v("a"),
        delta: StockDelta::new(delta).unwrap(),
        reason: AdjustmentReason::CountCorrection,
        business_date: jiff::civil::date(2026, 11, 2),
    })
}

fn ids(envelopes: &[CommandEnvelope]) -> Vec<Uuid> {
    envelopes.iter().map(|e| e.command_id).collect()
}

fn conflict(stream: &str) -> Result<Vec<Uuid>, Error> {
    Err(Error::Conflict {
        stream: stream.to_owned(),
    })
}

const fn done(position: u64) -> Option<Outcome> {
    Some(Outcome::Processed { position })
}

const fn refused(code: RejectionCode) -> Option<Outcome> {
    Some(Outcome::Rejected(code))
}

#[tokio::test]
async fn a_step_commits_in_pipelined_chunks_and_acks_each_once_committed() {
    let h = Harness::stocked().await;
    let mut p = h.processor(2, CACHED_STREAMS);
    // Chunk k+1 names a store that chunk k did not: its commit cannot end before that store was read
    // for chunk k+1, which only a processor deciding k+1 while k commits gets to.
    h.store.hold(0, stream("store-s2"));
    h.store.hold(1, stream("store-s3"));
    let sent = [
        sell("x1", "s1", 3),
        sell("x2", "s1", 9), // 7 left after x1, decided in the same chunk
        sell("x3", "s2", 4),
        sell("x4", "s2", 6),
        sell("x5", "s3", 10),
        sell("x6", "s3", 1), // none left after x5
    ];
    h.send(&sent).await;
    let seeded = h.queue.acked();

    assert_eq!(h.step(&mut p).await, [6, 4, 2, 0, 0]);
    let chunks: Vec<_> = sent.chunks(2).map(|c| Ok(ids(c))).collect();
    assert_eq!(h.store.results(), chunks, "one commit per two commands");
    let insufficient = refused(RejectionCode::InsufficientStock);
    assert_eq!(
        h.outcomes(&sent),
        [
            done(9),
            insufficient.clone(),
            done(10),
            done(11),
            done(12),
            insufficient
        ]
    );
    assert_eq!(h.events(&sent), [1, 0, 1, 1, 1, 0]);
    assert_eq!((h.on_hand("s1").await, h.on_hand("s2").await), (7, 0));
    assert_eq!(h.on_hand("s3").await, 0);

    let trace = h.store.trace();
    let at = |s: &Seen| trace.iter().position(|t| t == s);
    let read = |s: &str| at(&Seen::Read(vec![stream(s)]));
    for commit in 0..3 {
        // Chunk k is acked once its commit ended, and not before: with 2 commands a chunk, 2k
        // messages (after the seed's) are acked all through commit k, 2k + 2 when k + 1 starts.
        let acked = seeded + 2 * commit;
        let started = at(&Seen::CommitStarted { commit, acked });
        let ended = at(&Seen::CommitEnded { commit, acked });
        assert!(started.is_some() && started < ended, "{commit}: {trace:?}");
        if commit < 2 {
            let next = format!("store-s{}", commit + 2);
            let read = read(&next);
            assert!(
                read.is_some() && read < ended,
                "{next} read late: {trace:?}"
            );
            let then = at(&Seen::CommitStarted {
                commit: commit + 1,
                acked: acked + 2,
            });
            assert!(ended < then, "{commit}: {trace:?}");
        }
    }
    assert_eq!(h.queue.acked(), seeded + 6);
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn a_conflict_reloads_the_stream_and_decides_the_rest_of_the_batch_again() {
    let h = Harness::stocked().await;
    let mut p = h.processor(2, CACHED_STREAMS);
    // Another processor takes 3 of s1's 10 just before the first chunk commits; the second chunk was
    // decided on top of the first meanwhile, so both are decided again.
    h.store.another_writer_first(0, adjusted("other", "s1", -3));
    let sent = [
        sell("x1", "s1", 3),
        sell("x2", "s1", 2),
        sell("x3", "s1", 4), // 5 left without the other writer, 2 with it
        sell("x4", "s1", 1),
    ];
    h.send(&sent).await;

    assert_eq!(h.step(&mut p).await, [4, 3, 1, 0, 0]);
    assert_eq!(
        h.store.results(),
        [
            conflict("store-s1"),
            Ok(ids(&sent[..2])),
            Ok(ids(&sent[2..]))
        ]
    );
    let insufficient = refused(RejectionCode::InsufficientStock);
    assert_eq!(
        h.outcomes(&sent),
        [done(10), done(11), insufficient, done(12)]
    );
    assert_eq!(h.events(&sent), [1, 1, 0, 1], "nothing lost or doubled");
    assert_eq!(h.memory.head().await, Ok(12));
    assert_eq!(h.on_hand("s1").await, 1);
    let cached = p.state().store(&v("s1")).unwrap().on_hand(&v("a"));
    assert_eq!(cached, 1, "the cache agrees with the log");
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn a_rejection_decided_on_stale_state_conflicts_and_is_decided_again() {
    let h = Harness::stocked().await;
    let mut p = h.processor(64, CACHED_STREAMS);
    let first = [sell("x1", "s1", 10)];
    h.send(&first).await;
    assert_eq!(h.step(&mut p).await, [1, 1, 0, 0, 0]);
    // s1 is cached with nothing on hand. Another processor adds 5 before the next commit: the
    // rejection appends nothing, so only the version it read store-s1 at can catch it.
    h.store.another_writer_first(1, adjusted("found", "s1", 5));
    let sent = [sell("x2", "s1", 4)];
    h.send(&sent).await;

    assert_eq!(h.step(&mut p).await, [1, 1, 0, 0, 0]);
    let results = h.store.results();
    assert_eq!(results[1..], [conflict("store-s1"), Ok(ids(&sent))]);
    assert_eq!(h.outcomes(&sent), [done(11)]);
    assert_eq!(h.on_hand("s1").await, 1);
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn repeated_conflicts_on_a_later_chunk_leave_the_committed_one_alone() {
    let h = Harness::stocked().await;
    let mut p = h.processor(2, CACHED_STREAMS);
    // The second chunk meets another writer's adjustment of s2 twice: once pipelined, once again
    // on the retry after reloading.
    h.store
        .another_writer_first(1, adjusted("other-1", "s2", -2));
    h.store
        .another_writer_first(2, adjusted("other-2", "s2", -2));
    let sent = [
        sell("x1", "s1", 5),
        sell("x2", "s1", 5),
        sell("x3", "s2", 4),
        sell("x4", "s2", 3), // 6 left of s2's 10 after the other writer, 2 after x3
    ];
    h.send(&sent).await;

    assert_eq!(h.step(&mut p).await, [4, 3, 1, 0, 0]);
    let (first, second) = (Ok(ids(&sent[..2])), Ok(ids(&sent[2..])));
    let expected = [first, conflict("store-s2"), conflict("store-s2"), second];
    assert_eq!(h.store.results(), expected);
    let insufficient = refused(RejectionCode::InsufficientStock);
    assert_eq!(
        h.outcomes(&sent),
        [done(9), done(10), done(13), insufficient]
    );
    assert_eq!(h.events(&sent), [1, 1, 1, 0]);
    assert_eq!((h.on_hand("s1").await, h.on_hand("s2").await), (0, 2));
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn evicted_streams_are_read_again_when_named() {
    let h = Harness::stocked().await;
    let mut p = h.processor(64, 4);
    let sales: Vec<_> = (1..=8).map(|n| sell(&format!("x{n}"), "s1", 1)).collect();
    h.send(&sales).await;
    assert_eq!(h.step(&mut p).await, [8, 8, 0, 0, 0]);
    // Eight sales are more than the four streams the cache holds: the oldest are forgotten.
    assert!(p.evictable.len() <= 4, "{:?}", p.evictable);
    for n in 1..=3 {
        let forgotten = stream(&format!("sale-x{n}"));
        assert!(!p.loaded.contains(&forgotten) && p.state().sale(&v(&format!("x{n}"))).is_none());
    }
    assert!(p.loaded.contains(&stream("sale-x8")) && p.loaded.contains(&stream("store-s1")));

    let sent = [
        void("x1"),
        give_back("r1", "x2", 1),
        sell("x3", "s1", 1), // the id is taken
        void("x2"),          // it has a return now
        give_back("r2", "x1", 1),
    ];
    h.send(&sent).await;
    assert_eq!(h.step(&mut p).await, [5, 2, 3, 0, 0]);
    assert_eq!(
        h.outcomes(&sent),
        [
            done(17),
            done(18),
            refused(RejectionCode::DuplicateId),
            refused(RejectionCode::SaleHasReturns),
            refused(RejectionCode::SaleVoided),
        ]
    );
    for s in ["sale-x1", "sale-x2", "sale-x3"] {
        assert!(h.was_read(s), "{s} was not read again");
    }
    assert!(
        h.store.results().iter().all(Result::is_ok),
        "reloaded right the first time"
    );
    let voided = h.memory.read_stream(&stream("sale-x1")).await.unwrap();
    assert_eq!(voided.len(), 2, "recorded and voided");
    assert_eq!(h.on_hand("s1").await, 10 - 8 + 1 + 1);
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn evicting_what_a_chunk_in_flight_touched_never_yields_a_wrong_decision() {
    let h = Harness::stocked().await;
    // One command per commit and a cache of one stream: a chunk's streams are forgotten when the
    // chunk before it lands, while it is itself still to commit, and the next chunk reads them back
    // from a store that may not have them yet.
    let mut p = h.processor(1, 1);
    let sent = [
        sell("x1", "s1", 2),
        give_back("r1", "x1", 1),
        give_back("r2", "x1", 1),
        give_back("r3", "x1", 1), // both units are back already
        void("x1"),               // it has returns
    ];
    h.send(&sent).await;

    assert_eq!(h.step(&mut p).await, [5, 3, 2, 0, 0]);
    let outcomes = h.outcomes(&sent);
    assert!(
        outcomes[..3]
            .iter()
            .all(|o| matches!(o, Some(Outcome::Processed { .. })))
    );
    let expected = [
        refused(RejectionCode::ReturnExceedsSale),
        refused(RejectionCode::SaleHasReturns),
    ];
    assert_eq!(outcomes[3..], expected);
    assert_eq!(h.events(&sent), [1, 1, 1, 0, 0]);
    let sale = h.memory.read_stream(&stream("sale-x1")).await.unwrap();
    assert_eq!(sale.len(), 3, "recorded and returned twice");
    assert_eq!((h.memory.head().await, h.on_hand("s1").await), (Ok(11), 10));
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn a_redelivered_command_with_an_outcome_is_acked_without_effect() {
    let h = Harness::stocked().await;
    let mut p = h.processor(64, CACHED_STREAMS);
    let sent = [sell("x1", "s1", 3), sell("x2", "s1", 4)];
    h.send(&sent).await;
    // The batch commits, then its ack fails: the step hands the messages back for redelivery.
    h.queue.fail_acks(1);
    let failed = p.step(Duration::ZERO).await;
    assert!(matches!(failed, Err(Error::Unavailable(_))), "{failed:?}");
    assert_eq!(h.outcomes(&sent), [done(9), done(10)]);

    // Whoever gets them again (here a processor with nothing cached) finds them decided.
    let mut other = h.processor(64, CACHED_STREAMS);
    assert_eq!(h.step(&mut other).await, [2, 0, 0, 2, 0]);
    assert_eq!(h.store.results(), [Ok(ids(&sent))], "no second commit");
    assert_eq!(h.outcomes(&sent), [done(9), done(10)]);
    assert_eq!(h.events(&sent), [1, 1]);
    assert_eq!((h.memory.head().await, h.on_hand("s1").await), (Ok(10), 3));
    assert!(h.all_acked().await);
}

#[tokio::test]
async fn a_resubmitted_command_meets_already_decided_and_the_rest_still_commits() {
    let h = Harness::stocked().await;
    let mut p = h.processor(64, CACHED_STREAMS);
    let first = sell("x1", "s1", 3);
    h.send(std::slice::from_ref(&first)).await;
    assert_eq!(h.step(&mut p).await, [1, 1, 0, 0, 0]);

    // Sent again as a new message (no redelivery, so not looked up first) and, in the same batch,
    // twice more beside a new command: the cache would reject it as a duplicate id, but it already
    // has its outcome, which the commit refuses to write over.
    let sent = [first.clone(), sell("x2", "s1", 2), first.clone()];
    h.send(&sent).await;
    assert_eq!(h.step(&mut p).await, [3, 1, 0, 2, 0]);
    let already = Err(Error::AlreadyDecided {
        command_id: first.command_id,
    });
    let results = h.store.results();
    assert_eq!(results[1..], [already, Ok(vec![sent[1].command_id])]);
    assert_eq!(
        h.outcomes(&sent[..2]),
        [done(9), done(10)],
        "x1 stays processed"
    );
    assert_eq!(h.events(&sent[..2]), [1, 1]);
    assert_eq!(h.on_hand("s1").await, 5);
    assert!(h.all_acked().await);
}
