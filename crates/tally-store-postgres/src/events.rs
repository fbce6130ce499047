//! The event log and command outcomes.
//!
//! Gap safety: every append transaction first locks the single `log_head` row and only then checks
//! versions and inserts; it moves the head and commits while still holding the lock. PostgreSQL
//! releases row locks only after the commit is visible, so the next append sees the previous one's
//! head, positions are dense and handed out in commit order, and a reader (`position > n ORDER BY
//! position`) can never see position n+2 while n+1 is still to come. A transaction that rolls back
//! takes its positions with it: nothing is ever skipped, because nothing was ever handed out.
//! The head row also keeps the last event's `recorded_at`, read and moved under the same lock: each
//! event is recorded at the later of its own clock and its predecessor's, so `recorded_at` never
//! decreases along the log however the appending processes' clocks disagree.
//! Throughput comes from group commit: the processor appends thousands of commands per transaction.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use jiff::Timestamp;
use tally_core::model::{
    CommandRecord, CommandStatus, CommitBatch, Decision, EventMetadata, EventPayload, Principal,
    RecordedEvent, Role,
};
use tally_core::ports::{CommandLog, Error, EventStore, Result};
use tally_domain::StreamId;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{Postgres, Ts, pg_error, to_i64, to_u64};

/// PostgreSQL's earliest `timestamptz`, 4714-11-24 BC (Julian day 0).
const PG_MIN_TIMESTAMP: Timestamp = Timestamp::constant(-210_866_803_200, 0);

const EVENT_COLUMNS: &str = "e.position, e.stream_id, e.version, e.event_type, e.schema_version, \
     e.occurred_at, e.recorded_at, e.data, e.command_id, e.correlation_id, e.principal";

/// A column of an event row that could not be read.
fn unreadable(e: tokio_postgres::Error) -> Error {
    Error::Corrupt(format!("reading an event row: {e}"))
}

fn event_from_row(row: &Row) -> Result<RecordedEvent> {
    let get = unreadable;
    let position: i64 = row.try_get(0).map_err(get)?;
    let version: i64 = row.try_get(2).map_err(get)?;
    let schema_version: i32 = row.try_get(4).map_err(get)?;
    let occurred_at: Ts = row.try_get(5).map_err(get)?;
    let recorded_at: Ts = row.try_get(6).map_err(get)?;
    Ok(RecordedEvent {
        position: to_u64(position, "position")?,
        stream_id: StreamId::from_stored(row.try_get::<_, String>(1).map_err(get)?),
        version: to_u64(version, "version")?,
        event_type: row.try_get(3).map_err(get)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| Error::Corrupt(format!("schema version {schema_version}")))?,
        occurred_at: occurred_at.0,
        recorded_at: recorded_at.0,
        data: row.try_get(7).map_err(get)?,
        metadata: EventMetadata {
            command_id: row.try_get(8).map_err(get)?,
            correlation_id: row.try_get(9).map_err(get)?,
            principal: row.try_get(10).map_err(get)?,
        },
    })
}

/// The batch as column arrays, checked for what the database would only report as a constraint error.
struct Columns {
    positions_needed: usize,
    stream_id: Vec<String>,
    version: Vec<i64>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    occurred_at: Vec<Ts>,
    recorded_at: Vec<Ts>,
    data: Vec<String>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<Option<String>>,
    principal: Vec<String>,
    /// `(stream, version, index of the event in the batch)` for every stream of every event.
    index: Vec<(String, i64, usize)>,
    /// `(stream, expected current version, exact)`: appended streams must be below their first new
    /// version (`exact` false: any version under it is a conflict only if taken), read streams must be
    /// at exactly the version the decision saw.
    checks: Vec<(String, i64, bool)>,
}

