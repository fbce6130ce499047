//! The key cache: API keys resolved by the SHA-256 of their secret and kept in memory, so that a
//! request with a known key costs one hash and one map lookup instead of a store query.
//!
//! - A key found in the store is trusted for the cache's TTL (`Limits::key_cache_ttl`, 1 s by
//!   default). After that, the next request with it checks it against the store again (one request
//!   does; the others keep going meanwhile). So a key revoked by another process (`tally keys
//!   revoke`, another gateway) stops working here within the TTL plus one store lookup, while a
//!   revocation through this process (`DELETE /v1/admin/api-keys/{key_id}`) takes effect at once.
//! - Unknown and revoked keys are never cached, so random secrets cannot fill the cache; each costs a
//!   store lookup and is held back by the per-address limit instead.
//! - At most `Limits::key_cache_max` keys are held: keys idle for a minute are dropped, and when the
//!   cache is full the least recently used of a sample makes room.
//! - An entry carries its key's rate limiter and usage counters, so both outlive the TTL checks. The
//!   counts of an entry that leaves the cache wait in `pending` until the next flush.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jiff::Timestamp;
use tally_core::KeyStore;
use tally_core::model::{ApiKey, KeyUsage, Principal};

use super::limit::{Bucket, Clock};
use super::{Error, Limits};

/// One cached key: who it is, its limiter, its usage since the last flush.
pub struct Entry {
    pub(crate) principal: Principal,
    pub(crate) bucket: Bucket,
    /// When the store last confirmed the key (ns since the cache's epoch).
    verified_at: AtomicU64,
    /// When a request last used it (ns since the cache's epoch), for eviction.
    last_seen: AtomicU64,
    refreshing: AtomicBool,
    requests: AtomicU64,
    rejections: AtomicU64,
    /// Unix microseconds of the last request; 0: none since the last flush.
    last_used_us: AtomicI64,
}

impl Entry {
    /// A request with this key: counted, and its time kept.
    pub(crate) fn count_request(&self, cache: &KeyCache) {
        let now = cache.now();
        self.last_seen.store(now, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_used_us
            .fetch_max(cache.wall_us(now), Ordering::Relaxed);
    }

    /// A request with this key was answered with a 4xx status.
    pub(crate) fn count_rejection(&self) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// What was counted since the last flush, leaving zeros behind.
    fn take_usage(&self) -> Option<KeyUsage> {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let rejections = self.rejections.swap(0, Ordering::Relaxed);
        let last = self.last_used_us.swap(0, Ordering::Relaxed);
        usage(&self.principal.key_id, requests, rejections, last)
    }

    fn peek_usage(&self) -> Option<KeyUsage> {
        usage(
            &self.principal.key_id,
            self.requests.load(Ordering::Relaxed),
            self.rejections.load(Ordering::Relaxed),
            self.last_used_us.load(Ordering::Relaxed),
        )
    }
}

fn usage(key_id: &str, requests: u64, rejections: u64, last_us: i64) -> Option<KeyUsage> {
    (requests > 0 || rejections > 0 || last_us > 0).then(|| KeyUsage {
        key_id: key_id.to_owned(),
        requests,
        rejections,
        last_used_at: (last_us > 0)
            .then(|| Timestamp::from_microsecond(last_us).ok())
            .flatten(),
    })
}

/// Adds `more` into `into` (same key).
pub(crate) fn merge(into: &mut KeyUsage, more: &KeyUsage) {
    into.requests = into.requests.saturating_add(more.requests);
    into.rejections = into.rejections.saturating_add(more.rejections);
    into.last_used_at = into.last_used_at.max(more.last_used_at);
}

/// What a lookup found in memory.
pub(crate) enum Lookup {
    /// Confirmed by the store within the TTL (or being confirmed by another request right now).
    Hit(Arc<Entry>),
    /// Older than the TTL: the caller confirms it ([`KeyCache::refresh`]).
    Stale(Arc<Entry>),
    Miss,
}

/// Resets an entry's `refreshing` flag however the refresh ends (a cancelled request included).
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub struct KeyCache {
    map: DashMap<[u8; 32], Arc<Entry>, foldhash::fast::RandomState>,
    ttl_ns: u64,
    max_entries: usize,
    /// Bumped by each revocation in this process: a lookup that started before one does not cache.
    revocations: AtomicU64,
    /// Usage of entries that left the cache, until the next flush.
    pending: Mutex<Vec<KeyUsage>>,
    epoch: Instant,
    wall_epoch_us: i64,
    clock: Clock,
}

/// Entries unused for this long leave the cache (their limiter has long been full again).
const IDLE: Duration = Duration::from_secs(60);
/// A refresh may take this many TTLs before another request starts its own.
const STALE_LIMIT: u64 = 10;

impl KeyCache {
    pub(crate) fn new(limits: &Limits, clock: Clock) -> Self {
        Self {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            ttl_ns: u64::try_from(limits.key_cache_ttl.as_nanos()).unwrap_or(u64::MAX),
            max_entries: limits.key_cache_max.max(1),
            revocations: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            wall_epoch_us: Timestamp::now().as_microsecond(),
            clock,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_us(&self, now: u64) -> i64 {
        self.wall_epoch_us
            .saturating_add(i64::try_from(now / 1000).unwrap_or(i64::MAX))
    }

    /// The hot path: one map lookup, no allocation, no await.
    pub(crate) fn lookup(&self, hash: &[u8; 32]) -> Lookup {
        let Some(entry) = self.map.get(hash).map(|e| Arc::clone(e.value())) else {
            return Lookup::Miss;
        };
        let age = self
            .now()
            .saturating_sub(entry.verified_at.load(Ordering::Relaxed));
        if age <= self.ttl_ns {
            return Lookup::Hit(entry);
        }
        let hung = age > self.ttl_ns.saturating_mul(STALE_LIMIT);
        if entry.refreshing.swap(true, Ordering::AcqRel) && !hung {
            // Another request is confirming it; this one goes ahead meanwhile.
            return Lookup::Hit(entry);
        }
        Lookup::Stale(entry)
    }

    /// Confirms a stale entry with the store: the entry again, or `None` when the key is gone
    /// (revoked), in which case it leaves the cache.
    pub(crate) async fn refresh(
        &self,
        hash: [u8; 32],
        entry: Arc<Entry>,
        keys: &dyn KeyStore,
    ) -> Result<Option<Arc<Entry>>, Error> {
        let started = self.now();
        let found = {
            let _flag = Refreshing(&entry.refreshing);
            keys.find(hash).await?
        };
        match found {
            Some(key) if key.key_id == entry.principal.key_id => {
                entry.verified_at.fetch_max(started, Ordering::Relaxed);
                Ok(Some(entry))
            }
            _ => {
                self.remove(&hash);
                Ok(None)
            }
        }
    }

    /// Looks a key up in the store and caches it: `None` for an unknown or revoked key (not cached).
    pub(crate) async fn load(
        &self,
        hash: [u8; 32],
        keys: &dyn KeyStore,
        limits: &Limits,
    ) -> Result<Option<Arc<Entry>>, Error> {
        let revocations = self.revocations.load(Ordering::Acquire);
        let started = self.now();
        let Some(key) = keys.find(hash).await? else {
            return Ok(None);
        };
        let entry = Arc::new(self.entry(&key, limits, started));
        if self.revocations.load(Ordering::Acquire) != revocations {
            // A key revoked while this lookup ran may be this one: serve this request (it raced
            // the revocation) but do not remember the key.
            return Ok(Some(entry));
        }
        if !self.map.contains_key(&hash) && self.map.len() >= self.max_entries {
            self.evict_one();
        }
        // Another request may have cached it meanwhile: keep that one (it may hold counts).
        let kept = self.map.entry(hash).or_insert(entry).value().clone();
        Ok(Some(kept))
    }

    fn entry(&self, key: &ApiKey, limits: &Limits, verified_at: u64) -> Entry {
        let rate = key
            .rate_per_second
            .unwrap_or_else(|| limits.rate_per_second.of(key.role));
        Entry {
            principal: key.principal(),
            bucket: Bucket::new(rate, limits.burst(rate), &self.clock),
            verified_at: AtomicU64::new(verified_at),
            last_seen: AtomicU64::new(verified_at),
            refreshing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            last_used_us: AtomicI64::new(0),
        }
    }

    /// A key revoked in this process: gone from the cache at once.
    pub(crate) fn forget(&self, key_id: &str) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
        let hashes: Vec<[u8; 32]> = self
            .map
            .iter()
            .filter(|e| e.value().principal.key_id == key_id)
            .map(|e| *e.key())
            .collect();
        for hash in hashes {
            self.remove(&hash);
        }
    }

    fn remove(&self, hash: &[u8; 32]) {
        if let Some((_, entry)) = self.map.remove(hash)
            && let Some(u) = entry.take_usage()
        {
            self.pend(u);
        }
    }

    fn pend(&self, usage: KeyUsage) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(usage);
    }

