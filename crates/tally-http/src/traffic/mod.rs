//! Traffic management: what stands between a client and the handlers.
//!
//! Every request to the API (all but `/healthz`, `/readyz` and `/metrics`, which probes and scrapers
//! must always reach) passes [`control`], which in order:
//!
//! 1. **sheds** it with 503 and `Retry-After` when [`Limits::max_in_flight`] requests are already in
//!    hand (a counter, never a queue);
//! 2. **identifies** the caller: a bearer key through the in-memory [`cache`] (a store lookup only
//!    on a miss or once per key per TTL), or else the client's address;
//! 3. **rate-limits** it (GCRA): per API key, at its `rate_per_second` or its role's default
//!    ([`RoleRates`]); requests without a valid key (none, malformed, unknown or revoked) per client
//!    address (the TCP peer, never a forwarding header), and while an address is over that limit
//!    its requests with keys not in the cache are refused before any store lookup, so a flood of
//!    made-up keys does not reach the store. Over the limit: 429 with `Retry-After` and `RateLimit-Limit`,
//!    `RateLimit-Remaining`, `RateLimit-Reset`; answers under the limit carry the same headers;
//! 4. **sheds** command POSTs with 503 and `Retry-After` while the command queue is deeper than
//!    [`Limits::queue_high_water`] (its depth is read every 100 ms by [`Traffic::run`], not per
//!    request);
//! 5. bounds the handler's time by [`Limits::request_timeout`] (503 after it), longer than the
//!    longest wait a request may ask for (`wait_ms` up to 30 s); the live event feed only needs it
//!    to start streaming.
//!
//! It also counts each key's requests and rejections (answers with a 4xx status, 429 included) and
//! last use; [`Traffic::run`] writes them to the key store every 5 s, and `GET /v1/admin/api-keys`
//! shows the stored totals plus what this process has not written yet. Memory stays bounded: the
//! key cache holds at most [`Limits::key_cache_max`] keys and the address limiter tracks at most
//! [`Limits::max_tracked_ips`], both pruned as they go idle.

pub mod cache;
pub(crate) mod limit;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tally_core::model::{KeyUsage, Role};
use tally_core::{Backend, KeyStore};
use tokio::sync::watch;

use crate::AppState;
use crate::auth::{bearer, hash_secret};
use crate::error::ApiError;
use cache::{Entry, KeyCache, Lookup};
use limit::{AddressLimiter, Clock};

pub(crate) use tally_core::Error;

/// Requests per second per API key, by role, for keys without their own `rate_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRates {
    pub admin: u32,
    pub store: u32,
    pub supplier: u32,
    pub analyst: u32,
    pub auditor: u32,
}

impl Default for RoleRates {
    /// Admin keys drive bulk loads and benchmarks (W1 pushes tens of thousands of commands a
    /// second with one admin key), so theirs is high; a till sends a sale every few seconds, so 200
    /// per second for a store leaves room for bursts and retries; suppliers send deliveries; analysts
    /// and auditors read reports and the log, which cost more each.
    fn default() -> Self {
        Self {
            admin: 100_000,
            store: 200,
            supplier: 100,
            analyst: 50,
            auditor: 50,
        }
    }
}

impl RoleRates {
    pub fn of(&self, role: Role) -> u32 {
        match role {
            Role::Admin => self.admin,
            Role::Store => self.store,
            Role::Supplier => self.supplier,
            Role::Analyst => self.analyst,
            Role::Auditor => self.auditor,
        }
    }
}

