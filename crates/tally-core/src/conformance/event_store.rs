//! [`EventStore`](crate::EventStore) checks: the log, its streams and its order, alone and under
//! concurrent writers. Positions are compared with what `commit` returned, never assumed to be dense:
//! PostgreSQL sequences leave gaps.

use std::sync::Arc;

use tokio::sync::Barrier;
use uuid::Uuid;

use super::support::{accept, batch, event, payload, processed, stream, ts};
use crate::model::{CommitBatch, EventPayload, NewEvent, RecordedEvent};
use crate::{Backend, Error};

/// Checks that `got` is `new` stored at `position` and read as (`stream_id`, `version`).
fn assert_stored(
    got: &RecordedEvent,
    new: &NewEvent,
    position: u64,
    stream_id: &str,
    version: u64,
) {
    let want = RecordedEvent {
        position,
        stream_id: stream(stream_id),
        version,
        event_type: new.event_type.clone(),
        schema_version: new.schema_version,
        occurred_at: new.occurred_at,
        recorded_at: new.recorded_at,
        data: new.data.clone(),
        metadata: new.metadata.clone(),
    };
    assert_eq!(got, &want);
}

async fn read_everything(b: &Backend, page: usize) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.position);
        let got = b.events.read_all(after, page).await.expect("read_all");
        assert!(got.len() <= page, "read_all returned more than its limit");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

pub async fn starts_empty(b: &Backend) {
    assert_eq!(b.events.head().await, Ok(0));
    assert_eq!(b.events.read_all(0, 100).await, Ok(Vec::new()));
    assert_eq!(
        b.events.read_stream(&stream("store-s")).await,
        Ok(Vec::new())
    );
    assert_eq!(
        b.events.read_streams(&[stream("store-s")]).await,
        Ok(Vec::new())
    );
    assert_eq!(b.events.decided(&[Uuid::now_v7()]).await, Ok(Vec::new()));
}

pub async fn appends_and_reads_in_global_order(b: &Backend) {
    let batches = vec![
        vec![event("s-a", 1, "e1"), event("s-b", 1, "e2")],
        vec![event("s-a", 2, "e3")],
        vec![event("s-c", 1, "e4"), event("s-a", 3, "e5")],
    ];
    let mut written: Vec<(u64, NewEvent)> = Vec::new();
    for events in batches {
        let positions = b
            .events
            .commit(batch(events.clone()))
            .await
            .expect("commit");
        assert_eq!(positions.len(), events.len(), "one position per event");
        written.extend(positions.into_iter().zip(events));
    }
    for pair in written.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "positions must grow strictly: {pair:?}"
        );
    }
    let last = written.last().map(|(p, _)| *p).expect("events written");
    assert_eq!(b.events.head().await, Ok(last));

    let all = b.events.read_all(0, 100).await.expect("read_all");
    assert_eq!(all.len(), written.len());
    for (got, (position, new)) in all.iter().zip(&written) {
        let (primary, version) = &new.streams[0];
        assert_stored(got, new, *position, primary.as_str(), *version);
    }
    // Paging by two finds the same events, and each page starts right after `after`.
    assert_eq!(read_everything(b, 2).await, all);
    let tail = b
        .events
        .read_all(written[1].0, 100)
        .await
        .expect("read_all");
    assert_eq!(tail, all[2..].to_vec());
    let page = b.events.read_all(written[0].0, 2).await.expect("read_all");
    assert_eq!(page, all[1..3].to_vec());
    assert_eq!(b.events.read_all(last, 100).await, Ok(Vec::new()));
    // The projector's read: the same events and pages, without streams and metadata.
    let payloads = |events: &[RecordedEvent]| -> Vec<EventPayload> {
        events.iter().cloned().map(EventPayload::from).collect()
    };
    assert_eq!(b.events.read_payloads(0, 100).await, Ok(payloads(&all)));
    assert_eq!(
        b.events.read_payloads(written[0].0, 2).await,
        Ok(payloads(&all[1..3]))
    );
    assert_eq!(b.events.read_payloads(last, 100).await, Ok(Vec::new()));

    let s_a = b
        .events
        .read_stream(&stream("s-a"))
        .await
        .expect("read_stream");
    let want: Vec<&(u64, NewEvent)> = written
        .iter()
        .filter(|(_, e)| e.streams[0].0.as_str() == "s-a")
        .collect();
    assert_eq!(s_a.len(), 3);
    for (i, (got, (position, new))) in s_a.iter().zip(want).enumerate() {
        assert_stored(got, new, *position, "s-a", i as u64 + 1);
    }
}

