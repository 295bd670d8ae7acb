//! Parity: the shipped model scored in Rust, through the serving path, agrees
//! with scikit-learn's own predicted probabilities saved at training time
//! (models/fraud-gbt.golden.json), to 1e-5. A change of input order or of
//! missing-value handling between training and serving fails here.
//!
//! Needs ONNX Runtime: scripts/test.sh installs it and sets ORT_DYLIB_PATH;
//! without it this test fails saying what to run.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{catalogue, runtime, shipped};
use serde_json::Value as Json;
use verdict_core::{Namespace, Record, Value};
use verdict_models::{Batching, Manifest, NoObserver, Scorer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_model_agrees_with_scikit_learn() {
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(shipped("fraud-gbt.golden.json"))
            .expect("models/fraud-gbt.golden.json"),
    )
    .unwrap();
    let manifest_path = shipped("fraud-gbt.manifest.toml");
    let manifest = Manifest::load(&manifest_path).unwrap();
    let inputs: Vec<&str> = golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        manifest.inputs, inputs,
        "manifest inputs differ from the golden file's"
    );
    assert_eq!(golden["version"].as_str(), Some(manifest.version.as_str()));

    let rt = runtime();
    let mut c = catalogue();
    let scorer = Scorer::start(
        &manifest_path,
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

    let rows = golden["rows"].as_array().unwrap();
    assert!(rows.len() >= 100, "the golden file has {} rows", rows.len());
    // Build each row as a record (event and feature slots from the input
    // paths, null as missing), so gathering is under test too.
    let mut pending = Vec::new();
    for row in rows {
        let mut event = vec![Value::Missing; c.len(Namespace::Event)];
        let mut features = vec![Value::Missing; c.len(Namespace::Feature)];
        for (path, v) in inputs.iter().zip(row["input"].as_array().unwrap()) {
            let slot = c.lookup(path).unwrap().slot;
            let target = match slot.ns {
                Namespace::Event => &mut event,
                Namespace::Feature => &mut features,
                Namespace::Model => unreachable!("inputs are not model outputs"),
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
    let mut worst = 0.0f64;
    for (i, (f, want)) in pending.into_iter().enumerate() {
        let got = f.await.unwrap().iter().next().unwrap().2;
        let diff = (got - want).abs();
        assert!(
            diff <= 1e-5,
            "row {i}: Rust {got}, scikit-learn {want} (diff {diff:e})"
        );
        worst = worst.max(diff);
    }
    eprintln!("parity: {} rows, worst difference {worst:e}", rows.len());
}
