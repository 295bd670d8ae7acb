//! Loading, scoring, micro-batching, deadline fallback, hot swap and the
//! challenger, on the small test models of tests/data.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{catalogue, data, event, runtime};
use verdict_core::{Namespace, Record, Value};
use verdict_models::{
    Backend, Batching, ModelConfig, ModelError, ModelStats, Models, NoObserver, Scorer,
};

/// What scikit-learn's predict_proba gives the tiny model (make_test_model.py).
const ALL_MISSING: f32 = 0.321_022_1;
const ROW_1_2_0: f32 = 0.518_190_2;

fn batching(max_batch: usize, max_wait_us: u64) -> Batching {
    Batching {
        max_batch,
        max_wait: Duration::from_micros(max_wait_us),
        threads: 1,
    }
}

/// The tiny test model, served by ONNX Runtime (behind the queue), behind
/// a scorer that reports to `observer`.
fn start_tiny(
    c: &mut verdict_core::Catalogue,
    rt: &verdict_models::Runtime,
    batching: Batching,
    observer: Arc<dyn verdict_models::ModelObserver>,
) -> Scorer {
    let scorer = Scorer::start(&data("tiny-ort.manifest.toml"), c, rt, batching, observer).unwrap();
    assert_eq!(scorer.backend(), Backend::OnnxRuntime);
    scorer
}