pub async fn round_trips_every_field(b: &Backend) {
    let mut odd = event("s-odd", 1, "odd");
    odd.event_type = "StockAdjusted".to_owned();
    odd.schema_version = 7;
    odd.occurred_at = ts("1999-12-31T23:59:59.999999Z");
    odd.recorded_at = ts("2026-01-01T00:00:00.000001Z");
    odd.data = r#"{"note":"tab\t, quote \", emoji 🧾, nul-free"}"#.to_owned();
    odd.metadata.correlation_id = None;
    odd.metadata.principal = "key-ünïcode".to_owned();
    let plain = event("s-odd", 2, "plain");
    let positions = b
        .events
        .commit(batch(vec![odd.clone(), plain.clone()]))
        .await
        .expect("commit");
    let all = b.events.read_all(0, 10).await.expect("read_all");
    assert_eq!(all.len(), 2);
    assert_stored(&all[0], &odd, positions[0], "s-odd", 1);
    assert_stored(&all[1], &plain, positions[1], "s-odd", 2);
    let by_stream = b
        .events
        .read_stream(&stream("s-odd"))
        .await
        .expect("read_stream");
    assert_eq!(by_stream, all);
}

pub async fn stores_a_multi_stream_event_once(b: &Backend) {
    let before = vec![event("store-s", 1, "d1"), event("store-s", 2, "d2")];
    b.events.commit(batch(before)).await.expect("commit");
    let mut sale = event("sale-1", 1, "sale");
    sale.streams.push((stream("store-s"), 3));
    let at = b
        .events
        .commit(batch(vec![sale.clone()]))
        .await
        .expect("commit")[0];

    let all = b.events.read_all(0, 100).await.expect("read_all");
    assert_eq!(all.len(), 3, "a multi-stream event is in the log once");
    assert_stored(&all[2], &sale, at, "sale-1", 1);
    let sale_stream = b.events.read_stream(&stream("sale-1")).await.expect("read");
    assert_eq!(sale_stream.len(), 1);
    assert_stored(&sale_stream[0], &sale, at, "sale-1", 1);
    let store = b
        .events
        .read_stream(&stream("store-s"))
        .await
        .expect("read");
    assert_eq!(store.len(), 3);
    assert_eq!(
        store.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_stored(&store[2], &sale, at, "store-s", 3);

    // The event took version 3 of the secondary stream too.
    let taken = b
        .events
        .commit(batch(vec![event("store-s", 3, "late")]))
        .await;
    assert_eq!(
        taken,
        Err(Error::Conflict {
            stream: "store-s".to_owned()
        })
    );
    b.events
        .commit(batch(vec![event("store-s", 4, "next")]))
        .await
        .expect("version 4 is free");
}

pub async fn reads_several_streams(b: &Backend) {
    let a1 = event("s-a", 1, "a1");
    let b1 = event("s-b", 1, "b1");
    let a2 = event("s-a", 2, "a2");
    let mut both = event("sale-9", 1, "both");
    both.streams.push((stream("s-b"), 2));
    let events = vec![
        a1.clone(),
        b1.clone(),
        a2.clone(),
        both.clone(),
        event("s-z", 1, "z"),
    ];
    let p = b.events.commit(batch(events)).await.expect("commit");

    let wanted = [
        stream("s-a"),
        stream("missing"),
        stream("s-b"),
        stream("sale-9"),
    ];
    let got = b.events.read_streams(&wanted).await.expect("read_streams");
    let of = |name: &str| -> Vec<(u64, u64, String)> {
        got.iter()
            .filter(|(s, _, _)| s.as_str() == name)
            .map(|(_, v, e)| (*v, e.position, e.data.clone()))
            .collect()
    };
    assert_eq!(of("s-a"), [(1, p[0], a1.data.clone()), (2, p[2], a2.data)]);
    assert_eq!(
        of("s-b"),
        [(1, p[1], b1.data), (2, p[3], both.data.clone())]
    );
    assert_eq!(of("sale-9"), [(1, p[3], both.data)]);
    assert_eq!(
        got.len(),
        5,
        "only the requested streams, nothing for a missing one"
    );
}

pub async fn concurrent_commits_to_distinct_streams(b: &Backend) {
    let start = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (events, start) = (b.events.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut written = Vec::new();
            for v in 1..=5 {
                let pair = vec![
                    event(&format!("t{t}-a"), v, &format!("t{t}a{v}")),
                    event(&format!("t{t}-b"), v, &format!("t{t}b{v}")),
                ];
                let positions = events.commit(batch(pair.clone())).await.expect("commit");
                written.extend(positions.into_iter().zip(pair));
            }
            written
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.expect("task"));
    }
    written.sort_by_key(|(p, _)| *p);
    let all = read_everything(b, 7).await;
    assert_eq!(all.len(), 80, "every event exactly once");
    for (got, (position, new)) in all.iter().zip(&written) {
        let (primary, version) = &new.streams[0];
        assert_stored(got, new, *position, primary.as_str(), *version);
    }
    assert_eq!(b.events.head().await, Ok(written[79].0));
}

