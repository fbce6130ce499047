//! `tally bench events-check`: `tally events check` on a long W1-shaped log (the log of `bench
//! asof`, not projected): events decoded per second, and what the check takes in memory. The peak
//! is the kernel's (`VmHWM` of /proc/self/status, reset before the check through
//! /proc/self/clear_refs where the kernel allows it, so filling the log does not count), and the
//! growth of the resident set over what it was before the check, sampled every 10 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::asof::{LogOptions, fill_log};
use super::scratch::Scratch;

pub async fn events_check_bench(log: LogOptions) -> anyhow::Result<()> {
    let scratch = Scratch::open(log.postgres.clone()).await?;
    let result = run(&scratch, &log).await;
    scratch.close(result).await
}

async fn run(scratch: &Scratch, log: &LogOptions) -> anyhow::Result<()> {
    eprintln!("events check on {}, {}", scratch.name, scratch.place);
    let (head, _) = fill_log(&scratch.backend, log).await?;
    let before = kib("VmRSS")?;
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let sampler = Sampler::start();
    let summary = crate::events::check(
        scratch.backend.events.clone(),
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    let most = sampler.stop();
    let hwm = kib("VmHWM")?;
    if summary.failed > 0 || summary.total != head {
        anyhow::bail!(
            "the check read {} of {head} events, {} failed: this run has no figure",
            summary.total,
            summary.failed
        );
    }
    println!(
        "events check: {} events in {:.2}s = {:.0} events/s (pages of {})",
        summary.total,
        summary.seconds,
        summary.events_per_second,
        crate::events::PAGE
    );
    println!(
        "memory: resident {before} KiB before, at most {most} KiB during (+{} KiB); VmHWM {hwm} KiB{}",
        most.saturating_sub(before),
        if reset {
            " (reset before the check)"
        } else {
            " (could not be reset: includes filling the log)"
        }
    );
    println!(
        "EVENTS_CHECK backend={} events={} seconds={:.2} events_per_s={:.0} rss_before_kib={before} rss_growth_kib={} vmhwm_kib={hwm} hwm_reset={reset}",
        scratch.name,
        summary.total,
        summary.seconds,
        summary.events_per_second,
        most.saturating_sub(before),
    );
    Ok(())
}

/// A line `NAME:   1234 kB` of /proc/self/status, in KiB.
pub(super) fn kib(name: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {name} in /proc/self/status"))
}

/// The largest resident set seen by a thread that looks every 10 ms.
pub(super) struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, most) = (stop.clone(), most.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = kib("VmRSS") {
                        most.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Self { stop, most, thread }
    }

    pub(super) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        if let Ok(rss) = kib("VmRSS") {
            self.most.fetch_max(rss, Ordering::Relaxed);
        }
        self.most.load(Ordering::Relaxed)
    }
}
