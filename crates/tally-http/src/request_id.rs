//! `X-Request-Id`: a sane client value is kept, anything else is dropped so that a fresh one is made
//! (`SetRequestIdLayer`); the id is returned in the response, carried by the request's log span and
//! stored as the correlation id of the command and of every event it causes. One access log line per
//! answered request (target `tally_http::access`) carries the status and latency.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use tower_http::trace::OnResponse;
use tracing::Span;

pub(crate) const HEADER: &str = "x-request-id";

/// At most this many bytes of visible ASCII make a request id a client may choose.
const MAX_LEN: usize = 128;

/// Whether a client's request id may be kept: 1–128 visible ASCII characters.
pub(crate) fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Removes an `X-Request-Id` that is not sane (or that is sent more than once), so that the next
/// layer makes a fresh one.
pub(crate) fn drop_insane(mut req: Request<Body>) -> Request<Body> {
    let headers = req.headers();
    let mut values = headers.get_all(HEADER).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => v.to_str().is_ok_and(is_sane),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(HEADER);
    }
    req
}

/// The access log line of a request, inside its `http` span (method, path, request id).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        tracing::info!(
            target: "tally_http::access",
            status = response.status().as_u16(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ids(ids: &[&str]) -> Request<Body> {
        let mut b = Request::builder().uri("/");
        for id in ids {
            b = b.header(HEADER, *id);
        }
        b.body(Body::empty()).expect("a request")
    }

    fn kept(req: &Request<Body>) -> Option<&str> {
        req.headers().get(HEADER).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn sane_ids_are_kept_and_others_dropped() {
        assert_eq!(kept(&drop_insane(with_ids(&["abc-123"]))), Some("abc-123"));
        assert_eq!(kept(&drop_insane(with_ids(&[]))), None);
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(kept(&drop_insane(with_ids(&[&long]))), None);
        assert_eq!(kept(&drop_insane(with_ids(&["has space"]))), None);
        assert_eq!(kept(&drop_insane(with_ids(&["a", "b"]))), None);
        let max = "y".repeat(MAX_LEN);
        assert_eq!(kept(&drop_insane(with_ids(&[&max]))), Some(max.as_str()));
    }
}