    /// Makes room: drops the least recently used of a sample of entries.
    fn evict_one(&self) {
        let victim = self
            .map
            .iter()
            .take(32)
            .min_by_key(|e| e.value().last_seen.load(Ordering::Relaxed))
            .map(|e| *e.key());
        if let Some(hash) = victim {
            self.remove(&hash);
        }
    }

    /// Drops entries idle for a minute (their counts move to `pending`).
    pub(crate) fn prune(&self) {
        let cutoff = self
            .now()
            .saturating_sub(u64::try_from(IDLE.as_nanos()).unwrap_or(u64::MAX));
        let idle: Vec<[u8; 32]> = self
            .map
            .iter()
            .filter(|e| e.value().last_seen.load(Ordering::Relaxed) < cutoff)
            .map(|e| *e.key())
            .collect();
        for hash in idle {
            self.remove(&hash);
        }
    }

    /// Everything counted since the last flush, one record per key; the counters restart at zero.
    pub(crate) fn take_usage(&self) -> Vec<KeyUsage> {
        let mut out: Vec<KeyUsage> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
        };
        out.extend(self.map.iter().filter_map(|e| e.value().take_usage()));
        combine(out)
    }

    /// Usage that could not be stored: kept for the next flush.
    pub(crate) fn put_back(&self, usage: Vec<KeyUsage>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(usage);
    }

    /// Everything counted since the last flush, without resetting anything.
    pub(crate) fn peek_usage(&self) -> Vec<KeyUsage> {
        let mut out: Vec<KeyUsage> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.extend(self.map.iter().filter_map(|e| e.value().peek_usage()));
        combine(out)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// One record per key.
fn combine(records: Vec<KeyUsage>) -> Vec<KeyUsage> {
    let mut by_key: std::collections::HashMap<String, KeyUsage> =
        std::collections::HashMap::with_capacity(records.len());
    for r in records {
        match by_key.get_mut(&r.key_id) {
            Some(u) => merge(u, &r),
            None => {
                by_key.insert(r.key_id.clone(), r);
            }
        }
    }
    by_key.into_values().collect()
}
