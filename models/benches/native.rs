//! The native tree evaluator on the shipped model, with the ONNX Runtime
//! session call as the yardstick in the same run: a quick loop for work on
//! the evaluator that builds only this crate. The full comparison (treelite,
//! the scorer's thread, the engine's path) is `cargo bench -p
//! verdict-benches --bench models`.
//!
//! - `native/1`: [`Model::score_row`], cycling through the golden rows;
//! - `native/32`: [`Model::run`] on 32 rows (time per call; divide by 32);
//! - `onnxruntime-session/1`: an ONNX Runtime session call on one row.
//!
//! Needs ONNX Runtime (scripts/ensure-python.sh, `ORT_DYLIB_PATH`).

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use verdict_models::{Evaluator, Manifest, Model, Runtime};

fn golden_rows(root: &Path) -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(root.join("fraud-gbt.golden.json")).expect("golden rows");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("golden JSON");
    golden["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r["input"]
                .as_array()
                .expect("input")
                .iter()
                .map(|v| v.as_f64().map_or(f32::NAN, |n| n as f32))
                .collect()
        })
        .collect()
}

fn native(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = Runtime::discover(None).unwrap_or_else(|e| panic!("{e}"));
    let manifest = Manifest::load(&root.join("fraud-gbt.manifest.toml")).expect("manifest");
    let native = Model::load_as(manifest.clone(), &runtime, 1, Evaluator::Native).expect("native");
    let onnx = Model::load_as(manifest, &runtime, 1, Evaluator::OnnxRuntime).expect("ORT");
    let rows = golden_rows(root);
    let mut group = c.benchmark_group("model");

    group.throughput(Throughput::Elements(1));
    let mut at = 0;
    let mut one = [0f32];
    group.bench_function(BenchmarkId::new("native", 1), |b| {
        b.iter(|| {
            at = (at + 1) % rows.len();
            native
                .score_row(black_box(&rows[at]), &mut one)
                .expect("score");
            black_box(one[0])
        })
    });
    let mut out = Vec::new();
    let mut at = 0;
    group.bench_function(BenchmarkId::new("onnxruntime-session", 1), |b| {
        b.iter(|| {
            at = (at + 1) % rows.len();
            onnx.run(black_box(&rows[at]), &mut out).expect("run");
            black_box(out[0])
        })
    });

    group.throughput(Throughput::Elements(32));
    let flat: Vec<f32> = rows.iter().cycle().take(32).flatten().copied().collect();
    group.bench_function(BenchmarkId::new("native", 32), |b| {
        b.iter(|| {
            native.run(black_box(&flat), &mut out).expect("run");
            black_box(out[0])
        })
    });
    group.finish();
}

criterion_group!(benches, native);
criterion_main!(benches);