#[tokio::test]
async fn scores_rows_and_missing_inputs() {
    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(
        &data("tiny.manifest.toml"),
        &mut c,
        &rt,
        batching(8, 100),
        Arc::new(NoObserver),
    )
    .unwrap();
    assert_eq!(scorer.version().as_ref(), "tiny-1");
    let slot = c.lookup("model.fraud_score").unwrap().slot;
    assert_eq!(scorer.output_slots(), &[slot]);

    let s = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();
    let (name, got_slot, v) = s.iter().next().unwrap();
    assert_eq!((name.as_ref(), got_slot), ("fraud_score", slot));
    assert!((v as f32 - ROW_1_2_0).abs() < 1e-6, "{v}");

    // Every input missing in the record: fed as NaN, the learned missing branch.
    let ev = event(&c, None, None, None);
    let record = Record {
        event: &ev,
        features: &[],
        model: &[],
    };
    let s = scorer.score_record(&record).await.unwrap();
    assert!((s.iter().next().unwrap().2 as f32 - ALL_MISSING).abs() < 1e-6);

    // Bool input is fed as 0/1; the row from a record matches the row by hand.
    let ev = event(&c, Some(1.0), Some(2.0), Some(false));
    let record = Record {
        event: &ev,
        features: &[],
        model: &[],
    };
    let s = scorer.score_record(&record).await.unwrap();
    assert!((s.iter().next().unwrap().2 as f32 - ROW_1_2_0).abs() < 1e-6);

    let mut model = vec![Value::Missing; c.len(Namespace::Model)];
    s.write_slots(&mut model);
    assert!(matches!(model[slot.index as usize], Value::Number(_)));

    let e = scorer.score(vec![1.0]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::RowWidth {
                got: 1,
                want: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_in_flight_are_scored_together() {
    let rt = runtime();
    let mut c = catalogue();
    let stats = Arc::new(ModelStats::default());
    // A long wait: the batch closes because it is full, not on time.
    let scorer = start_tiny(&mut c, &rt, batching(16, 500_000), stats.clone());
    let futures: Vec<_> = (0..64)
        .map(|i| scorer.score(vec![i as f32 / 16.0, 2.0, 0.0]))
        .collect();
    for f in futures {
        f.await.unwrap();
    }
    assert_eq!(stats.rows.load(Ordering::Relaxed), 64);
    assert_eq!(stats.batches.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_waiting_caller_scores_the_queued_rows_itself() {
    let rt = runtime();
    let mut c = catalogue();
    let stats = Arc::new(ModelStats::default());
    // The thread would wait ten seconds for a batch of 16.
    let scorer = start_tiny(&mut c, &rt, batching(16, 10_000_000), stats.clone());
    assert_eq!(scorer.help(), 0, "nothing waits yet");
    let mut futures: Vec<_> = (0..5)
        .map(|_| Box::pin(scorer.score(vec![1.0, 2.0, 0.0])))
        .collect();
    assert_eq!(scorer.help(), 5);
    // Answered now, without the scoring thread.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for f in &mut futures {
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(s)) => {
                let v = s.iter().next().unwrap().2 as f32;
                assert!((v - ROW_1_2_0).abs() < 1e-6, "{v}");
            }
            other => panic!("not scored by help(): {other:?}"),
        }
    }
    assert_eq!(stats.batches.load(Ordering::Relaxed), 1);
    // The thread still serves: a full batch goes without waiting.
    let full: Vec<_> = (0..16).map(|_| scorer.score(vec![1.0, 2.0, 0.0])).collect();
    let started = std::time::Instant::now();
    for f in full {
        f.await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.rows.load(Ordering::Relaxed), 21);
}

#[test]
fn a_model_whose_input_width_disagrees_is_refused() {
    let rt = runtime();
    let mut c = catalogue();
    let e = Scorer::start(
        &data("tiny-2in.manifest.toml"),
        &mut c,
        &rt,
        batching(8, 100),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("has shape [?, 2], the manifest lists 3 inputs"),
        "{msg}"
    );
    assert!(
        c.lookup("model.fraud_score").is_none(),
        "nothing registered"
    );
}

#[test]
fn a_model_whose_output_disagrees_is_refused() {
    let rt = runtime();
    let e = Scorer::start(
        &data("tiny-bad-output.manifest.toml"),
        &mut catalogue(),
        &rt,
        batching(8, 100),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("reads column 2 of `probabilities`, which has 2 columns"),
        "{e}"
    );
}

#[test]
fn manifest_errors_name_the_file_and_the_input() {
    let dir = tempdir("manifest-errors");
    let rt = runtime();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::copy(data("tiny.onnx"), dir.join("tiny.onnx")).unwrap();
        p
    };
    let good = std::fs::read_to_string(data("tiny.manifest.toml")).unwrap();

    let p = write(
        "unknown.toml",
        &good.replace("event.amount", "feature.user.amout_sum_24h"),
    );
    let e = Scorer::start(
        &p,
        &mut catalogue(),
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("input 0 `feature.user.amout_sum_24h`"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("did you mean `feature.user.amount_sum_24h`"),
        "{e}"
    );

    let p = write(
        "string.toml",
        &good.replace("event.amount", "event.currency"),
    );
    let e = Scorer::start(
        &p,
        &mut catalogue(),
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(e.to_string().contains("is a string"), "{e}");

    let p = write("nofile.toml", &good.replace("tiny.onnx", "absent.onnx"));
    let e = Scorer::start(
        &p,
        &mut catalogue(),
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("absent.onnx") && e.to_string().contains("file not found"),
        "{e}"
    );

    let p = write("notonnx.toml", &good.replace("tiny.onnx", "notonnx.toml"));
    let e = Scorer::start(
        &p,
        &mut catalogue(),
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::Load { .. }), "{e}");

    let p = write("noname.toml", &good.replace("name = \"tiny\"", ""));
    let e = Scorer::start(
        &p,
        &mut catalogue(),
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing field `name`"), "{e}");
}

#[tokio::test]
async fn past_the_deadline_the_decision_goes_on_degraded() {
    let rt = runtime();
    let mut c = catalogue();
    let stats = Arc::new(ModelStats::default());
    let mut cfg = ModelConfig::new(data("tiny-ort.manifest.toml"));
    // A lone row waits 300 ms for company; the event waits only 5 ms.
    cfg.max_batch = 64;
    cfg.max_wait_us = 300_000;
    cfg.deadline_ms = 5;
    let models = Models::load_with(&cfg, &mut c, &rt, stats.clone()).unwrap();
    let ev = event(&c, Some(1.0), Some(2.0), Some(false));
    let record = Record {
        event: &ev,
        features: &[],
        model: &[],
    };
    let outcome = models.score(&record).await;
    assert!(outcome.degraded);
    assert!(outcome.champion.is_none());
    assert!(outcome.scores().0.is_empty());
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 1);

    // With a short wait the same event is scored in time.
    let mut c = catalogue();
    cfg.max_wait_us = 50;
    cfg.deadline_ms = 2_000;
    let models = Models::load_with(&cfg, &mut c, &rt, stats.clone()).unwrap();
    let outcome = models.score(&record).await;
    assert!(!outcome.degraded);
    assert_eq!(outcome.model_version().map(|v| v.as_ref()), Some("tiny-1"));
    assert_eq!(outcome.scores().0[0].0.as_ref(), "fraud_score");
}

/// A native model answers in the caller: the lone row that would wait
/// 300 ms for company through ONNX Runtime is scored before `score`
/// returns, and the deadline never comes into it.
#[tokio::test]
async fn a_native_model_answers_at_once_whatever_the_batching() {
    let rt = runtime();
    let mut c = catalogue();
    let stats = Arc::new(ModelStats::default());
    let mut cfg = ModelConfig::new(data("tiny.manifest.toml"));
    cfg.max_batch = 64;
    cfg.max_wait_us = 300_000;
    cfg.deadline_ms = 1;
    let models = Models::load_with(&cfg, &mut c, &rt, stats.clone()).unwrap();
    assert_eq!(models.champion().backend(), Backend::Native);
    let ev = event(&c, Some(1.0), Some(2.0), Some(false));
    let record = Record {
        event: &ev,
        features: &[],
        model: &[],
    };
    // Ready at the first poll: no thread was asked.
    let mut future = Box::pin(models.score(&record));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let outcome = match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(o) => o,
        std::task::Poll::Pending => panic!("a native model made the caller wait"),
    };
    assert!(!outcome.degraded);
    let v = outcome.scores().0[0].1 as f32;
    assert!((v - ROW_1_2_0).abs() < 1e-6, "{v}");
    assert_eq!(models.score_now(&record), Some(outcome));
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 0);
    // The same event through ONNX Runtime gives the same score.
    let mut c = catalogue();
    cfg.manifest = data("tiny-ort.manifest.toml");
    cfg.max_wait_us = 50;
    cfg.deadline_ms = 2_000;
    let ort = Models::load_with(&cfg, &mut c, &rt, stats.clone()).unwrap();
    assert!(
        ort.score_now(&record).is_none(),
        "ONNX Runtime scores through the queue"
    );
    let o = ort.score(&record).await;
    assert_eq!(o.scores().0[0].1 as f32, v);
}

