//! The layer that counts HTTP requests by route template, method and status, and times them.
//!
//! The route label is axum's [`MatchedPath`] (a template such as `/v1/inventory/{store_id}`, never a
//! raw path, so the label set stays bounded); requests no route matched are `unmatched`. The series of
//! every documented route, method and status are registered when the router is built, at zero; a
//! request looks its series up in that read-only table (no lock, no allocation) and adds to handles.
//! Anything not documented (an odd status, a route outside the OpenAPI document) is registered on its
//! first use, under a lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram, counter, histogram};
use tower::{Layer, Service};

use super::{HTTP_DURATION, HTTP_REQUESTS};

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Statuses with a counter slot of their own in every series; others are registered on first use.
const STATUSES: [u16; 29] = [
    200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412,
    413, 414, 415, 422, 429, 431, 500, 502, 503, 504,
];

fn status_index(status: u16) -> Option<usize> {
    STATUSES.iter().position(|s| *s == status)
}

/// The metrics of one route and method.
struct Series {
    route: String,
    method: &'static str,
    duration: Histogram,
    by_status: [OnceLock<Counter>; STATUSES.len()],
    rare: Mutex<Vec<(u16, Counter)>>,
}

impl Series {
    fn new(route: &str, method: &'static str) -> Self {
        Self {
            route: route.to_owned(),
            method,
            duration: histogram!(HTTP_DURATION, "route" => route.to_owned(), "method" => method),
            by_status: std::array::from_fn(|_| OnceLock::new()),
            rare: Mutex::new(Vec::new()),
        }
    }

    fn counter(&self, status: u16) -> Counter {
        let label = StatusCode::from_u16(status)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| status.to_string());
        counter!(HTTP_REQUESTS, "route" => self.route.clone(), "method" => self.method, "status" => label)
    }

    /// Registers the counter of `status` at zero.
    fn register(&self, status: u16) {
        match status_index(status) {
            Some(i) => {
                self.by_status[i].get_or_init(|| self.counter(status));
            }
            None => {
                let mut rare = self.rare.lock().unwrap_or_else(PoisonError::into_inner);
                if !rare.iter().any(|(s, _)| *s == status) {
                    rare.push((status, self.counter(status)));
                }
            }
        }
    }

    fn record(&self, status: u16, took: Duration) {
        self.duration.record(took.as_secs_f64());
        match status_index(status) {
            Some(i) => self.by_status[i]
                .get_or_init(|| self.counter(status))
                .increment(1),
            None => {
                let mut rare = self.rare.lock().unwrap_or_else(PoisonError::into_inner);
                match rare.iter().find(|(s, _)| *s == status) {
                    Some((_, c)) => c.increment(1),
                    None => {
                        let c = self.counter(status);
                        c.increment(1);
                        rare.push((status, c));
                    }
                }
            }
        }
    }
}

/// Every series, by route template and method.
pub(crate) struct RouteTable {
    known: foldhash::HashMap<String, [Option<Arc<Series>>; METHODS.len()]>,
    /// Routes and methods met that were not known when the table was built.
    other: Mutex<HashMap<(String, usize), Arc<Series>>>,
}

impl RouteTable {
    /// A table of these routes: `(template, method, documented statuses)`, each registered at zero.
    pub(crate) fn new<'a>(routes: impl IntoIterator<Item = (&'a str, Method, Vec<u16>)>) -> Self {
        let mut known: foldhash::HashMap<String, [Option<Arc<Series>>; METHODS.len()]> =
            foldhash::HashMap::default();
        for (route, method, statuses) in routes {
            let m = method_index(&method);
            let slots = known.entry(route.to_owned()).or_default();
            let series = slots[m].get_or_insert_with(|| Arc::new(Series::new(route, METHODS[m])));
            for status in statuses {
                series.register(status);
            }
        }
        Self {
            known,
            other: Mutex::new(HashMap::new()),
        }
    }

    /// Every operation of an OpenAPI document, with the statuses it documents.
    pub(crate) fn documented(doc: &serde_json::Value) -> Vec<(String, Method, Vec<u16>)> {
        let mut out = Vec::new();
        let Some(paths) = doc["paths"].as_object() else {
            return out;
        };
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let statuses = op["responses"]
                    .as_object()
                    .map(|r| r.keys().filter_map(|s| s.parse::<u16>().ok()).collect())
                    .unwrap_or_default();
                out.push((path.clone(), method, statuses));
            }
        }
        out
    }

    fn series(&self, route: &str, method: &Method) -> Arc<Series> {
        let m = method_index(method);
        if let Some(series) = self.known.get(route).and_then(|slots| slots[m].as_ref()) {
            return series.clone();
        }
        let mut other = self.other.lock().unwrap_or_else(PoisonError::into_inner);
        other
            .entry((route.to_owned(), m))
            .or_insert_with(|| Arc::new(Series::new(route, METHODS[m])))
            .clone()
    }
}

/// Counts and times every request of the router it wraps (`Router::layer`, so that the matched route
/// is known).
#[derive(Clone)]
pub(crate) struct HttpMetricsLayer {
    table: Arc<RouteTable>,
}

impl HttpMetricsLayer {
    pub(crate) fn new(table: RouteTable) -> Self {
        Self {
            table: Arc::new(table),
        }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            table: self.table.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct HttpMetrics<S> {
    inner: S,
    table: Arc<RouteTable>,
}

impl<S, B, R> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str);
        let series = self.table.series(route, req.method());
        Timed {
            inner: self.inner.call(req),
            series,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future; records its status and latency when it is ready.
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        series: Arc<Series>,
        started: Instant,
    }
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let status = match &out {
            Ok(r) => r.status().as_u16(),
            Err(_) => 500,
        };
        this.series.record(status, this.started.elapsed());
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_status_has_a_slot() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(status_index(*s), Some(i));
        }
        assert_eq!(status_index(418), None);
    }

    #[test]
    fn documented_operations_come_from_the_openapi_document() {
        let doc = serde_json::to_value(crate::openapi()).expect("the document serializes");
        let ops = RouteTable::documented(&doc);
        let sales = ops
            .iter()
            .find(|(p, m, _)| p == "/v1/sales" && *m == Method::POST)
            .expect("POST /v1/sales is documented");
        assert!(
            sales.2.contains(&202) && sales.2.contains(&422),
            "{sales:?}"
        );
        assert!(
            ops.iter()
                .any(|(p, m, _)| p == "/v1/inventory/{store_id}" && *m == Method::GET)
        );
    }
}
