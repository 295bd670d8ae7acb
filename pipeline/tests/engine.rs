//! The engine's stages joined: a decision carries the model's score and
//! version; without ONNX Runtime the rules still decide, marked degraded;
//! a model that fails to reload keeps the old one serving.

use std::path::PathBuf;
use std::time::Instant;

use verdict::config::Config;
use verdict::engine::{Engine, StreamClock};
use verdict_core::Position;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config() -> Config {
    let mut config = Config::load(&root().join("verdict.toml")).unwrap();
    config.engine.rules_watch_ms = 0;
    // Generous: a debug build on a busy machine still scores in time.
    config.model.as_mut().unwrap().deadline_ms = 5_000;
    config
}

const EVENT: &str = r#"{"event_id":"e-1","event_type":"loan_application","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_000001","device_id":"d-1","ip":"10.1.2.3","amount":4990,"attributes":{"term_months":12,"new_device":true}}"#;

async fn decide(engine: &Engine, bytes: &str) -> verdict_core::Decision {
    let prepared = engine
        .prepare(
            &mut StreamClock::new(),
            bytes.as_bytes(),
            || Position::Http {
                http: "test".into(),
            },
            Instant::now(),
        )
        .unwrap();
    engine.finish(prepared).await.decision
}

#[tokio::test]
async fn a_decision_carries_the_score_and_the_model_version() {
    let engine = Engine::load(&config()).unwrap();
    assert!(engine.stages_ready());
    let version = engine.model_version().expect("the model loads");
    let d = decide(&engine, EVENT).await;
    assert!(!d.degraded);
    assert_eq!(d.model_version.as_deref(), Some(&*version));
    let json = serde_json::to_value(&d).unwrap();
    let score = json["scores"]["fraud_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score), "{json}");
}

#[tokio::test]
async fn without_onnx_runtime_the_rules_decide_degraded() {
    let mut config = config();
    config.model.as_mut().unwrap().ort_library = Some("/nonexistent/libonnxruntime.so".into());
    let engine = Engine::load(&config).expect("a missing runtime does not stop Verdict");
    assert!(!engine.stages_ready(), "not ready without the model");
    assert_eq!(engine.model_version(), None);
    let d = decide(&engine, EVENT).await;
    assert!(d.degraded);
    assert_eq!(d.model_version, None);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["scores"], serde_json::json!({}));
    // The rule set is the serving one: the decision is made by the rules.
    assert_ne!(&*d.ruleset_version, "none");
    let err = engine.reload_model().unwrap_err();
    assert!(err.contains("ONNX Runtime is not loaded"), "{err}");
}

#[tokio::test]
async fn a_bad_model_on_reload_is_refused_and_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["fraud-gbt.manifest.toml", "fraud-gbt.onnx"] {
        std::fs::copy(root().join("models").join(f), dir.path().join(f)).unwrap();
    }
    let mut config = config();
    config.model.as_mut().unwrap().manifest = dir.path().join("fraud-gbt.manifest.toml");
    let engine = Engine::load(&config).unwrap();
    let before = engine.model_version().unwrap();

    std::fs::write(dir.path().join("fraud-gbt.onnx"), b"not a model").unwrap();
    let err = engine.reload_model().unwrap_err();
    assert!(err.contains("fraud-gbt"), "{err}");
    assert_eq!(engine.model_version().unwrap(), before);
    let d = decide(&engine, EVENT).await;
    assert!(!d.degraded);
    assert_eq!(d.model_version.as_deref(), Some(&*before));
}

#[test]
fn a_manifest_naming_an_unknown_input_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("models/fraud-gbt.manifest.toml")).unwrap();
    std::fs::write(
        dir.path().join("m.manifest.toml"),
        text.replace("feature.user.txn_count_1h", "feature.user.txn_count_2h"),
    )
    .unwrap();
    std::fs::copy(
        root().join("models/fraud-gbt.onnx"),
        dir.path().join("fraud-gbt.onnx"),
    )
    .unwrap();
    let mut config = config();
    config.model.as_mut().unwrap().manifest = dir.path().join("m.manifest.toml");
    let err = format!("{:#}", Engine::load(&config).err().unwrap());
    assert!(err.contains("m.manifest.toml"), "{err}");
    assert!(err.contains("feature.user.txn_count_2h"), "{err}");
}

