//! What every benchmark starts from: a scratch backend (a temporary SQLite data dir, or a scratch
//! schema of a PostgreSQL database, dropped afterwards), a workload submitted through the intake as
//! the gateway would, and the processor run until the queue is empty.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use tally_core::model::{CommandEnvelope, Principal, Role};
use tally_core::ports::Submission;
use tally_core::processor::{Processor, ProcessorConfig};
use tally_core::{Backend, Signals};
use uuid::Uuid;

enum Keep {
    /// The directory is removed when this is dropped.
    Dir {
        dir: tempfile::TempDir,
        store: Arc<tally_store_sqlite::Sqlite>,
    },
    Schema(Arc<tally_store_postgres::Postgres>),
}

pub struct Scratch {
    pub backend: Backend,
    pub name: &'static str,
    pub place: String,
    keep: Keep,
}

/// Bytes a table (with its indexes) takes, as the backend counts them.
pub struct TableBytes {
    pub table: String,
    pub bytes: u64,
}

impl Scratch {
    /// A fresh SQLite data dir, or with `postgres` a fresh schema of that database.
    pub async fn open(postgres: Option<String>) -> anyhow::Result<Self> {
        match postgres {
            None => {
                let dir = tempfile::tempdir().context("creating a temporary data dir")?;
                let store = tally_store_sqlite::Sqlite::open(dir.path())
                    .context("opening the benchmark database")?;
                Ok(Self {
                    backend: store.backend(),
                    name: "sqlite",
                    place: format!("data in {}", dir.path().display()),
                    keep: Keep::Dir { dir, store },
                })
            }
            Some(url) => {
                let mut options = tally_store_postgres::PgOptions::new(url);
                options.schema = format!("bench_{}", Uuid::now_v7().simple());
                let pg = tally_store_postgres::Postgres::connect(options)
                    .await
                    .context("connecting to the benchmark database")?;
                Ok(Self {
                    backend: pg.backend(),
                    name: "postgres",
                    place: format!("scratch schema {}", pg.options().schema),
                    keep: Keep::Schema(pg),
                })
            }
        }
    }

    /// What each table takes on disk, largest first.
    pub async fn table_bytes(&self) -> anyhow::Result<Vec<TableBytes>> {
        let mut tables: Vec<TableBytes> = match &self.keep {
            Keep::Dir { store, .. } => store.table_bytes().await,
            Keep::Schema(pg) => pg.table_bytes().await,
        }
        .context("measuring the tables")?
        .into_iter()
        .map(|(table, bytes)| TableBytes { table, bytes })
        .collect();
        tables.sort_by_key(|t| std::cmp::Reverse(t.bytes));
        Ok(tables)
    }

    /// Stores `percent` % of the sales, voids and returns (by position) in their schema version 1
    /// form, as a build before discounts wrote them: the same bytes less each line's
    /// `discount_cents` (and a `till_id`, which W1 never sets). Only for logs without discounts,
    /// whose facts the old form holds exactly. Returns how many events it rewrote.
    pub async fn store_as_version_1(&self, percent: u32) -> anyhow::Result<u64> {
        const TYPES: &str = "('SaleRecorded', 'SaleVoided', 'ReturnRecorded')";
        // W1's sales have at most a few lines; removing a path that is absent is a no-op.
        const LINES: usize = 64;
        match &self.keep {
            Keep::Dir { dir, .. } => {
                let paths: String = (0..LINES)
                    .map(|i| format!(", '$.lines[{i}].discount_cents'"))
                    .collect();
                let sql = format!(
                    "UPDATE events SET schema_version = 1, data = json_remove(data, '$.till_id'{paths}) \
                     WHERE event_type IN {TYPES} AND position % 100 < ?1"
                );
                let db = dir.path().join("tally.db");
                let n = tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(&db)?;
                    conn.busy_timeout(Duration::from_secs(30))?;
                    conn.execute(&sql, [i64::from(percent)])
                })
                .await
                .context("rewriting events")?
                .context("storing events in their version 1 form")?;
                Ok(n as u64)
            }
            Keep::Schema(pg) => {
                let options = pg.options();
                let (client, connection) =
                    tokio_postgres::connect(&options.url, tokio_postgres::NoTls)
                        .await
                        .context("connecting to rewrite events")?;
                tokio::spawn(connection);
                let paths: String = (0..LINES)
                    .map(|i| format!(" #- '{{lines,{i},discount_cents}}'"))
                    .collect();
                let sql = format!(
                    "UPDATE {}.events SET schema_version = 1, data = ((data::jsonb - 'till_id'){paths})::text \
                     WHERE event_type IN {TYPES} AND position % 100 < $1",
                    options.schema
                );
                let n = client
                    .execute(&sql, &[&i64::from(percent)])
                    .await
                    .context("storing events in their version 1 form")?;
                Ok(n)
            }
        }
    }

    /// Drops the scratch schema (a data dir goes with its guard), then returns `result`. With
    /// `TALLY_BENCH_KEEP=1` in the environment both are kept, to be looked at afterwards.
    pub async fn close(self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let keep = std::env::var_os("TALLY_BENCH_KEEP").is_some_and(|v| v == "1");
        let dropped = match self.keep {
            Keep::Dir { dir, .. } if keep => {
                eprintln!("kept the data dir {}", dir.keep().display());
                Ok(())
            }
            Keep::Schema(pg) if keep => {
                eprintln!("kept the schema {}", pg.options().schema);
                Ok(())
            }
            Keep::Dir { .. } => Ok(()),
            Keep::Schema(pg) => pg.drop_schema().await,
        };
        result?;
        dropped.context("dropping the scratch schema")?;
        Ok(())
    }
}

/// Submits the commands through the intake, as the gateway does: each command durable, queued and
/// recorded as accepted before the processor starts.
pub async fn enqueue(
    backend: &Backend,
    commands: Vec<tally_domain::Command>,
) -> anyhow::Result<()> {
    let principal = Principal {
        key_id: "bench".into(),
        role: Role::Admin,
        scope: None,
    };
    let now = Timestamp::now();
    let mut submissions = Vec::with_capacity(commands.len());
    for command in commands {
        let envelope = CommandEnvelope {
            command_id: Uuid::now_v7(),
            received_at: now,
            principal: principal.clone(),
            correlation_id: None,
            command,
        };
        let partition_key = envelope.command.partition_key();
        submissions.push(Submission {
            envelope,
            partition_key,
            idempotency: None,
        });
    }
    while !submissions.is_empty() {
        let rest = submissions.split_off(submissions.len().min(10_000));
        let chunk = std::mem::replace(&mut submissions, rest);
        backend
            .intake
            .submit_many(chunk)
            .await
            .context("submitting the workload")?;
    }
    Ok(())
}

/// Runs the processor until the queue is empty; returns `(accepted, rejected)`.
pub async fn process(
    backend: &Backend,
    signals: &Signals,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut processor = Processor::new(
        backend.events.clone(),
        backend.queue.clone(),
        signals.clone(),
        ProcessorConfig {
            commit_size: batch,
            ..ProcessorConfig::default()
        },
    );
    let (mut accepted, mut rejected) = (0u64, 0u64);
    while backend.queue.depth().await? > 0 {
        let r = processor
            .step(Duration::from_millis(100))
            .await
            .context("processor step")?;
        accepted += r.processed as u64;
        rejected += r.rejected as u64;
        if r.poison > 0 {
            bail!("{} benchmark commands could not be decoded", r.poison);
        }
    }
    Ok((accepted, rejected))
}
