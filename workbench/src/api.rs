//! The HTTP side: the route table, the access check in front of every
//! route, and the handlers.
//!
//! Every route is in [`route_table`] with the access it needs, and the
//! router is built from that table, so a route cannot exist without its
//! check. The check answers 401 without a session, 403 for a role below
//! the route's, and 403 for a request that changes something without the
//! session's CSRF token in `X-CSRF-Token`. Errors are JSON:
//! `{"error": "…"}`, with `"diagnostics"` when a rule set does not check.

// Handlers answer a `Response` whether they succeed or not, so `Err` holds
// one too; boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Workbench;
use crate::audit::{self, Action};
use crate::auth::{self, LoginRefused, Role, Session};
use crate::engine::{self, CatalogueView};
use crate::files::RuleFiles;
use crate::flow::{FlowError, Proposal, Status};
use crate::store::RuleSetVersion;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the page itself, its assets, and the login.
    Public,
    /// A session whose role is at least this.
    Role(Role),
}

/// One route of the workbench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: Method,
    /// The axum path, with `{name}` for a parameter.
    pub path: &'static str,
    pub access: Access,
}

type Handler = MethodRouter<Arc<Workbench>>;

fn table() -> Vec<(RouteInfo, Handler)> {
    use Access::{Public, Role as R};
    let r = |method: Method, path: &'static str, access: Access, h: Handler| {
        (
            RouteInfo {
                method,
                path,
                access,
            },
            h,
        )
    };
    vec![
        r(
            Method::GET,
            "/workbench",
            Public,
            get(|| async { Redirect::permanent("/workbench/") }),
        ),
        r(
            Method::GET,
            "/workbench/",
            Public,
            get(|| async { crate::assets::index() }),
        ),
        r(Method::GET, "/workbench/assets/{*path}", Public, get(asset)),
        r(Method::POST, "/workbench/api/login", Public, post(login)),
        r(
            Method::GET,
            "/workbench/api/login-options",
            Public,
            get(login_options),
        ),
        r(
            Method::GET,
            "/workbench/api/oidc/login",
            Public,
            get(oidc_login),
        ),
        r(
            Method::GET,
            "/workbench/api/oidc/callback",
            Public,
            get(oidc_callback),
        ),
        r(
            Method::POST,
            "/workbench/api/logout",
            R(Role::Viewer),
            post(logout),
        ),
        r(
            Method::GET,
            "/workbench/api/session",
            R(Role::Viewer),
            get(session),
        ),
        r(
            Method::GET,
            "/workbench/api/catalogue",
            R(Role::Viewer),
            get(catalogue),
        ),
        r(
            Method::GET,
            "/workbench/api/serving",
            R(Role::Viewer),
            get(serving),
        ),
        r(
            Method::GET,
            "/workbench/api/versions",
            R(Role::Viewer),
            get(versions),
        ),
        r(
            Method::GET,
            "/workbench/api/versions/{number}",
            R(Role::Viewer),
            get(version),
        ),
        r(
            Method::GET,
            "/workbench/api/diff",
            R(Role::Viewer),
            get(diff),
        ),
        r(
            Method::GET,
            "/workbench/api/proposals",
            R(Role::Viewer),
            get(proposals),
        ),
        r(
            Method::GET,
            "/workbench/api/draft",
            R(Role::Analyst),
            get(draft),
        ),
        r(
            Method::PUT,
            "/workbench/api/draft",
            R(Role::Analyst),
            put(save_draft),
        ),
        r(
            Method::POST,
            "/workbench/api/check",
            R(Role::Analyst),
            post(check),
        ),
        r(
            Method::POST,
            "/workbench/api/test",
            R(Role::Analyst),
            post(test),
        ),
        r(
            Method::POST,
            "/workbench/api/backtest",
            R(Role::Analyst),
            post(backtest),
        ),
        r(
            Method::POST,
            "/workbench/api/proposals",
            R(Role::Analyst),
            post(propose),
        ),
        r(
            Method::POST,
            "/workbench/api/restore",
            R(Role::Analyst),
            post(restore),
        ),
        r(
            Method::POST,
            "/workbench/api/proposals/{id}/deploy",
            R(Role::Analyst),
            post(deploy),
        ),
        r(
            Method::POST,
            "/workbench/api/proposals/{id}/approve",
            R(Role::Approver),
            post(approve),
        ),
        r(
            Method::POST,
            "/workbench/api/proposals/{id}/reject",
            R(Role::Approver),
            post(reject),
        ),
        r(
            Method::GET,
            "/workbench/api/audit",
            R(Role::Approver),
            get(audit_log),
        ),
        r(
            Method::GET,
            "/workbench/api/audit/export",
            R(Role::Admin),
            get(audit_export),
        ),
    ]
}