/// A native model that cannot score a row (one of the wrong width) says
/// so as an error value, never a panic.
#[tokio::test]
async fn a_native_failure_is_an_error_value() {
    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(
        &data("tiny.manifest.toml"),
        &mut c,
        &rt,
        batching(8, 100),
        Arc::new(NoObserver),
    )
    .unwrap();
    assert_eq!(scorer.backend(), Backend::Native);
    let e = scorer.score(vec![1.0, 2.0]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::RowWidth {
                got: 2,
                want: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn hot_swap_between_evaluators() {
    let dir = tempdir("hot-swap-evaluators");
    std::fs::copy(data("tiny.onnx"), dir.join("tiny.onnx")).unwrap();
    let native = std::fs::read_to_string(data("tiny.manifest.toml")).unwrap();
    let ort = std::fs::read_to_string(data("tiny-ort.manifest.toml")).unwrap();
    std::fs::write(dir.join("native.toml"), &native).unwrap();
    std::fs::write(dir.join("ort.toml"), ort.replace("tiny-1", "tiny-ort")).unwrap();
    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(
        &dir.join("native.toml"),
        &mut c,
        &rt,
        batching(8, 50),
        Arc::new(NoObserver),
    )
    .unwrap();
    let before = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();
    assert_eq!(scorer.backend(), Backend::Native);
    assert_eq!(
        scorer.reload(&dir.join("ort.toml")).unwrap().as_ref(),
        "tiny-ort"
    );
    assert_eq!(scorer.backend(), Backend::OnnxRuntime);
    let after = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();
    assert_eq!(after.model_version.as_ref(), "tiny-ort");
    assert_eq!(
        before.iter().next().unwrap().2,
        after.iter().next().unwrap().2
    );
    assert_eq!(
        scorer.reload(&dir.join("native.toml")).unwrap().as_ref(),
        "tiny-1"
    );
    assert_eq!(scorer.backend(), Backend::Native);
    // Forcing the native evaluator on a model it cannot take is refused,
    // and the serving model stays.
    std::fs::copy(data("tiny-2in.onnx"), dir.join("tiny-2in.onnx")).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        native
            .replace("tiny-1", "tiny-bad")
            .replace("tiny.onnx", "tiny-2in.onnx")
            .replace("missing = nan", "missing = nan\nevaluator = \"native\""),
    )
    .unwrap();
    let e = scorer.reload(&dir.join("bad.toml")).unwrap_err();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }), "{e}");
    assert_eq!(scorer.version().as_ref(), "tiny-1");
}

