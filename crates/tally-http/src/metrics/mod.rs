//! Prometheus metrics, served at `/metrics` by the API and by the processes that serve only probes.
//!
//! One recorder per process ([`install`], idempotent), rendered by the handler: the exporter opens no
//! listener of its own. Every metric is described and registered at install, at zero for each label
//! set known in advance, so a scrape of a fresh server lists them all (API.md).
//!
//! What records where:
//! - HTTP requests by route template, method and status, and their latency: [`layer`], one layer
//!   around every route;
//! - commands accepted by type: the gateway ([`accepted`]);
//! - commands processed and rejected, batch sizes, append latency: the processor
//!   ([`tally_core::metrics`]);
//! - queue depth and each read model's position and lag: sampled from the backend at each scrape
//!   ([`crate::ops`]);
//! - rate-limited and shed requests: the traffic controls ([`rate_limited`], [`shed`]).
//!
//! Hot paths use handles registered up front (an atomic add each); a label set not known in advance
//! is registered on its first use.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tally_core::readmodel::PROJECTIONS;
use tally_domain::Command;

pub(crate) mod layer;

pub const HTTP_REQUESTS: &str = "tally_http_requests_total";
pub const HTTP_DURATION: &str = "tally_http_request_duration_seconds";
pub const HTTP_RATE_LIMITED: &str = "tally_http_rate_limited_total";
pub const HTTP_SHED: &str = "tally_http_shed_total";
pub const COMMANDS_ACCEPTED: &str = "tally_commands_accepted_total";
pub const QUEUE_DEPTH: &str = "tally_queue_depth";
pub const PROJECTION_POSITION: &str = "tally_projection_position";
pub const PROJECTION_LAG_EVENTS: &str = "tally_projection_lag_events";
pub const PROJECTION_LAG_SECONDS: &str = "tally_projection_lag_seconds";
/// 1 while a new version of the model is being built beside it (or for the first time), else 0.
pub const PROJECTION_REBUILDING: &str = "tally_projection_rebuilding";
/// Events the new version being built has left to fold (0 when none is).
pub const PROJECTION_REBUILD_LAG_EVENTS: &str = "tally_projection_rebuild_lag_events";
/// 1 while a read model is halted before a poison event, else 0.
pub const PROJECTION_STOPPED: &str = "tally_projection_stopped";
/// Poison events a read model went on without.
pub const PROJECTION_PARKED: &str = "tally_projection_parked_events";
pub const LOG_HEAD: &str = "tally_event_log_head";

/// Every metric name a scrape lists from start-up.
pub const ALL: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_DURATION,
    HTTP_RATE_LIMITED,
    HTTP_SHED,
    COMMANDS_ACCEPTED,
    tally_core::metrics::COMMANDS_PROCESSED,
    tally_core::metrics::COMMANDS_REJECTED,
    QUEUE_DEPTH,
    tally_core::metrics::BATCH_SIZE,
    tally_core::metrics::APPEND_SECONDS,
    LOG_HEAD,
    PROJECTION_POSITION,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
    PROJECTION_REBUILDING,
    PROJECTION_REBUILD_LAG_EVENTS,
    PROJECTION_STOPPED,
    PROJECTION_PARKED,
];

/// The `scope` values of [`rate_limited`] registered at zero from start-up (others appear on first use).
pub const RATE_LIMIT_SCOPES: &[&str] = &["key", "ip"];
/// The `reason` values of [`shed`] registered at zero from start-up (others appear on first use).
pub const SHED_REASONS: &[&str] = &["queue_depth", "in_flight"];

/// Buckets of [`HTTP_DURATION`], in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets between scrapes (bounds their memory).
const UPKEEP: Duration = Duration::from_secs(5);

/// Handles of the metrics this crate records, registered once the recorder is installed.
struct Handles {
    prometheus: PrometheusHandle,
    accepted: [Counter; Command::KINDS.len()],
    rate_limited: Vec<(&'static str, Counter)>,
    shed: Vec<(&'static str, Counter)>,
    queue_depth: Gauge,
    log_head: Gauge,
    /// Per read model (in [`PROJECTIONS`] order): position, lag in events, lag in seconds.
    projections: Vec<(&'static str, [Gauge; 7])>,
}

static HANDLES: OnceLock<Option<Handles>> = OnceLock::new();

/// Installs this process's Prometheus recorder and registers every metric, once; later calls (several
/// apps in one test process, say) do nothing. Returns false when another recorder was installed first,
/// in which case `/metrics` answers 503.
pub fn install() -> bool {
    HANDLES.get_or_init(build).is_some()
}

fn handles() -> Option<&'static Handles> {
    HANDLES.get().and_then(Option::as_ref)
}

fn build() -> Option<Handles> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(tally_core::metrics::APPEND_SECONDS.into()),
                tally_core::metrics::APPEND_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(tally_core::metrics::BATCH_SIZE.into()),
                tally_core::metrics::BATCH_SIZE_BUCKETS,
            )
        });
    let prometheus = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "could not install the metrics recorder; /metrics is off");
            return None;
        }
    };
    let upkeep = prometheus.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Histograms are then folded at each scrape only.
        tracing::warn!(error = %e, "could not start the metrics upkeep thread");
    }
    tally_core::metrics::register();
    Some(register(prometheus))
}