/// Every route with the access it needs.
pub fn route_table() -> Vec<RouteInfo> {
    table().into_iter().map(|(info, _)| info).collect()
}

pub(crate) fn router(wb: Arc<Workbench>) -> Router {
    let mut router = Router::new();
    for (info, handler) in table() {
        let guarded = handler.route_layer(from_fn_with_state((wb.clone(), info.access), guard));
        router = router.route(info.path, guarded);
    }
    router
        .layer(DefaultBodyLimit::max(wb.config.max_body_bytes))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(wb)
}

/// Headers on every answer: no framing (the approve button must not be
/// clickjacked), no type sniffing, no referrer, and no caching of the API.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The session token of a request, as an extension for `logout`.
#[derive(Clone)]
struct SessionId(String);

async fn guard(
    State((wb, access)): State<(Arc<Workbench>, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Access::Role(needed) = access else {
        return next.run(req).await;
    };
    let token = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::cookie_token)
        .map(str::to_owned);
    let Some((token, session)) = token.and_then(|t| wb.auth.session(&t).map(|s| (t, s))) else {
        return fail(
            StatusCode::UNAUTHORIZED,
            "log in first: this needs a session",
        );
    };
    if session.role < needed {
        return fail(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; you are {}",
                needed.as_str(),
                session.role.as_str()
            ),
        );
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes {
        let given = req
            .headers()
            .get(auth::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| auth::same_secret(g, &session.csrf)) {
            return fail(
                StatusCode::FORBIDDEN,
                "the X-CSRF-Token header is missing or wrong: reload the page",
            );
        }
    }
    req.extensions_mut().insert(session);
    req.extensions_mut().insert(SessionId(token));
    next.run(req).await
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "workbench request failed");
    fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type Answer = Result<Response, Response>;

/// Runs blocking work (file writes, checks, argon2) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

fn flow_error(e: FlowError) -> Response {
    let status = match e {
        FlowError::NoProposal(_) => StatusCode::NOT_FOUND,
        FlowError::OwnChange => StatusCode::FORBIDDEN,
        FlowError::WrongState { .. } | FlowError::Stale { .. } => StatusCode::CONFLICT,
    };
    fail(status, e.to_string())
}

impl Workbench {
    /// Appends to the audit log, off the async workers.
    async fn record(
        self: &Arc<Self>,
        user: &str,
        action: Action,
        subject: String,
        diff: String,
    ) -> Result<(), Response> {
        let (wb, user) = (self.clone(), user.to_owned());
        blocking(move || wb.audit.append(&user, action, subject, diff))
            .await?
            .map(|_| ())
            .map_err(internal)
    }

    fn serving_number(&self) -> u64 {
        self.store
            .follower()
            .current()
            .map_or(0, |s| s.version.number)
    }

    fn serving_files(&self) -> RuleFiles {
        self.store
            .follower()
            .current()
            .map(|s| s.version.files.clone())
            .unwrap_or_default()
    }
}

async fn asset(Path(path): Path<String>) -> Response {
    crate::assets::asset(&path)
}

