//! The native tree evaluator on the shipped model, with the ONNX Runtime
//! session call as the yardstick in the same run: a quick loop for work on
//! the evaluator that builds only this crate. The full comparison (treelite,
//! the scorer's thread, the engine's path) is `cargo bench -p
//! verdict-benches --bench models`.
//!
//! - `native/1`: [`Model::score_row`], cycling through the golden rows;
//! - `native/32`: [`Model::run`] on 32 rows (time per call; divide by 32);
//! - `onnxruntime-session/1`: an ONNX Runtime session call on one row;
//! - `treelite/1`: the same trees compiled to C by treelite + tl2cgen, one
//!   `predict` call a row (`scripts/ensure-treelite.sh` builds
//!   `.verdict/treelite/fraud-gbt.so`, or set `VERDICT_TREELITE_LIB`;
//!   skipped without it);
//! - `explain/1`: exact TreeSHAP contributions of one row, top 5.
//!
//! Needs ONNX Runtime (scripts/ensure-python.sh, `ORT_DYLIB_PATH`).

use std::hint::black_box;
use std::path::{Path, PathBuf};

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

/// `union Entry` of tl2cgen's generated code: `missing = -1` or a value.
#[repr(C)]
#[derive(Clone, Copy)]
union Entry {
    missing: i32,
    fvalue: f32,
}

type Predict = unsafe extern "C" fn(*mut Entry, i32, *mut f32);

/// The treelite library, if built.
fn treelite(root: &Path) -> Option<libloading::Library> {
    let path = std::env::var_os("VERDICT_TREELITE_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.verdict/treelite/fraud-gbt.so"));
    if !path.is_file() {
        eprintln!("skipping treelite/1: no library at {}", path.display());
        return None;
    }
    // SAFETY: the library is the one scripts/ensure-treelite.sh compiles
    // from tl2cgen's generated C; loading it runs no initialisers of note.
    Some(unsafe { libloading::Library::new(&path) }.expect("load the treelite library"))
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

    if let Some(lib) = treelite(root) {
        // SAFETY: tl2cgen's `predict(union Entry*, int, float*)`.
        let predict = *unsafe { lib.get::<Predict>(b"predict") }.expect("predict symbol");
        let all: Vec<Vec<Entry>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| {
                        if v.is_nan() {
                            Entry { missing: -1 }
                        } else {
                            Entry { fvalue: *v }
                        }
                    })
                    .collect()
            })
            .collect();
        // As in verdict-benches: the row copied into the buffer passed.
        let mut data = all[0].clone();
        let mut at = 0;
        let mut result = [0f32];
        group.bench_function(BenchmarkId::new("treelite", 1), |b| {
            b.iter(|| {
                at = (at + 1) % all.len();
                data.copy_from_slice(&all[at]);
                // SAFETY: the row has the model's 18 entries and `result`
                // its one output.
                unsafe { predict(data.as_mut_ptr(), 0, result.as_mut_ptr()) };
                black_box(result[0])
            })
        });
    }

    let mut contributions = Vec::new();
    let mut at = 0;
    group.bench_function(BenchmarkId::new("explain", 1), |b| {
        b.iter(|| {
            at = (at + 1) % rows.len();
            let totals = native
                .explain(black_box(&rows[at]), 5, &mut contributions)
                .expect("explain");
            black_box(totals.margin)
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
