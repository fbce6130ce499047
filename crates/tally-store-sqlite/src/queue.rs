//! The embedded durable command queue. The `queue` table is the truth: a message is durable once its
//! row is committed, and stays until it is acked. Delivery runs from a mirror in memory (no polling):
//! messages in enqueue order, the in-flight set, and which partitions are busy. After a crash the
//! mirror is rebuilt from the table, so every unacked message is delivered again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tally_core::model::{DeadLetter, Delivery, QueueMessage};
use tally_core::ports::{CommandQueue, Error, Intake, IntakeLedger, Result, Submission, Submitted};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::writer::{Completion, Job, in_savepoint, sql_error};
use crate::{Sqlite, ts_from_sql, ts_to_sql, uuid_from_sql};

/// A message is dead-lettered when nacked on its fifth delivery.
pub const MAX_DELIVERIES: u32 = 5;

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    message_id: Uuid,
    partition_key: String,
    payload: Vec<u8>,
    deliveries: u32,
    /// Loaded at start-up: it may have been delivered (and even decided) before a crash.
    maybe_seen: bool,
    not_before: Option<Instant>,
}

/// A message with its sequence number: a row of the queue table, as the mirror holds it.
type Row = (i64, Msg);

#[derive(Default)]
struct Inner {
    pending: BTreeMap<i64, Msg>,
    /// tag (= seq) → message, while delivered and not acked.
    in_flight: HashMap<i64, Msg>,
    busy: HashMap<String, usize>,
}

pub(crate) struct Mem {
    inner: Mutex<Inner>,
    arrived: Notify,
}

pub(crate) fn load(conn: &Connection) -> Result<Vec<(i64, Msg)>> {
    let mut stmt = conn
        .prepare(
            "SELECT seq, message_id, partition_key, payload, deliveries FROM queue ORDER BY seq",
        )
        .map_err(sql_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })
        .map_err(sql_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, id, partition_key, payload, deliveries) = row.map_err(sql_error)?;
        out.push((
            seq,
            Msg {
                message_id: uuid_from_sql(&id)?,
                partition_key,
                payload,
                deliveries,
                maybe_seen: true,
                not_before: None,
            },
        ));
    }
    Ok(out)
}

impl Mem {
    pub(crate) fn new(pending: Vec<(i64, Msg)>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pending: pending.into_iter().collect(),
                ..Inner::default()
            }),
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Unavailable("queue state poisoned".into()))
    }

    fn add(&self, rows: Vec<(i64, Msg)>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.lock()?.pending.extend(rows);
        self.arrived.notify_waiters();
        self.arrived.notify_one();
        Ok(())
    }

    /// Takes up to `max` messages in enqueue order, skipping any partition that has a message in flight
    /// or an earlier message still waiting for its retry time. Also returns the earliest retry time seen.
    fn take(&self, max: usize) -> Result<(Vec<Delivery>, Option<Instant>)> {
        let mut inner = self.lock()?;
        let now = Instant::now();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut taken = Vec::new();
        let mut next_retry: Option<Instant> = None;
        for (seq, msg) in inner.pending.iter() {
            if taken.len() >= max {
                break;
            }
            if blocked.contains(&msg.partition_key) || inner.busy.contains_key(&msg.partition_key) {
                continue;
            }
            if let Some(t) = msg.not_before
                && t > now
            {
                next_retry = Some(next_retry.map_or(t, |n: Instant| n.min(t)));
                blocked.insert(msg.partition_key.clone());
                continue;
            }
            taken.push(*seq);
        }
        let mut out = Vec::with_capacity(taken.len());
        for seq in taken {
            if let Some(msg) = inner.pending.remove(&seq) {
                *inner.busy.entry(msg.partition_key.clone()).or_insert(0) += 1;
                out.push(Delivery {
                    tag: seq as u64,
                    message_id: msg.message_id,
                    partition_key: msg.partition_key.clone(),
                    payload: msg.payload.clone(),
                    redeliveries: msg.deliveries + u32::from(msg.maybe_seen),
                });
                inner.in_flight.insert(seq, msg);
            }
        }
        Ok((out, next_retry))
    }

    fn settle(&self, tag: i64) -> Result<Option<Msg>> {
        let mut inner = self.lock()?;
        let msg = inner.in_flight.remove(&tag);
        if let Some(m) = &msg
            && let Some(n) = inner.busy.get_mut(&m.partition_key)
        {
            *n -= 1;
            if *n == 0 {
                inner.busy.remove(&m.partition_key);
            }
        }
        Ok(msg)
    }
}

