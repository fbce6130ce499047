//! Sending an import's commands, a few in flight, each under an idempotency key made from its id
//! (`import-sale-<sale_id>`), then reading back how each ended.
//!
//! The server answers a repeated idempotency key with the first answer (the same `command_id`)
//! and says so with `Idempotent-Replayed: true`: such a command was imported by an earlier run and
//! is counted as "already imported", not sent.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use futures_util::StreamExt;

use super::Kind;
use super::validate::Ready;
use crate::client::{Client, problem_of};

/// How one command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Accepted by this run.
    Sent,
    /// Accepted before this run (its first answer repeated).
    Already,
    /// Answered with an error at once (4xx): the reason.
    Refused(String),
    /// Accepted, then rejected by the processor: the code.
    Rejected(String),
}

/// The tally of a run, by command.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub sent: u64,
    pub already: u64,
    /// (id, reason) of the commands refused or rejected.
    pub rejected: Vec<(String, String)>,
    /// Seconds spent sending, and then learning the outcomes.
    pub send_secs: f64,
    pub wait_secs: f64,
}

/// Tries of a request whose connection was lost before the run gives up.
const LOST_TRIES: u64 = 5;

/// Sends one command; its command id and whether it is new, or why it was refused.
async fn send_one(
    client: &Client,
    kind: Kind,
    r: &Ready,
) -> anyhow::Result<Result<(String, bool), String>> {
    let key = format!("import-{}-{}", kind.singular(), r.id);
    // A lost connection is tried again a few times: under the same idempotency key, a request
    // that did get through before is answered with its first answer, not imported twice.
    let mut lost = 0;
    let answer = loop {
        match client.post(kind.path(), &r.body, Some(&key)).await {
            Err(e) if problem_of(&e).is_none() && lost < LOST_TRIES => {
                lost += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * lost)).await;
                tracing::debug!(error = %format!("{e:#}"), "sending again");
            }
            answer => break answer,
        }
    };
    match answer {
        Ok(answer) => {
            let json = answer.json()?;
            let id = json["command_id"]
                .as_str()
                .context("a 202 names its command_id")?
                .to_owned();
            let fresh = answer
                .headers
                .get("idempotent-replayed")
                .is_none_or(|v| v.as_bytes() != b"true");
            Ok(Ok((id, fresh)))
        }
        Err(e) => match problem_of(&e) {
            Some(p) if p.status == 409 => Ok(Err(format!(
                "imported before with other content (the server keeps the first): {p}"
            ))),
            Some(p) if p.status < 500 => Ok(Err(p.to_string())),
            _ => Err(e.context(format!(
                "sending {} {}; running the import again is safe (what was sent is not sent twice)",
                kind.id_field(),
                r.id
            ))),
        },
    }
}

/// How a command accepted earlier ended (waiting for it to be decided).
async fn decided(client: &Client, command_id: &str) -> anyhow::Result<Option<String>> {
    for _ in 0..60 {
        let s = client.command(command_id, 10_000).await?;
        match s["status"].as_str() {
            Some("processed") => return Ok(None),
            Some("rejected") => {
                let code = s["rejection"]["code"].as_str().unwrap_or("rejected");
                let message = s["rejection"]["message"].as_str().unwrap_or("");
                return Ok(Some(format!("{code}: {message}")));
            }
            _ => {}
        }
    }
    anyhow::bail!("command {command_id} was not decided within 10 minutes")
}

/// Sends `ready` with `concurrency` requests in flight; `rows_done` counts the rows answered (for
/// the progress bar). With `wait`, reads back how each accepted command ended.
pub async fn send_all(
    client: &Client,
    kind: Kind,
    ready: &[Ready],
    concurrency: usize,
    rows_done: &AtomicU64,
    wait: bool,
) -> anyhow::Result<Outcomes> {
    let sending = std::time::Instant::now();
    let sent: Vec<anyhow::Result<(usize, Fate, Option<String>)>> =
        futures_util::stream::iter(ready.iter().enumerate())
            .map(|(i, r)| async move {
                let answer = send_one(client, kind, r).await?;
                rows_done.fetch_add(r.rows, Ordering::Relaxed);
                Ok(match answer {
                    Ok((id, true)) => (i, Fate::Sent, Some(id)),
                    Ok((id, false)) => (i, Fate::Already, Some(id)),
                    Err(reason) => (i, Fate::Refused(reason), None),
                })
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut fates = Vec::with_capacity(sent.len());
    for s in sent {
        fates.push(s?);
    }
    let send_secs = sending.elapsed().as_secs_f64();
    let waiting = std::time::Instant::now();
    if wait {
        let checked: Vec<anyhow::Result<(usize, Option<String>)>> = futures_util::stream::iter(
            fates
                .iter()
                .filter_map(|(i, _, id)| Some((*i, id.clone()?))),
        )
        .map(|(i, id)| async move { Ok((i, decided(client, &id).await?)) })
        .buffer_unordered(concurrency.max(1) * 2)
        .collect()
        .await;
        let mut rejected = std::collections::HashMap::new();
        for c in checked {
            let (i, code) = c?;
            if let Some(code) = code {
                rejected.insert(i, code);
            }
        }
        for (i, fate, _) in &mut fates {
            if let Some(code) = rejected.remove(i) {
                *fate = Fate::Rejected(code);
            }
        }
    }
    let mut out = Outcomes {
        send_secs,
        wait_secs: waiting.elapsed().as_secs_f64(),
        ..Outcomes::default()
    };
    fates.sort_by_key(|(i, ..)| *i);
    for (i, fate, _) in fates {
        match fate {
            Fate::Sent => out.sent += 1,
            Fate::Already => out.already += 1,
            Fate::Refused(reason) | Fate::Rejected(reason) => {
                out.rejected.push((ready[i].id.clone(), reason));
            }
        }
    }
    Ok(out)
}
