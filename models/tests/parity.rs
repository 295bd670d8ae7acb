//! Parity: the shipped model scored in Rust, through the serving path, agrees
//! with scikit-learn's own predicted probabilities saved at training time
//! (models/fraud-gbt.golden.json), to 1e-5. A change of input order or of
//! missing-value handling between training and serving fails here.
//!
//! Needs ONNX Runtime: scripts/test.sh installs it and sets ORT_DYLIB_PATH;
//! without it this test fails saying what to run.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{catalogue, runtime, shipped};
use serde_json::Value as Json;
use verdict_core::{Namespace, Record, Value};
use verdict_models::{Batching, Manifest, NoObserver, Scorer};

fn golden() -> Json {
    serde_json::from_str(
        &std::fs::read_to_string(shipped("fraud-gbt.golden.json"))
            .expect("models/fraud-gbt.golden.json"),
    )
    .unwrap()
}

fn golden_inputs(golden: &Json) -> Vec<&str> {
    golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_model_agrees_with_scikit_learn() {
    let golden = golden();
    let manifest_path = shipped("fraud-gbt.manifest.toml");
    let manifest = Manifest::load(&manifest_path).unwrap();
    assert_eq!(
        manifest.inputs,
        golden_inputs(&golden),
        "manifest inputs differ from the golden file's"
    );
    assert_eq!(golden["version"].as_str(), Some(manifest.version.as_str()));

    let diffs = score_golden(&golden, &manifest_path).await;
    assert!(
        diffs.len() >= 100,
        "the golden file has {} rows",
        diffs.len()
    );
    let mut worst = 0.0f64;
    for (i, diff) in diffs.iter().enumerate() {
        assert!(
            *diff <= 1e-5,
            "row {i}: Rust and scikit-learn differ by {diff:e}"
        );
        worst = worst.max(*diff);
    }
    eprintln!("parity: {} rows, worst difference {worst:e}", diffs.len());
}

/// The check has teeth: a manifest with two inputs out of order, or with
/// another missing value, disagrees with the golden probabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_manifest_fails_parity() {
    let golden = golden();
    let text = std::fs::read_to_string(shipped("fraud-gbt.manifest.toml")).unwrap();
    let dir = std::env::temp_dir().join(format!("verdict-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shipped("fraud-gbt.onnx"), dir.join("fraud-gbt.onnx")).unwrap();

    let swapped = text
        .replace("\"event.amount\"", "\"@swap@\"")
        .replace("\"event.attributes.term_months\"", "\"event.amount\"")
        .replace("\"@swap@\"", "\"event.attributes.term_months\"");
    assert_ne!(swapped, text);
    std::fs::write(dir.join("swapped.toml"), swapped).unwrap();
    let diffs = score_golden(&golden, &dir.join("swapped.toml")).await;
    assert!(
        diffs.iter().any(|d| *d > 1e-3),
        "swapped inputs went unnoticed"
    );

    let imputed = text.replace("missing = nan", "missing = 0.0");
    assert_ne!(imputed, text);
    std::fs::write(dir.join("imputed.toml"), imputed).unwrap();
    let diffs = score_golden(&golden, &dir.join("imputed.toml")).await;
    assert!(
        diffs.iter().any(|d| *d > 1e-3),
        "a changed missing value went unnoticed"
    );
}

/// Scores every golden row through the serving path with the model of
/// `manifest_path`. Each row becomes a record (event and feature slots from
/// the golden file's input paths, null as missing), so gathering is under
/// test too. Returns |Rust - scikit-learn| per row.
async fn score_golden(golden: &Json, manifest_path: &Path) -> Vec<f64> {
    let inputs = golden_inputs(golden);
    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(
        manifest_path,
        &mut c,
        &rt,
        Batching {
            max_batch: 32,
            max_wait: Duration::from_micros(200),
            threads: 1,
        },
        Arc::new(NoObserver),
    )
    .unwrap();
    let mut pending = Vec::new();
    for row in golden["rows"].as_array().unwrap() {
        let mut event = vec![Value::Missing; c.len(Namespace::Event)];
        let mut features = vec![Value::Missing; c.len(Namespace::Feature)];
        for (path, v) in inputs.iter().zip(row["input"].as_array().unwrap()) {
            let slot = c.lookup(path).unwrap().slot;
            let target = match slot.ns {
                Namespace::Event => &mut event,
                Namespace::Feature => &mut features,
                Namespace::Model => panic!("golden input {path} is a model output"),
            };
            if let Some(n) = v.as_f64() {
                target[slot.index as usize] = Value::Number(n);
            }
        }
        let record = Record {
            event: &event,
            features: &features,
            model: &[],
        };
        pending.push((
            scorer.score_record(&record),
            row["probability"].as_f64().unwrap(),
        ));
    }
    let mut diffs = Vec::with_capacity(pending.len());
    for (f, want) in pending {
        let got = f.await.unwrap().iter().next().unwrap().2;
        diffs.push((got - want).abs());
    }
    diffs
}