/// The knobs of traffic management (`[limits]` in `tally.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub rate_per_second: RoleRates,
    /// A key may send this many seconds' worth of its rate at once (its burst); at least 1 request.
    pub burst_seconds: u32,
    /// Requests per second per client address for requests without a valid key (none, malformed,
    /// unknown or revoked).
    pub ip_rate_per_second: u32,
    /// Those requests' burst per address.
    pub ip_burst: u32,
    /// Requests in hand at once (long polls included); beyond: 503.
    pub max_in_flight: usize,
    /// Command POSTs are refused with 503 while more commands than this wait in the queue. The default,
    /// 20,000, is about a second of what the embedded processor decides under W1 on 2 cores: a longer
    /// backlog only adds to the visibility lag, and (on the embedded queue) to memory, which holds
    /// every waiting command. At 100,000, 48,000 commands/s offered for 30 s on 1,500 connections
    /// filled it (the intake, with a writer of its own, takes commands faster than they are decided),
    /// and the server peaked at 293 MiB with a 4.3 s lag.
    pub queue_high_water: u64,
    /// The most time a handler may take (503 after it).
    pub request_timeout: Duration,
    /// How long a key confirmed by the store is trusted without asking again.
    pub key_cache_ttl: Duration,
    /// Keys held in the cache at most.
    pub key_cache_max: usize,
    /// Client addresses the address limiter tracks at most (beyond: one shared bucket).
    pub max_tracked_ips: usize,
    /// How often the usage counts are written to the key store.
    pub usage_flush_every: Duration,
    /// How often the queue depth is read.
    pub queue_depth_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_second: RoleRates::default(),
            burst_seconds: 1,
            ip_rate_per_second: 20,
            ip_burst: 50,
            max_in_flight: 1024,
            queue_high_water: 20_000,
            request_timeout: Duration::from_secs(40),
            key_cache_ttl: Duration::from_secs(1),
            key_cache_max: 50_000,
            max_tracked_ips: 65_536,
            usage_flush_every: Duration::from_secs(5),
            queue_depth_every: Duration::from_millis(100),
        }
    }
}

impl Limits {
    /// The burst of a key limited to `rate` per second.
    pub fn burst(&self, rate: u32) -> u32 {
        rate.saturating_mul(self.burst_seconds).max(1)
    }
}