#[tokio::test]
async fn a_redelivered_event_gets_its_first_decision_again() {
    let engine = Engine::load(&config()).unwrap();
    // A device burst: the third application is reviewed or denied on the
    // velocity of the two before it.
    let app = |id: &str, user: &str, second: u32| {
        format!(
            r#"{{"event_id":"{id}","event_type":"loan_application","timestamp":"2026-11-24T08:15:{second:02}.000Z","user_id":"{user}","device_id":"d-burst","ip":"10.9.9.9","amount":4990,"attributes":{{"term_months":12}}}}"#
        )
    };
    let mut first = Vec::new();
    for (i, user) in ["u_000011", "u_000012", "u_000013", "u_000014", "u_000015"]
        .iter()
        .enumerate()
    {
        first.push(decide(&engine, &app(&format!("b-{i}"), user, i as u32)).await);
    }
    // Every one of them again, as Kafka redelivers after a crash: the store
    // now holds all five, yet each gets the decision it got first.
    for (i, user) in ["u_000011", "u_000012", "u_000013", "u_000014", "u_000015"]
        .iter()
        .enumerate()
    {
        let again = decide(&engine, &app(&format!("b-{i}"), user, i as u32)).await;
        let was = &first[i];
        assert_eq!(
            (
                again.decision,
                &again.hits,
                &again.scores,
                &again.model_version
            ),
            (was.decision, &was.hits, &was.scores, &was.model_version),
            "event b-{i}"
        );
    }
    assert_ne!(
        first[0].hits, first[4].hits,
        "the burst changes the decision, so the test can tell"
    );
}

/// Copies `from` (a path in the repository) to `to` in `dir`.
fn put(dir: &tempfile::TempDir, from: &str, to: &str) {
    std::fs::copy(root().join(from), dir.path().join(to)).unwrap();
}

/// Copies a manifest, asking for ONNX Runtime as its evaluator.
fn force_onnxruntime(dir: &tempfile::TempDir, from: &str, to: &str) {
    let text = std::fs::read_to_string(root().join(from)).unwrap();
    let forced = text.replace(
        "missing = nan",
        "missing = nan\nevaluator = \"onnxruntime\"",
    );
    assert_ne!(forced, text);
    std::fs::write(dir.path().join(to), forced).unwrap();
}

/// A copy of the shipped model in a folder of its own, so a test can replace
/// its file; served by ONNX Runtime (the native evaluator refuses the
/// broken files these tests feed before ONNX Runtime sees them).
fn model_copy() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    force_onnxruntime(
        &dir,
        "models/fraud-gbt.manifest.toml",
        "fraud-gbt.manifest.toml",
    );
    put(&dir, "models/fraud-gbt.onnx", "fraud-gbt.onnx");
    let mut config = config();
    config.model.as_mut().unwrap().manifest = dir.path().join("fraud-gbt.manifest.toml");
    (dir, config)
}

/// A model file that makes ONNX Runtime abort its process (found by the
/// `model` fuzz target) is loaded in a vetting child first: refused with
/// the crash named, and this process goes on.
const CRASHES_ONNXRUNTIME: &str = "models/tests/data/crashes-onnxruntime.onnx";

#[tokio::test]
async fn a_model_file_that_crashes_onnx_runtime_is_refused_at_start() {
    let (dir, config) = model_copy();
    put(&dir, CRASHES_ONNXRUNTIME, "fraud-gbt.onnx");
    let err = Engine::load_vetted(&config, env!("CARGO_BIN_EXE_verdict").as_ref())
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("crashed ONNX Runtime"), "{err}");
    assert!(err.contains("fraud-gbt.manifest.toml"), "{err}");
}

#[tokio::test]
async fn a_model_file_that_crashes_onnx_runtime_is_refused_on_reload() {
    let (dir, config) = model_copy();
    let engine = Engine::load_vetted(&config, env!("CARGO_BIN_EXE_verdict").as_ref()).unwrap();
    let version = engine.model_version().unwrap();
    put(&dir, CRASHES_ONNXRUNTIME, "fraud-gbt.onnx");
    let err = engine.reload_model().unwrap_err();
    assert!(err.contains("crashed ONNX Runtime"), "{err}");
    assert_eq!(engine.model_version(), Some(version.clone()));
    let d = decide(&engine, EVENT).await;
    assert!(!d.degraded);
    assert_eq!(d.model_version.as_deref(), Some(&*version));

    // The good file back: the vetted reload swaps it in.
    put(&dir, "models/fraud-gbt.onnx", "fraud-gbt.onnx");
    assert_eq!(engine.reload_model().unwrap(), version);
}

