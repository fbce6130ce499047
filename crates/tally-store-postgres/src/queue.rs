//! The intake and the command queue on PostgreSQL.
//!
//! Queue rows are ordered by `seq` within a partition. A consumer takes whole partitions: it leases a
//! partition's row in `queue_partitions` (`FOR UPDATE SKIP LOCKED`, so consumers never wait on each
//! other), receives that partition's messages in order, and gives the lease back once every message
//! it received from it is acked or nacked. While a partition is leased nobody else receives from it,
//! which is what keeps a store's commands in order across processors. A consumer that dies keeps its
//! leases until they expire (`PgOptions::queue_lease`); then its unacked messages are delivered again,
//! counted as redeliveries.
//!
//! Enqueueing locks the partitions' rows first (an upsert that updates nothing), so two enqueues to one
//! partition are serialized and its `seq` order is its commit order, and so a partition row is never
//! garbage-collected under a message being enqueued to it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tally_core::model::{DeadLetter, Delivery, QueueMessage};
use tally_core::ports::{CommandQueue, Error, Intake, IntakeLedger, Result, Submission, Submitted};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{Postgres, Ts, pg_error, to_u64};

/// Deliveries after which a nacked message is dead-lettered.
pub const MAX_DELIVERIES: i32 = 5;
/// Most partitions one `receive` leases.
const MAX_PARTITIONS: i64 = 1024;
/// How often an empty `receive` looks again.
const POLL: Duration = Duration::from_millis(20);

/// What this process has received and not yet settled, by tag (`seq`).
#[derive(Default)]
pub(crate) struct QueueState {
    inner: Mutex<InFlight>,
    consumer: ConsumerId,
}

struct ConsumerId(Uuid);

impl Default for ConsumerId {
    fn default() -> Self {
        Self(Uuid::now_v7())
    }
}

#[derive(Default)]
struct InFlight {
    partition_of: HashMap<u64, String>,
    open: HashMap<String, usize>,
}

impl QueueState {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delivered(&self, deliveries: &[Delivery]) {
        let mut s = self.lock();
        for d in deliveries {
            if s.partition_of
                .insert(d.tag, d.partition_key.clone())
                .is_none()
            {
                *s.open.entry(d.partition_key.clone()).or_default() += 1;
            }
        }
    }

    /// The partitions that settling `tags` would leave with nothing in flight here.
    fn emptied_by(&self, tags: &[u64]) -> Vec<String> {
        let s = self.lock();
        let mut settling: HashMap<&str, usize> = HashMap::new();
        for tag in tags {
            if let Some(p) = s.partition_of.get(tag) {
                *settling.entry(p.as_str()).or_default() += 1;
            }
        }
        let mut done: Vec<String> = settling
            .into_iter()
            .filter(|(p, n)| s.open.get(*p).is_some_and(|open| open <= n))
            .map(|(p, _)| p.to_owned())
            .collect();
        done.sort();
        done
    }

    /// Forgets tags once their ack or nack has committed.
    fn settled(&self, tags: &[u64]) {
        let mut s = self.lock();
        for tag in tags {
            let Some(p) = s.partition_of.remove(tag) else {
                continue;
            };
            if let Some(n) = s.open.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    s.open.remove(&p);
                }
            }
        }
    }
}

/// Partitions whose messages must go to the back of the line (their consumer died while holding
/// them): counted as delivered once more, dead-lettered when they reached the limit.
async fn count_abandoned(
    tx: &tokio_postgres::Transaction<'_>,
    abandoned: &[(String, i64)],
) -> Result<()> {
    if abandoned.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = abandoned.iter().map(|a| a.0.as_str()).collect();
    let upto: Vec<i64> = abandoned.iter().map(|a| a.1).collect();
    tx.execute(
        "UPDATE queue q SET deliveries = q.deliveries + 1 \
         FROM unnest($1::text[], $2::bigint[]) AS a(partition_key, upto) \
         WHERE q.partition_key = a.partition_key AND q.seq <= a.upto",
        &[&keys, &upto],
    )
    .await
    .map_err(|e| pg_error("counting abandoned deliveries", e))?;
    tx.execute(
        "WITH dead AS (DELETE FROM queue WHERE partition_key = ANY($1) AND deliveries >= $2 \
             RETURNING message_id, partition_key, payload, deliveries) \
         INSERT INTO dead_letters (message_id, partition_key, payload, reason, failed_at) \
         SELECT message_id, partition_key, payload, \
             'its consumer stopped without acking it ' || deliveries || ' times', now() FROM dead \
         ON CONFLICT (message_id) DO NOTHING",
        &[&keys, &MAX_DELIVERIES],
    )
    .await
    .map_err(|e| pg_error("dead-lettering abandoned messages", e))?;
    Ok(())
}