fn columns(batch: &CommitBatch) -> Result<Columns> {
    let n = batch.events.len();
    let mut c = Columns {
        positions_needed: n,
        stream_id: Vec::with_capacity(n),
        version: Vec::with_capacity(n),
        event_type: Vec::with_capacity(n),
        schema_version: Vec::with_capacity(n),
        occurred_at: Vec::with_capacity(n),
        recorded_at: Vec::with_capacity(n),
        data: Vec::with_capacity(n),
        command_id: Vec::with_capacity(n),
        correlation_id: Vec::with_capacity(n),
        principal: Vec::with_capacity(n),
        index: Vec::with_capacity(n * 2),
        checks: Vec::new(),
    };
    let mut first_version: HashMap<&str, u64> = HashMap::new();
    let mut taken: HashSet<(&str, u64)> = HashSet::with_capacity(n * 2);
    for (i, event) in batch.events.iter().enumerate() {
        let Some((primary, primary_version)) = event.streams.first() else {
            return Err(Error::Corrupt("an event must belong to a stream".into()));
        };
        c.stream_id.push(primary.as_str().to_owned());
        c.version.push(to_i64(*primary_version, "version")?);
        c.event_type.push(event.event_type.clone());
        c.schema_version.push(
            i32::try_from(event.schema_version)
                .map_err(|_| Error::Corrupt(format!("schema version {}", event.schema_version)))?,
        );
        c.occurred_at.push(Ts(event.occurred_at));
        c.recorded_at.push(Ts(event.recorded_at));
        c.data.push(event.data.clone());
        c.command_id.push(event.metadata.command_id);
        c.correlation_id.push(event.metadata.correlation_id.clone());
        c.principal.push(event.metadata.principal.clone());
        for (stream, version) in &event.streams {
            if *version == 0 || !taken.insert((stream.as_str(), *version)) {
                return Err(Error::Conflict {
                    stream: stream.to_string(),
                });
            }
            first_version
                .entry(stream.as_str())
                .and_modify(|v| *v = (*v).min(*version))
                .or_insert(*version);
            c.index
                .push((stream.as_str().to_owned(), to_i64(*version, "version")?, i));
        }
    }
    for (stream, first) in first_version {
        c.checks
            .push((stream.to_owned(), to_i64(first - 1, "version")?, false));
    }
    for (stream, expected) in &batch.reads {
        c.checks.push((
            stream.as_str().to_owned(),
            to_i64(*expected, "version")?,
            true,
        ));
    }
    Ok(c)
}

/// Inserts the batch's event rows at `positions`.
async fn insert_events(
    tx: &tokio_postgres::Transaction<'_>,
    positions: &[i64],
    cols: &Columns,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (position, stream_id, version, event_type, schema_version, occurred_at, \
         recorded_at, data, command_id, correlation_id, principal) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::int[], \
         $6::timestamptz[], $7::timestamptz[], $8::text[], $9::uuid[], $10::text[], $11::text[])",
        &[
            &positions,
            &cols.stream_id,
            &cols.version,
            &cols.event_type,
            &cols.schema_version,
            &cols.occurred_at,
            &cols.recorded_at,
            &cols.data,
            &cols.command_id,
            &cols.correlation_id,
            &cols.principal,
        ],
    )
    .await
    .map_err(|e| pg_error("inserting events", e))?;
    Ok(())
}

/// The append lock: locks the log's head row, which every append takes first and holds to its commit,
/// and returns the head's position and the `recorded_at` of its event (None while the log is empty).
async fn lock_head(tx: &tokio_postgres::Transaction<'_>) -> Result<(i64, Option<Ts>)> {
    let row = tx
        .query_one("SELECT position, recorded_at FROM log_head FOR UPDATE", &[])
        .await
        .map_err(|e| pg_error("locking the log head", e))?;
    let position = row
        .try_get(0)
        .map_err(|e| Error::Corrupt(format!("log head position: {e}")))?;
    let recorded_at = row
        .try_get(1)
        .map_err(|e| Error::Corrupt(format!("log head recorded_at: {e}")))?;
    Ok((position, recorded_at))
}

/// Records each event at the later of its own clock and its predecessor's `recorded_at` (`floor` for
/// the first), so `recorded_at` never decreases along the log whatever the appending processes'
/// clocks say (see `EventStore::commit`). Returns the last event's, which the head keeps.
fn clamp_recorded_at(recorded_at: &mut [Ts], mut floor: Option<Ts>) -> Option<Ts> {
    for at in recorded_at {
        match floor {
            Some(f) if at.0 < f.0 => *at = f,
            _ => floor = Some(*at),
        }
    }
    floor
}