#[tokio::test]
async fn hot_swap_serves_the_new_model_and_refuses_a_broken_one() {
    let dir = tempdir("hot-swap");
    std::fs::copy(data("tiny.onnx"), dir.join("tiny.onnx")).unwrap();
    std::fs::copy(data("tiny-2in.onnx"), dir.join("tiny-2in.onnx")).unwrap();
    let good = std::fs::read_to_string(data("tiny.manifest.toml")).unwrap();
    let v1 = dir.join("v1.toml");
    std::fs::write(&v1, &good).unwrap();

    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(&v1, &mut c, &rt, batching(8, 50), Arc::new(NoObserver)).unwrap();
    let before = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();

    // A new version with a missing value of -1 instead of NaN: swapped in.
    let v2 = dir.join("v2.toml");
    std::fs::write(
        &v2,
        good.replace("tiny-1", "tiny-2")
            .replace("missing = nan", "missing = -1.0"),
    )
    .unwrap();
    assert_eq!(scorer.reload(&v2).unwrap().as_ref(), "tiny-2");
    assert_eq!(scorer.version().as_ref(), "tiny-2");
    let after = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();
    assert_eq!(after.model_version.as_ref(), "tiny-2");
    assert_eq!(
        before.iter().next().unwrap().2,
        after.iter().next().unwrap().2
    );
    assert!(scorer.inputs().missing() == -1.0);

    // Refused, the serving model stays: a model whose shape disagrees,
    let bad_shape = dir.join("v3.toml");
    std::fs::write(
        &bad_shape,
        good.replace("tiny-1", "tiny-3")
            .replace("tiny.onnx", "tiny-2in.onnx"),
    )
    .unwrap();
    let e = scorer.reload(&bad_shape).unwrap_err();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }), "{e}");
    // a file that is not a model,
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let bad_file = dir.join("v4.toml");
    std::fs::write(&bad_file, good.replace("tiny.onnx", "garbage.onnx")).unwrap();
    assert!(matches!(
        scorer.reload(&bad_file).unwrap_err(),
        ModelError::Load { .. }
    ));
    // renamed outputs (rules were checked against the old names),
    let renamed = dir.join("v5.toml");
    std::fs::write(
        &renamed,
        good.replace("name = \"fraud_score\"", "name = \"risk\""),
    )
    .unwrap();
    assert!(matches!(
        scorer.reload(&renamed).unwrap_err(),
        ModelError::OutputsChanged { .. }
    ));
    // and a manifest that is not there.
    assert!(matches!(
        scorer.reload(&dir.join("absent.toml")).unwrap_err(),
        ModelError::Io { .. }
    ));

    assert_eq!(scorer.version().as_ref(), "tiny-2");
    let still = scorer.score(vec![1.0, 2.0, 0.0]).await.unwrap();
    assert_eq!(still.model_version.as_ref(), "tiny-2");
}