pub async fn racing_writers_one_wins(b: &Backend) {
    let ids = accept(b, 8).await;
    let start = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().copied().enumerate() {
        let (events, start) = (b.events.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let attempt = CommitBatch {
                events: vec![event("race", 1, &format!("r{i}"))],
                outcomes: vec![processed(id, 0)],
                reads: Vec::new(),
            };
            start.wait().await;
            (i, events.commit(attempt).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (i, Ok(_)) => winners.push(i),
            (_, Err(e)) => assert_eq!(
                e,
                Error::Conflict {
                    stream: "race".to_owned()
                }
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let race = b
        .events
        .read_stream(&stream("race"))
        .await
        .expect("read_stream");
    assert_eq!(race.len(), 1);
    assert_eq!(
        race[0].data,
        event("race", 1, &format!("r{}", winners[0])).data
    );
    assert_eq!(b.events.decided(&ids).await, Ok(vec![ids[winners[0]]]));
}

/// Commits `events` recorded at the given instants, one batch each, returning their positions.
async fn commit_recorded_at(b: &Backend, events: Vec<(NewEvent, &str)>) -> Vec<u64> {
    let events: Vec<NewEvent> = events
        .into_iter()
        .map(|(mut e, at)| {
            e.recorded_at = ts(at);
            e
        })
        .collect();
    b.events.commit(batch(events)).await.expect("commit")
}

pub async fn recorded_at_never_decreases(b: &Backend) {
    commit_recorded_at(
        b,
        vec![
            (event("s-a", 1, "a1"), "2026-03-15T10:00:00.000002Z"),
            (event("s-b", 1, "b1"), "2026-03-15T10:00:00.000003Z"),
        ],
    )
    .await;
    // A process whose clock is behind the log's last event, then ahead of it, then behind again
    // within the same commit; and an empty commit, which moves nothing.
    commit_recorded_at(
        b,
        vec![
            (event("s-a", 2, "a2"), "2026-03-15T09:59:00Z"),
            (event("s-c", 1, "c1"), "2026-03-15T10:00:05Z"),
            (event("s-a", 3, "a3"), "2026-03-15T10:00:01Z"),
        ],
    )
    .await;
    b.events.commit(batch(Vec::new())).await.expect("commit");
    commit_recorded_at(b, vec![(event("s-b", 2, "b2"), "2020-01-01T00:00:00Z")]).await;
    commit_recorded_at(b, vec![(event("s-c", 2, "c2"), "2026-03-15T10:00:06Z")]).await;

    let all = read_everything(b, 100).await;
    let got: Vec<(String, jiff::Timestamp)> = all
        .iter()
        .map(|e| (e.data.clone(), e.recorded_at))
        .collect();
    let want: Vec<(String, jiff::Timestamp)> = [
        ("a1", "2026-03-15T10:00:00.000002Z"),
        ("b1", "2026-03-15T10:00:00.000003Z"),
        ("a2", "2026-03-15T10:00:00.000003Z"),
        ("c1", "2026-03-15T10:00:05Z"),
        ("a3", "2026-03-15T10:00:05Z"),
        ("b2", "2026-03-15T10:00:05Z"),
        ("c2", "2026-03-15T10:00:06Z"),
    ]
    .into_iter()
    .map(|(tag, at)| (payload(tag), ts(at)))
    .collect();
    for pair in all.windows(2) {
        assert!(
            pair[0].recorded_at <= pair[1].recorded_at,
            "recorded_at decreases from position {} to {}",
            pair[0].position,
            pair[1].position
        );
    }
    assert_eq!(
        got, want,
        "each event is recorded at the later of its own clock and its predecessor's recorded_at"
    );
    // The streams read what the log holds.
    let s_a = b.events.read_stream(&stream("s-a")).await.expect("read");
    let in_log = |data: &str| all.iter().find(|e| e.data == data).map(|e| e.recorded_at);
    for e in &s_a {
        assert_eq!(Some(e.recorded_at), in_log(&e.data));
    }
}

pub async fn position_at_finds_the_prefix_recorded_by_an_instant(b: &Backend) {
    let never = jiff::Timestamp::MIN;
    let end = jiff::Timestamp::MAX;
    assert_eq!(b.events.position_at(end).await, Ok(0), "an empty log");
    let first = commit_recorded_at(
        b,
        vec![
            (event("s-a", 1, "a1"), "2026-03-15T10:00:00.000001Z"),
            (event("s-b", 1, "b1"), "2026-03-15T10:00:00.000001Z"),
        ],
    )
    .await;
    let second = commit_recorded_at(b, vec![(event("s-a", 2, "a2"), "2026-03-15T10:00:01Z")]).await;
    // Clamped to 10:00:01: recorded at the same instant as a2.
    let third = commit_recorded_at(
        b,
        vec![
            (event("s-c", 1, "c1"), "2026-03-15T09:00:00Z"),
            (event("s-c", 2, "c2"), "2026-03-15T11:00:00Z"),
        ],
    )
    .await;
    let head = b.events.head().await.expect("head");
    let at = |raw: &str| b.events.position_at(ts(raw));
    assert_eq!(b.events.position_at(never).await, Ok(0));
    assert_eq!(at("2026-03-15T10:00:00Z").await, Ok(0), "before the first");
    assert_eq!(
        at("2026-03-15T10:00:00.000001Z").await,
        Ok(first[1]),
        "an event's own instant includes it, and everything recorded with it"
    );
    assert_eq!(
        at("2026-03-15T10:00:00.5Z").await,
        Ok(first[1]),
        "between two"
    );
    assert_eq!(at("2026-03-15T10:00:01Z").await, Ok(third[0]));
    assert!(second[0] < third[0]);
    assert_eq!(at("2026-03-15T10:59:59.999999Z").await, Ok(third[0]));
    assert_eq!(at("2026-03-15T11:00:00Z").await, Ok(third[1]));
    assert_eq!(third[1], head);
    assert_eq!(
        b.events.position_at(end).await,
        Ok(head),
        "far in the future"
    );

    // What the position selects is exactly the events recorded by the instant.
    let all = read_everything(b, 100).await;
    for e in &all {
        let p = b
            .events
            .position_at(e.recorded_at)
            .await
            .expect("position_at");
        for other in &all {
            assert_eq!(
                other.position <= p,
                other.recorded_at <= e.recorded_at,
                "position_at({}) = {p}, event {} recorded at {}",
                e.recorded_at,
                other.position,
                other.recorded_at
            );
        }
    }
}

pub async fn read_stream_after_stops_at_a_position(b: &Backend) {
    let a1 = event("store-s", 1, "a1");
    let other = event("s-x", 1, "x1");
    let mut sale = event("sale-1", 1, "sale");
    sale.streams.push((stream("store-s"), 2));
    let a3 = event("store-s", 3, "a3");
    let p = b
        .events
        .commit(batch(vec![a1, other, sale, a3]))
        .await
        .expect("commit");
    let store = stream("store-s");
    let full = b.events.read_stream(&store).await.expect("read_stream");
    assert_eq!(full.len(), 3);
    let upto = |position: u64| b.events.read_stream_after(&store, 0, position);
    assert_eq!(upto(0).await, Ok(Vec::new()));
    assert_eq!(upto(p[0]).await, Ok(full[..1].to_vec()));
    assert_eq!(
        upto(p[1]).await,
        Ok(full[..1].to_vec()),
        "a position of another stream's event"
    );
    let two = upto(p[2]).await.expect("read_stream_after");
    assert_eq!(two, full[..2].to_vec());
    assert_eq!(
        (two[1].stream_id.as_str(), two[1].version),
        ("store-s", 2),
        "an event of several streams is read with its version in this one"
    );
    assert_eq!(upto(p[3]).await, Ok(full.clone()));
    assert_eq!(upto(u64::MAX).await, Ok(full.clone()));
    assert_eq!(
        b.events
            .read_stream_after(&stream("missing"), 0, u64::MAX)
            .await,
        Ok(Vec::new())
    );
    // From a version on: the events after it, still bounded by the position.
    let after = b.events.read_stream_after(&store, 1, u64::MAX).await;
    assert_eq!(after, Ok(full[1..].to_vec()));
    let after = b.events.read_stream_after(&store, 1, p[2]).await;
    assert_eq!(after, Ok(full[1..2].to_vec()));
    assert_eq!(
        b.events.read_stream_after(&store, 3, u64::MAX).await,
        Ok(Vec::new())
    );
    // By position: the events there, in position order; a position past the head is left out.
    let got = b
        .events
        .read_positions(&[p[3], p[1], 99])
        .await
        .expect("read_positions");
    let positions: Vec<u64> = got.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![p[1], p[3]]);
    assert_eq!(got[1].metadata, full[2].metadata);
}
