//! Operations endpoints: liveness, readiness and the Prometheus metrics.
//!
//! `/readyz` and `/metrics` ask the backend the same questions (the log's head, the queue's depth, the
//! read models' checkpoints), each bounded by [`CHECK_PATIENCE`] so a hung database makes a probe
//! answer 503 instead of hanging it.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use tally_core::projector::poison::FaultState;
use tally_core::readmodel::{PROJECTIONS, shadow};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::metrics::{self, Sampled};

/// How long a probe waits for each answer from the backend.
const CHECK_PATIENCE: Duration = Duration::from_secs(2);

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// Whether this process can do its work, and if not, what stops it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "checks": {
    "store": {"ok": true, "head": 42},
    "queue": {"ok": true, "depth": 0},
    "projections": {"ok": true, "lag_events": 0, "lag_seconds": 0.0,
        "models": [{"model": "inventory", "position": 42, "lag_events": 0, "lag_seconds": 0.0}]},
    "server": {"ok": true}}}))]
pub struct Readiness {
    pub status: ReadyStatus,
    pub checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The event store answers.
    pub store: StoreCheck,
    /// The command queue answers.
    pub queue: QueueCheck,
    /// The read models' checkpoints can be read. Lag is reported, but does not make a process unready:
    /// it is ordinary after a restart or under load.
    pub projections: ProjectionsCheck,
    /// The server is not shutting down.
    pub server: ServerCheck,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreCheck {
    pub ok: bool,
    /// Position of the last event in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCheck {
    pub ok: bool,
    /// Commands waiting or in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsCheck {
    pub ok: bool,
    /// The largest lag of any read model, in events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_events: Option<u64>,
    /// The largest lag of any read model, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelLag>>,
    /// The read models being built for the first time (their queries answer 503 until they are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_filling: Option<Vec<String>>,
    /// The read models with a new version being built beside them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilding: Option<Vec<String>>,
    /// The read models halted before a poison event (`GET /v1/admin/projections` says where and
    /// why). The others go on, so this does not make the process unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where one read model stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelLag {
    pub model: String,
    #[serde(flatten)]
    pub state: ModelState,
}

/// Where a read model stands, and what is under way with it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelState {
    /// The global position it has applied.
    pub position: u64,
    /// Events in the log it has not applied yet.
    pub lag_events: u64,
    /// Age of the oldest event it has not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// `caught_up`, `behind`, `rebuilding` (a new version is being built beside the one that
    /// serves), `back_filling` (built for the first time: its queries answer 503 until it is) or
    /// `stopped` (halted before a poison event until an operator retries or skips it).
    pub status: &'static str,
    /// The new version being built, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildState>,
    /// Why it is `stopped`: the poison event it halts before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<StoppedAt>,
    /// Events it went on without (parked poison events).
    pub parked: u64,
}

/// The poison event a projection halts before ([`tally_core::projector::poison`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoppedAt {
    pub position: u64,
    pub reason: String,
}

/// A shadow version being built ([`tally_core::readmodel::shadow`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildState {
    /// The position it has reached.
    pub position: u64,
    /// The position it is catching up to: the log's head when this was read.
    pub target: u64,
    /// Events left to fold before it can be swapped in.
    pub lag_events: u64,
    /// When this process started building it (absent when another process builds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Events folded per second (absent when another process builds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_s: Option<f64>,
    /// Seconds until it reaches the head at that rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerCheck {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness, description = "Ready"),
        (status = 503, body = Readiness, description = "Something is not ready; `checks` says what")))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let sample = sample(&s).await;
    let server = if *s.shutdown.borrow() {
        ServerCheck {
            ok: false,
            error: Some("shutting down".into()),
        }
    } else {
        ServerCheck {
            ok: true,
            error: None,
        }
    };
    let checks = Checks {
        store: match sample.head {
            Ok(head) => StoreCheck {
                ok: true,
                head: Some(head),
                error: None,
            },
            Err(e) => StoreCheck {
                ok: false,
                head: None,
                error: Some(e),
            },
        },
        queue: match sample.depth {
            Ok(depth) => QueueCheck {
                ok: true,
                depth: Some(depth),
                error: None,
            },
            Err(e) => QueueCheck {
                ok: false,
                depth: None,
                error: Some(e),
            },
        },
        projections: match sample.projections {
            Ok(models) => ProjectionsCheck {
                ok: true,
                lag_events: Some(models.iter().map(|m| m.state.lag_events).max().unwrap_or(0)),
                lag_seconds: Some(
                    models
                        .iter()
                        .map(|m| m.state.lag_seconds)
                        .fold(0.0, f64::max),
                ),
                back_filling: Some(named(&models, "back_filling")),
                rebuilding: Some(named(&models, "rebuilding")),
                stopped: Some(named(&models, "stopped")),
                models: Some(models),
                error: None,
            },
            Err(e) => ProjectionsCheck {
                ok: false,
                lag_events: None,
                lag_seconds: None,
                models: None,
                back_filling: None,
                rebuilding: None,
                stopped: None,
                error: Some(e),
            },
        },
        server,
    };
    let ready = checks.store.ok && checks.queue.ok && checks.projections.ok && checks.server.ok;
    let (code, status) = if ready {
        (StatusCode::OK, ReadyStatus::Ready)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady)
    };
    (code, Json(Readiness { status, checks }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every metric in the Prometheus text exposition format (0.0.4)",
            content_type = "text/plain", body = String),
        (status = 503, description = "This process has no metrics recorder", body = Problem,
            content_type = "application/problem+json")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let sample = sample(&s).await;
    metrics::set_sampled(&Sampled {
        queue_depth: sample.depth.ok(),
        log_head: sample.head.as_ref().ok().copied(),
        projections: sample.projections.unwrap_or_default(),
    });
    match metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        None => ApiError::Unavailable {
            detail: "this process has no metrics recorder (another one was installed first)".into(),
            retry_after_s: 60,
        }
        .into_response(),
    }
}

