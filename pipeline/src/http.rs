//! The HTTP API: `POST /v1/decisions` (one event decided synchronously by
//! the same engine as the Kafka lanes), `POST /v1/explain` (the model's
//! reasons for one event's score, the event neither decided nor counted),
//! `/metrics` (Prometheus text),
//! `/healthz`, `/readyz`, the admin endpoints guarded by a bearer
//! token, and `POST /v1/backtest` (see [`backtest`]) guarded by the
//! analyst's.
//!
//! Requests are decided by one task of their own through a
//! [`Window`](crate::window::Window), like every other source: features are
//! read and updated in the order requests arrive, at most `max_in_flight`
//! are decided at once, and a request past that waits for room. Every
//! error answers the same JSON shape, `{"kind": …, "reason": …}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};
use verdict_core::Position;

use crate::config::Secret;
use crate::engine::{Engine, NotExplained, Output, StreamClock};
use crate::metrics::Metrics;
use crate::window::Window;

pub mod backtest;

/// Everything the endpoints share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The engine: decides `POST /v1/decisions` and answers the admin
    /// endpoints. Without it those answer 503 (metrics only).
    pub engine: Option<Arc<Engine>>,
    /// The bearer token of the admin endpoints; without one they answer 401.
    pub admin_token: Option<Secret>,
    /// Set while the service can decide: the engine is loaded and every
    /// Kafka lane holds an assignment with its features caught up.
    pub ready: Arc<AtomicBool>,
    /// Request bodies larger than this are refused (413).
    pub max_body_bytes: usize,
    /// Requests decided at once, at most.
    pub max_in_flight: usize,
    /// `POST /v1/backtest`; without it the route answers 503.
    pub backtest: Option<Arc<backtest::BacktestApi>>,
}

impl AppState {
    /// Metrics only: no engine, no admin, ready.
    pub fn metrics_only(metrics: Arc<Metrics>) -> AppState {
        AppState {
            metrics,
            engine: None,
            admin_token: None,
            ready: Arc::new(AtomicBool::new(true)),
            max_body_bytes: 65536,
            max_in_flight: 1,
            backtest: None,
        }
    }
}

/// One request waiting for its decision.
struct Request {
    body: Bytes,
    read_at: Instant,
    reply: oneshot::Sender<Output>,
}

/// The router's state: the shared parts and the way to the deciding task.
#[derive(Clone)]
struct Shared {
    state: AppState,
    decide: Option<mpsc::Sender<Request>>,
}

/// The router of the service's endpoints. Starts the task that decides
/// requests (so it must be called inside a Tokio runtime); the task ends
/// when the router is dropped.
pub fn router(state: AppState) -> Router {
    let deciding = state.engine.clone().map(|engine| {
        let (tx, rx) = mpsc::channel(state.max_in_flight.max(1));
        tokio::spawn(decide_requests(
            engine,
            state.metrics.clone(),
            rx,
            state.max_in_flight,
        ));
        tx
    });
    Router::new()
        .route("/v1/decisions", post(decide))
        .route("/v1/explain", post(explain))
        .route("/v1/backtest", post(backtest::backtest))
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/reload/rules", post(reload_rules))
        .route("/admin/reload/model", post(reload_model))
        .route("/admin/versions", get(versions))
        .with_state(Shared {
            state,
            decide: deciding,
        })
}

/// Decides requests in arrival order, `limit` at most in flight, until
/// every sender is gone and what is in flight is answered.
async fn decide_requests(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    mut requests: mpsc::Receiver<Request>,
    limit: usize,
) {
    let engine = &*engine;
    let mut window: Window<oneshot::Sender<Output>, _> = Window::new(limit);
    let mut burst = engine.burst();
    // The requests are one stream, in arrival order.
    let mut clock = StreamClock::new();
    let mut open = true;
    while open || !window.is_empty() {
        tokio::select! {
            biased;
            Some((reply, output)) = window.next(), if !window.is_empty() => {
                if let Output::Decision(d) = &output {
                    d.count(&metrics);
                }
                let _: Result<(), Output> = reply.send(output);
            }
            request = requests.recv(), if open && !window.is_full() => {
                let Some(mut request) = request else {
                    open = false;
                    continue;
                };
                // Take the requests already waiting, so that they are
                // scored together.
                loop {
                    metrics.event();
                    let prepared = engine
                        .prepare_in(&mut burst, &mut clock, &request.body, http_position, request.read_at)
                        .map(|p| engine.finish(p));
                    if let Err(rejected) = &prepared {
                        metrics.dead_letter(rejected.kind);
                    }
                    window.push(request.reply, prepared);
                    match (window.is_full(), requests.try_recv()) {
                        (false, Ok(next)) => request = next,
                        _ => break,
                    }
                }
                // One round trip to the shared store for the requests
                // taken together.
                burst.send();
                // The callers are waiting: score now, with whatever else
                // waits, rather than wait for the scoring thread.
                engine.help_score();
            }
        }
    }
}

fn http_position() -> Position {
    Position::Http {
        http: "POST /v1/decisions".to_owned(),
    }
}

