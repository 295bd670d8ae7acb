//! `POST /v1/backtest`: a candidate rule set, sent in the body, backtested
//! against the configured decision log (`[history]`), answered with the
//! report's JSON — the same bytes `verdict backtest --json` writes for the
//! same history, candidate and options.
//!
//! Each request loads an engine of its own for files (an empty feature
//! store, no wall-clock deadline), so a backtest never touches the serving
//! engine's features and gives the same report on every run. Bounded: the
//! body (`[http] backtest_max_body_bytes`), the files in it, the time
//! (`backtest_timeout_secs`: past it the report says it is incomplete), and
//! one backtest at a time (another answers 429). It runs on a blocking
//! thread, never on an async worker. Only a request with the analyst's (or
//! the admin's) bearer token is served.
//!
//! What it is not: the pass and the report are [`crate::backtest`]'s; the
//! workbench's drafts reach it through the same [`Job`].

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use verdict_backtest::LabelRule;
use verdict_rules::RuleSet;

use super::{Refusal, Shared, bearer_matches, event_body, refused};
use crate::backtest::{Job, LabelSource};
use crate::config::{Config, Secret};
use crate::engine::Engine;

/// Files a candidate may carry, at most.
pub const MAX_FILES: usize = 256;

/// What `POST /v1/backtest` needs besides the request.
pub struct BacktestApi {
    /// The configuration a backtest's engine is loaded from (schema,
    /// features, model, rules) and whose `[history]` it reads.
    pub config: Config,
    /// The `verdict` binary that vets model files in a child process.
    pub exe: PathBuf,
    pub analyst_token: Option<Secret>,
    pub max_body_bytes: usize,
    pub time_limit: Duration,
    /// One backtest at a time.
    pub busy: tokio::sync::Semaphore,
}

impl BacktestApi {
    /// From the configuration (`[http]` and `[history]`).
    pub fn from_config(config: &Config, exe: PathBuf) -> BacktestApi {
        BacktestApi {
            config: config.clone(),
            exe,
            analyst_token: config.http.analyst_token.clone(),
            max_body_bytes: config.http.backtest_max_body_bytes,
            time_limit: Duration::from_secs(config.http.backtest_timeout_secs),
            busy: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The body: the candidate's files and the report's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestRequest {
    /// The candidate rule folder, file name → text (`*.rules` files and the
    /// list files they read); absent: the serving rules.
    #[serde(default)]
    rules: Option<std::collections::BTreeMap<String, String>>,
    /// RFC 3339 times bounding the events compared.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    /// The event field of the ground truth, and which values are
    /// legitimate (default `legit`) or fraud.
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    legit_values: Option<Vec<String>>,
    #[serde(default)]
    fraud_values: Option<Vec<String>>,
    /// The amount field (`none` for no money).
    #[serde(default)]
    amount: Option<String>,
    #[serde(default = "default_samples")]
    samples: usize,
    #[serde(default)]
    seed: u64,
    /// Pass over JSON-lines lines of the history that are not events.
    #[serde(default)]
    skip_invalid: bool,
}

fn default_samples() -> usize {
    10
}

/// The route's handler.
pub(super) async fn backtest(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    match serve(&s, &headers, body).await {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn serve(s: &Shared, headers: &HeaderMap, body: Body) -> Result<String, Refusal> {
    let Some(api) = s.state.backtest.clone() else {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "backtests are not served by this process",
        ));
    };
    let tokens = [api.analyst_token.as_ref(), s.state.admin_token.as_ref()];
    if !tokens
        .into_iter()
        .flatten()
        .any(|t| bearer_matches(headers, t.expose()))
    {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "a valid bearer token is required (Authorization: Bearer <http.analyst_token>)",
        ));
    }
    let Some(history) = api.config.history.clone() else {
        return Err(refused(
            StatusCode::CONFLICT,
            "no_history",
            "no decision log is configured: set [history] location, where `verdict run` archives what it decides",
        ));
    };
    let bytes = event_body(headers, body, api.max_body_bytes)
        .await
        .map_err(|_| {
            refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body must be JSON of at most {} bytes (raise [http] backtest_max_body_bytes for larger rule sets)",
                    api.max_body_bytes
                ),
            )
        })?;
    let request: BacktestRequest = serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("the body is not a backtest request: {e}"),
        )
    })?;
    let Ok(_permit) = api.busy.try_acquire() else {
        return Err(refused(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "a backtest is running; try again when it has answered",
        ));
    };
    let api2 = api.clone();
    tokio::task::spawn_blocking(move || run(&api2, history, request))
        .await
        .map_err(|e| {
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backtest_failed",
                format!("the backtest stopped: {e}"),
            )
        })?
}