impl Postgres {
    /// One attempt to lease partitions and receive up to `max` of their messages.
    async fn try_receive(&self, max: usize) -> Result<Vec<Delivery>> {
        let me = self.queue.consumer.0;
        let lease_secs = self.options.queue_lease.as_secs_f64();
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a receive", e))?;
        let claimed = tx
            .query(
                "UPDATE queue_partitions p \
                 SET lease_until = now() + make_interval(secs => $2), leased_by = $1 \
                 FROM (SELECT c.partition_key, c.lease_until IS NOT NULL AS abandoned, c.delivered_upto \
                       FROM queue_partitions c \
                       WHERE (c.lease_until IS NULL OR c.lease_until < now()) \
                         AND (SELECT q.available_at FROM queue q WHERE q.partition_key = c.partition_key \
                              ORDER BY q.seq LIMIT 1) <= now() \
                       LIMIT $3 FOR UPDATE SKIP LOCKED) c \
                 WHERE p.partition_key = c.partition_key \
                 RETURNING p.partition_key, c.abandoned, c.delivered_upto",
                &[&me, &lease_secs, &MAX_PARTITIONS],
            )
            .await
            .map_err(|e| pg_error("leasing queue partitions", e))?;
        if claimed.is_empty() {
            tx.rollback()
                .await
                .map_err(|e| pg_error("ending a receive", e))?;
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = Vec::with_capacity(claimed.len());
        let mut abandoned: Vec<(String, i64)> = Vec::new();
        for row in &claimed {
            let key: String = row.get(0);
            if row.get::<_, bool>(1)
                && let Some(upto) = row.get::<_, Option<i64>>(2)
            {
                abandoned.push((key.clone(), upto));
            }
            keys.push(key);
        }
        count_abandoned(&tx, &abandoned).await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = tx
            .query(
                "SELECT seq, message_id, partition_key, payload, deliveries, available_at <= now() \
                 FROM queue WHERE partition_key = ANY($1) ORDER BY seq LIMIT $2",
                &[&keys, &limit],
            )
            .await
            .map_err(|e| pg_error("receiving messages", e))?;
        // Each partition's messages in order, up to the first that is not due yet (a nacked message
        // waiting for its retry holds back the ones behind it).
        let mut blocked: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut upto: HashMap<String, i64> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let partition_key: String = row.get(2);
            if blocked.contains(&partition_key) {
                continue;
            }
            if !row.get::<_, bool>(5) {
                blocked.insert(partition_key);
                continue;
            }
            let seq: i64 = row.get(0);
            let deliveries: i32 = row.get(4);
            upto.insert(partition_key.clone(), seq);
            out.push(Delivery {
                tag: to_u64(seq, "queue seq")?,
                message_id: row.get(1),
                partition_key,
                payload: row.get(3),
                redeliveries: u32::try_from(deliveries).unwrap_or(0),
            });
        }
        let unused: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !upto.contains_key(*k))
            .collect();
        if !unused.is_empty() {
            tx.execute(
                "UPDATE queue_partitions SET lease_until = NULL, leased_by = NULL, delivered_upto = NULL \
                 WHERE partition_key = ANY($1)",
                &[&unused],
            )
            .await
            .map_err(|e| pg_error("returning unused partitions", e))?;
        }
        if !upto.is_empty() {
            let (k, u): (Vec<&str>, Vec<i64>) = upto.iter().map(|(k, u)| (k.as_str(), *u)).unzip();
            tx.execute(
                "UPDATE queue_partitions p SET delivered_upto = u.upto \
                 FROM unnest($1::text[], $2::bigint[]) AS u(partition_key, upto) \
                 WHERE p.partition_key = u.partition_key",
                &[&k, &u],
            )
            .await
            .map_err(|e| pg_error("recording deliveries", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a receive", e))?;
        self.queue.delivered(&out);
        Ok(out)
    }

    /// Gives back the leases of partitions this consumer has nothing in flight from, and drops the rows
    /// of partitions left empty. Locks the rows first, so an enqueue in progress is waited for and its
    /// message seen by the emptiness check (a fresh statement, so a fresh snapshot).
    async fn release(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        partitions: &[String],
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let me = self.queue.consumer.0;
        let locked: Vec<String> = tx
            .query(
                "SELECT partition_key FROM queue_partitions WHERE partition_key = ANY($1) AND leased_by = $2 \
                 ORDER BY partition_key FOR UPDATE",
                &[&partitions, &me],
            )
            .await
            .map_err(|e| pg_error("locking partitions to release", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if locked.is_empty() {
            return Ok(());
        }
        tx.execute(
            "DELETE FROM queue_partitions p WHERE p.partition_key = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.partition_key = p.partition_key)",
            &[&locked],
        )
        .await
        .map_err(|e| pg_error("dropping empty partitions", e))?;
        tx.execute(
            "UPDATE queue_partitions SET lease_until = NULL, leased_by = NULL, delivered_upto = NULL \
             WHERE partition_key = ANY($1)",
            &[&locked],
        )
        .await
        .map_err(|e| pg_error("releasing partitions", e))?;
        Ok(())
    }

    /// Inserts messages (and their partitions, locked first and in one order) in `tx`.
    async fn insert_messages(
        tx: &tokio_postgres::Transaction<'_>,
        messages: &[QueueMessage],
    ) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut partitions: Vec<&str> = messages.iter().map(|m| m.partition_key.as_str()).collect();
        partitions.sort_unstable();
        partitions.dedup();
        tx.execute(
            "INSERT INTO queue_partitions (partition_key) SELECT * FROM unnest($1::text[]) \
             ON CONFLICT (partition_key) DO UPDATE SET lease_until = queue_partitions.lease_until WHERE false",
            &[&partitions],
        )
        .await
        .map_err(|e| pg_error("locking queue partitions", e))?;
        let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
        let keys: Vec<&str> = messages.iter().map(|m| m.partition_key.as_str()).collect();
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
        tx.execute(
            "INSERT INTO queue (message_id, partition_key, payload) \
             SELECT id, k, p FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY AS m(id, k, p, n) \
             ORDER BY n",
            &[&ids, &keys, &payloads],
        )
        .await
        .map_err(|e| pg_error("enqueueing", e))?;
        Ok(())
    }

    /// The intake's transaction: idempotency, `accepted` records and queue rows for a group of
    /// submissions, committed together.
    pub(crate) async fn submit_group(
        &self,
        submissions: Vec<Submission>,
        to: Destination,
    ) -> Result<Vec<Submitted>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting an intake", e))?;
        let mut results: Vec<Option<Submitted>> = vec![None; submissions.len()];
        // Idempotency keys: the first submission of a (key id, idempotency key) wins; the others
        // replay its command or are refused.
        let with_key: Vec<usize> = (0..submissions.len())
            .filter(|i| submissions[*i].idempotency.is_some())
            .collect();
        if !with_key.is_empty() {
            let mut key_ids = Vec::with_capacity(with_key.len());
            let mut idem = Vec::with_capacity(with_key.len());
            let mut hashes: Vec<&[u8]> = Vec::with_capacity(with_key.len());
            let mut command_ids = Vec::with_capacity(with_key.len());
            let mut created = Vec::with_capacity(with_key.len());
            for i in &with_key {
                let s = &submissions[*i];
                if let Some((key, hash)) = &s.idempotency {
                    key_ids.push(s.envelope.principal.key_id.as_str());
                    idem.push(key.as_str());
                    hashes.push(hash.as_slice());
                    command_ids.push(s.envelope.command_id);
                    created.push(Ts(s.envelope.received_at));
                }
            }
            let won: std::collections::HashSet<Uuid> = tx
                .query(
                    "INSERT INTO idempotency (key_id, idem_key, request_hash, command_id, created_at) \
                     SELECT k, i, h, c, t FROM unnest($1::text[], $2::text[], $3::bytea[], $4::uuid[], \
                     $5::timestamptz[]) WITH ORDINALITY AS s(k, i, h, c, t, n) ORDER BY n \
                     ON CONFLICT (key_id, idem_key) DO NOTHING RETURNING command_id",
                    &[&key_ids, &idem, &hashes, &command_ids, &created],
                )
                .await
                .map_err(|e| pg_error("recording idempotency keys", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let lost: Vec<usize> = with_key
                .iter()
                .copied()
                .filter(|i| !won.contains(&submissions[*i].envelope.command_id))
                .collect();
            if !lost.is_empty() {
                let k: Vec<&str> = lost
                    .iter()
                    .map(|i| submissions[*i].envelope.principal.key_id.as_str())
                    .collect();
                let ik: Vec<&str> = lost
                    .iter()
                    .filter_map(|i| {
                        submissions[*i]
                            .idempotency
                            .as_ref()
                            .map(|(k, _)| k.as_str())
                    })
                    .collect();
                let seen: HashMap<(String, String), (Vec<u8>, Uuid)> = tx
                    .query(
                        "SELECT d.key_id, d.idem_key, d.request_hash, d.command_id FROM idempotency d \
                         JOIN unnest($1::text[], $2::text[]) AS u(k, i) ON d.key_id = u.k AND d.idem_key = u.i",
                        &[&k, &ik],
                    )
                    .await
                    .map_err(|e| pg_error("reading idempotency keys", e))?
                    .iter()
                    .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
                    .collect();
                for i in lost {
                    let s = &submissions[i];
                    let Some((key, hash)) = &s.idempotency else {
                        continue;
                    };
                    let Some((seen_hash, command_id)) =
                        seen.get(&(s.envelope.principal.key_id.clone(), key.clone()))
                    else {
                        return Err(Error::Unavailable(
                            "an idempotency key vanished while being checked".into(),
                        ));
                    };
                    results[i] = Some(if seen_hash.as_slice() == hash.as_slice() {
                        Submitted::Replayed {
                            command_id: *command_id,
                        }
                    } else {
                        Submitted::KeyReused
                    });
                }
            }
        }
        let accepted: Vec<usize> = (0..submissions.len())
            .filter(|i| results[*i].is_none())
            .collect();
        if !accepted.is_empty() {
            let envelopes = accepted.iter().map(|i| &submissions[*i].envelope);
            let ids: Vec<Uuid> = envelopes.clone().map(|e| e.command_id).collect();
            let kinds: Vec<&str> = envelopes.clone().map(|e| e.command.kind()).collect();
            let key_ids: Vec<&str> = envelopes
                .clone()
                .map(|e| e.principal.key_id.as_str())
                .collect();
            let roles: Vec<&str> = envelopes
                .clone()
                .map(|e| e.principal.role.as_str())
                .collect();
            let scopes: Vec<Option<&str>> = envelopes
                .clone()
                .map(|e| e.principal.scope.as_deref())
                .collect();
            let at: Vec<Ts> = envelopes.map(|e| Ts(e.received_at)).collect();
            tx.execute(
                "INSERT INTO commands (command_id, kind, key_id, role, scope, accepted_at) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
                &[&ids, &kinds, &key_ids, &roles, &scopes, &at],
            )
            .await
            .map_err(|e| pg_error("recording accepted commands", e))?;
            let messages: Vec<QueueMessage> = accepted
                .iter()
                .map(|i| {
                    let s = &submissions[*i];
                    QueueMessage {
                        message_id: s.envelope.command_id,
                        partition_key: s.partition_key.clone(),
                        payload: s.envelope.encode(),
                    }
                })
                .collect();
            match to {
                Destination::Queue => Self::insert_messages(&tx, &messages).await?,
                Destination::Outbox => {
                    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
                    let keys: Vec<&str> =
                        messages.iter().map(|m| m.partition_key.as_str()).collect();
                    let payloads: Vec<&[u8]> =
                        messages.iter().map(|m| m.payload.as_slice()).collect();
                    tx.execute(
                        "INSERT INTO outbox (message_id, partition_key, payload) \
                         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])",
                        &[&ids, &keys, &payloads],
                    )
                    .await
                    .map_err(|e| pg_error("recording the outbox", e))?;
                }
            }
            for i in accepted {
                results[i] = Some(Submitted::Accepted {
                    command_id: submissions[i].envelope.command_id,
                });
            }
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing an intake", e))?;
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Corrupt("a submission got no result".into())))
            .collect()
    }
}

#[async_trait]
impl CommandQueue for Postgres {
    async fn enqueue(&self, messages: Vec<QueueMessage>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting an enqueue", e))?;
        Self::insert_messages(&tx, &messages).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing an enqueue", e))
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.try_receive(max.max(1)).await?;
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + POLL)).await;
        }
    }

