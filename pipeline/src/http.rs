//! The HTTP endpoints: `POST /v1/decisions` (decide one event with the same
//! engine), `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the
//! admin endpoints guarded by a bearer token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use verdict_core::Position;

use crate::engine::Engine;
use crate::metrics::Metrics;

/// What the admin endpoints need from the engine. The engine implements it;
/// each method answers a short description for the response body, or what
/// went wrong.
pub trait Admin: Send + Sync {
    /// Reloads the rule set from its configured file.
    fn reload_rules(&self) -> Result<String, String>;
    /// Reloads the model from its configured file.
    fn reload_model(&self) -> Result<String, String>;
    /// The versions in use (rule set, model), as JSON.
    fn versions(&self) -> serde_json::Value;
}

/// Everything the endpoints share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// Decides `POST /v1/decisions`; without it that endpoint answers 503.
    pub engine: Option<Arc<Engine>>,
    pub admin: Option<Arc<dyn Admin>>,
    /// The bearer token of the admin endpoints; without one they answer 401.
    pub admin_token: Option<String>,
    /// Set once the engine is loaded and the consumer has its assignment.
    pub ready: Arc<AtomicBool>,
    /// Request bodies larger than this are refused (413).
    pub max_body_bytes: usize,
}

impl AppState {
    /// Metrics only: no engine, no admin, ready.
    pub fn metrics_only(metrics: Arc<Metrics>) -> AppState {
        AppState {
            metrics,
            engine: None,
            admin: None,
            admin_token: None,
            ready: Arc::new(AtomicBool::new(true)),
            max_body_bytes: 65536,
        }
    }
}

/// The router of the service's endpoints.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/decisions", post(decide))
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/reload/rules", post(reload_rules))
        .route("/admin/reload/model", post(reload_model))
        .route("/admin/versions", get(versions))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn render(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn decide(State(s): State<AppState>, body: Bytes) -> Response {
    let Some(engine) = s.engine.as_ref() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no engine loaded\n").into_response();
    };
    let read_at = Instant::now();
    s.metrics.event();
    match engine.prepare(
        &body,
        || Position::Http {
            http: "POST /v1/decisions".to_owned(),
        },
        read_at,
    ) {
        Ok(prepared) => {
            let decided = engine.finish(prepared);
            // The caller is waiting: score now, with whatever else waits.
            engine.help_score();
            let decided = decided.await;
            s.metrics.decided(&decided);
            axum::Json(decided.decision).into_response()
        }
        Err(dead) => {
            s.metrics.dead_letter(&dead.kind);
            let body = serde_json::json!({ "kind": dead.kind, "reason": dead.reason });
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
        }
    }
}

/// The admin interface when the request carries the configured token.
fn authorised<'a>(
    s: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a Arc<dyn Admin>, (StatusCode, &'static str)> {
    let unauthorised = || {
        (
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required\n",
        )
    };
    let Some(token) = s.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(unauthorised());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.map(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) != Some(true) {
        return Err(unauthorised());
    }
    s.admin
        .as_ref()
        .ok_or((StatusCode::SERVICE_UNAVAILABLE, "no admin interface\n"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reload_result(r: Result<String, String>) -> Response {
    match r {
        Ok(msg) => axum::Json(serde_json::json!({ "ok": true, "message": msg })).into_response(),
        Err(msg) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({ "ok": false, "error": msg })),
        )
            .into_response(),
    }
}

/// Runs a reload off the async workers: it reads files and may load a
/// model in a child process.
async fn blocking_reload(
    admin: &Arc<dyn Admin>,
    reload: fn(&dyn Admin) -> Result<String, String>,
) -> Response {
    let admin = admin.clone();
    let result = tokio::task::spawn_blocking(move || reload(admin.as_ref()))
        .await
        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
    reload_result(result)
}

async fn reload_rules(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(admin) => blocking_reload(admin, |a| a.reload_rules()).await,
        Err(r) => r.into_response(),
    }
}

async fn reload_model(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(admin) => blocking_reload(admin, |a| a.reload_model()).await,
        Err(r) => r.into_response(),
    }
}

async fn versions(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match authorised(&s, &headers) {
        Ok(admin) => axum::Json(admin.versions()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