/// An error answer: `{"kind": …, "reason": …}` with its status.
struct Refusal {
    status: StatusCode,
    kind: String,
    reason: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "kind": self.kind, "reason": self.reason });
        (self.status, axum::Json(body)).into_response()
    }
}

fn refusal(status: StatusCode, kind: &str, reason: impl Into<String>) -> Response {
    refused(status, kind, reason).into_response()
}

fn refused(status: StatusCode, kind: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        kind: kind.to_owned(),
        reason: reason.into(),
    }
}

async fn render(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.state.metrics.render(),
    )
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.state.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// True for `application/json` and `application/*+json`, with or without
/// parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The body of a request that must be one JSON event within the size
/// limit; otherwise the refusal to answer.
async fn event_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !is_json(ct) {
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body must be a JSON event (Content-Type: application/json), not `{ct}`"
                ),
            ));
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is over the limit of {limit} bytes (raise [http] max_body_bytes \
                 if such events are legitimate)"
            ),
        )
    })
}

async fn decide(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let read_at = Instant::now();
    let body = match event_body(&headers, body, s.state.max_body_bytes).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(decide) = &s.decide else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no engine is loaded",
        );
    };
    let (reply, answer) = oneshot::channel();
    let request = Request {
        body,
        read_at,
        reply,
    };
    if decide.send(request).await.is_err() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is stopping",
        );
    }
    match answer.await {
        Ok(Output::Decision(decided)) => axum::Json(decided.decision).into_response(),
        Ok(Output::DeadLetter(rejected)) => refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            &rejected.letter.kind,
            rejected.letter.reason,
        ),
        Err(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is stopping",
        ),
    }
}

/// `?top=N` of `POST /v1/explain`.
#[derive(serde::Deserialize)]
struct ExplainQuery {
    top: Option<usize>,
}

/// Most contributions one explanation answers.
const MAX_EXPLAIN_TOP: usize = 64;

/// `POST /v1/explain`: the champion's score of one event and its top
/// contributions (`?top=N`, default 5, at most 64), without deciding the
/// event or counting it in the features.
async fn explain(
    State(s): State<Shared>,
    Query(query): Query<ExplainQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match event_body(&headers, body, s.state.max_body_bytes).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(engine) = &s.state.engine else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no engine is loaded",
        );
    };
    let top = query.top.unwrap_or(5).clamp(1, MAX_EXPLAIN_TOP);
    match engine.explain_event(&body, top).await {
        Ok(explained) => axum::Json(explained).into_response(),
        Err(NotExplained::Invalid { kind, reason }) => {
            refusal(StatusCode::UNPROCESSABLE_ENTITY, kind.as_str(), reason)
        }
        Err(NotExplained::Unavailable(why)) => {
            refusal(StatusCode::CONFLICT, "not_explainable", why)
        }
    }
}

/// The engine when the request carries the configured admin token.
fn authorised<'a>(s: &'a Shared, headers: &HeaderMap) -> Result<&'a Arc<Engine>, Refusal> {
    let unauthorised = || {
        refused(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "a valid bearer token is required (Authorization: Bearer <http.admin_token>)",
        )
    };
    let Some(token) = s
        .state
        .admin_token
        .as_ref()
        .map(Secret::expose)
        .filter(|t| !t.is_empty())
    else {
        return Err(unauthorised());
    };
    if !bearer_matches(headers, token) {
        return Err(unauthorised());
    }
    s.state.engine.as_ref().ok_or_else(|| {
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no engine is loaded",
        )
    })
}

/// Whether the request's bearer token is `token` (compared in constant
/// time); an empty token matches nothing.
fn bearer_matches(headers: &HeaderMap, token: impl AsRef<str>) -> bool {
    let token = token.as_ref();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    !token.is_empty() && given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a reload off the async workers: it reads files and may load a
/// model in a child process.
async fn blocking_reload(
    engine: &Arc<Engine>,
    reload: fn(&Engine) -> Result<Arc<str>, String>,
    what: &'static str,
) -> Response {
    let engine = engine.clone();
    let result = tokio::task::spawn_blocking(move || reload(&engine))
        .await
        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
    match result {
        Ok(version) => axum::Json(serde_json::json!({
            "ok": true,
            "message": format!("{what} reloaded: {version}"),
        }))
        .into_response(),
        Err(msg) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "ok": false, "kind": "refused", "reason": msg })),
        )
            .into_response(),
    }
}

async fn reload_rules(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(engine) => blocking_reload(engine, Engine::reload_rules, "rules").await,
        Err(r) => r.into_response(),
    }
}

async fn reload_model(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(engine) => blocking_reload(engine, Engine::reload_model, "model").await,
        Err(r) => r.into_response(),
    }
}

async fn versions(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(engine) => axum::Json(engine.versions()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) {
    serve_router(listener, router(state)).await;
}

/// Serves `app` (the service's [`router`], with whatever is merged into
/// it) on `listener` until the process ends.
pub async fn serve_router(listener: tokio::net::TcpListener, app: Router) {
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.verdict.event+json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
            assert!(!is_json(ct), "{ct}");
        }
    }
}