/// `verdict model check`: 0 for a model that would serve, 1 with the reason
/// for one that would not, whether ONNX Runtime errs or crashes.
#[test]
fn model_check_answers_for_good_broken_and_crashing_files() {
    let check = |manifest: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
            .args(["model", "check"])
            .arg(manifest)
            .output()
            .unwrap()
    };
    let out = check(&root().join("models/fraud-gbt.manifest.toml"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok, version fraud-gbt-"), "{text}");
    // The shipped trees are scored natively, and both evaluators were run
    // on the probe rows first: identical to the bit.
    assert!(
        text.contains("native evaluator against ONNX Runtime: 10000 rows: largest difference 0e0"),
        "{text}"
    );

    let (dir, _) = model_copy();
    let manifest = dir.path().join("fraud-gbt.manifest.toml");
    std::fs::write(dir.path().join("fraud-gbt.onnx"), b"not a model").unwrap();
    let out = check(&manifest);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Protobuf parsing failed"), "{err}");

    put(&dir, CRASHES_ONNXRUNTIME, "fraud-gbt.onnx");
    let out = check(&manifest);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("crashed ONNX Runtime") && err.contains("SIGABRT"),
        "{err}"
    );
}

/// A model file on which ONNX Runtime never returns (a tree ensemble whose
/// probe row loops, found by the `model` fuzz target): the vetting child is
/// killed at the timeout and the model refused.
#[test]
fn a_model_file_that_hangs_onnx_runtime_is_refused_at_the_timeout() {
    use verdict::engine::vetting::{Vetting, vet};
    let dir = tempfile::tempdir().unwrap();
    force_onnxruntime(
        &dir,
        "models/tests/data/tiny.manifest.toml",
        "tiny.manifest.toml",
    );
    let vet_tiny = |model: &str, secs: u64| {
        put(&dir, model, "tiny.onnx");
        vet(
            env!("CARGO_BIN_EXE_verdict").as_ref(),
            &dir.path().join("tiny.manifest.toml"),
            None,
            std::time::Duration::from_secs(secs),
        )
    };
    match vet_tiny("models/tests/data/hangs-onnxruntime.onnx", 3) {
        Vetting::Refused(why) => assert!(why.contains("did not load within 3 s"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The same child on the tiny model itself passes.
    let vetting = vet_tiny("models/tests/data/tiny.onnx", 60);
    assert_eq!(
        vetting,
        Vetting::Passed {
            version: "tiny-1".into(),
            parity: None
        }
    );
}

/// `[model.explain]` decides which outcomes carry an explanation, and how
/// many contributions: here approvals only, two each, largest first.
#[tokio::test]
async fn the_configured_outcomes_carry_their_top_contributions() {
    let mut config = config();
    let explain = &mut config.model.as_mut().unwrap().explain;
    explain.outcomes = vec![verdict_core::Action::Approve];
    explain.top = 2;
    let engine = Engine::load(&config).unwrap();
    let traffic =
        std::fs::read_to_string(root().join("pipeline/tests/data/golden-traffic.jsonl")).unwrap();
    let (mut approved, mut others) = (0, 0);
    let mut clock = StreamClock::new();
    for line in traffic.lines() {
        let Ok(prepared) = engine.prepare(
            &mut clock,
            line.as_bytes(),
            || Position::Http {
                http: "test".into(),
            },
            Instant::now(),
        ) else {
            continue;
        };
        let d = engine.finish(prepared).await.decision;
        if d.decision == verdict_core::Action::Approve {
            approved += 1;
            assert_eq!(d.explanation.len(), 2, "{d:?}");
            assert!(
                d.explanation[0].contribution.abs() >= d.explanation[1].contribution.abs(),
                "{d:?}"
            );
            assert!(
                d.explanation
                    .iter()
                    .all(|c| c.input.starts_with("event.") || c.input.starts_with("feature.")),
                "{d:?}"
            );
        } else {
            others += 1;
            assert!(d.explanation.is_empty(), "{d:?}");
        }
    }
    assert!(approved > 100 && others > 10, "{approved} {others}");
    // Off: nothing explained.
    let mut config = self::config();
    config.model.as_mut().unwrap().explain.top = 0;
    let engine = Engine::load(&config).unwrap();
    let mut clock = StreamClock::new();
    for line in traffic.lines().take(200) {
        if let Ok(prepared) = engine.prepare(
            &mut clock,
            line.as_bytes(),
            || Position::Http {
                http: "test".into(),
            },
            Instant::now(),
        ) {
            assert!(
                engine
                    .finish(prepared)
                    .await
                    .decision
                    .explanation
                    .is_empty()
            );
        }
    }
}
