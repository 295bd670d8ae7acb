//! The native tree evaluator against ONNX Runtime: the same model, the
//! same rows, the same numbers. On the shipped model (its golden rows and
//! 100,000 random rows with missing values), on LightGBM and XGBoost
//! exports (tests/data, made by models/train/make_fixtures.py), and on
//! variants of them that exercise every post-transform, aggregate and
//! node mode ONNX defines.
//!
//! Needs ONNX Runtime (scripts/test.sh sets ORT_DYLIB_PATH).

mod common;

use std::path::Path;

use common::{runtime, shipped};
use serde_json::Value as Json;
use verdict_models::{Backend, Evaluator, Manifest, Model, ParityReport};

/// Rows of `width` values: a mix of the model's own thresholds (exactly
/// on, just below, just above), wide random values and missing values.
fn random_rows(model: &Model, count: usize, seed: u64) -> Vec<f32> {
    let rows = model.probe_rows(count, seed);
    assert_eq!(rows.len(), count * model.manifest().inputs.len());
    rows
}

fn compare(manifest: &Path, rows: impl Fn(&Model) -> Vec<f32>) -> ParityReport {
    let rt = runtime();
    let m = Manifest::load(manifest).unwrap();
    let native = Model::load_as(m.clone(), &rt, 1, Evaluator::Native).unwrap();
    assert_eq!(native.backend(), Backend::Native);
    let rows = rows(&native);
    let report = Model::compare_evaluators(&m, &rt, &rows).unwrap();
    eprintln!("{}: {report}", manifest.display());
    report
}

#[test]
fn shipped_model_native_equals_onnxruntime_on_the_golden_rows() {
    let golden: Json =
        serde_json::from_str(&std::fs::read_to_string(shipped("fraud-gbt.golden.json")).unwrap())
            .unwrap();
    let report = compare(&shipped("fraud-gbt.manifest.toml"), |_| {
        golden["rows"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["input"].as_array().unwrap().clone())
            .map(|v| v.as_f64().map_or(f32::NAN, |v| v as f32))
            .collect()
    });
    assert_eq!(report.rows, 300);
    assert!(report.within(1e-6), "{report}");
}

#[test]
fn shipped_model_native_equals_onnxruntime_on_100k_random_rows() {
    let report = compare(&shipped("fraud-gbt.manifest.toml"), |m| {
        random_rows(m, 100_000, 7)
    });
    assert_eq!(report.rows, 100_000);
    assert!(report.within(1e-6), "{report}");
}

/// LightGBM and XGBoost models as onnxmltools exports them: a ZipMap
/// output read through both evaluators, a `Mul` after the ensemble, a
/// softmax over three classes, `BRANCH_LT` splits, a regressor.
#[test]
fn lightgbm_and_xgboost_exports_native_equals_onnxruntime() {
    for name in ["lgbm", "lgbm-multi", "xgb", "xgb-reg"] {
        let manifest = common::data(&format!("{name}.manifest.toml"));
        let rt = runtime();
        let m = Manifest::load(&manifest).unwrap();
        let auto = Model::load(m, &rt, 1).unwrap();
        assert_eq!(
            auto.backend(),
            Backend::Native,
            "{name}: auto picks the native evaluator"
        );
        let report = compare(&manifest, |m| random_rows(m, 100_000, 11));
        assert_eq!(report.rows, 100_000);
        assert!(report.within(1e-6), "{name}: {report}");
    }
}