/// Sorted runs of consecutive numbers: `[1, 2, 3, 7, 8]` → `[(1, 3), (7, 8)]`.
fn runs(mut seqs: Vec<i64>) -> Vec<(i64, i64)> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for seq in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == seq => *last = seq,
            _ => out.push((seq, seq)),
        }
    }
    out
}

const INSERT_MESSAGE: &str =
    "INSERT INTO queue (message_id, partition_key, payload) VALUES (?1, ?2, ?3)";

fn insert_message(conn: &Connection, m: &QueueMessage) -> Result<i64> {
    let mut stmt = conn.prepare_cached(INSERT_MESSAGE).map_err(sql_error)?;
    insert_with(&mut stmt, conn, m)
}

/// Inserts `m` with `INSERT_MESSAGE` prepared as `stmt`; its sequence number.
fn insert_with(
    stmt: &mut rusqlite::Statement<'_>,
    conn: &Connection,
    m: &QueueMessage,
) -> Result<i64> {
    stmt.execute(params![
        m.message_id.as_bytes().as_slice(),
        m.partition_key,
        m.payload
    ])
    .map_err(sql_error)?;
    Ok(conn.last_insert_rowid())
}

fn fresh(seq: i64, m: QueueMessage) -> (i64, Msg) {
    (
        seq,
        Msg {
            message_id: m.message_id,
            partition_key: m.partition_key,
            payload: m.payload,
            deliveries: 0,
            maybe_seen: false,
            not_before: None,
        },
    )
}

#[async_trait]
impl CommandQueue for Sqlite {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        let rows = self
            .intake
            .write(move |conn| {
                let mut rows = Vec::with_capacity(messages.len());
                for m in messages {
                    let seq = insert_message(conn, &m)?;
                    rows.push(fresh(seq, m));
                }
                Ok(rows)
            })
            .await?;
        self.queue.add(rows)
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.queue.arrived.notified();
            let (taken, next_retry) = self.queue.take(max.max(1))?;
            if !taken.is_empty() {
                return Ok(taken);
            }
            let until = next_retry.map_or(deadline, |t| t.min(deadline));
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn ack(&self, tags: &[u64]) -> Result<()> {
        // The message leaves the queue at once; its row is deleted with the next group commit. Should
        // the process die before that commit, the message is delivered again after the restart, marked
        // as possibly seen, and the processor finds its outcome.
        let seqs: Vec<i64> = tags.iter().map(|t| *t as i64).collect();
        for seq in &seqs {
            self.queue.settle(*seq)?;
        }
        self.intake.write_detached("queue ack", move |conn| {
            // Acked messages are mostly consecutive: one range delete per run.
            let mut stmt = conn
                .prepare_cached("DELETE FROM queue WHERE seq BETWEEN ?1 AND ?2")
                .map_err(sql_error)?;
            for (first, last) in runs(seqs) {
                stmt.execute(params![first, last]).map_err(sql_error)?;
            }
            Ok(())
        });
        self.queue.arrived.notify_one();
        Ok(())
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let seq = tag as i64;
        let Some(mut msg) = self.queue.settle(seq)? else {
            return Ok(());
        };
        msg.deliveries += 1;
        let dead = msg.deliveries >= MAX_DELIVERIES;
        let (reason, deliveries, m) = (reason.to_owned(), msg.deliveries, msg.clone());
        self.intake
            .write(move |conn| {
                if dead {
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO dead_letters (message_id, partition_key, payload, reason, failed_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql_error)?
                    .execute(params![
                        m.message_id.as_bytes().as_slice(),
                        m.partition_key,
                        m.payload,
                        reason,
                        ts_to_sql(jiff::Timestamp::now())
                    ])
                    .map_err(sql_error)?;
                    conn.execute("DELETE FROM queue WHERE seq = ?1", params![seq])
                        .map_err(sql_error)?;
                } else {
                    conn.execute("UPDATE queue SET deliveries = ?2 WHERE seq = ?1", params![seq, deliveries])
                        .map_err(sql_error)?;
                }
                Ok(())
            })
            .await?;
        if dead {
            tracing::warn!(message_id = %msg.message_id, "message dead-lettered after {MAX_DELIVERIES} deliveries");
            self.queue.arrived.notify_one();
        } else {
            msg.not_before = Some(Instant::now() + retry_after);
            self.queue.add(vec![(seq, msg)])?;
        }
        Ok(())
    }