    async fn ack(&self, tags: &[u64]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = tags.iter().filter_map(|t| i64::try_from(*t).ok()).collect();
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting an ack", e))?;
        tx.execute("DELETE FROM queue WHERE seq = ANY($1)", &[&seqs])
            .await
            .map_err(|e| pg_error("acking", e))?;
        // A failed ack leaves the tags in flight here: they are nacked or come back after the lease.
        let done = self.queue.emptied_by(tags);
        self.release(&tx, &done).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing an ack", e))?;
        self.queue.settled(tags);
        Ok(())
    }

    async fn nack(&self, tag: u64, reason: &str, retry_after: Duration) -> Result<()> {
        let seq = i64::try_from(tag).map_err(|_| Error::Corrupt(format!("tag {tag}")))?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a nack", e))?;
        let retry = retry_after.as_secs_f64();
        tx.execute(
            "UPDATE queue SET deliveries = deliveries + 1, available_at = now() + make_interval(secs => $2) \
             WHERE seq = $1",
            &[&seq, &retry],
        )
        .await
        .map_err(|e| pg_error("nacking", e))?;
        tx.execute(
            "WITH dead AS (DELETE FROM queue WHERE seq = $1 AND deliveries >= $2 \
                 RETURNING message_id, partition_key, payload) \
             INSERT INTO dead_letters (message_id, partition_key, payload, reason, failed_at) \
             SELECT message_id, partition_key, payload, $3, now() FROM dead \
             ON CONFLICT (message_id) DO UPDATE SET reason = excluded.reason, failed_at = excluded.failed_at",
            &[&seq, &MAX_DELIVERIES, &reason],
        )
        .await
        .map_err(|e| pg_error("dead-lettering", e))?;
        let done = self.queue.emptied_by(&[tag]);
        self.release(&tx, &done).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a nack", e))?;
        self.queue.settled(&[tag]);
        Ok(())
    }