#[tokio::test]
async fn the_challenger_scores_in_shadow_under_its_own_name() {
    let rt = runtime();
    let mut c = catalogue();
    let mut cfg = ModelConfig::new(data("tiny.manifest.toml"));
    // A native champion beside an ONNX Runtime challenger.
    cfg.challenger = Some(data("tiny-ort.manifest.toml"));
    cfg.max_wait_us = 50;
    cfg.deadline_ms = 2_000;
    let models = Models::load_with(&cfg, &mut c, &rt, Arc::new(NoObserver)).unwrap();
    let champion_slot = c.lookup("model.fraud_score").unwrap().slot;
    let challenger_slot = c.lookup("model.fraud_score_challenger").unwrap().slot;
    assert_ne!(champion_slot, challenger_slot);

    let ev = event(&c, Some(1.0), Some(2.0), Some(false));
    let record = Record {
        event: &ev,
        features: &[],
        model: &[],
    };
    assert_eq!(models.champion().backend(), Backend::Native);
    assert_eq!(models.challenger().unwrap().backend(), Backend::OnnxRuntime);
    let outcome = models.score(&record).await;
    assert!(!outcome.degraded);
    let scores = outcome.scores();
    let names: Vec<&str> = scores.0.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(names, ["fraud_score", "fraud_score_challenger"]);
    assert_eq!(
        scores.0[0].1, scores.0[1].1,
        "the same model by either evaluator"
    );
    let mut model = vec![Value::Missing; c.len(Namespace::Model)];
    outcome.write_slots(&mut model);
    assert!(matches!(
        model[challenger_slot.index as usize],
        Value::Number(_)
    ));
    assert_eq!(
        models
            .reload_challenger(&data("tiny.manifest.toml"))
            .unwrap()
            .as_ref(),
        "tiny-1"
    );
}

#[test]
fn config_defaults_and_validation() {
    let cfg: ModelConfig = toml::from_str("manifest = \"models/fraud-gbt.manifest.toml\"").unwrap();
    assert_eq!(
        (cfg.max_batch, cfg.max_wait_us, cfg.deadline_ms),
        (32, 200, 5)
    );
    let mut bad = cfg.clone();
    bad.max_batch = 0;
    let e =
        Models::load_with(&bad, &mut catalogue(), &runtime(), Arc::new(NoObserver)).unwrap_err();
    assert!(e.to_string().contains("max_batch = 0"), "{e}");
    assert!(toml::from_str::<ModelConfig>("manifest = \"m\"\nmax_bach = 3").is_err());
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("verdict-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_declared_output_name_is_taken_over_if_a_number() {
    let rt = runtime();
    let mut c = catalogue();
    let declared = c.add_model_output("fraud_score", verdict_core::ValueType::Number);
    let scorer = Scorer::start(
        &data("tiny.manifest.toml"),
        &mut c,
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap();
    assert_eq!(scorer.output_slots(), &[declared]);

    let mut c = catalogue();
    c.add_model_output("fraud_score", verdict_core::ValueType::String);
    let e = Scorer::start(
        &data("tiny.manifest.toml"),
        &mut c,
        &rt,
        batching(1, 0),
        Arc::new(NoObserver),
    )
    .unwrap_err();
    assert!(e.to_string().contains("declared as a string"), "{e}");
}