    async fn depth(&self) -> Result<u64> {
        let inner = self.queue.lock()?;
        Ok((inner.pending.len() + inner.in_flight.len()) as u64)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.intake_readers
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT message_id, partition_key, payload, reason, failed_at FROM dead_letters ORDER BY failed_at",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(sql_error)?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, partition_key, payload, reason, failed_at) = row.map_err(sql_error)?;
                    out.push(DeadLetter {
                        message_id: uuid_from_sql(&id)?,
                        partition_key,
                        payload,
                        reason,
                        failed_at: ts_from_sql(failed_at)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let row = self
            .intake
            .write(move |conn| {
                let found = conn
                    .query_row(
                        "SELECT partition_key, payload FROM dead_letters WHERE message_id = ?1",
                        params![message_id.as_bytes().as_slice()],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
                    )
                    .optional()
                    .map_err(sql_error)?;
                let Some((partition_key, payload)) = found else {
                    return Ok(None);
                };
                conn.execute(
                    "DELETE FROM dead_letters WHERE message_id = ?1",
                    params![message_id.as_bytes().as_slice()],
                )
                .map_err(sql_error)?;
                let m = QueueMessage {
                    message_id,
                    partition_key,
                    payload,
                };
                let seq = insert_message(conn, &m)?;
                Ok(Some(fresh(seq, m)))
            })
            .await?;
        match row {
            Some(row) => {
                self.queue.add(vec![row])?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Where an accepted submission's message goes: onto this database's queue, or into the outbox for a
/// broker ([`IntakeLedger`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Destination {
    Queue,
    Outbox,
}

/// The intake's statements, taken from the connection's statement cache once per group rather than
/// once per row: a lookup in that cache and the return to it each hash the SQL text, ≈ 1,300
/// instructions a statement.
struct IntakeStatements<'c> {
    conn: &'c Connection,
    claim: rusqlite::CachedStatement<'c>,
    /// The outbox's `accepted` record (a message on this file's queue is its own record).
    accepted: Option<rusqlite::CachedStatement<'c>>,
    message: rusqlite::CachedStatement<'c>,
}

impl<'c> IntakeStatements<'c> {
    fn new(conn: &'c Connection, to: Destination) -> Result<Self> {
        let (message, accepted) = match to {
            Destination::Queue => (INSERT_MESSAGE, None),
            Destination::Outbox => (
                "INSERT INTO outbox (message_id, partition_key, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
                Some(
                    conn.prepare_cached(
                        "INSERT INTO accepted (command_id, kind, key_id, role, scope, accepted_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(sql_error)?,
                ),
            ),
        };
        Ok(Self {
            conn,
            // The key is claimed first: a new key (nearly every request) costs one descent of the
            // index, not a lookup and then an insert; only a key seen before is read back.
            claim: conn
                .prepare_cached(
                    "INSERT INTO idempotency (key_id, idem_key, request_hash, command_id, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key_id, idem_key) DO NOTHING",
                )
                .map_err(sql_error)?,
            accepted,
            message: conn.prepare_cached(message).map_err(sql_error)?,
        })
    }

    fn submit(&mut self, s: &Submission) -> Result<(Submitted, Option<(i64, Msg)>)> {
        let e = &s.envelope;
        let key_id = e.principal.key_id.as_str();
        if let Some((key, hash)) = &s.idempotency {
            let claimed = self
                .claim
                .execute(params![
                    key_id,
                    key,
                    hash.as_slice(),
                    e.command_id.as_bytes().as_slice(),
                    ts_to_sql(e.received_at)
                ])
                .map_err(sql_error)?;
            if claimed == 0 {
                let (seen_hash, command_id) = self
                    .conn
                    .prepare_cached("SELECT request_hash, command_id FROM idempotency WHERE key_id = ?1 AND idem_key = ?2")
                    .map_err(sql_error)?
                    .query_row(params![key_id, key], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))
                    .map_err(sql_error)?;
                return Ok(if seen_hash.as_slice() == hash.as_slice() {
                    (
                        Submitted::Replayed {
                            command_id: uuid_from_sql(&command_id)?,
                        },
                        None,
                    )
                } else {
                    (Submitted::KeyReused, None)
                });
            }
        }
        let m = QueueMessage {
            message_id: e.command_id,
            partition_key: s.partition_key.clone(),
            payload: e.encode(),
        };
        let accepted_result = Submitted::Accepted {
            command_id: e.command_id,
        };
        match &mut self.accepted {
            Some(accepted) => {
                accepted
                    .execute(params![
                        e.command_id.as_bytes().as_slice(),
                        e.command.kind(),
                        key_id,
                        e.principal.role.as_str(),
                        e.principal.scope,
                        ts_to_sql(e.received_at)
                    ])
                    .map_err(sql_error)?;
                self.message
                    .execute(params![
                        m.message_id.as_bytes().as_slice(),
                        m.partition_key,
                        m.payload,
                        ts_to_sql(jiff::Timestamp::now())
                    ])
                    .map_err(sql_error)?;
                Ok((accepted_result, None))
            }
            None => {
                let seq = insert_with(&mut self.message, self.conn, &m)?;
                Ok((accepted_result, Some(fresh(seq, m))))
            }
        }
    }
}

/// Submissions waiting for the writer, gathered into one job: HTTP requests arrive one command each,
/// and a job of its own per command would pay a savepoint, a job hand-over and the pages it touches
/// for each. The first submission to arrive while none is waiting sends the job; the job takes
/// whatever has gathered by the time the writer runs it. Each caller still gets its own result, and
/// its 202 waits for the commit that holds its rows.
///
/// Not `tally_core::intake::Grouped`, which the PostgreSQL and broker intakes use: that one hands
/// each group through a task of its own to an asynchronous commit, a hop this writer does not need
/// (its job queue already holds the submissions until it is free), and it fails a whole group when
/// one submission fails.
#[derive(Default)]
pub(crate) struct Gather {
    waiting: Mutex<Vec<Waiting>>,
}

struct Waiting {
    submission: Submission,
    reply: oneshot::Sender<Result<Submitted>>,
}

impl Gather {
    /// Everything waiting; a poisoned lock still holds a valid list.
    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds one; true when it is the first, whose caller sends the job.
    fn push(&self, w: Waiting) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.push(w);
        waiting.len() == 1
    }
}

/// Writes every submission, stopping at the first that fails; returns their results and the queue rows
/// to add once committed.
fn submit_all(
    conn: &Connection,
    group: &[Submission],
    to: Destination,
) -> Result<(Vec<Submitted>, Vec<Row>)> {
    submit_with(&mut IntakeStatements::new(conn, to)?, group)
}

fn submit_with(
    statements: &mut IntakeStatements<'_>,
    group: &[Submission],
) -> Result<(Vec<Submitted>, Vec<Row>)> {
    let mut results = Vec::with_capacity(group.len());
    let mut rows = Vec::new();
    for s in group {
        let (r, row) = statements.submit(s)?;
        results.push(r);
        rows.extend(row);
    }
    Ok((results, rows))
}

/// Writes a gathered group in one savepoint. Should that fail, each submission is written again in a
/// savepoint of its own, so that one bad submission fails alone, as it would have on its own.
fn submit_group(
    conn: &Connection,
    group: &[Submission],
    to: Destination,
) -> (Vec<Result<Submitted>>, Vec<Row>) {
    let mut statements = match IntakeStatements::new(conn, to) {
        Ok(s) => s,
        Err(e) => {
            let results = group.iter().map(|_| Err(e.clone())).collect();
            return (results, Vec::new());
        }
    };
    if let Ok((results, rows)) = in_savepoint(conn, |_| submit_with(&mut statements, group)) {
        return (results.into_iter().map(Ok).collect(), rows);
    }
    let mut results = Vec::with_capacity(group.len());
    let mut rows = Vec::new();
    for s in group {
        match in_savepoint(conn, |_| statements.submit(s)) {
            Ok((r, row)) => {
                results.push(Ok(r));
                rows.extend(row);
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (results, rows)
}

impl Sqlite {
    /// Submits one command onto the queue through the gathered job. (A broker's intake gathers its
    /// submissions before they reach [`IntakeLedger::record`].)
    async fn submit_gathered(&self, submission: Submission) -> Result<Submitted> {
        let gather = &self.gather;
        let (reply, answer) = oneshot::channel();
        if gather.push(Waiting { submission, reply }) {
            let (gathered, queue) = (gather.clone(), self.queue.clone());
            let job: Job = Box::new(move |conn: &Connection| -> Completion {
                let (submissions, replies): (Vec<_>, Vec<_>) = gathered
                    .take()
                    .into_iter()
                    .map(|w| (w.submission, w.reply))
                    .unzip();
                let (results, rows) = submit_group(conn, &submissions, Destination::Queue);
                Box::new(move |committed: Result<()>| {
                    if committed.is_ok()
                        && let Err(e) = queue.add(rows)
                    {
                        tracing::error!(error = %e, "committed commands could not join the queue in memory");
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(committed.clone().and(result));
                    }
                })
            });
            if let Err(e) = self.intake.send(job) {
                for w in gather.take() {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
        answer
            .await
            .map_err(|_| Error::Unavailable("the sqlite intake dropped a submission".into()))?
    }
}

#[async_trait]
impl Intake for Sqlite {
    async fn submit(&self, submission: Submission) -> Result<Submitted> {
        self.submit_gathered(submission).await
    }

    async fn submit_many(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        let (results, rows) = self
            .intake
            .write(move |conn| submit_all(conn, &submissions, Destination::Queue))
            .await?;
        self.queue.add(rows)?;
        Ok(results)
    }
}

#[async_trait]
impl IntakeLedger for Sqlite {
    async fn record(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        self.intake
            .write(move |conn| {
                submit_all(conn, &submissions, Destination::Outbox).map(|(results, _)| results)
            })
            .await
    }

    async fn published(&self, message_ids: &[Uuid]) -> Result<()> {
        let ids = message_ids.to_vec();
        self.intake
            .write(move |conn| {
                let mut stmt = conn
                    .prepare_cached("DELETE FROM outbox WHERE message_id = ?1")
                    .map_err(sql_error)?;
                for id in &ids {
                    stmt.execute(params![id.as_bytes().as_slice()])
                        .map_err(sql_error)?;
                }
                Ok(())
            })
            .await
    }

    async fn outbox(&self, message_ids: &[Uuid]) -> Result<Vec<QueueMessage>> {
        let ids = message_ids.to_vec();
        self.intake_readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT partition_key, payload FROM outbox WHERE message_id = ?1",
                    )
                    .map_err(sql_error)?;
                let mut out = Vec::new();
                for id in ids {
                    let row = stmt
                        .query_row(params![id.as_bytes().as_slice()], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .optional()
                        .map_err(sql_error)?;
                    if let Some((partition_key, payload)) = row {
                        out.push(QueueMessage {
                            message_id: id,
                            partition_key,
                            payload,
                        });
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn unpublished(&self, older_than: Duration, limit: usize) -> Result<Vec<QueueMessage>> {
        let cutoff = ts_to_sql(jiff::Timestamp::now())
            .saturating_sub(i64::try_from(older_than.as_nanos()).unwrap_or(i64::MAX));
        self.intake_readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT message_id, partition_key, payload FROM outbox WHERE created_at <= ?1 \
                         ORDER BY created_at LIMIT ?2",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(params![cutoff, limit as i64], |r| {
                        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
                    })
                    .map_err(sql_error)?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, partition_key, payload) = row.map_err(sql_error)?;
                    out.push(QueueMessage {
                        message_id: uuid_from_sql(&id)?,
                        partition_key,
                        payload,
                    });
                }
                Ok(out)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Destination, runs, submit_group};
    use rusqlite::Connection;
    use tally_core::conformance::{admin_envelope, submission};
    use tally_core::ports::{Submission, Submitted};
    use tally_domain::values::{SupplierId, Text};
    use uuid::Uuid;

    fn register(command_id: Uuid, supplier: &str) -> Submission {
        let mut envelope = admin_envelope(tally_domain::Command::RegisterSupplier {
            supplier_id: SupplierId::parse(supplier).unwrap(),
            name: Text::parse("A supplier").unwrap(),
        });
        envelope.command_id = command_id;
        submission(envelope, None)
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Writes a group of three whose third reuses the first's command id (and so breaks the key of
    /// the table its message goes to), and checks that only the third failed.
    fn group_with_a_bad_third(to: Destination) -> (Connection, Vec<super::Row>) {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate_intake(&mut conn).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let group = [
            register(first, "one"),
            register(second, "two"),
            register(first, "three"),
        ];
        let (results, rows) = submit_group(&conn, &group, to);
        conn.execute_batch("COMMIT").unwrap();
        assert!(
            matches!(results[0], Ok(Submitted::Accepted { command_id }) if command_id == first)
        );
        assert!(
            matches!(results[1], Ok(Submitted::Accepted { command_id }) if command_id == second)
        );
        assert!(results[2].is_err(), "{:?}", results[2]);
        (conn, rows)
    }

    #[test]
    fn a_gathered_group_fails_only_the_submission_that_fails() {
        let (conn, rows) = group_with_a_bad_third(Destination::Queue);
        assert_eq!(rows.len(), 2, "only the accepted two join the queue");
        assert_eq!(count(&conn, "queue"), 2);
        assert_eq!(
            count(&conn, "accepted"),
            0,
            "a queued message is its own record"
        );
    }

    #[test]
    fn a_gathered_group_for_a_broker_records_what_it_accepted() {
        let (conn, rows) = group_with_a_bad_third(Destination::Outbox);
        assert!(rows.is_empty(), "nothing joins this file's queue");
        assert_eq!(count(&conn, "outbox"), 2);
        assert_eq!(count(&conn, "accepted"), 2);
        assert_eq!(count(&conn, "queue"), 0);
    }

    #[test]
    fn a_gathered_group_without_failures_is_written_whole() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate_intake(&mut conn).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let group: Vec<Submission> = (0..5)
            .map(|i| register(Uuid::now_v7(), &format!("s{i}")))
            .collect();
        let (results, rows) = submit_group(&conn, &group, Destination::Queue);
        conn.execute_batch("COMMIT").unwrap();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(Submitted::Accepted { .. })))
        );
        assert_eq!(rows.len(), 5);
        assert_eq!(count(&conn, "queue"), 5);
    }

    #[test]
    fn runs_group_consecutive_sequence_numbers() {
        assert_eq!(
            runs(vec![8, 1, 3, 2, 7, 10]),
            vec![(1, 3), (7, 8), (10, 10)]
        );
        assert_eq!(runs(vec![]), vec![]);
        assert_eq!(runs(vec![5, 5]), vec![(5, 5)]);
    }
}
