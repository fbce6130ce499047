//! The event log and command statuses.

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};
use tally_core::model::{
    CommandEnvelope, CommandRecord, CommandStatus, CommitBatch, Decision, EventMetadata,
    EventPayload, Principal, RecordedEvent, Role,
};
use tally_core::ports::{CommandLog, Error, EventStore, Result};
use tally_domain::StreamId;
use uuid::Uuid;

use crate::writer::sql_error;
use crate::{Sqlite, ts_from_sql, ts_to_sql, uuid_from_sql};

const EVENT_COLUMNS: &str = "e.position, e.stream_id, e.version, e.event_type, e.schema_version, \
     e.occurred_at, e.recorded_at, e.data, e.command_id, e.correlation_id, e.principal";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        position: row.get(0)?,
        stream_id: row.get(1)?,
        version: row.get(2)?,
        event_type: row.get(3)?,
        schema_version: row.get(4)?,
        occurred_at: row.get(5)?,
        recorded_at: row.get(6)?,
        data: row.get(7)?,
        command_id: row.get(8)?,
        correlation_id: row.get(9)?,
        principal: row.get(10)?,
    })
}

struct RawEvent {
    position: i64,
    stream_id: String,
    version: i64,
    event_type: String,
    schema_version: u32,
    occurred_at: i64,
    recorded_at: i64,
    data: String,
    command_id: Vec<u8>,
    correlation_id: Option<String>,
    principal: String,
}

impl RawEvent {
    fn into_recorded(self) -> Result<RecordedEvent> {
        let metadata = EventMetadata {
            command_id: uuid_from_sql(&self.command_id)?,
            correlation_id: self.correlation_id,
            principal: self.principal,
        };
        Ok(RecordedEvent {
            position: self.position as u64,
            stream_id: StreamId::from_stored(self.stream_id),
            version: self.version as u64,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at: ts_from_sql(self.occurred_at)?,
            recorded_at: ts_from_sql(self.recorded_at)?,
            data: self.data,
            metadata,
        })
    }
}

/// Fails with a conflict naming the first stream of `reads` that is not at the version it was read at.
/// It runs inside the writer's transaction, before anything is inserted, so no commit can come between
/// the check and the batch's writes; one index seek per stream.
fn check_reads(conn: &Connection, reads: &[(StreamId, u64)]) -> Result<()> {
    if reads.is_empty() {
        return Ok(());
    }
    let mut current = conn
        .prepare_cached("SELECT max(version) FROM stream_index WHERE stream_id = ?1")
        .map_err(sql_error)?;
    for (stream, read_at) in reads {
        // An aggregate always yields one row: NULL when the stream has no event (version 0).
        let version: Option<i64> = current
            .query_row(params![stream.as_str()], |r| r.get(0))
            .map_err(sql_error)?;
        if i64::try_from(*read_at).ok() != Some(version.unwrap_or(0)) {
            return Err(Error::Conflict {
                stream: stream.to_string(),
            });
        }
    }
    Ok(())
}

/// The `recorded_at` of the log's last event (None when the log is empty): the least an appended event
/// may be recorded at. Read from the table inside the writer's transaction, not cached, so that it is
/// right whatever earlier jobs of the transaction appended or rolled back; one seek on the rowid.
fn last_recorded_at(conn: &Connection) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT recorded_at FROM events ORDER BY position DESC LIMIT 1")
        .map_err(sql_error)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(sql_error)
}

