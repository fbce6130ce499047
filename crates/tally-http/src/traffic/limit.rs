//! Rate limiters (GCRA, from `governor`) and what they tell the client: the `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` headers of the IETF draft (`Reset` in seconds), and
//! `Retry-After` on a 429.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

use crate::error::ApiError;

pub(crate) type Clock = DefaultClock;
type Instant = <Clock as governor::clock::Clock>::Instant;
type Direct = RateLimiter<NotKeyed, InMemoryState, Clock, StateInformationMiddleware>;
type ByAddress = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, Clock, StateInformationMiddleware>;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `rate` requests per second, up to `burst` at once.
fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// What a limiter decided about one request, in the terms of the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    /// The burst: requests that may be made at once.
    pub limit: u32,
    pub remaining: u32,
    /// Allowed: seconds until the whole burst is available again. Refused: seconds until the next
    /// request may pass (at least 1).
    pub reset_s: u64,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn verdict(
    outcome: Result<StateSnapshot, NotUntil<Instant>>,
    quota: Quota,
    clock: &Clock,
) -> Verdict {
    let limit = quota.burst_size().get();
    match outcome {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity().min(limit);
            Verdict {
                allowed: true,
                limit,
                remaining,
                reset_s: ceil_secs(quota.replenish_interval() * (limit - remaining)),
            }
        }
        Err(not_until) => Verdict {
            allowed: false,
            limit,
            remaining: 0,
            reset_s: ceil_secs(not_until.wait_time_from(clock.now())).max(1),
        },
    }
}

impl Verdict {
    /// Adds the `RateLimit-*` headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(self.reset_s));
    }

    /// The 429 answer for a refused request: problem+json, `Retry-After` and `RateLimit-*`.
    pub fn too_many(&self, detail: String) -> Response {
        let mut response = ApiError::RateLimited {
            detail,
            retry_after_s: u32::try_from(self.reset_s).unwrap_or(u32::MAX),
        }
        .into_response();
        self.write(response.headers_mut());
        response
    }
}

/// One key's limiter.
pub(crate) struct Bucket {
    limiter: Direct,
    quota: Quota,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, clock: &Clock) -> Self {
        let quota = quota(rate, burst);
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            quota,
        }
    }

    pub fn check(&self) -> Verdict {
        verdict(self.limiter.check(), self.quota, self.limiter.clock())
    }

    pub fn rate_limit(&self) -> (u32, Duration) {
        (
            self.quota.burst_size().get(),
            self.quota.replenish_interval(),
        )
    }
}

/// The limit on requests that carry no known key, per client address: the TCP peer's, never a
/// header (forwarding headers are forgeable). IPv6 clients are limited per /64, the block one host
/// usually holds. At most `max_tracked` addresses are tracked; beyond that (an attack from many
/// addresses) the untracked ones share one bucket, so memory stays bounded.
pub(crate) struct AddressLimiter {
    limiter: ByAddress,
    quota: Quota,
    max_tracked: usize,
    /// Addresses refused lately, and until when (ns since `epoch`): a request from one of them
    /// with a key not in the cache is refused before the key is looked up in the store.
    refused_until: DashMap<IpAddr, u64>,
    epoch: std::time::Instant,
}