    async fn depth(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM queue", &[])
            .await
            .map_err(|e| pg_error("counting the queue", e))?;
        to_u64(row.get(0), "queue depth")
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT message_id, partition_key, payload, reason, failed_at FROM dead_letters \
                 ORDER BY failed_at, message_id",
                &[],
            )
            .await
            .map_err(|e| pg_error("listing dead letters", e))?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                message_id: r.get(0),
                partition_key: r.get(1),
                payload: r.get(2),
                reason: r.get(3),
                failed_at: r.get::<_, Ts>(4).0,
            })
            .collect())
    }

    async fn replay_dead_letter(&self, message_id: Uuid) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a replay", e))?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM dead_letters WHERE message_id = $1 RETURNING partition_key, payload",
                &[&message_id],
            )
            .await
            .map_err(|e| pg_error("taking a dead letter", e))?
        else {
            return Ok(false);
        };
        let message = QueueMessage {
            message_id,
            partition_key: row.get(0),
            payload: row.get(1),
        };
        Self::insert_messages(&tx, std::slice::from_ref(&message)).await?;
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a replay", e))?;
        Ok(true)
    }
}

#[async_trait]
impl Intake for Postgres {
    async fn submit(&self, submission: Submission) -> Result<Submitted> {
        self.intake.submit(submission).await
    }