fn commit_batch(conn: &Connection, batch: CommitBatch) -> Result<Vec<u64>> {
    check_reads(conn, &batch.reads)?;
    // Each event is recorded at the later of its own clock and its predecessor's `recorded_at`, so
    // `recorded_at` never decreases along the log (see `EventStore::commit`).
    let mut floor = if batch.events.is_empty() {
        None
    } else {
        last_recorded_at(conn)?
    };
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (stream_id, version, event_type, schema_version, occurred_at, \
             recorded_at, data, command_id, correlation_id, principal) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(sql_error)?;
    let mut insert_index = conn
        .prepare_cached(
            "INSERT INTO stream_index (stream_id, version, position) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql_error)?;
    let mut positions = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        let Some((primary, primary_version)) = event.streams.first() else {
            return Err(Error::Corrupt("an event must belong to a stream".into()));
        };
        let own = ts_to_sql(event.recorded_at);
        let recorded_at = floor.map_or(own, |f| f.max(own));
        floor = Some(recorded_at);
        insert_event
            .execute(params![
                primary.as_str(),
                *primary_version as i64,
                event.event_type,
                event.schema_version,
                ts_to_sql(event.occurred_at),
                recorded_at,
                event.data,
                event.metadata.command_id.as_bytes().as_slice(),
                event.metadata.correlation_id,
                event.metadata.principal,
            ])
            .map_err(sql_error)?;
        let position = conn.last_insert_rowid();
        for (stream, version) in &event.streams {
            match insert_index.execute(params![stream.as_str(), *version as i64, position]) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == ErrorCode::ConstraintViolation =>
                {
                    return Err(Error::Conflict {
                        stream: stream.to_string(),
                    });
                }
                Err(e) => return Err(sql_error(e)),
            }
        }
        positions.push(position as u64);
    }
    // One statement per outcome: a command decided for the first time gets its record here (commands
    // on the embedded queue have none until now; see the crate's docs), one accepted before the intake
    // had a file of its own has its `accepted` record updated, and one decided already changes nothing,
    // which fails the batch.
    let mut decide = conn
        .prepare_cached(
            "INSERT INTO commands (command_id, kind, key_id, role, scope, accepted_at, status, position, code, message) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (command_id) DO UPDATE SET status = excluded.status, position = excluded.position, \
             code = excluded.code, message = excluded.message WHERE commands.status = 'accepted'",
        )
        .map_err(sql_error)?;
    let now = jiff::Timestamp::now();
    for outcome in &batch.outcomes {
        let (status, position, code, message) = match &outcome.decision {
            Decision::Processed { last_event } => {
                let Some(p) = positions.get(*last_event) else {
                    return Err(Error::Corrupt(format!(
                        "outcome names event {last_event} of {}",
                        positions.len()
                    )));
                };
                ("processed", Some(*p as i64), None, None)
            }
            Decision::Rejected(r) => (
                "rejected",
                None,
                Some(r.code.as_str()),
                Some(r.message.as_str()),
            ),
        };
        // A command that bypassed the intake (benchmarks, tests) is recorded as an admin's.
        let (kind, key_id, role, scope, accepted_at) = match &outcome.accepted {
            Some(a) => (
                a.kind,
                a.principal.key_id.as_str(),
                a.principal.role.as_str(),
                a.principal.scope.as_deref(),
                a.accepted_at,
            ),
            None => ("", "", Role::Admin.as_str(), None, now),
        };
        let changed = decide
            .execute(params![
                outcome.command_id.as_bytes().as_slice(),
                kind,
                key_id,
                role,
                scope,
                ts_to_sql(accepted_at),
                status,
                position,
                code,
                message
            ])
            .map_err(sql_error)?;
        if changed == 0 {
            return Err(Error::AlreadyDecided {
                command_id: outcome.command_id,
            });
        }
    }
    Ok(positions)
}

/// The stream's events after version `after`, at or before position `upto`, in version order.
fn read_stream_rows(
    conn: &Connection,
    stream: &str,
    after: u64,
    upto: u64,
) -> Result<Vec<RecordedEvent>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, si.version FROM stream_index si JOIN events e ON e.position = si.position \
             WHERE si.stream_id = ?1 AND si.version > ?2 AND si.position <= ?3 ORDER BY si.version"
        ))
        .map_err(sql_error)?;
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![stream, after, upto], |row| {
            Ok((event_from_row(row)?, row.get::<_, i64>(11)?))
        })
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut raw, version) = row.map_err(sql_error)?;
        raw.stream_id = stream.to_owned();
        raw.version = version;
        out.push(raw.into_recorded()?);
    }
    Ok(out)
}

