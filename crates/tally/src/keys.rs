//! `tally keys`: key administration on the store, without the server.

use anyhow::Context;
use jiff::Timestamp;
use tally_core::model::ApiKey;
use tally_http::auth::generate_key;
use tally_http::keys::{NewKeyRequest, check_key_request};

use crate::cli::KeysCmd;
use crate::config::{Opened, StoreConfig};

pub async fn run(store: &StoreConfig, action: KeysCmd) -> anyhow::Result<()> {
    let opened = Opened::store_only(store, true, std::time::Duration::from_secs(10)).await?;
    let keys = opened.backend().keys;
    match action {
        KeysCmd::Create {
            role,
            scope,
            rate_per_second,
        } => {
            let (role, scope, rate) = check_key_request(&NewKeyRequest {
                role,
                scope,
                rate_per_second,
            })
            .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
            let new = generate_key();
            keys.create(
                ApiKey {
                    key_id: new.key_id.clone(),
                    role,
                    scope,
                    rate_per_second: rate,
                    created_at: Timestamp::now(),
                    revoked_at: None,
                },
                new.hash,
            )
            .await
            .context("storing the key")?;
            println!("key_id: {}", new.key_id);
            println!("key: {}", new.secret);
        }
        KeysCmd::List => {
            for k in keys.list().await.context("listing keys")? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.role.as_str(),
                    k.scope.as_deref().unwrap_or("-"),
                    k.created_at,
                    k.revoked_at
                        .map_or_else(|| "live".to_owned(), |t| format!("revoked {t}"))
                );
            }
        }
        KeysCmd::Revoke { key_id } => {
            if !keys
                .revoke(&key_id, Timestamp::now())
                .await
                .context("revoking")?
            {
                anyhow::bail!("no live key {key_id}");
            }
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

fn describe(e: tally_http::error::ApiError) -> String {
    match e {
        tally_http::error::ApiError::Invalid(errors) => errors
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
