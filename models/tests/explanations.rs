//! Explanations: Verdict's TreeSHAP contributions for the shipped model
//! equal shap's TreeExplainer (path-dependent) on the golden rows written
//! by the training tools (models/fraud-gbt.explanations.json) to 1e-6, and
//! the contributions plus the base value equal the model's margin.
//! Explanations need no ONNX Runtime: the native evaluator reads the trees.

mod common;

use std::sync::Arc;

use common::{catalogue, data, shipped};
use serde_json::Value as Json;
use verdict_core::{Namespace, Record, Value};
use verdict_models::{Contribution, Manifest, Model, ModelError};

fn golden() -> Json {
    serde_json::from_str(&std::fs::read_to_string(shipped("fraud-gbt.explanations.json")).unwrap())
        .unwrap()
}

fn row(r: &Json) -> Vec<f32> {
    r["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32))
        .collect()
}

fn shipped_model() -> Model {
    Model::load_native(Manifest::load(&shipped("fraud-gbt.manifest.toml")).unwrap()).unwrap()
}

#[test]
fn contributions_equal_shap_on_the_golden_rows() {
    let golden = golden();
    let model = shipped_model();
    assert_eq!(golden["version"].as_str(), Some(model.version().as_ref()));
    let inputs: Vec<&str> = golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(model.manifest().inputs, inputs);
    let rows = golden["rows"].as_array().unwrap();
    assert!(rows.len() >= 100);
    let (mut worst, mut worst_sum, mut worst_margin) = (0f64, 0f64, 0f64);
    for (i, r) in rows.iter().enumerate() {
        let x = row(r);
        let (phi, totals) = model.contributions(&x).unwrap();
        let base = golden["base_value"].as_f64().unwrap();
        assert!(
            (totals.base_value - base).abs() <= 1e-6,
            "base {} vs shap {base}",
            totals.base_value
        );
        for (j, (got, want)) in phi
            .iter()
            .zip(r["contributions"].as_array().unwrap())
            .enumerate()
        {
            let d = (got - want.as_f64().unwrap()).abs();
            assert!(
                d <= 1e-6,
                "row {i}, input {}: {got} vs shap {want}",
                inputs[j]
            );
            worst = worst.max(d);
        }
        // Every contribution plus the base value is the margin, exactly up
        // to rounding.
        let sum: f64 = phi.iter().sum::<f64>() + totals.base_value;
        worst_sum = worst_sum.max((sum - totals.margin).abs());
        assert!(
            (sum - totals.margin).abs() <= 1e-9,
            "row {i}: {sum} vs {}",
            totals.margin
        );
        // That margin is scikit-learn's decision function, and the one the
        // served score comes from.
        let d = (totals.margin - r["margin"].as_f64().unwrap()).abs();
        worst_margin = worst_margin.max(d);
        assert!(
            d <= 1e-6,
            "row {i}: margin {} vs scikit-learn {}",
            totals.margin,
            r["margin"]
        );
        let served = f64::from(model.margin(&x).unwrap());
        assert!(
            (served - totals.margin).abs() <= 1e-5,
            "row {i}: served margin {served}"
        );
    }
    eprintln!(
        "explanations: {} rows, worst contribution difference {worst:e}, sum vs margin {worst_sum:e}, margin vs scikit-learn {worst_margin:e}",
        rows.len()
    );
}

/// The LightGBM and XGBoost exports, with the covers their libraries keep
/// (row counts, hessian sums), against shap on the trained models.
#[test]
fn lightgbm_and_xgboost_contributions_equal_shap() {
    for name in ["lgbm", "xgb"] {
        let golden: Json = serde_json::from_str(
            &std::fs::read_to_string(data(&format!("{name}.explanations.json"))).unwrap(),
        )
        .unwrap();
        let model =
            Model::load_native(Manifest::load(&data(&format!("{name}.manifest.toml"))).unwrap())
                .unwrap();
        let margin_tolerance = golden["margin_tolerance"].as_f64().unwrap();
        let base = golden["base_value"].as_f64().unwrap();
        let mut worst = 0f64;
        for (i, r) in golden["rows"].as_array().unwrap().iter().enumerate() {
            let (phi, totals) = model.contributions(&row(r)).unwrap();
            assert!(
                (totals.base_value - base).abs() <= 1e-6,
                "{name}: base {} vs {base}",
                totals.base_value
            );
            for (got, want) in phi.iter().zip(r["contributions"].as_array().unwrap()) {
                let d = (got - want.as_f64().unwrap()).abs();
                worst = worst.max(d);
                assert!(d <= 1e-6, "{name} row {i}: {got} vs shap {want}");
            }
            // XGBoost's covers are float32 hessian sums, so a node's cover
            // is not exactly its children's: the sum is off by as much as
            // shap's own (within the margin tolerance).
            let sum: f64 = phi.iter().sum::<f64>() + totals.base_value;
            assert!(
                (sum - totals.margin).abs() <= margin_tolerance,
                "{name} row {i}: {sum} vs {}",
                totals.margin
            );
            let d = (totals.margin - r["margin"].as_f64().unwrap()).abs();
            assert!(
                d <= margin_tolerance,
                "{name} row {i}: margin {} vs {}",
                totals.margin,
                r["margin"]
            );
        }
        eprintln!("{name}: worst contribution difference {worst:e}");
    }
}

#[test]
fn explain_gives_the_top_contributions_with_paths_and_values() {
    let model = shipped_model();
    let golden = golden();
    let r = &golden["rows"].as_array().unwrap()[3];
    let x = row(r);
    let (phi, _) = model.contributions(&x).unwrap();
    let mut out = Vec::new();
    let totals = model.explain(&x, 3, &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert!(
        out.windows(2)
            .all(|w| w[0].contribution.abs() >= w[1].contribution.abs())
    );
    for c in &out {
        let i = model
            .manifest()
            .inputs
            .iter()
            .position(|p| **p == *c.input)
            .unwrap();
        assert_eq!(c.contribution, phi[i]);
        let fed = x[i];
        assert_eq!(
            c.value,
            if fed.is_nan() {
                None
            } else {
                Some(f64::from(fed))
            }
        );
    }
    // The largest by size is the largest of all inputs.
    let max = phi.iter().map(|p| p.abs()).fold(0.0, f64::max);
    assert_eq!(out[0].contribution.abs(), max);
    assert_eq!(totals.model_version.as_ref(), model.version().as_ref());
    // `top` beyond the inputs gives every contributing input.
    model.explain(&x, 100, &mut out).unwrap();
    assert_eq!(out.len(), phi.iter().filter(|p| **p != 0.0).count());
}

/// Through the engine's handle, from a record: the same contributions.
#[tokio::test]
async fn models_explain_a_record() {
    let rt = common::runtime();
    let mut c = catalogue();
    let cfg = verdict_models::ModelConfig::new(shipped("fraud-gbt.manifest.toml"));
    let models =
        verdict_models::Models::load_with(&cfg, &mut c, &rt, Arc::new(verdict_models::NoObserver))
            .unwrap();
    let golden = golden();
    let r = &golden["rows"].as_array().unwrap()[0];
    let inputs: Vec<&str> = golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut event = vec![Value::Missing; c.len(Namespace::Event)];
    let mut features = vec![Value::Missing; c.len(Namespace::Feature)];
    for (path, v) in inputs.iter().zip(r["input"].as_array().unwrap()) {
        let slot = c.lookup(path).unwrap().slot;
        let target = if slot.ns == Namespace::Event {
            &mut event
        } else {
            &mut features
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
    let mut out: Vec<Contribution> = Vec::new();
    let totals = models.explain(&record, 5, &mut out).unwrap();
    assert_eq!(out.len(), 5);
    let (phi, _) = shipped_model().contributions(&row(r)).unwrap();
    for c in &out {
        let i = inputs.iter().position(|p| *p == &*c.input).unwrap();
        assert_eq!(c.contribution, phi[i]);
    }
    assert!((totals.margin - r["margin"].as_f64().unwrap()).abs() <= 1e-6);
}

#[test]
fn a_model_without_covers_has_no_explanations() {
    let model = Model::load_native(Manifest::load(&data("tiny.manifest.toml")).unwrap()).unwrap();
    let e = model.explanations().unwrap_err();
    assert!(e.contains("names no covers file"), "{e}");
    let mut out = vec![Contribution {
        input: Arc::from("x"),
        value: None,
        contribution: 1.0,
    }];
    let err = model.explain(&[1.0, 2.0, 0.0], 3, &mut out).unwrap_err();
    assert!(matches!(err, ModelError::NoExplanations { .. }), "{err}");
    assert!(out.is_empty(), "the buffer is cleared");
}

/// Covers that do not fit the model (another model's, or not a covers
/// file) leave it serving without explanations, saying why.
#[test]
fn covers_of_another_model_leave_it_without_explanations() {
    let dir = std::env::temp_dir().join(format!("verdict-covers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(data("tiny.onnx"), dir.join("tiny.onnx")).unwrap();
    std::fs::copy(
        shipped("fraud-gbt.covers.json"),
        dir.join("tiny.covers.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(data("tiny.manifest.toml"))
        .unwrap()
        .replace(
            "missing = nan",
            "missing = nan\ncovers = \"tiny.covers.json\"",
        );
    std::fs::write(dir.join("tiny.toml"), text).unwrap();
    let model = Model::load_native(Manifest::load(&dir.join("tiny.toml")).unwrap()).unwrap();
    let e = model.explanations().unwrap_err();
    assert!(e.contains("written for another model file"), "{e}");
    let mut out = Vec::new();
    let err = model.explain(&[1.0, 2.0, 0.0], 3, &mut out).unwrap_err();
    assert!(matches!(err, ModelError::NoExplanations { .. }), "{err}");
    assert!(
        err.to_string().contains("written for another model file"),
        "{err}"
    );
    let mut s = [0f32];
    model.score_row(&[1.0, 2.0, 0.0], &mut s).unwrap();
    std::fs::write(dir.join("tiny.covers.json"), "{\"format\": 1}").unwrap();
    let model = Model::load_native(Manifest::load(&dir.join("tiny.toml")).unwrap()).unwrap();
    assert!(
        model
            .explanations()
            .unwrap_err()
            .contains("not a covers file")
    );
    std::fs::remove_file(dir.join("tiny.covers.json")).unwrap();
    let model = Model::load_native(Manifest::load(&dir.join("tiny.toml")).unwrap()).unwrap();
    assert!(model.explanations().unwrap_err().contains("cannot read it"));
}