fn register(prometheus: PrometheusHandle) -> Handles {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its response head, by route template and method"
    );
    describe_counter!(
        HTTP_RATE_LIMITED,
        "Requests refused with 429 by a rate limit, by scope"
    );
    describe_counter!(
        HTTP_SHED,
        "Requests refused with 503 to shed load, by reason"
    );
    describe_counter!(
        COMMANDS_ACCEPTED,
        "Commands made durable and answered 202 (not counting idempotent replays), by command type"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Commands on the queue, waiting or in flight (sampled at each scrape)"
    );
    describe_gauge!(
        LOG_HEAD,
        "Position of the last event in the log (sampled at each scrape)"
    );
    describe_gauge!(
        PROJECTION_POSITION,
        "Global position a read model has applied, by model (sampled at each scrape)"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "Events in the log a read model has not applied yet, by model"
    );
    describe_gauge!(
        PROJECTION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest event a read model has not applied yet (0 when caught up), by model"
    );
    describe_gauge!(
        PROJECTION_REBUILDING,
        "1 while a new version of a read model is being built (a rebuild or a back-fill), by model"
    );
    describe_gauge!(
        PROJECTION_REBUILD_LAG_EVENTS,
        "Events the new version of a read model being built has left to fold, by model"
    );
    describe_gauge!(
        PROJECTION_STOPPED,
        "1 while a read model is halted before a poison event it cannot fold, by model"
    );
    describe_gauge!(
        PROJECTION_PARKED,
        "Poison events a read model went on without (parked), by model"
    );
    Handles {
        prometheus,
        accepted: Command::KINDS.map(|kind| counter!(COMMANDS_ACCEPTED, "type" => kind)),
        rate_limited: RATE_LIMIT_SCOPES
            .iter()
            .map(|scope| (*scope, counter!(HTTP_RATE_LIMITED, "scope" => *scope)))
            .collect(),
        shed: SHED_REASONS
            .iter()
            .map(|reason| (*reason, counter!(HTTP_SHED, "reason" => *reason)))
            .collect(),
        queue_depth: gauge!(QUEUE_DEPTH),
        log_head: gauge!(LOG_HEAD),
        projections: PROJECTIONS
            .iter()
            .map(|model| {
                (
                    *model,
                    [
                        gauge!(PROJECTION_POSITION, "model" => *model),
                        gauge!(PROJECTION_LAG_EVENTS, "model" => *model),
                        gauge!(PROJECTION_LAG_SECONDS, "model" => *model),
                        gauge!(PROJECTION_REBUILDING, "model" => *model),
                        gauge!(PROJECTION_REBUILD_LAG_EVENTS, "model" => *model),
                        gauge!(PROJECTION_STOPPED, "model" => *model),
                        gauge!(PROJECTION_PARKED, "model" => *model),
                    ],
                )
            })
            .collect(),
    }
}

/// The Prometheus text of every metric, or `None` when this process has no recorder of ours.
pub(crate) fn render() -> Option<String> {
    handles().map(|h| h.prometheus.render())
}

/// A command of this kind ([`Command::kind_index`]) was made durable and answered 202.
pub(crate) fn accepted(kind: usize) {
    if let Some(c) = handles().and_then(|h| h.accepted.get(kind)) {
        c.increment(1);
    }
}

/// A request was refused with 429 by a rate limit of this scope (`key`: per API key; `ip`: per client
/// address of unauthenticated requests).
pub fn rate_limited(scope: &'static str) {
    if let Some(h) = handles() {
        increment(&h.rate_limited, HTTP_RATE_LIMITED, "scope", scope);
    }
}

/// A request was refused with 503 to shed load, for this reason (`queue_depth`: the queue is above its
/// high-water mark; `in_flight`: too many requests in hand).
pub fn shed(reason: &'static str) {
    if let Some(h) = handles() {
        increment(&h.shed, HTTP_SHED, "reason", reason);
    }
}

fn increment(
    known: &[(&'static str, Counter)],
    name: &'static str,
    label: &'static str,
    value: &'static str,
) {
    match known.iter().find(|(v, _)| *v == value) {
        Some((_, c)) => c.increment(1),
        None => counter!(name, label => value).increment(1),
    }
}

/// What a scrape sampled from the backend; `None` where the backend could not say.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    pub queue_depth: Option<u64>,
    pub log_head: Option<u64>,
    /// Where each read model stands.
    pub projections: Vec<crate::ops::ModelLag>,
}

/// Sets the sampled gauges; what could not be sampled keeps its last value.
pub(crate) fn set_sampled(s: &Sampled) {
    let Some(h) = handles() else { return };
    if let Some(d) = s.queue_depth {
        h.queue_depth.set(d as f64);
    }
    if let Some(head) = s.log_head {
        h.log_head.set(head as f64);
    }
    for m in &s.projections {
        if let Some((_, [p, le, ls, r, rl, st, pk])) =
            h.projections.iter().find(|(n, _)| *n == m.model)
        {
            st.set(if m.state.stopped_at.is_some() {
                1.0
            } else {
                0.0
            });
            pk.set(m.state.parked as f64);
            let m = &m.state;
            p.set(m.position as f64);
            le.set(m.lag_events as f64);
            ls.set(m.lag_seconds);
            r.set(if m.rebuild.is_some() { 1.0 } else { 0.0 });
            rl.set(m.rebuild.as_ref().map_or(0.0, |b| b.lag_events as f64));
        }
    }
}
