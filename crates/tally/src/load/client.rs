//! The load generator's side of the write path: a workload's commands as requests, sent on the
//! keep-alive connections of `http1.rs` (retried after 429/503 with the same idempotency key, and
//! when a connection is lost), and their outcomes read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use tally_domain::Command;

use super::http1::{Conn, Target};
use super::pacing::on_workers;

/// A command as a request: path and JSON body.
pub(super) fn request(command: &Command) -> anyhow::Result<(String, Value)> {
    let tagged = serde_json::to_value(command).context("encoding a command")?;
    let body = tagged
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .context("a command is one tagged object")?;
    let path = match command {
        Command::RegisterSupplier { .. } => "/v1/suppliers".to_owned(),
        Command::RegisterStore { .. } => "/v1/stores".to_owned(),
        Command::RegisterItem { .. } => "/v1/items".to_owned(),
        Command::RecordDelivery { .. } => "/v1/deliveries".to_owned(),
        Command::RecordSale { .. } => "/v1/sales".to_owned(),
        Command::RecordReturn { .. } => "/v1/returns".to_owned(),
        Command::AdjustStock { .. } => "/v1/stock-adjustments".to_owned(),
        Command::VoidSale {
            sale_id, reason, ..
        } => {
            return Ok((
                format!("/v1/sales/{}/void", sale_id.as_str()),
                serde_json::json!({ "reason": reason.as_str() }),
            ));
        }
        Command::CorrectDelivery {
            correction_id,
            delivery_id,
            reason,
            lines,
            ..
        } => {
            return Ok((
                format!("/v1/deliveries/{}/corrections", delivery_id.as_str()),
                serde_json::json!({
                    "correction_id": correction_id.as_str(),
                    "reason": reason.as_str(),
                    "lines": lines,
                }),
            ));
        }
    };
    Ok((path, body))
}

/// The store a command concerns, for the lag probe's read.
pub(super) fn store_of(command: &Command) -> Option<String> {
    match command {
        Command::RecordDelivery { store_id, .. }
        | Command::RecordSale { store_id, .. }
        | Command::RecordReturn { store_id, .. }
        | Command::AdjustStock { store_id, .. } => Some(store_id.as_str().to_owned()),
        _ => None,
    }
}

/// What the load generator shares between its workers.
pub(super) struct Shared {
    pub(super) target: Target,
    pub(super) key: String,
    /// Every command of the workload, encoded, by index.
    pub(super) requests: Vec<Vec<u8>>,
    /// Commands that got their 202 (all phases), for the progress line.
    pub(super) accepted: AtomicU64,
    /// 429/503 answers (retried).
    pub(super) pushed_back: AtomicU64,
    /// The newest 202: (index, command id, when), for the lag probe.
    pub(super) newest: std::sync::Mutex<Option<(usize, uuid::Uuid, Instant)>>,
}

/// A command that got its 202.
pub(super) struct Sent {
    pub(super) index: usize,
    pub(super) command_id: uuid::Uuid,
    pub(super) latency: Duration,
}

/// What one worker saw.
#[derive(Default)]
pub(super) struct WorkerReport {
    pub(super) sent: Vec<Sent>,
    /// Final answers other than 202, by status, with one example body each.
    pub(super) errors: BTreeMap<u16, (u64, String)>,
    /// Requests that lost their connection (retried with the same idempotency key).
    pub(super) reconnects: u64,
}

impl WorkerReport {
    pub(super) fn merge(&mut self, other: WorkerReport) {
        self.sent.extend(other.sent);
        self.reconnects += other.reconnects;
        for (status, (n, example)) in other.errors {
            self.errors.entry(status).or_insert((0, example)).0 += n;
        }
    }
}

#[derive(Deserialize)]
pub(super) struct AcceptedBody {
    command_id: uuid::Uuid,
}

