//! `tally dlq list|replay`: the commands the processor could not handle after their retries.

use anyhow::Context;
use serde_json::json;
use tally_core::model::CommandEnvelope;

use crate::cli::DlqCmd;
use crate::config::{Opened, StoreConfig};

pub async fn run(store: &StoreConfig, action: DlqCmd) -> anyhow::Result<()> {
    let opened = Opened::open(store, true, std::time::Duration::from_secs(10)).await?;
    let backend = opened.backend();
    let queue = &backend.queue;
    match action {
        DlqCmd::List { json } => {
            let letters = queue.dead_letters().await.context("listing dead letters")?;
            if !json && letters.is_empty() {
                println!("no dead letters");
            }
            for d in letters {
                let command = CommandEnvelope::decode(&d.payload).ok();
                if json {
                    let line = json!({
                        "message_id": d.message_id,
                        "partition_key": d.partition_key,
                        "failed_at": d.failed_at.to_string(),
                        "reason": d.reason,
                        "kind": command.as_ref().map(|c| c.command.kind()),
                        "command": command.as_ref().map(|c| &c.command),
                        "payload_bytes": d.payload.len(),
                    });
                    println!("{line}");
                } else {
                    let kind = command
                        .as_ref()
                        .map(|c| c.command.kind().to_owned())
                        .unwrap_or_else(|| format!("undecodable ({} bytes)", d.payload.len()));
                    println!(
                        "{}  {}  {}  {}  {}",
                        d.message_id, d.failed_at, d.partition_key, kind, d.reason
                    );
                }
            }
        }
        DlqCmd::Replay { ids, all } => {
            let ids = if all {
                queue
                    .dead_letters()
                    .await
                    .context("listing dead letters")?
                    .into_iter()
                    .map(|d| d.message_id)
                    .collect()
            } else {
                ids
            };
            let mut missing = Vec::new();
            for id in &ids {
                if queue
                    .replay_dead_letter(*id)
                    .await
                    .with_context(|| format!("replaying {id}"))?
                {
                    println!("replayed {id}");
                } else {
                    missing.push(id.to_string());
                }
            }
            if !missing.is_empty() {
                anyhow::bail!("no dead letter with id {}", missing.join(", "));
            }
        }
    }
    Ok(())
}