/// Moves the head, under its lock, to the batch's last position and its event's `recorded_at`.
async fn move_head(
    tx: &tokio_postgres::Transaction<'_>,
    position: i64,
    recorded_at: Option<Ts>,
) -> Result<()> {
    tx.execute(
        "UPDATE log_head SET position = $1, recorded_at = $2",
        &[&position, &recorded_at],
    )
    .await
    .map_err(|e| pg_error("moving the log head", e))?;
    Ok(())
}

impl Postgres {
    async fn commit_batch(&self, batch: CommitBatch) -> Result<Vec<u64>> {
        let mut cols = columns(&batch)?;
        let mut seen = HashSet::with_capacity(batch.outcomes.len());
        for o in &batch.outcomes {
            if !seen.insert(o.command_id) {
                return Err(Error::AlreadyDecided {
                    command_id: o.command_id,
                });
            }
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting an append", e))?;
        // 1. The append lock: from here to the commit, nobody else appends.
        let (head, head_recorded_at) = lock_head(&tx).await?;

        // 2. Checks, under the lock: nothing can change between them and the inserts.
        let ids: Vec<Uuid> = batch.outcomes.iter().map(|o| o.command_id).collect();
        if let Some(row) = tx
            .query_opt(
                "SELECT command_id FROM outcomes WHERE command_id = ANY($1) LIMIT 1",
                &[&ids],
            )
            .await
            .map_err(|e| pg_error("checking for decided commands", e))?
        {
            return Err(Error::AlreadyDecided {
                command_id: row.get(0),
            });
        }
        if !cols.checks.is_empty() {
            let streams: Vec<&str> = cols.checks.iter().map(|c| c.0.as_str()).collect();
            let expected: Vec<i64> = cols.checks.iter().map(|c| c.1).collect();
            let exact: Vec<bool> = cols.checks.iter().map(|c| c.2).collect();
            if let Some(row) = tx
                .query_opt(
                    "SELECT c.stream_id FROM unnest($1::text[], $2::bigint[], $3::bool[]) \
                         AS c(stream_id, expected, exact) \
                     CROSS JOIN LATERAL (SELECT coalesce(max(si.version), 0) AS current \
                         FROM stream_index si WHERE si.stream_id = c.stream_id) v \
                     WHERE CASE WHEN c.exact THEN v.current <> c.expected ELSE v.current > c.expected END \
                     LIMIT 1",
                    &[&streams, &expected, &exact],
                )
                .await
                .map_err(|e| pg_error("checking stream versions", e))?
            {
                return Err(Error::Conflict { stream: row.get(0) });
            }
        }

        // 3. The rows: events at head+1.., their stream memberships, the outcomes; then the head.
        let first = head + 1;
        let positions: Vec<i64> = (first..first + cols.positions_needed as i64).collect();
        if !positions.is_empty() {
            let last_recorded_at = clamp_recorded_at(&mut cols.recorded_at, head_recorded_at);
            insert_events(&tx, &positions, &cols).await?;
            let streams: Vec<&str> = cols.index.iter().map(|r| r.0.as_str()).collect();
            let versions: Vec<i64> = cols.index.iter().map(|r| r.1).collect();
            let at: Vec<i64> = cols.index.iter().map(|r| positions[r.2]).collect();
            tx.execute(
                "INSERT INTO stream_index (stream_id, version, position) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
                &[&streams, &versions, &at],
            )
            .await
            .map_err(|e| pg_error("indexing events by stream", e))?;
            move_head(&tx, head + cols.positions_needed as i64, last_recorded_at).await?;
        }
        if !batch.outcomes.is_empty() {
            let mut at: Vec<Option<i64>> = Vec::with_capacity(ids.len());
            let mut code: Vec<Option<&str>> = Vec::with_capacity(ids.len());
            let mut message: Vec<Option<&str>> = Vec::with_capacity(ids.len());
            for o in &batch.outcomes {
                match &o.decision {
                    Decision::Processed { last_event } => {
                        let p = positions.get(*last_event).ok_or_else(|| {
                            Error::Corrupt(format!(
                                "outcome names event {last_event} of {}",
                                positions.len()
                            ))
                        })?;
                        at.push(Some(*p));
                        code.push(None);
                        message.push(None);
                    }
                    Decision::Rejected(r) => {
                        at.push(None);
                        code.push(Some(r.code.as_str()));
                        message.push(Some(r.message.as_str()));
                    }
                }
            }
            tx.execute(
                "INSERT INTO outcomes (command_id, decided_at, position, code, message) \
                 SELECT id, now(), p, c, m FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[]) \
                 AS o(id, p, c, m)",
                &[&ids, &at, &code, &message],
            )
            .await
            .map_err(|e| pg_error("recording outcomes", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing an append", e))?;
        positions
            .into_iter()
            .map(|p| to_u64(p, "position"))
            .collect()
    }

    /// For tests of gap safety: performs a whole append (lock, checks, inserts, head move) and then
    /// rolls it back instead of committing, as a transaction that fails at the last moment would.
    #[doc(hidden)]
    pub async fn append_and_roll_back(&self, batch: CommitBatch) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting an append", e))?;
        let (head, head_recorded_at) = lock_head(&tx).await?;
        let mut cols = columns(&batch)?;
        let positions: Vec<i64> = (head + 1..head + 1 + cols.positions_needed as i64).collect();
        let last_recorded_at = clamp_recorded_at(&mut cols.recorded_at, head_recorded_at);
        insert_events(&tx, &positions, &cols).await?;
        move_head(&tx, head + cols.positions_needed as i64, last_recorded_at).await?;
        // Held a moment, as a slow transaction would, before giving up.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        tx.rollback()
            .await
            .map_err(|e| pg_error("rolling back", e))?;
        Ok(())
    }

    /// The events of `streams` with a position at or before `upto`, in version order per stream.
    async fn read_stream_rows(
        &self,
        streams: &[String],
        after: u64,
        upto: u64,
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>> {
        let client = self.client().await?;
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS}, si.stream_id, si.version FROM stream_index si \
                     JOIN events e ON e.position = si.position \
                     WHERE si.stream_id = ANY($1) AND si.version > $2 AND si.position <= $3 \
                     ORDER BY si.stream_id, si.version"
                ),
                &[&streams, &after, &upto],
            )
            .await
            .map_err(|e| pg_error("reading streams", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut event = event_from_row(&row)?;
            let stream = StreamId::from_stored(
                row.try_get::<_, String>(11)
                    .map_err(|e| Error::Corrupt(format!("stream id: {e}")))?,
            );
            let version = to_u64(
                row.try_get::<_, i64>(12)
                    .map_err(|e| Error::Corrupt(format!("stream version: {e}")))?,
                "version",
            )?;
            event.stream_id = stream.clone();
            event.version = version;
            out.push((stream, version, event));
        }
        Ok(out)
    }
}

#[async_trait]
impl EventStore for Postgres {
    async fn commit(&self, batch: CommitBatch) -> Result<Vec<u64>> {
        self.commit_batch(batch).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position > $1 ORDER BY e.position LIMIT $2"
                ),
                &[&to_i64(after, "position")?, &limit],
            )
            .await
            .map_err(|e| pg_error("reading the log", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_payloads(&self, after: u64, limit: usize) -> Result<Vec<EventPayload>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT position, event_type, schema_version, data FROM events \
                 WHERE position > $1 ORDER BY position LIMIT $2",
                &[&to_i64(after, "position")?, &limit],
            )
            .await
            .map_err(|e| pg_error("reading the log", e))?;
        rows.iter()
            .map(|row| {
                let get = unreadable;
                let position: i64 = row.try_get(0).map_err(get)?;
                let schema_version: i32 = row.try_get(2).map_err(get)?;
                Ok(EventPayload {
                    position: to_u64(position, "position")?,
                    event_type: row.try_get(1).map_err(get)?,
                    schema_version: u32::try_from(schema_version)
                        .map_err(|_| Error::Corrupt(format!("schema version {schema_version}")))?,
                    data: row.try_get(3).map_err(get)?,
                })
            })
            .collect()
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>> {
        let names: Vec<String> = streams.iter().map(|s| s.as_str().to_owned()).collect();
        self.read_stream_rows(&names, 0, u64::MAX).await
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        self.read_stream_after(stream, 0, u64::MAX).await
    }

    async fn read_stream_after(
        &self,
        stream: &StreamId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = self
            .read_stream_rows(&[stream.as_str().to_owned()], after, upto)
            .await?;
        Ok(rows.into_iter().map(|(_, _, e)| e).collect())
    }

    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>> {
        let positions: Vec<i64> = positions
            .iter()
            .map(|p| i64::try_from(*p).unwrap_or(i64::MAX))
            .collect();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position = ANY($1) ORDER BY e.position"
                ),
                &[&positions],
            )
            .await
            .map_err(|e| pg_error("reading events by position", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn stream_ids(&self) -> Result<Vec<StreamId>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT stream_id FROM stream_index WHERE version = 1", &[])
            .await
            .map_err(|e| pg_error("listing streams", e))?;
        Ok(rows
            .iter()
            .map(|r| StreamId::from_stored(r.get::<_, String>(0)))
            .collect())
    }

    async fn head(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT position FROM log_head", &[])
            .await
            .map_err(|e| pg_error("reading the log head", e))?;
        to_u64(row.get(0), "head")
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64> {
        // Nothing is stored before PostgreSQL's earliest timestamp, which it refuses as a parameter.
        let at = Ts(at.max(PG_MIN_TIMESTAMP));
        let client = self.client().await?;
        // `recorded_at` never decreases along the log, so the last event recorded at or before `at`
        // is the one the index on `(recorded_at, position)` finds last: one seek, not a scan of the
        // prefix that `max(position)` would make.
        let row = client
            .query_opt(
                "SELECT position FROM events WHERE recorded_at <= $1 \
                 ORDER BY recorded_at DESC, position DESC LIMIT 1",
                &[&at],
            )
            .await
            .map_err(|e| pg_error("finding the position at an instant", e))?;
        match row {
            Some(row) => to_u64(row.try_get(0).map_err(unreadable)?, "position"),
            None => Ok(0),
        }
    }

    async fn decided(&self, command_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT command_id FROM outcomes WHERE command_id = ANY($1)",
                &[&command_ids],
            )
            .await
            .map_err(|e| pg_error("reading outcomes", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

#[async_trait]
impl CommandLog for Postgres {
    async fn status(&self, command_id: Uuid) -> Result<Option<CommandRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT c.kind, c.key_id, c.role, c.scope, c.accepted_at, o.decided_at, o.position, o.code, o.message \
                 FROM (SELECT $1::uuid AS id) q \
                 LEFT JOIN commands c ON c.command_id = q.id \
                 LEFT JOIN outcomes o ON o.command_id = q.id \
                 WHERE c.command_id IS NOT NULL OR o.command_id IS NOT NULL",
                &[&command_id],
            )
            .await
            .map_err(|e| pg_error("reading a command's status", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e: tokio_postgres::Error| Error::Corrupt(format!("command row: {e}"));
        let kind: Option<String> = row.try_get(0).map_err(get)?;
        let key_id: Option<String> = row.try_get(1).map_err(get)?;
        let role: Option<String> = row.try_get(2).map_err(get)?;
        let scope: Option<String> = row.try_get(3).map_err(get)?;
        let accepted_at: Option<Ts> = row.try_get(4).map_err(get)?;
        let decided_at: Option<Ts> = row.try_get(5).map_err(get)?;
        let position: Option<i64> = row.try_get(6).map_err(get)?;
        let code: Option<String> = row.try_get(7).map_err(get)?;
        let message: Option<String> = row.try_get(8).map_err(get)?;
        let status = match (decided_at, position) {
            (None, _) => CommandStatus::Accepted,
            (Some(_), Some(p)) => CommandStatus::Processed {
                position: to_u64(p, "position")?,
            },
            (Some(_), None) => CommandStatus::Rejected {
                code: code.unwrap_or_default(),
                message: message.unwrap_or_default(),
            },
        };
        // A command that bypassed the intake (benchmarks, tests) has an outcome but no accepted record.
        let role = match role {
            Some(r) => Role::parse(&r).ok_or_else(|| Error::Corrupt(format!("role {r:?}")))?,
            None => Role::Admin,
        };
        Ok(Some(CommandRecord {
            command_id,
            kind: kind.unwrap_or_default(),
            principal: Principal {
                key_id: key_id.unwrap_or_default(),
                role,
                scope,
            },
            accepted_at: accepted_at
                .or(decided_at)
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            status,
        }))
    }
}