/// Sends one command until it gets a final answer: 202, or an error other than 429/503/lost connection.
pub(super) async fn send_one(
    shared: &Shared,
    conn: &mut Conn,
    index: usize,
    due: Instant,
    report: &mut WorkerReport,
) -> anyhow::Result<()> {
    let request = &shared.requests[index];
    let mut lost = 0u32;
    loop {
        let r = match conn.send(request).await {
            Ok(r) => r,
            Err(e) => {
                lost += 1;
                report.reconnects += 1;
                if lost > 600 {
                    return Err(e.context("the server stayed unreachable"));
                }
                tracing::debug!(error = %format!("{e:#}"), "request failed; retrying with the same key");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match r.status {
            202 => {
                let body: AcceptedBody =
                    serde_json::from_slice(&r.body).context("a 202 names its command")?;
                let now = Instant::now();
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut newest) = shared.newest.try_lock() {
                    *newest = Some((index, body.command_id, now));
                }
                report.sent.push(Sent {
                    index,
                    command_id: body.command_id,
                    latency: now.saturating_duration_since(due),
                });
                return Ok(());
            }
            429 | 503 => {
                shared.pushed_back.fetch_add(1, Ordering::Relaxed);
                let wait = r.retry_after.unwrap_or(1).clamp(1, 5);
                // A fraction of Retry-After, jittered by index, so a fleet does not come back at once.
                let ms = wait * 200 + (index as u64 % 97);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            status => {
                let e = report
                    .errors
                    .entry(status)
                    .or_insert_with(|| (0, String::from_utf8_lossy(&r.body).into_owned()));
                e.0 += 1;
                return Ok(());
            }
        }
    }
}

/// A command's outcome as `GET /v1/commands/{id}` tells it.
#[derive(Deserialize)]
pub(super) struct Status {
    pub(super) status: String,
    #[serde(default)]
    pub(super) position: Option<u64>,
    #[serde(default)]
    pub(super) rejection: Option<Rejection>,
}

#[derive(Deserialize)]
pub(super) struct Rejection {
    pub(super) code: String,
}

/// How a command ended: its rejection code, or its position.
#[derive(Clone)]
pub(super) enum Outcome {
    Processed(u64),
    Rejected(String),
}

pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    conn: &mut Conn,
    path: &str,
) -> anyhow::Result<T> {
    let request = shared.target.encode("GET", path, &shared.key, None, None);
    let mut lost = 0;
    loop {
        match conn.send(&request).await {
            Ok(r) if r.status == 200 => {
                return serde_json::from_slice(&r.body).with_context(|| format!("GET {path}"));
            }
            Ok(r) if r.status == 429 || r.status == 503 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => bail!(
                "GET {path}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) if lost < 600 => {
                lost += 1;
                tracing::debug!(error = %format!("{e:#}"), "GET failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("GET {path}"))),
        }
    }
}

/// Waits for a command's outcome.
pub(super) async fn outcome(
    shared: &Shared,
    conn: &mut Conn,
    id: uuid::Uuid,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let path = format!("/v1/commands/{id}?wait_ms=10000");
    loop {
        let s: Status = get_json(shared, conn, &path).await?;
        match s.status.as_str() {
            "processed" => return Ok(Outcome::Processed(s.position.unwrap_or(0))),
            "rejected" => {
                return Ok(Outcome::Rejected(
                    s.rejection.map_or_else(|| "?".to_owned(), |r| r.code),
                ));
            }
            _ if Instant::now() > deadline => bail!("command {id} was never decided"),
            _ => {}
        }
    }
}

/// Every command's outcome, in the order of `ids`.
pub(super) async fn outcomes(
    shared: &Arc<Shared>,
    ids: Vec<uuid::Uuid>,
    connections: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let gathered = on_workers(
        shared,
        Arc::new(ids),
        connections,
        |shared, mut conn, shares| async move {
            let mut got = Vec::new();
            while let Some((n, &id)) = shares.take() {
                got.push((n, outcome(&shared, &mut conn, id).await?));
            }
            Ok(got)
        },
    )
    .await?;
    let mut all: Vec<(usize, Outcome)> = gathered.into_iter().flatten().collect();
    all.sort_by_key(|(n, _)| *n);
    Ok(all.into_iter().map(|(_, o)| o).collect())
}

/// The last command that got a 202 in each partition (in W1 order): once it is decided, so is the
/// rest of its partition.
pub(super) fn last_per_partition(commands: &[Command], sent: &[Sent]) -> Vec<uuid::Uuid> {
    let mut last: HashMap<String, (usize, uuid::Uuid)> = HashMap::new();
    for s in sent {
        let entry = last
            .entry(commands[s.index].partition_key())
            .or_insert((s.index, s.command_id));
        if s.index >= entry.0 {
            *entry = (s.index, s.command_id);
        }
    }
    last.into_values().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::workload::{W1Size, w1};

    fn sale(store: &str, n: usize) -> Command {
        let workload = w1(
            1,
            W1Size {
                sales: 10,
                ..W1Size::FULL
            },
        );
        let template = workload
            .commands
            .iter()
            .find(|c| matches!(c, Command::RecordSale { .. }))
            .expect("W1 has sales")
            .clone();
        let Command::RecordSale {
            lines, occurred_at, ..
        } = template
        else {
            unreachable!()
        };
        Command::RecordSale {
            sale_id: tally_domain::values::SaleId::parse(format!("s-t{n}")).expect("sale id"),
            store_id: tally_domain::values::StoreId::parse(store).expect("store id"),
            occurred_at,
            lines,
            till_id: None,
        }
    }

    #[test]
    fn the_last_202_of_each_partition_is_tracked_whatever_order_the_answers_came_in() {
        let commands = vec![
            sale("store-a", 0),
            sale("store-b", 1),
            sale("store-a", 2),
            sale("store-b", 3),
            sale("store-a", 4),
        ];
        let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
        // Answers arrive out of order; command 4 never got its 202.
        let sent: Vec<Sent> = [2, 0, 3, 1]
            .into_iter()
            .map(|index| Sent {
                index,
                command_id: ids[index],
                latency: Duration::from_millis(1),
            })
            .collect();
        let mut last = last_per_partition(&commands, &sent);
        last.sort();
        let mut want = vec![ids[2], ids[3]];
        want.sort();
        assert_eq!(last, want);
    }

    #[test]
    fn worker_reports_add_up() {
        let mut a = WorkerReport {
            sent: vec![Sent {
                index: 0,
                command_id: uuid::Uuid::now_v7(),
                latency: Duration::ZERO,
            }],
            errors: BTreeMap::from([(422, (2, "first".to_owned()))]),
            reconnects: 1,
        };
        let b = WorkerReport {
            sent: vec![Sent {
                index: 1,
                command_id: uuid::Uuid::now_v7(),
                latency: Duration::ZERO,
            }],
            errors: BTreeMap::from([
                (422, (3, "second".to_owned())),
                (400, (1, "bad".to_owned())),
            ]),
            reconnects: 2,
        };
        a.merge(b);
        assert_eq!(a.sent.len(), 2);
        assert_eq!(a.reconnects, 3);
        assert_eq!(a.errors[&422], (5, "first".to_owned()));
        assert_eq!(a.errors[&400], (1, "bad".to_owned()));
    }
}
