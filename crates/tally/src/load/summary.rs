//! The figures of a load run: accept latency percentiles from an HDR histogram, the recovery
//! phase, the lags, and how they are printed (text with one `LOAD …` line, or one JSON object).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::Workload;

/// The figures of a run (`--json` prints this).
#[derive(Serialize)]
pub(super) struct Summary {
    pub(super) workload: Workload,
    pub(super) connections: usize,
    pub(super) rate: Option<f64>,
    pub(super) sent: u64,
    pub(super) accepted_202: u64,
    pub(super) processed: u64,
    pub(super) rejected: BTreeMap<String, u64>,
    pub(super) errors: BTreeMap<u16, u64>,
    pub(super) pushed_back_429_503: u64,
    pub(super) reconnects: u64,
    pub(super) accepted_per_s: f64,
    /// Over the measured window and the recovery phase, until the last command was decided.
    pub(super) processed_per_s: f64,
    pub(super) latency_ms: Latency,
    /// The recovery phase (`--recovery`), measured on its own.
    pub(super) recovery: Option<Phase>,
    /// From the last 202 until the last command was decided.
    pub(super) processing_lag_end_s: f64,
    /// From the last 202 until the read models reflected every command.
    pub(super) visibility_lag_end_s: f64,
    /// The probe's samples during the run: 202 → read models at that command's position.
    pub(super) visibility_lag_max_ms: f64,
    pub(super) visibility_lag_samples: usize,
    pub(super) verified: bool,
    pub(super) failure: Option<String>,
}

/// Accept latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) max: f64,
}

impl Latency {
    /// The percentiles of `latencies`, through an HDR histogram (1 µs to 10 min, 3 significant
    /// digits); all zero when there are none.
    pub(super) fn of(latencies: &[Duration]) -> anyhow::Result<Self> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
        for l in latencies {
            h.saturating_record(l.as_micros().max(1) as u64);
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// The figures of the recovery phase.
#[derive(Serialize)]
pub(super) struct Phase {
    pub(super) rate: f64,
    pub(super) seconds: f64,
    pub(super) accepted_202: u64,
    pub(super) accepted_per_s: f64,
    pub(super) pushed_back_429_503: u64,
    pub(super) latency_ms: Latency,
}

pub(super) fn print_summary(s: &Summary, json: bool, w1_rejects: u64) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(s).context("encoding the summary")?
        );
        return Ok(());
    }
    let rejected: u64 = s.rejected.values().sum();
    println!(
        "sent {} commands: {} accepted (202), {} processed, {} rejected {:?}, errors {:?}; {} pushed back with 429/503 and retried, {} reconnects",
        s.sent,
        s.accepted_202,
        s.processed,
        rejected,
        s.rejected,
        s.errors,
        s.pushed_back_429_503,
        s.reconnects
    );
    if s.workload == Workload::W1 {
        println!("(W1 sent in sequence rejects {w1_rejects} sales for stock)");
    }
    println!(
        "throughput: {:.0} commands/s accepted, {:.0} commands/s processed",
        s.accepted_per_s, s.processed_per_s
    );
    let l = &s.latency_ms;
    println!(
        "accept latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!(
        "lag: last decision {:.2}s after the last 202, read models caught up {:.2}s after it; during the run 202 → visible in queries at most {:.0} ms ({} samples)",
        s.processing_lag_end_s,
        s.visibility_lag_end_s,
        s.visibility_lag_max_ms,
        s.visibility_lag_samples
    );
    if let Some(r) = &s.recovery {
        println!(
            "RECOVERY rate={:.0} seconds={:.0} accepted={} accepted_per_s={:.0} pushed_back={} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
            r.rate,
            r.seconds,
            r.accepted_202,
            r.accepted_per_s,
            r.pushed_back_429_503,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.latency_ms.max
        );
    }
    println!(
        "LOAD workload={} commands={} accepted={} rejected={} accepted_per_s={:.0} processed_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} lag_end_s={:.2} lag_max_ms={:.0} verified={}",
        serde_json::to_value(s.workload)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.sent,
        s.processed,
        rejected,
        s.accepted_per_s,
        s.processed_per_s,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        s.visibility_lag_end_s,
        s.visibility_lag_max_ms,
        s.verified
    );
    if let Some(f) = &s.failure {
        eprintln!("verification FAILED: {f}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let latencies: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let l = Latency::of(&latencies).expect("histogram");
        // Three significant digits: each figure within 0.1 % of the exact percentile.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.p50, 500.0), "p50 {l:?}");
        assert!(near(l.p90, 900.0), "p90 {l:?}");
        assert!(near(l.p99, 990.0), "p99 {l:?}");
        assert!(near(l.p999, 999.0), "p99.9 {l:?}");
        assert!(near(l.max, 1000.0), "max {l:?}");
        let none = Latency::of(&[]).expect("histogram");
        assert_eq!((none.p50, none.max), (0.0, 0.0));
        // A latency beyond the histogram's range is kept at its top, not dropped.
        let huge = Latency::of(&[Duration::from_secs(3600)]).expect("histogram");
        assert!(huge.max >= 599_000.0, "{huge:?}");
    }
}