/// The log's head and where each read model stands (for `GET /v1/admin/projections`).
pub(crate) async fn projections_now(s: &AppState) -> Result<(u64, Vec<ModelLag>), String> {
    let backend = &s.backend;
    let (head, checkpoints) = tokio::join!(
        bounded("event store", backend.events.head()),
        bounded("read store", backend.read.checkpoints()),
    );
    let (head, checkpoints) = (head?, checkpoints?);
    let models = bounded("event store", lags(s, head, &checkpoints)).await?;
    Ok((head, models))
}

/// What the backend said, each answer or why there is none.
struct Sample {
    head: Result<u64, String>,
    depth: Result<u64, String>,
    projections: Result<Vec<ModelLag>, String>,
}

async fn sample(s: &AppState) -> Sample {
    let backend = &s.backend;
    let (head, depth, checkpoints) = tokio::join!(
        bounded("event store", backend.events.head()),
        bounded("command queue", backend.queue.depth()),
        bounded("read store", backend.read.checkpoints()),
    );
    let projections = match (&head, checkpoints) {
        (_, Err(e)) => Err(e),
        (Err(e), _) => Err(format!("the log's head is unknown: {e}")),
        (Ok(head), Ok(checkpoints)) => bounded("event store", lags(s, *head, &checkpoints)).await,
    };
    Sample {
        head,
        depth,
        projections,
    }
}

/// The models of this status.
fn named(models: &[ModelLag], status: &str) -> Vec<String> {
    models
        .iter()
        .filter(|m| m.state.status == status)
        .map(|m| m.model.clone())
        .collect()
}

/// Each read model's position and lag. The lag in seconds is the age of the oldest event it has not
/// applied; models at the same checkpoint share one read.
async fn lags(
    s: &AppState,
    head: u64,
    checkpoints: &std::collections::HashMap<String, u64>,
) -> Result<Vec<ModelLag>, tally_core::Error> {
    let backend = &s.backend;
    let progress = s.signals.rebuilds().progress();
    let faults = backend.sink.faults().await?;
    let now = Timestamp::now();
    let mut out: Vec<ModelLag> = Vec::with_capacity(PROJECTIONS.len());
    for model in PROJECTIONS {
        let position = checkpoints.get(model).copied().unwrap_or(0);
        let lag_events = head.saturating_sub(position);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else if let Some(same) = out.iter().find(|m| m.state.position == position) {
            same.state.lag_seconds
        } else {
            backend
                .events
                .read_all(position, 1)
                .await?
                .first()
                .map_or(0.0, |e| {
                    now.duration_since(e.recorded_at).as_secs_f64().max(0.0)
                })
        };
        let rebuild = checkpoints.get(&shadow::checkpoint_of(model)).map(|at| {
            let here = progress.get(model);
            let position = here.map_or(*at, |p| p.position.max(*at));
            RebuildState {
                position,
                target: head,
                lag_events: head.saturating_sub(position),
                started_at: here.map(|p| p.started_at.to_string()),
                events_per_s: here.map(|p| p.events_per_s),
                eta_seconds: here.and_then(|p| p.eta_seconds()),
            }
        });
        let stopped_at = faults
            .iter()
            .filter(|f| f.projection == model && f.state == FaultState::Stopped)
            .min_by_key(|f| f.position)
            .map(|f| StoppedAt {
                position: f.position,
                reason: f.reason.clone(),
            });
        let parked = faults
            .iter()
            .filter(|f| f.projection == model && f.state == FaultState::Parked)
            .count() as u64;
        let status = if stopped_at.is_some() {
            "stopped"
        } else if shadow::unbuilt(checkpoints, model) {
            "back_filling"
        } else if rebuild.is_some() {
            "rebuilding"
        } else if lag_events == 0 {
            "caught_up"
        } else {
            "behind"
        };
        out.push(ModelLag {
            model: model.to_owned(),
            state: ModelState {
                position,
                lag_events,
                lag_seconds,
                status,
                rebuild,
                stopped_at,
                parked,
            },
        });
    }
    Ok(out)
}

/// A backend call bounded by [`CHECK_PATIENCE`], its error as text.
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, tally_core::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_PATIENCE, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what} did not answer within {}s",
            CHECK_PATIENCE.as_secs()
        )),
    }
}