// --- sessions ---------------------------------------------------------------

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/login` takes JSON only: a cross-site form cannot send it, so
/// no other site can log a browser in as someone else.
async fn login(State(wb): State<Arc<Workbench>>, Json(body): Json<LoginBody>) -> Answer {
    if body.user.len() > 64 || body.password.len() > 1024 {
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        ));
    }
    let w = wb.clone();
    let (user, password) = (body.user.clone(), body.password);
    match blocking(move || w.auth.login(&user, &password)).await? {
        Ok((id, s)) => {
            wb.record(&s.user, Action::Login, "session".into(), String::new())
                .await?;
            let cookie = auth::set_cookie(
                &id,
                Duration::from_secs(wb.config.session_idle_minutes * 60),
            );
            Ok((
                [(header::SET_COOKIE, cookie)],
                Json(json!({ "user": s.user, "role": s.role, "csrf": s.csrf })),
            )
                .into_response())
        }
        Err(LoginRefused::Wrong) => {
            // Refusals are recorded for configured names only: unknown
            // names would let anyone fill the log.
            if wb.auth.role_of(&body.user).is_some() {
                wb.record(
                    &body.user,
                    Action::LoginRefused,
                    "session".into(),
                    String::new(),
                )
                .await?;
            }
            Err(fail(
                StatusCode::UNAUTHORIZED,
                "wrong user name or password",
            ))
        }
        Err(LoginRefused::Limited(wait)) => {
            let secs = wait.as_secs().max(1);
            Err((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(json!({ "error": format!("too many login attempts for this name: try again in {secs} s") })),
            )
                .into_response())
        }
    }
}

/// What the login page offers: passwords, and the provider's button.
async fn login_options(State(wb): State<Arc<Workbench>>) -> Json<Value> {
    Json(json!({
        "passwords": !wb.config.users.is_empty(),
        "oidc": wb.oidc.as_ref().map(|o| o.label()),
    }))
}

/// Starts a login at the provider: a redirect there, and the state kept
/// in the browser's cookie.
async fn oidc_login(State(wb): State<Arc<Workbench>>) -> Answer {
    let Some(oidc) = &wb.oidc else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "single sign-on is not configured ([workbench.oidc])",
        ));
    };
    let (url, state) = oidc.start().await.map_err(|e| {
        tracing::warn!(error = %e, "single sign-on cannot start");
        fail(StatusCode::BAD_GATEWAY, e.to_string())
    })?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, url),
            (header::SET_COOKIE, crate::oidc::state_cookie(&state)),
        ],
    )
        .into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's redirect back: the code exchanged, the ID token
/// checked, a session opened, and the browser sent to the workbench.
async fn oidc_callback(
    State(wb): State<Arc<Workbench>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Answer {
    let Some(oidc) = &wb.oidc else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "single sign-on is not configured ([workbench.oidc])",
        ));
    };
    if let Some(e) = q.error {
        let why = q.error_description.unwrap_or_default();
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            format!("the identity provider refused the login: {e} {why}"),
        ));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "the provider's answer has no code or state",
        ));
    };
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::oidc::cookie_state);
    let (user, role) = match oidc.finish(&code, &state, cookie).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on refused");
            if let crate::oidc::OidcError::NoRole { user, .. } = &e {
                wb.record(
                    user,
                    Action::LoginRefused,
                    "single sign-on".into(),
                    String::new(),
                )
                .await?;
            }
            let status = match e {
                crate::oidc::OidcError::Provider(_) => StatusCode::BAD_GATEWAY,
                crate::oidc::OidcError::NoRole { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            return Err(fail(status, e.to_string()));
        }
    };
    let (id, s) = wb.auth.open(&user, role);
    wb.record(
        &s.user,
        Action::Login,
        "single sign-on".into(),
        String::new(),
    )
    .await?;
    let cookie = auth::set_cookie(
        &id,
        Duration::from_secs(wb.config.session_idle_minutes * 60),
    );
    let mut res = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/workbench/#/serving")],
    )
        .into_response();
    for c in [cookie, crate::oidc::clear_state_cookie()] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

async fn logout(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    axum::Extension(id): axum::Extension<SessionId>,
) -> Answer {
    wb.auth.logout(&id.0);
    wb.record(&s.user, Action::Logout, "session".into(), String::new())
        .await?;
    Ok((
        [(header::SET_COOKIE, auth::clear_cookie())],
        Json(json!({ "ok": true })),
    )
        .into_response())
}

async fn session(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
) -> Json<Value> {
    Json(json!({
        "user": s.user,
        "role": s.role,
        "csrf": s.csrf,
        "store": wb.store.describe(),
        "writable": wb.store.writable(),
    }))
}

// --- reading -----------------------------------------------------------------

async fn catalogue(State(wb): State<Arc<Workbench>>) -> Json<CatalogueView> {
    Json(CatalogueView::of(&wb.engine.catalogue()))
}

#[derive(Serialize)]
struct RuleRow {
    #[serde(flatten)]
    source: crate::summary::RuleSource,
    hits_hour: u64,
    hits_day: u64,
    /// Hits per decided event, 0 to 1; `None` when no event was decided.
    rate_hour: Option<f64>,
    rate_day: Option<f64>,
}

async fn serving(State(wb): State<Arc<Workbench>>) -> Answer {
    let current = wb.store.follower().current();
    let engine = wb.engine.clone();
    let files = current
        .as_ref()
        .map(|c| c.version.files.clone())
        .unwrap_or_default();
    let (hits, (rules, lists)) =
        blocking(move || (engine.rule_hits(), crate::summary::summarise(&files))).await?;
    let rate = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
    let rows: Vec<RuleRow> = rules
        .into_iter()
        .map(|r| {
            let (h, d) = (
                hits.hour.hits.get(&r.name).copied().unwrap_or(0),
                hits.day.hits.get(&r.name).copied().unwrap_or(0),
            );
            RuleRow {
                source: r,
                hits_hour: h,
                hits_day: d,
                rate_hour: rate(h, hits.hour.events),
                rate_day: rate(d, hits.day.events),
            }
        })
        .collect();
    Ok(Json(json!({
        "version": current.as_ref().map(|c| summary(&c.version)),
        "engine_version": wb.engine.serving_version(),
        "files": current.as_ref().map(|c| c.version.files.clone()).unwrap_or_default(),
        "rules": rows,
        "lists": lists,
        "events_hour": hits.hour.events,
        "events_day": hits.day.events,
        "store": wb.store.describe(),
        "refused": wb.store.follower().refused(),
    }))
    .into_response())
}

fn summary(v: &RuleSetVersion) -> Value {
    json!({
        "number": v.number,
        "version": v.version,
        "proposed_by": v.proposed_by,
        "approved_by": v.approved_by,
        "deployed_by": v.deployed_by,
        "published_at": v.published_at,
        "note": v.note,
        "restores": v.restores,
    })
}

async fn versions(State(wb): State<Arc<Workbench>>) -> Json<Value> {
    let serving = wb.serving_number();
    let mut all: Vec<Value> = wb
        .store
        .history()
        .iter()
        .map(|v| {
            let mut s = summary(v);
            s["serving"] = json!(v.number == serving);
            s
        })
        .collect();
    all.reverse();
    Json(json!({ "versions": all, "refused": wb.store.follower().refused() }))
}

async fn version(State(wb): State<Arc<Workbench>>, Path(number): Path<u64>) -> Answer {
    match wb.store.follower().get(number) {
        Some(v) => Ok(Json(&*v).into_response()),
        None => Err(fail(
            StatusCode::NOT_FOUND,
            format!("there is no version {number}"),
        )),
    }
}

#[derive(Deserialize)]
struct DiffQuery {
    /// 0 for the empty rule set.
    from: u64,
    to: u64,
}

async fn diff(State(wb): State<Arc<Workbench>>, Query(q): Query<DiffQuery>) -> Answer {
    let files = |n: u64| -> Result<RuleFiles, Response> {
        if n == 0 {
            return Ok(RuleFiles::default());
        }
        wb.store
            .follower()
            .get(n)
            .map(|v| v.files.clone())
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("there is no version {n}")))
    };
    let (a, b) = (files(q.from)?, files(q.to)?);
    let d = blocking(move || audit::diff(&a, &b)).await?;
    Ok(Json(json!({ "from": q.from, "to": q.to, "diff": d })).into_response())
}

async fn proposals(State(wb): State<Arc<Workbench>>) -> Answer {
    let wb2 = wb.clone();
    let list = blocking(move || {
        let mut out: Vec<Value> = wb2
            .flow
            .proposals()
            .into_iter()
            .map(|p| {
                let base = wb2
                    .store
                    .follower()
                    .get(p.base)
                    .map(|v| v.files.clone())
                    .unwrap_or_default();
                let d = audit::diff(&base, &p.files);
                let mut v = serde_json::to_value(&p).expect("a proposal serialises");
                v["diff"] = json!(d);
                v
            })
            .collect();
        out.reverse();
        out
    })
    .await?;
    Ok(Json(json!({ "proposals": list, "serving": wb.serving_number() })).into_response())
}

// --- the draft -----------------------------------------------------------------

async fn draft(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
) -> Json<Value> {
    match wb.flow.draft(&s.user) {
        Some(d) => {
            Json(json!({ "files": d.files, "saved_at": d.saved_at, "base": d.base, "saved": true }))
        }
        None => Json(
            json!({ "files": wb.serving_files(), "saved_at": null, "base": wb.serving_number(), "saved": false }),
        ),
    }
}

#[derive(Deserialize)]
struct FilesBody {
    files: RuleFiles,
    #[serde(default)]
    note: String,
}

async fn save_draft(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Json(body): Json<FilesBody>,
) -> Answer {
    body.files
        .validate()
        .map_err(|e| fail(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let (w, user, base) = (wb.clone(), s.user.clone(), wb.serving_number());
    let serving = wb.serving_files();
    let (saved, old, d) = blocking(move || {
        let before = w.flow.draft(&user).map(|d| d.files).unwrap_or(serving);
        let d = audit::diff(&before, &body.files);
        w.flow
            .save_draft(&user, body.files, base)
            .map(|(s, o)| (s, o, d))
    })
    .await?
    .map_err(internal)?;
    let _ = old;
    wb.record(
        &s.user,
        Action::DraftSaved,
        format!("the draft of {}", s.user),
        d,
    )
    .await?;
    Ok(Json(json!({ "saved_at": saved.saved_at, "base": saved.base })).into_response())
}

/// Checks files on a blocking thread: the draft folder or the diagnostics.
async fn checked(
    wb: &Arc<Workbench>,
    files: RuleFiles,
) -> Result<Result<engine::Checked, Vec<engine::DraftDiagnostic>>, Response> {
    let catalogue = wb.engine.catalogue();
    blocking(move || engine::check(&files, &catalogue)).await
}

fn does_not_check(diagnostics: Vec<engine::DraftDiagnostic>) -> Response {
    let n = diagnostics.len();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": format!("the rule set does not check: {n} error{}", if n == 1 { "" } else { "s" }),
            "diagnostics": diagnostics,
        })),
    )
        .into_response()
}

/// `POST /api/check`: the diagnostics of `verdict rules check`, as the
/// analyst types. Always 200: a draft that does not check is an answer.
async fn check(State(wb): State<Arc<Workbench>>, Json(body): Json<FilesBody>) -> Answer {
    Ok(match checked(&wb, body.files).await? {
        Ok(c) => Json(json!({
            "ok": true,
            "version": c.rules.version().to_string(),
            "rules": c.rules.rules().count(),
            "diagnostics": [],
        })),
        Err(d) => Json(json!({ "ok": false, "diagnostics": d })),
    }
    .into_response())
}

async fn test(State(wb): State<Arc<Workbench>>, Json(body): Json<FilesBody>) -> Answer {
    let c = checked(&wb, body.files).await?.map_err(does_not_check)?;
    let (parser, catalogue) = (wb.engine.event_parser(), wb.engine.catalogue());
    let cases = blocking(move || engine::run_tests(&c, &parser, &catalogue)).await?;
    let passed = cases.iter().filter(|c| c.passed).count();
    Ok(
        Json(json!({ "passed": passed, "failed": cases.len() - passed, "cases": cases }))
            .into_response(),
    )
}

async fn backtest(State(wb): State<Arc<Workbench>>, Json(body): Json<FilesBody>) -> Answer {
    let c = checked(&wb, body.files).await?.map_err(does_not_check)?;
    let engine = wb.engine.clone();
    let secs = wb.config.backtest_timeout_secs;
    let run = tokio::task::spawn_blocking(move || engine.backtest(c.dir.path()));
    match tokio::time::timeout(Duration::from_secs(secs), run).await {
        Err(_) => Err(fail(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the backtest took more than {secs} s; narrow the history"),
        )),
        Ok(Err(e)) => Err(internal(e)),
        Ok(Ok(Err(why))) => Err(fail(StatusCode::UNPROCESSABLE_ENTITY, why)),
        Ok(Ok(Ok(report))) => Ok(Json(json!({ "report": report })).into_response()),
    }
}

// --- maker-checker -------------------------------------------------------------

/// `POST /api/proposals`: proposes the files sent (the editor's contents),
/// which must check.
async fn propose(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Json(body): Json<FilesBody>,
) -> Answer {
    let c = checked(&wb, body.files.clone())
        .await?
        .map_err(does_not_check)?;
    let base = wb.serving_number();
    let serving = wb.serving_files();
    let (w, user, version) = (wb.clone(), s.user.clone(), c.rules.version().to_string());
    let (p, d) = blocking(move || {
        let d = audit::diff(&serving, &body.files);
        w.flow
            .propose(&user, body.files, version, base, body.note, None)
            .map(|p| (p, d))
    })
    .await?
    .map_err(internal)?;
    wb.record(&s.user, Action::Proposed, format!("proposal {}", p.id), d)
        .await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

#[derive(Deserialize)]
struct RestoreBody {
    number: u64,
    #[serde(default)]
    note: String,
}

/// `POST /api/restore`: proposes an earlier version's files again.
async fn restore(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Json(body): Json<RestoreBody>,
) -> Answer {
    let Some(old) = wb.store.follower().get(body.number) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("there is no version {}", body.number),
        ));
    };
    let c = checked(&wb, old.files.clone())
        .await?
        .map_err(does_not_check)?;
    let base = wb.serving_number();
    let serving = wb.serving_files();
    let note = if body.note.is_empty() {
        format!("restore version {}", body.number)
    } else {
        body.note
    };
    let (w, user, version, n) = (
        wb.clone(),
        s.user.clone(),
        c.rules.version().to_string(),
        body.number,
    );
    let (p, d) = blocking(move || {
        let d = audit::diff(&serving, &old.files);
        w.flow
            .propose(&user, old.files.clone(), version, base, note, Some(n))
            .map(|p| (p, d))
    })
    .await?
    .map_err(internal)?;
    wb.record(
        &s.user,
        Action::Proposed,
        format!("proposal {} (restores version {})", p.id, body.number),
        d,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

fn proposal_diff(wb: &Workbench, p: &Proposal) -> String {
    let base = wb
        .store
        .follower()
        .get(p.base)
        .map(|v| v.files.clone())
        .unwrap_or_default();
    audit::diff(&base, &p.files)
}

async fn approve(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Path(id): Path<u64>,
) -> Answer {
    let (w, user) = (wb.clone(), s.user.clone());
    let p = blocking(move || w.flow.approve(id, &user))
        .await?
        .map_err(internal)?
        .map_err(flow_error)?;
    wb.record(
        &s.user,
        Action::Approved,
        format!("proposal {id}"),
        proposal_diff(&wb, &p),
    )
    .await?;
    Ok(Json(p).into_response())
}

#[derive(Deserialize, Default)]
struct NoteBody {
    #[serde(default)]
    note: String,
}

async fn reject(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Path(id): Path<u64>,
    body: Option<Json<NoteBody>>,
) -> Answer {
    let note = body.map(|b| b.0.note).unwrap_or_default();
    let (w, user) = (wb.clone(), s.user.clone());
    let p = blocking(move || w.flow.reject(id, &user, note))
        .await?
        .map_err(internal)?
        .map_err(flow_error)?;
    wb.record(
        &s.user,
        Action::Rejected,
        format!("proposal {id}"),
        String::new(),
    )
    .await?;
    Ok(Json(p).into_response())
}

/// `POST /api/proposals/{id}/deploy`: publishes an approved proposal as the
/// next version, and answers once this instance serves it (or refused it).
async fn deploy(
    State(wb): State<Arc<Workbench>>,
    axum::Extension(s): axum::Extension<Session>,
    Path(id): Path<u64>,
) -> Answer {
    if !wb.store.writable() {
        return Err(fail(
            StatusCode::CONFLICT,
            crate::store::StoreError::ReadOnly(wb.store.describe()).to_string(),
        ));
    }
    let _one_at_a_time = wb.deploying.lock().await;
    let base = wb.serving_number();
    let p = wb.flow.deployable(id, base).map_err(flow_error)?;
    // The catalogue may have changed since the proposal (a new schema):
    // check again, so a deploy never publishes what cannot serve.
    let c = checked(&wb, p.files.clone())
        .await?
        .map_err(does_not_check)?;
    let approved_by = match &p.status {
        Status::Approved { by, .. } => by.clone(),
        _ => unreachable!("deployable returns approved proposals only"),
    };
    let number = wb.store.follower().newest_number() + 1;
    let version = RuleSetVersion {
        number,
        version: c.rules.version().to_string(),
        files: p.files.clone(),
        proposed_by: p.proposed_by.clone(),
        approved_by,
        deployed_by: s.user.clone(),
        published_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        note: p.note.clone(),
        restores: p.restores,
    };
    wb.store
        .publish(version)
        .await
        .map_err(|e| fail(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let (w, user) = (wb.clone(), s.user.clone());
    let p = blocking(move || w.flow.deployed(id, &user, number))
        .await?
        .map_err(internal)?
        .map_err(flow_error)?;
    let (action, subject) = match p.restores {
        Some(old) => (
            Action::RolledBack,
            format!("version {number} (proposal {id}, restores version {old})"),
        ),
        None => (
            Action::Deployed,
            format!("version {number} (proposal {id})"),
        ),
    };
    wb.record(&s.user, action, subject, proposal_diff(&wb, &p))
        .await?;
    let serving = wb.serving_number() == number;
    Ok(Json(json!({ "number": number, "serving": serving, "proposal": p })).into_response())
}

// --- the record ------------------------------------------------------------------

async fn audit_log(State(wb): State<Arc<Workbench>>) -> Answer {
    let w = wb.clone();
    let mut entries = blocking(move || w.audit.entries())
        .await?
        .map_err(internal)?;
    entries.reverse();
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn audit_export(State(wb): State<Arc<Workbench>>) -> Answer {
    let w = wb.clone();
    let bytes = blocking(move || w.audit.export())
        .await?
        .map_err(internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"verdict-audit.jsonl\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
