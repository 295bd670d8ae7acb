//! `POST /v1/backtest`: a candidate rule set in the body, backtested
//! against the configured history, answers the report `verdict backtest
//! --json` writes for the same candidate; refused without the analyst's
//! token, for a candidate that does not check, for a body too large or
//! malformed; stopped at its time limit with the report marked incomplete.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use verdict::config::{Config, EngineConfig, HttpConfig, KafkaConfig, Secret};
use verdict::engine::Engine;
use verdict::http::AppState;
use verdict::http::backtest::BacktestApi;
use verdict::metrics::Metrics;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const ANALYST: &str = "analyst-secret-1";
const ADMIN: &str = "admin-secret-1";

/// The example engine with a decision log folder holding the golden
/// traffic (plain events: the baseline is the configured rules).
fn config(history: &Path) -> Config {
    let at = |p: &str| root().join(p);
    Config {
        engine: EngineConfig {
            schema: at("examples/schema.toml"),
            max_event_bytes: 65536,
            rules: Some(at("examples/rules")),
            rules_watch_ms: 0,
            declared: Some(at("examples/declared.toml")),
            features: Some(at("examples/features.toml")),
        },
        kafka: KafkaConfig::default(),
        http: HttpConfig {
            admin_token: Some(Secret::new(ADMIN)),
            analyst_token: Some(Secret::new(ANALYST)),
            backtest_max_body_bytes: 256 * 1024,
            ..HttpConfig::default()
        },
        features: Default::default(),
        model: Some(verdict_models::ModelConfig::new(at(
            "models/fraud-gbt.manifest.toml",
        ))),
        history: Some(
            serde_json::from_value(serde_json::json!({
                "location": history.to_str().unwrap(),
                "instance": "test",
            }))
            .unwrap(),
        ),
        workbench: None,
        base: Default::default(),
    }
}

struct Server {
    addr: std::net::SocketAddr,
    history: tempfile::TempDir,
}

async fn start(time_limit: Duration) -> Server {
    let history = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("pipeline/tests/data/golden-traffic.jsonl"),
        history.path().join("traffic.jsonl"),
    )
    .unwrap();
    let config = config(history.path());
    let engine = Arc::new(Engine::load(&config).unwrap());
    let mut api = BacktestApi::from_config(&config, env!("CARGO_BIN_EXE_verdict").into());
    api.time_limit = time_limit;
    let state = AppState {
        metrics: Arc::new(Metrics::new()),
        engine: Some(engine),
        admin_token: config.http.admin_token.clone(),
        ready: Default::default(),
        max_body_bytes: 4096,
        max_in_flight: 4,
        backtest: Some(Arc::new(api)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(listener, state));
    Server { addr, history }
}

/// `POST /v1/backtest` with `token`; answers (status, body).
async fn post(addr: std::net::SocketAddr, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    common::http_request(addr, "POST", "/v1/backtest", &auth, body).await
}

/// The example rule folder as request files, the model's deny threshold
/// lowered in `60-model.rules`.
fn candidate_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let dir = root().join("examples/rules");
    for entry in walk(&dir) {
        let rel = entry
            .strip_prefix(&dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if rel.starts_with("tests") {
            continue;
        }
        files.insert(rel, std::fs::read_to_string(&entry).unwrap());
    }
    let model = files.get_mut("60-model.rules").unwrap();
    let changed = model.replacen("model.fraud_score > 0.92", "model.fraud_score > 0.80", 1);
    assert_ne!(&changed, model);
    *model = changed;
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn request(files: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "rules": files,
        "label": "label",
        "skip_invalid": true,
        "seed": 7,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_the_command_lines_for_the_same_candidate() {
    let server = start(Duration::from_secs(600)).await;
    let files = candidate_files();
    let (status, body) = post(server.addr, Some(ANALYST), &request(&files)).await;
    assert_eq!(status, 200, "{body}");
    let mut over_http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http["complete"], true, "{body}");
    assert!(
        over_http["changed"]["events"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert_eq!(over_http["candidate"]["name"], "the rules in the request");

    // The same candidate from a folder, through the command line.
    let folder = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        let path = folder.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .args(["backtest", "--history"])
        .arg(server.history.path())
        .arg("--candidate-rules")
        .arg(folder.path())
        .args([
            "--label",
            "label",
            "--skip-invalid",
            "--seed",
            "7",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for report in [&mut over_http, &mut by_cli] {
        report["candidate"]["name"] = serde_json::Value::Null;
    }
    assert_eq!(over_http, by_cli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() {
    let server = start(Duration::from_secs(600)).await;
    let good = request(&candidate_files());
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = post(server.addr, token, &good).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "unauthorised");
    }

    // The admin's token is accepted too; a body that is not a request is
    // refused with the reason.
    let (status, body) = post(server.addr, Some(ADMIN), br#"{"rulez": {}}"#).await;
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "invalid_request");
    assert!(v["reason"].as_str().unwrap().contains("rulez"), "{body}");

    // A candidate that does not check: the checker's diagnostics, no report.
    let mut broken = candidate_files();
    broken.insert(
        "70-broken.rules".into(),
        "rule broken_rule {\n  when event.amount > \"ten\"\n  then deny\n}\n".into(),
    );
    let (status, body) = post(server.addr, Some(ANALYST), &request(&broken)).await;
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "rules_do_not_check", "{body}");
    assert!(
        v["reason"].as_str().unwrap().contains("70-broken.rules"),
        "{body}"
    );
    assert!(v.get("matrix").is_none());

    // A file name that leaves the folder.
    let mut escaping = candidate_files();
    escaping.insert("../escape.rules".into(), String::new());
    let (status, body) = post(server.addr, Some(ANALYST), &request(&escaping)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a relative path"), "{body}");

    // A body over the limit.
    let mut huge = candidate_files();
    huge.insert("99-big.rules".into(), "#".repeat(300 * 1024));
    let (status, body) = post(server.addr, Some(ANALYST), &request(&huge)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("backtest_max_body_bytes"), "{body}");

    // An unknown label field: an error, not a report without labels.
    let unknown = serde_json::to_vec(&serde_json::json!({
        "label": "no_such_field", "skip_invalid": true,
    }))
    .unwrap();
    let (status, body) = post(server.addr, Some(ANALYST), &unknown).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no_such_field"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_past_its_time_limit_says_it_is_incomplete() {
    let server = start(Duration::ZERO).await;
    let (status, body) = post(server.addr, Some(ANALYST), &request(&candidate_files())).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["complete"], false, "{body}");
    assert!(
        report["incomplete"]
            .as_str()
            .unwrap()
            .contains("time limit"),
        "{body}"
    );
    let events = report["events"].as_u64().unwrap();
    assert!(events < 3_000, "stopped early: {events}");
}