    async fn submit_many(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        self.submit_group(submissions, Destination::Queue).await
    }
}

/// Where an accepted submission's message goes: onto this database's queue, or into the outbox for a
/// broker ([`IntakeLedger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    Queue,
    Outbox,
}

#[async_trait]
impl IntakeLedger for Postgres {
    async fn record(&self, submissions: Vec<Submission>) -> Result<Vec<Submitted>> {
        self.submit_group(submissions, Destination::Outbox).await
    }

    async fn published(&self, message_ids: &[Uuid]) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM outbox WHERE message_id = ANY($1)",
                &[&message_ids],
            )
            .await
            .map_err(|e| pg_error("clearing the outbox", e))?;
        Ok(())
    }

    async fn outbox(&self, message_ids: &[Uuid]) -> Result<Vec<QueueMessage>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT o.message_id, o.partition_key, o.payload FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, n) \
                 JOIN outbox o ON o.message_id = i.id ORDER BY i.n",
                &[&message_ids],
            )
            .await
            .map_err(|e| pg_error("reading the outbox", e))?;
        Ok(rows
            .iter()
            .map(|r| QueueMessage {
                message_id: r.get(0),
                partition_key: r.get(1),
                payload: r.get(2),
            })
            .collect())
    }

    async fn unpublished(&self, older_than: Duration, limit: usize) -> Result<Vec<QueueMessage>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT message_id, partition_key, payload FROM outbox \
                 WHERE created_at <= now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
                &[&older_than.as_secs_f64(), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(|e| pg_error("reading the outbox", e))?;
        Ok(rows
            .iter()
            .map(|r| QueueMessage {
                message_id: r.get(0),
                partition_key: r.get(1),
                payload: r.get(2),
            })
            .collect())
    }
}