/// The bucket shared by clients whose address is unknown or not tracked.
const SHARED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AddressLimiter {
    pub fn new(rate: u32, burst: u32, max_tracked: usize, clock: &Clock) -> Self {
        let quota = quota(rate, burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            quota,
            max_tracked: max_tracked.max(1),
            refused_until: DashMap::new(),
            epoch: std::time::Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn key(&self, peer: Option<IpAddr>) -> IpAddr {
        match peer.map(client_of) {
            Some(ip) if self.limiter.len() < self.max_tracked => ip,
            _ => SHARED,
        }
    }

    /// Counts one request from `peer` (`None`: the address is not known, so the shared bucket).
    pub fn check(&self, peer: Option<IpAddr>) -> Verdict {
        let key = self.key(peer);
        let v = verdict(
            self.limiter.check_key(&key),
            self.quota,
            self.limiter.clock(),
        );
        if !v.allowed && self.refused_until.len() < self.max_tracked {
            let until = self
                .now()
                .saturating_add(v.reset_s.saturating_mul(1_000_000_000));
            self.refused_until.insert(key, until);
        }
        v
    }

    /// The refusal of an address that is over its limit, without counting a request: spares the
    /// store the lookups of a flood of unknown keys.
    pub fn refused(&self, peer: Option<IpAddr>) -> Option<Verdict> {
        let key = peer.map_or(SHARED, client_of);
        let until = *self.refused_until.get(&key)?;
        let left = until.checked_sub(self.now()).filter(|left| *left > 0)?;
        Some(Verdict {
            allowed: false,
            limit: self.quota.burst_size().get(),
            remaining: 0,
            reset_s: ceil_secs(Duration::from_nanos(left)).max(1),
        })
    }

    /// Forgets addresses whose buckets are full again (nothing to remember about them).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = self.now();
        self.refused_until.retain(|_, until| *until > now);
        self.refused_until.shrink_to_fit();
    }

    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_refuses_with_a_wait() {
        let clock = Clock::default();
        let bucket = Bucket::new(5, 5, &clock);
        let first = bucket.check();
        assert_eq!(
            first,
            Verdict {
                allowed: true,
                limit: 5,
                remaining: 4,
                reset_s: 1
            }
        );
        for _ in 0..4 {
            assert!(bucket.check().allowed);
        }
        let refused = bucket.check();
        assert!(!refused.allowed);
        assert_eq!((refused.limit, refused.remaining), (5, 0));
        assert_eq!(
            refused.reset_s, 1,
            "one request more is allowed within 200 ms"
        );
    }

    #[test]
    fn a_refusal_carries_retry_after_and_the_ratelimit_headers() {
        let v = Verdict {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_s: 3,
        };
        let r = v.too_many("slow down".into());
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "3");
        assert_eq!(h["ratelimit-limit"], "5");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "3");
        assert_eq!(h["content-type"], "application/problem+json");
    }

    #[test]
    fn addresses_are_limited_apart_and_ipv6_per_64() {
        let clock = Clock::default();
        let limiter = AddressLimiter::new(1, 2, 100, &clock);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(limiter.check(Some(a)).allowed);
        assert!(limiter.check(Some(a)).allowed);
        assert!(!limiter.check(Some(a)).allowed, "a's burst of 2 is spent");
        assert!(limiter.check(Some(b)).allowed, "b has its own bucket");
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!(limiter.check(Some(v6a)).allowed);
        assert!(limiter.check(Some(v6b)).allowed);
        assert!(!limiter.check(Some(v6a)).allowed, "one /64, one bucket");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert!(
            !limiter.check(Some(mapped)).allowed,
            "IPv4-mapped is the IPv4 client"
        );
    }

    #[test]
    fn a_refused_address_is_known_as_refused_until_it_may_send_again() {
        let clock = Clock::default();
        let limiter = AddressLimiter::new(1, 1, 100, &clock);
        let a: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(limiter.refused(Some(a)), None);
        assert!(limiter.check(Some(a)).allowed);
        assert_eq!(limiter.refused(Some(a)), None, "allowed is not refused");
        assert!(!limiter.check(Some(a)).allowed);
        let refused = limiter.refused(Some(a)).expect("refused for now");
        assert_eq!(
            (refused.allowed, refused.limit, refused.remaining),
            (false, 1, 0)
        );
        assert_eq!(
            limiter.refused(Some("192.0.2.8".parse().expect("ip"))),
            None
        );
    }

    #[test]
    fn past_the_tracking_cap_addresses_share_one_bucket() {
        let clock = Clock::default();
        let limiter = AddressLimiter::new(1, 1, 2, &clock);
        for last in 1..=2u8 {
            assert!(limiter.check(Some(IpAddr::from([10, 0, 0, last]))).allowed);
        }
        assert_eq!(limiter.tracked(), 2);
        assert!(limiter.check(Some(IpAddr::from([10, 0, 0, 3]))).allowed);
        assert!(
            !limiter.check(Some(IpAddr::from([10, 0, 0, 4]))).allowed,
            "untracked addresses share the one bucket"
        );
        assert!(limiter.tracked() <= 3, "memory stays bounded");
    }
}