/// The traffic state one server shares between its requests; cheap to clone.
#[derive(Clone)]
pub struct Traffic {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    keys: KeyCache,
    addresses: AddressLimiter,
    in_flight: AtomicUsize,
    queue_depth: AtomicU64,
    /// Held while usage is written, and while the list endpoint adds stored and unwritten counts,
    /// so that nothing is counted twice or missed in between.
    flush: tokio::sync::Mutex<()>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Traffic {
    pub fn new(limits: Limits) -> Self {
        let clock = Clock::default();
        Self {
            inner: Arc::new(Inner {
                keys: KeyCache::new(&limits, clock.clone()),
                addresses: AddressLimiter::new(
                    limits.ip_rate_per_second,
                    limits.ip_burst,
                    limits.max_tracked_ips,
                    &clock,
                ),
                in_flight: AtomicUsize::new(0),
                queue_depth: AtomicU64::new(0),
                flush: tokio::sync::Mutex::new(()),
                limits,
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The key with this secret hash: from the cache, or the store on a miss or once per TTL.
    /// `None`: unknown or revoked.
    pub async fn resolve(
        &self,
        hash: [u8; 32],
        keys: &dyn KeyStore,
    ) -> Result<Option<Arc<Entry>>, Error> {
        let cache = &self.inner.keys;
        match cache.lookup(&hash) {
            Lookup::Hit(entry) => Ok(Some(entry)),
            Lookup::Stale(entry) => cache.refresh(hash, entry, keys).await,
            Lookup::Miss => cache.load(hash, keys, &self.inner.limits).await,
        }
    }

    /// A key revoked through this process stops working at once.
    pub fn forget_key(&self, key_id: &str) {
        self.inner.keys.forget(key_id);
    }

    /// Upkeep until `stop` turns true: reads the queue depth, writes usage counts to the key store
    /// and prunes idle state. Call [`Traffic::flush_usage`] once more after the server has stopped.
    pub async fn run(self, backend: Backend, mut stop: watch::Receiver<bool>) {
        let limits = &self.inner.limits;
        let mut depth_tick = tokio::time::interval(limits.queue_depth_every);
        depth_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_tick = tokio::time::interval(limits.usage_flush_every);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = async move {
            // An error means the sender is gone: the server is going away too.
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let mut stopping = std::pin::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => break,
                _ = depth_tick.tick() => self.read_queue_depth(&backend).await,
                _ = flush_tick.tick() => {
                    if let Err(e) = self.flush_usage(backend.keys.as_ref()).await {
                        tracing::warn!(error = %e, "could not store API key usage; kept for the next try");
                    }
                    self.inner.keys.prune();
                    self.inner.addresses.prune();
                    tracing::debug!(
                        cached_keys = self.inner.keys.len(),
                        tracked_addresses = self.inner.addresses.tracked(),
                        "traffic state pruned"
                    );
                }
            }
        }
    }

    async fn read_queue_depth(&self, backend: &Backend) {
        match tokio::time::timeout(Duration::from_secs(1), backend.queue.depth()).await {
            Ok(Ok(depth)) => self.inner.queue_depth.store(depth, Ordering::Relaxed),
            Ok(Err(e)) => tracing::debug!(error = %e, "could not read the queue depth"),
            Err(_) => tracing::debug!("reading the queue depth took over a second"),
        }
    }

    /// Writes the usage counted since the last flush to the key store (kept for the next try if
    /// that fails).
    pub async fn flush_usage(&self, keys: &dyn KeyStore) -> Result<(), Error> {
        let _writing = self.inner.flush.lock().await;
        let usage = self.inner.keys.take_usage();
        if usage.is_empty() {
            return Ok(());
        }
        if let Err(e) = keys.record_usage(&usage).await {
            self.inner.keys.put_back(usage);
            return Err(e);
        }
        Ok(())
    }

    /// Each key's usage: what the store holds plus what this process has not written yet.
    pub async fn usage(&self, keys: &dyn KeyStore) -> Result<HashMap<String, KeyUsage>, Error> {
        let _reading = self.inner.flush.lock().await;
        let mut usage: HashMap<String, KeyUsage> = keys
            .usage()
            .await?
            .into_iter()
            .map(|u| (u.key_id.clone(), u))
            .collect();
        for unwritten in self.inner.keys.peek_usage() {
            match usage.get_mut(&unwritten.key_id) {
                Some(u) => cache::merge(u, &unwritten),
                None => {
                    usage.insert(unwritten.key_id.clone(), unwritten);
                }
            }
        }
        Ok(usage)
    }

    fn enter(&self) -> Option<InFlight<'_>> {
        let counter = &self.inner.in_flight;
        if counter.fetch_add(1, Ordering::AcqRel) >= self.inner.limits.max_in_flight {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(counter))
    }

    fn queue_too_deep(&self) -> bool {
        self.inner.queue_depth.load(Ordering::Relaxed) > self.inner.limits.queue_high_water
    }
}

/// One request in hand; leaving (however the request ends) frees its place.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the middleware found out about the caller, for the [`Auth`](crate::auth::Auth) extractor.
#[derive(Clone)]
pub(crate) enum Resolved {
    Key(Arc<Entry>),
    /// A bearer key that is unknown or revoked.
    BadKey,
}

/// Probes and scrapers must get through whatever the load.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn is_command(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::POST && path.starts_with("/v1/") && !path.starts_with("/v1/admin/")
}

fn unavailable(detail: &str) -> Response {
    ApiError::Unavailable {
        detail: detail.to_owned(),
        retry_after_s: 1,
    }
    .into_response()
}

/// The traffic middleware (see the module documentation).
pub async fn control(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let traffic = &s.traffic;
    let Some(_in_flight) = traffic.enter() else {
        crate::metrics::shed("in_flight");
        return unavailable("the server has too many requests in hand; retry shortly");
    };
    let key = match bearer(req.headers()) {
        Err(_) => None,
        Ok(secret) => {
            let hash = hash_secret(secret);
            let cache = &traffic.inner.keys;
            let found = match cache.lookup(&hash) {
                Lookup::Hit(entry) => Ok(Some(entry)),
                Lookup::Stale(entry) => cache.refresh(hash, entry, s.backend.keys.as_ref()).await,
                Lookup::Miss => {
                    // A store lookup: not for an address that is over its limit already (a flood
                    // of made-up keys). A key that turns out unknown counts against the address.
                    if let Some(refused) = traffic.inner.addresses.refused(peer(&req)) {
                        crate::metrics::rate_limited("ip");
                        return refused.too_many(WITHOUT_KEY.into());
                    }
                    cache
                        .load(hash, s.backend.keys.as_ref(), &traffic.inner.limits)
                        .await
                }
            };
            match found {
                Ok(Some(entry)) => Some(entry),
                Ok(None) => {
                    req.extensions_mut().insert(Resolved::BadKey);
                    None
                }
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    match key {
        Some(entry) => with_key(&s, entry, req, next).await,
        None => without_key(&s, req, next).await,
    }
}

async fn with_key(s: &AppState, entry: Arc<Entry>, mut req: Request, next: Next) -> Response {
    let traffic = &s.traffic;
    entry.count_request(&traffic.inner.keys);
    let verdict = entry.bucket.check();
    if !verdict.allowed {
        entry.count_rejection();
        crate::metrics::rate_limited("key");
        let (burst, every) = entry.bucket.rate_limit();
        return verdict.too_many(format!(
            "API key {} is over its rate limit (a burst of {burst}, then one request every {every:?})",
            entry.principal.key_id
        ));
    }
    let mut response = if is_command(&req) && traffic.queue_too_deep() {
        crate::metrics::shed("queue_depth");
        unavailable("the command queue is over its high-water mark; retry shortly")
    } else {
        req.extensions_mut()
            .insert(Resolved::Key(Arc::clone(&entry)));
        timed(traffic, next.run(req)).await
    };
    if response.status().is_client_error() {
        entry.count_rejection();
    }
    verdict.write(response.headers_mut());
    response
}

const WITHOUT_KEY: &str = "too many requests without a valid API key from this address";

async fn without_key(s: &AppState, req: Request, next: Next) -> Response {
    let traffic = &s.traffic;
    let verdict = traffic.inner.addresses.check(peer(&req));
    if !verdict.allowed {
        crate::metrics::rate_limited("ip");
        return verdict.too_many(WITHOUT_KEY.into());
    }
    let mut response = timed(traffic, next.run(req)).await;
    verdict.write(response.headers_mut());
    response
}

/// The TCP peer's address, when the server was started with `ConnectInfo` (else: unknown).
fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn timed(traffic: &Traffic, handler: impl Future<Output = Response>) -> Response {
    let limit = traffic.inner.limits.request_timeout;
    match tokio::time::timeout(limit, handler).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            unavailable(&format!(
                "the request did not finish within {} s",
                limit.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_cap_counts_requests_in_hand_and_frees_their_places() {
        let traffic = Traffic::new(Limits {
            max_in_flight: 2,
            ..Limits::default()
        });
        let first = traffic.enter().expect("1 of 2");
        let second = traffic.enter().expect("2 of 2");
        assert!(traffic.enter().is_none(), "a third is shed");
        drop(first);
        let third = traffic.enter().expect("a place is free again");
        assert!(traffic.enter().is_none());
        drop((second, third));
        assert_eq!(traffic.inner.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_handler_past_the_request_timeout_is_answered_with_503() {
        let traffic = Traffic::new(Limits {
            request_timeout: Duration::from_millis(20),
            ..Limits::default()
        });
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            axum::http::StatusCode::OK.into_response()
        };
        let r = timed(&traffic, slow).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let quick = async { axum::http::StatusCode::OK.into_response() };
        assert_eq!(timed(&traffic, quick).await.status(), 200);
    }

    #[test]
    fn the_queue_high_water_mark_is_exceeded_only_above_it() {
        let traffic = Traffic::new(Limits {
            queue_high_water: 2,
            ..Limits::default()
        });
        for (depth, shed) in [(0, false), (2, false), (3, true)] {
            traffic.inner.queue_depth.store(depth, Ordering::Relaxed);
            assert_eq!(traffic.queue_too_deep(), shed, "depth {depth}");
        }
    }

    #[test]
    fn keys_get_their_own_rate_or_their_roles() {
        let limits = Limits {
            burst_seconds: 2,
            ..Limits::default()
        };
        assert_eq!(limits.rate_per_second.of(Role::Store), 200);
        assert_eq!(limits.burst(200), 400);
        assert_eq!(limits.burst(0), 1, "at least one request");
    }
}
