//! What the load generator watches while a run goes: the visibility lag (a command's 202 until the
//! read models answer at its position), and the progress bar.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{Outcome, Shared, get_json, outcome};
use super::http1::Conn;

/// Waits until the read models answer at `position` (through one store's inventory).
pub(super) async fn visible(
    shared: &Shared,
    conn: &mut Conn,
    store: &str,
    position: u64,
) -> anyhow::Result<()> {
    let path = format!("/v1/inventory/{store}?min_position={position}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match get_json::<Value>(shared, conn, &path).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %format!("{e:#}"), "read models not there yet");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Samples the visibility lag while the run goes: the newest 202's command, once processed, until
/// the read models answer at its position. Returns the samples in milliseconds.
pub(super) async fn probe_lag(
    shared: Arc<Shared>,
    stores: Arc<Vec<Option<String>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<f64> {
    let mut conn = Conn::new(shared.target.clone());
    let mut samples = Vec::new();
    let mut last = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return samples,
        }
        let newest = shared.newest.lock().ok().and_then(|n| *n);
        let Some((index, id, accepted_at)) = newest else {
            continue;
        };
        if last == Some(id) {
            continue;
        }
        last = Some(id);
        let Some(store) = stores.get(index).cloned().flatten() else {
            continue;
        };
        let sample = async {
            let position = match outcome(&shared, &mut conn, id).await? {
                Outcome::Processed(p) => p,
                Outcome::Rejected(_) => return Ok(None),
            };
            visible(&shared, &mut conn, &store, position).await?;
            Ok::<_, anyhow::Error>(Some(accepted_at.elapsed().as_secs_f64() * 1000.0))
        };
        match sample.await {
            Ok(Some(ms)) => samples.push(ms),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "lag probe failed"),
        }
    }
}

/// Prints the progress to stderr while the run goes (when stderr is a terminal).
pub(super) fn progress(shared: &Arc<Shared>, total: u64) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} accepted ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let done = shared.accepted.load(Ordering::Relaxed);
            bar.set_position(done);
            let back = shared.pushed_back.load(Ordering::Relaxed);
            if back > 0 {
                bar.set_message(format!("{back} pushed back (429/503)"));
            }
            if done >= total {
                bar.finish_and_clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
