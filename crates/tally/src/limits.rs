//! `[limits]` in tally.toml: traffic management of the HTTP API (rate limits, load shedding, the
//! request timeout). Each key left out keeps its default ([`Limits::default`]):
//!
//! ```toml
//! [limits]
//! burst_seconds = 1            # a key may send this many seconds of its rate at once
//! ip_rate_per_second = 20      # requests without a known key, per client address
//! ip_burst = 50
//! max_in_flight = 1024         # requests in hand at once; beyond: 503
//! queue_high_water = 20000     # command POSTs get 503 while more commands wait in the queue
//! request_timeout_seconds = 40 # longer than the longest long poll (wait_ms ≤ 30 s)
//! [limits.rate_per_second]     # per API key, by role, unless the key has its own rate_per_second
//! admin = 100000
//! store = 200
//! supplier = 100
//! analyst = 50
//! auditor = 50
//! ```

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tally_http::traffic::{Limits, RoleRates};

/// The longest a request may ask to wait (`wait_ms` of a command status).
const LONGEST_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default)]
    pub rate_per_second: RatesSection,
    pub burst_seconds: Option<u32>,
    pub ip_rate_per_second: Option<u32>,
    pub ip_burst: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub queue_high_water: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesSection {
    pub admin: Option<u32>,
    pub store: Option<u32>,
    pub supplier: Option<u32>,
    pub analyst: Option<u32>,
    pub auditor: Option<u32>,
}

/// The effective limits, as `tally config` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    pub burst_seconds: u32,
    pub ip_rate_per_second: u32,
    pub ip_burst: u32,
    pub max_in_flight: usize,
    pub queue_high_water: u64,
    pub request_timeout_seconds: u64,
    pub rate_per_second: EffectiveRates,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveRates {
    pub admin: u32,
    pub store: u32,
    pub supplier: u32,
    pub analyst: u32,
    pub auditor: u32,
}

impl EffectiveLimits {
    pub fn of(l: &Limits) -> Self {
        let r = &l.rate_per_second;
        Self {
            burst_seconds: l.burst_seconds,
            ip_rate_per_second: l.ip_rate_per_second,
            ip_burst: l.ip_burst,
            max_in_flight: l.max_in_flight,
            queue_high_water: l.queue_high_water,
            request_timeout_seconds: l.request_timeout.as_secs(),
            rate_per_second: EffectiveRates {
                admin: r.admin,
                store: r.store,
                supplier: r.supplier,
                analyst: r.analyst,
                auditor: r.auditor,
            },
        }
    }
}

fn positive<T: PartialOrd + From<u8> + Copy>(
    value: Option<T>,
    key: &str,
    default: T,
) -> anyhow::Result<T> {
    match value {
        Some(v) if v < T::from(1) => bail!("limits.{key} must be at least 1"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl LimitsSection {
    /// The limits to run with; a value out of range is refused, naming its key.
    pub fn resolve(&self) -> anyhow::Result<Limits> {
        let d = Limits::default();
        let r = &self.rate_per_second;
        let dr = d.rate_per_second;
        let rate_per_second = RoleRates {
            admin: positive(r.admin, "rate_per_second.admin", dr.admin)?,
            store: positive(r.store, "rate_per_second.store", dr.store)?,
            supplier: positive(r.supplier, "rate_per_second.supplier", dr.supplier)?,
            analyst: positive(r.analyst, "rate_per_second.analyst", dr.analyst)?,
            auditor: positive(r.auditor, "rate_per_second.auditor", dr.auditor)?,
        };
        let request_timeout = match self.request_timeout_seconds {
            None => d.request_timeout,
            Some(s) if Duration::from_secs(s) > LONGEST_WAIT => Duration::from_secs(s),
            Some(s) => bail!(
                "limits.request_timeout_seconds must be over {} (a command status may wait that long), not {s}",
                LONGEST_WAIT.as_secs()
            ),
        };
        Ok(Limits {
            rate_per_second,
            burst_seconds: positive(self.burst_seconds, "burst_seconds", d.burst_seconds)?,
            ip_rate_per_second: positive(
                self.ip_rate_per_second,
                "ip_rate_per_second",
                d.ip_rate_per_second,
            )?,
            ip_burst: positive(self.ip_burst, "ip_burst", d.ip_burst)?,
            max_in_flight: match self.max_in_flight {
                Some(0) => bail!("limits.max_in_flight must be at least 1"),
                other => other.unwrap_or(d.max_in_flight),
            },
            queue_high_water: self.queue_high_water.unwrap_or(d.queue_high_water),
            request_timeout,
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> anyhow::Result<LimitsSection> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            limits: LimitsSection,
        }
        Ok(toml::from_str::<File>(text)?.limits)
    }

    #[test]
    fn what_the_file_leaves_out_keeps_its_default() {
        let limits = section("[limits]\nmax_in_flight = 2\n[limits.rate_per_second]\nstore = 7\n")
            .expect("parses")
            .resolve()
            .expect("valid");
        assert_eq!(limits.max_in_flight, 2);
        assert_eq!(limits.rate_per_second.store, 7);
        let d = Limits::default();
        assert_eq!(limits.rate_per_second.admin, d.rate_per_second.admin);
        assert_eq!(limits.queue_high_water, d.queue_high_water);
        assert_eq!(LimitsSection::default().resolve().expect("defaults"), d);
    }

    #[test]
    fn bad_values_are_refused_naming_their_key() {
        for (text, key) in [
            (
                "[limits.rate_per_second]\nanalyst = 0\n",
                "limits.rate_per_second.analyst",
            ),
            ("[limits]\nmax_in_flight = 0\n", "limits.max_in_flight"),
            (
                "[limits]\nrequest_timeout_seconds = 10\n",
                "limits.request_timeout_seconds",
            ),
            ("[limits]\nip_burst = 0\n", "limits.ip_burst"),
        ] {
            let e = section(text).expect("parses").resolve().expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        assert!(
            section("[limits]\nmax_inflight = 3\n").is_err(),
            "unknown keys are errors"
        );
        assert!(
            section("[limits]\nmax_in_flight = -1\n").is_err(),
            "negative numbers too"
        );
    }
}
