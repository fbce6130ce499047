//! `tally bench verify`: `tally verify` on a long W1-shaped log, projected first (the log of `bench
//! asof`): events folded per second, and what it takes in memory (measured as `bench events-check`
//! does: the kernel's peak, reset before the run, and the resident set's growth).

use super::asof::{LogOptions, fill};
use super::events::{Sampler, kib};
use super::scratch::Scratch;

pub async fn verify_bench(log: LogOptions) -> anyhow::Result<()> {
    let scratch = Scratch::open(log.postgres.clone()).await?;
    let result = run(&scratch, &log).await;
    scratch.close(result).await
}

async fn run(scratch: &Scratch, log: &LogOptions) -> anyhow::Result<()> {
    eprintln!("verify on {}, {}", scratch.name, scratch.place);
    let (head, _) = fill(&scratch.backend, log).await?;
    let before = kib("VmRSS")?;
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let sampler = Sampler::start();
    let report = tally_core::verify::verify(
        &scratch.backend,
        tally_core::verify::Options::default(),
        |_, _| {},
    )
    .await?;
    let most = sampler.stop();
    let hwm = kib("VmHWM")?;
    if !report.ok() || report.events != head {
        anyhow::bail!(
            "verify folded {} of {head} events and found differences ({}): this run has no figure",
            report.events,
            !report.ok()
        );
    }
    let rows: usize = report.tables.iter().map(|t| t.stored_rows).sum();
    let per_s = report.events as f64 / report.seconds.max(1e-9);
    let phases = report.phases;
    println!(
        "verify: {} events and {rows} read-model rows in {:.2}s = {per_s:.0} events/s \
         (reading the tables {:.2}s, folding the log {:.2}s, comparing {:.2}s)",
        report.events, report.seconds, phases.read, phases.fold, phases.compare
    );
    println!(
        "memory: resident {before} KiB before, at most {most} KiB during (+{} KiB); VmHWM {hwm} KiB{}",
        most.saturating_sub(before),
        if reset {
            " (reset before the run)"
        } else {
            " (could not be reset: includes filling the log)"
        }
    );
    println!(
        "VERIFY backend={} events={} rows={rows} seconds={:.2} events_per_s={per_s:.0} rss_before_kib={before} rss_growth_kib={} vmhwm_kib={hwm} hwm_reset={reset}",
        scratch.name,
        report.events,
        report.seconds,
        most.saturating_sub(before),
    );
    Ok(())
}