#[async_trait]
impl EventStore for Sqlite {
    async fn commit(&self, batch: CommitBatch) -> Result<Vec<u64>> {
        self.writer
            .write(move |conn| commit_batch(conn, batch))
            .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position > ?1 ORDER BY e.position LIMIT ?2"
                    ))
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(params![after as i64, limit as i64], event_from_row)
                    .map_err(sql_error)?;
                rows.map(|r| r.map_err(sql_error).and_then(RawEvent::into_recorded))
                    .collect()
            })
            .await
    }

    async fn read_payloads(&self, after: u64, limit: usize) -> Result<Vec<EventPayload>> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT position, event_type, schema_version, data FROM events \
                         WHERE position > ?1 ORDER BY position LIMIT ?2",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(params![after as i64, limit as i64], |row| {
                        Ok(EventPayload {
                            position: row.get::<_, i64>(0)? as u64,
                            event_type: row.get(1)?,
                            schema_version: row.get(2)?,
                            data: row.get(3)?,
                        })
                    })
                    .map_err(sql_error)?;
                rows.map(|r| r.map_err(sql_error)).collect()
            })
            .await
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamId, u64, RecordedEvent)>> {
        let streams = streams.to_vec();
        self.readers
            .read(move |conn| {
                let mut out = Vec::new();
                for stream in streams {
                    for event in read_stream_rows(conn, stream.as_str(), 0, u64::MAX)? {
                        out.push((stream.clone(), event.version, event));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        let stream = stream.to_string();
        self.readers
            .read(move |conn| read_stream_rows(conn, &stream, 0, u64::MAX))
            .await
    }

    async fn read_stream_after(
        &self,
        stream: &StreamId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.to_string();
        self.readers
            .read(move |conn| read_stream_rows(conn, &stream, after, upto))
            .await
    }

    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>> {
        let mut positions = positions.to_vec();
        positions.sort_unstable();
        positions.dedup();
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position = ?1"
                    ))
                    .map_err(sql_error)?;
                let mut out = Vec::with_capacity(positions.len());
                for p in positions {
                    let p = i64::try_from(p).unwrap_or(i64::MAX);
                    let raw = stmt
                        .query_row(params![p], event_from_row)
                        .optional()
                        .map_err(sql_error)?;
                    if let Some(raw) = raw {
                        out.push(raw.into_recorded()?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn stream_ids(&self) -> Result<Vec<StreamId>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT stream_id FROM stream_index WHERE version = 1")
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(sql_error)?;
                rows.map(|r| r.map(StreamId::from_stored).map_err(sql_error))
                    .collect()
            })
            .await
    }

    async fn head(&self) -> Result<u64> {
        self.readers
            .read(|conn| {
                conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|p| p as u64)
                .map_err(sql_error)
            })
            .await
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64> {
        let at = ts_to_sql(at);
        self.readers
            .read(move |conn| {
                // `recorded_at` never decreases along the log, so the last event recorded at or
                // before `at` is the one the index on `(recorded_at, rowid)` finds last: one seek,
                // not a scan of the prefix that `max(position)` would make.
                let position: Option<i64> = conn
                    .prepare_cached(
                        "SELECT position FROM events WHERE recorded_at <= ?1 \
                         ORDER BY recorded_at DESC, position DESC LIMIT 1",
                    )
                    .map_err(sql_error)?
                    .query_row(params![at], |r| r.get(0))
                    .optional()
                    .map_err(sql_error)?;
                Ok(position.map_or(0, |p| p as u64))
            })
            .await
    }

    async fn decided(&self, command_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let ids = command_ids.to_vec();
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT 1 FROM commands WHERE command_id = ?1 AND status <> 'accepted'",
                    )
                    .map_err(sql_error)?;
                let mut out = Vec::new();
                for id in ids {
                    if stmt
                        .exists(params![id.as_bytes().as_slice()])
                        .map_err(sql_error)?
                    {
                        out.push(id);
                    }
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl CommandLog for Sqlite {
    async fn status(&self, command_id: Uuid) -> Result<Option<CommandRecord>> {
        if let Some(record) = self.decided_record(command_id).await? {
            return Ok(Some(record));
        }
        if let Some(record) = self.accepted_record(command_id).await? {
            return Ok(Some(record));
        }
        // Decided and acked between the two reads: the outcome was committed before the ack.
        self.decided_record(command_id).await
    }
}

impl Sqlite {
    /// The command's record in `tally.db`: its outcome, or the `accepted` record of a command accepted
    /// before the intake had a file of its own.
    async fn decided_record(&self, command_id: Uuid) -> Result<Option<CommandRecord>> {
        self.readers
            .read(move |conn| {
                let row = conn
                    .prepare_cached(
                        "SELECT command_id, kind, key_id, role, scope, accepted_at, status, position, code, message \
                         FROM commands WHERE command_id = ?1",
                    )
                    .map_err(sql_error)?
                    .query_row(params![command_id.as_bytes().as_slice()], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                            r.get::<_, Option<String>>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ))
                    })
                    .optional()
                    .map_err(sql_error)?;
                let Some((id, kind, key_id, role, scope, accepted_at, status, position, code, message)) = row else {
                    return Ok(None);
                };
                let status = match (status.as_str(), position) {
                    ("accepted", _) => CommandStatus::Accepted,
                    ("processed", Some(p)) => CommandStatus::Processed { position: p as u64 },
                    ("rejected", _) => CommandStatus::Rejected {
                        code: code.unwrap_or_default(),
                        message: message.unwrap_or_default(),
                    },
                    (other, _) => return Err(Error::Corrupt(format!("command status {other:?}"))),
                };
                Ok(Some(CommandRecord {
                    command_id: uuid_from_sql(&id)?,
                    kind,
                    principal: principal(key_id, &role, scope)?,
                    accepted_at: ts_from_sql(accepted_at)?,
                    status,
                }))
            })
            .await
    }

    /// A command the processor has not decided yet, from `intake.db`: its message on the queue or in
    /// the dead letters, or the `accepted` record of a command handed to a broker.
    async fn accepted_record(&self, command_id: Uuid) -> Result<Option<CommandRecord>> {
        self.intake_readers
            .read(move |conn| {
                let id = command_id.as_bytes().as_slice();
                let payload = conn
                    .prepare_cached(
                        "SELECT payload FROM queue WHERE message_id = ?1 \
                         UNION ALL SELECT payload FROM dead_letters WHERE message_id = ?1 LIMIT 1",
                    )
                    .map_err(sql_error)?
                    .query_row(params![id], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(sql_error)?;
                if let Some(payload) = payload {
                    let envelope = CommandEnvelope::decode(&payload)
                        .map_err(|e| Error::Corrupt(format!("queued command {command_id}: {e}")))?;
                    return Ok(Some(CommandRecord {
                        command_id,
                        kind: envelope.command.kind().to_owned(),
                        principal: envelope.principal,
                        accepted_at: envelope.received_at,
                        status: CommandStatus::Accepted,
                    }));
                }
                let row = conn
                    .prepare_cached(
                        "SELECT kind, key_id, role, scope, accepted_at FROM accepted WHERE command_id = ?1",
                    )
                    .map_err(sql_error)?
                    .query_row(params![id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()
                    .map_err(sql_error)?;
                let Some((kind, key_id, role, scope, accepted_at)) = row else {
                    return Ok(None);
                };
                Ok(Some(CommandRecord {
                    command_id,
                    kind,
                    principal: principal(key_id, &role, scope)?,
                    accepted_at: ts_from_sql(accepted_at)?,
                    status: CommandStatus::Accepted,
                }))
            })
            .await
    }
}

/// A principal as the command tables store it.
fn principal(key_id: String, role: &str, scope: Option<String>) -> Result<Principal> {
    Ok(Principal {
        key_id,
        role: Role::parse(role).ok_or_else(|| Error::Corrupt(format!("role {role:?}")))?,
        scope,
    })
}