/// Writes the candidate's files, loads an engine for files and runs the
/// job. Blocking.
fn run(
    api: &BacktestApi,
    history: verdict_history::WriterConfig,
    request: BacktestRequest,
) -> Result<String, Refusal> {
    let unprocessable =
        |kind: &str, reason: String| refused(StatusCode::UNPROCESSABLE_ENTITY, kind, reason);
    let folder = match &request.rules {
        Some(files) => {
            Some(write_candidate(files).map_err(|e| unprocessable("invalid_request", e))?)
        }
        None => None,
    };
    let engine = Engine::load_for_files(&api.config, &api.exe).map_err(|e| {
        refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backtest_failed",
            format!("cannot load the engine for the backtest: {e:#}"),
        )
    })?;
    if let Some(dir) = &folder
        && let Err(errors) = RuleSet::load_dir(dir.path(), engine.catalogue())
    {
        return Err(unprocessable(
            "rules_do_not_check",
            format!("the candidate rules do not check:\n{errors}"),
        ));
    }
    let time = |what: &str, v: &Option<String>| -> Result<Option<i64>, Refusal> {
        v.as_deref()
            .map(|t| {
                verdict_core::time::parse_rfc3339_ms(t).map_err(|e| {
                    unprocessable(
                        "invalid_request",
                        format!("`{what}` {t}: {e} (use RFC 3339: 2026-11-24T08:00:00Z)"),
                    )
                })
            })
            .transpose()
    };
    let job = Job {
        history: crate::backtest::history_location(&api.config, &history.location),
        store_options: history.options.clone(),
        from_ms: time("from", &request.from)?,
        to_ms: time("to", &request.to)?,
        candidate_rules: folder.as_ref().map(|d| d.path().to_path_buf()),
        candidate_name: folder
            .as_ref()
            .map(|_| "the rules in the request".to_owned()),
        label: match request.label {
            Some(field) => LabelSource::Field {
                field,
                rule: match (request.fraud_values, request.legit_values) {
                    (Some(f), _) => LabelRule::FraudValues(f),
                    (None, l) => LabelRule::LegitValues(l.unwrap_or_else(|| vec!["legit".into()])),
                },
            },
            None => LabelSource::None,
        },
        amount: request.amount,
        samples: request.samples,
        seed: request.seed,
        skip_invalid: request.skip_invalid,
        time_limit: Some(api.time_limit),
        ..Job::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unprocessable("backtest_failed", e.to_string()))?;
    let outcome = runtime
        .block_on(job.run(&engine, |_, _| {}))
        .map_err(|e| unprocessable("backtest_failed", format!("{e:#}")))?;
    tracing::info!(
        events = outcome.report.events,
        complete = outcome.report.complete,
        secs = outcome.elapsed.as_secs_f64(),
        "backtest answered"
    );
    Ok(outcome.report.to_json())
}

/// The candidate's files in a fresh folder. A name is a relative path of
/// plain components (`10-velocity.rules`, `lists/blocked.txt`).
fn write_candidate(
    files: &std::collections::BTreeMap<String, String>,
) -> Result<tempfile::TempDir, String> {
    if files.is_empty() {
        return Err("`rules` has no file: send the candidate's *.rules files".into());
    }
    if files.len() > MAX_FILES {
        return Err(format!(
            "`rules` has {} files, more than the {MAX_FILES} allowed",
            files.len()
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("verdict-backtest-")
        .tempdir()
        .map_err(|e| format!("cannot make a folder for the candidate: {e}"))?;
    for (name, text) in files {
        let rel = Path::new(name);
        let plain = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(format!(
                "the file name `{name}` is not a relative path of plain names (no `..`, no leading `/`)"
            ));
        }
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot write `{name}`: {e}"))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write `{name}`: {e}"))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_file_names_stay_inside_the_folder() {
        for bad in [
            "../x.rules",
            "/etc/x.rules",
            "a/../../x.rules",
            "",
            "./x.rules",
        ] {
            let files = std::collections::BTreeMap::from([(bad.to_owned(), "x".to_owned())]);
            let err = write_candidate(&files).unwrap_err();
            assert!(err.contains("not a relative path"), "{bad}: {err}");
        }
        let files = std::collections::BTreeMap::from([
            ("10-a.rules".to_owned(), "a".to_owned()),
            ("lists/b.txt".to_owned(), "b".to_owned()),
        ]);
        let dir = write_candidate(&files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lists/b.txt")).unwrap(),
            "b"
        );
        let many: std::collections::BTreeMap<_, _> = (0..=MAX_FILES)
            .map(|i| (format!("{i}.rules"), String::new()))
            .collect();
        assert!(write_candidate(&many).unwrap_err().contains("more than"));
        assert!(
            write_candidate(&Default::default())
                .unwrap_err()
                .contains("no file")
        );
    }
}
