//! The event feed: the global log, one stream, and a live SSE tail. Admins and auditors only.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tally_core::model::{RecordedEvent, Role};
use tally_domain::StreamId;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Auth;
use crate::body::QueryParams;
use crate::error::{ApiError, Problem};
use crate::queries::QueryErrors;

#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub position: u64,
    pub stream_id: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of `data`'s shape: the type's current version, old events being upcast.
    pub schema_version: u32,
    /// The version the event is stored in (older than `schema_version` when it was upcast).
    pub stored_schema_version: u32,
    /// Why the stored payload could not be read (it is then served as stored); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    pub occurred_at: String,
    pub recorded_at: String,
    /// The payload's JSON, as the current version writes it (no parse: its text goes out as is).
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

impl EventBody {
    /// The event in its current shape (upcast from the version it is stored in); an event this
    /// build cannot read is served as stored, with the reason.
    fn new(e: RecordedEvent) -> Self {
        let stored = e.schema_version;
        use serde_json::value::{RawValue, to_raw_value};
        // A payload this build cannot read goes out as stored: as JSON when it is JSON, else as a
        // JSON string of its text.
        let as_stored = |text: &str| {
            RawValue::from_string(text.to_owned())
                .or_else(|_| to_raw_value(text))
                .ok()
        };
        let (schema_version, data, decode_error) = match e.decode() {
            Ok(event) => (
                event.schema_version(),
                RawValue::from_string(event.encode()).ok(),
                None,
            ),
            Err(err) => (stored, as_stored(&e.data), Some(err.to_string())),
        };
        // Neither can fail (an encoded event is JSON, and so is any string); `null` if one did.
        let data = data.unwrap_or_else(|| RawValue::NULL.to_owned());
        Self {
            position: e.position,
            stream_id: e.stream_id.to_string(),
            version: e.version,
            occurred_at: e.occurred_at.to_string(),
            recorded_at: e.recorded_at.to_string(),
            data,
            metadata: serde_json::to_value(&e.metadata).unwrap_or_default(),
            event_type: e.event_type,
            schema_version,
            stored_schema_version: stored,
            decode_error,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// Events after this global position (default 0).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub after: Option<String>,
    /// At most this many events, 1–1000 (default 100).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventBody>,
    /// Pass as `after` to get the next page.
    pub next_after: u64,
}

fn after(raw: Option<&str>) -> Result<u64, ApiError> {
    raw.map_or(Ok(0), |r| {
        r.parse()
            .map_err(|_| ApiError::invalid("after", "must be a non-negative integer"))
    })
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(FeedParams), security(("api_key" = [])),
    responses((status = 200, body = EventPage), QueryErrors))]
pub async fn events(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<FeedParams>,
) -> Result<Json<EventPage>, ApiError> {
    auth.require(&[Role::Admin, Role::Auditor])?;
    let after = after(p.after.as_deref())?;
    let limit = match p.limit.as_deref() {
        None => 100,
        Some(r) => r
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", "must be an integer from 1 to 1000"))?,
    };
    let events = s.backend.events.read_all(after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(Json(EventPage {
        events: events.into_iter().map(EventBody::new).collect(),
        next_after,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamBody {
    pub stream_id: String,
    pub events: Vec<EventBody>,
}

#[utoipa::path(get, path = "/v1/streams/{stream_id}", tag = "events", params(("stream_id" = String, Path, description = "Like store-berlin-1 or sale-s-1")),
    security(("api_key" = [])),
    responses((status = 200, body = StreamBody), (status = 404, body = Problem, content_type = "application/problem+json"), QueryErrors))]
pub async fn stream(
    State(s): State<AppState>,
    auth: Auth,
    Path(stream_id): Path<String>,
) -> Result<Json<StreamBody>, ApiError> {
    auth.require(&[Role::Admin, Role::Auditor])?;
    if stream_id.is_empty() || stream_id.len() > 80 {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    let events = s
        .backend
        .events
        .read_stream(&StreamId::from_stored(stream_id.clone()))
        .await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    Ok(Json(StreamBody {
        stream_id,
        events: events.into_iter().map(EventBody::new).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveParams {
    /// Start after this global position (default: the current head).
    #[param(value_type = u64, required = false, minimum = 0)]
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/live", tag = "events", params(LiveParams), security(("api_key" = [])),
    responses((status = 200, description = "One SSE message per event, `id` = position, `event` = type", content_type = "text/event-stream"), QueryErrors))]
pub async fn live(
    State(s): State<AppState>,
    auth: Auth,
    QueryParams(p): QueryParams<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    auth.require(&[Role::Admin, Role::Auditor])?;
    let start = match p.after.as_deref() {
        Some(raw) => after(Some(raw))?,
        None => s.backend.events.head().await?,
    };
    let head = s.signals.watch_head();
    let shutdown = s.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (start, Vec::<RecordedEvent>::new()),
        move |(mut pos, mut buf)| {
            let s = s.clone();
            let mut head = head.clone();
            let mut shutdown = shutdown.clone();
            async move {
                loop {
                    if let Some(e) = (!buf.is_empty()).then(|| buf.remove(0)) {
                        pos = e.position;
                        let id = e.position.to_string();
                        let kind = e.event_type.clone();
                        let json = serde_json::to_string(&EventBody::new(e)).unwrap_or_default();
                        let msg = SseEvent::default().id(id).event(kind).data(json);
                        return Some((Ok(msg), (pos, buf)));
                    }
                    if *shutdown.borrow() {
                        return None;
                    }
                    match s.backend.events.read_all(pos, 500).await {
                        Ok(events) if !events.is_empty() => buf = events,
                        Ok(_) => {
                            tokio::select! {
                                _ = tally_core::signals::changed_or_poll(&mut head) => {}
                                _ = shutdown.changed() => {}
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
