//! Model inference of the shipped fraud model (120 trees, 18 inputs), in
//! time per event, by the three evaluators in one run.
//!
//! - `native/N`: Verdict's native tree evaluator ([`Model::score_row`] for
//!   one row, [`Model::run`] for N rows).
//! - `native-engine/1`: the engine's path for one event, from a record:
//!   gather the row by slot, score in the caller, build the scores
//!   ([`Scorer::score_now`]).
//! - `onnxruntime-session/N`: an ONNX Runtime session call on N rows.
//! - `onnxruntime-scorer/N`: N rows in flight through [`Scorer`]'s thread
//!   (queue, micro-batch, session call, answers), as events were scored
//!   before the native evaluator.
//! - `treelite/N`: the same trees compiled to C by treelite + tl2cgen
//!   (`scripts/ensure-treelite.sh` builds `.verdict/treelite/fraud-gbt.so`;
//!   without it the bench says it skips them), one `predict` call a row.
//! - `explain/1`: exact TreeSHAP contributions of one event, top 5.
//!
//! Criterion reports time per iteration of N rows, and rows per second
//! (element throughput); divide by N for µs per event. Rows are the golden
//! rows saved at training time (held-out traffic, with missing values).
//!
//! Needs ONNX Runtime (scripts/ensure-python.sh).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{Catalogue, Namespace, Record, Schema, Value, ValueType};
use verdict_models::{Backend, Batching, Evaluator, Manifest, Model, NoObserver, Runtime, Scorer};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn golden_rows() -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(root().join("models/fraud-gbt.golden.json"))
        .expect("models/fraud-gbt.golden.json");
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

fn catalogue(manifest: &Manifest) -> Catalogue {
    let schema = Schema::load(&root().join("examples/schema.toml")).expect("schema");
    let mut c = Catalogue::from_schema(&schema);
    for input in &manifest.inputs {
        if let Some(rest) = input.strip_prefix("feature.") {
            let (entity, name) = rest.split_once('.').expect("feature.<entity>.<name>");
            c.add_feature(entity, name, ValueType::Number);
        }
    }
    c
}

/// The shipped manifest, copied beside the model with `evaluator` set.
fn manifest_with(evaluator: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("models/fraud-gbt.manifest.toml")).expect("manifest");
    let forced = text.replace(
        "missing = nan",
        &format!("missing = nan\nevaluator = \"{evaluator}\""),
    );
    let dir = std::env::temp_dir().join(format!("verdict-bench-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for f in ["fraud-gbt.onnx", "fraud-gbt.covers.json"] {
        std::fs::copy(root().join("models").join(f), dir.join(f)).expect("copy");
    }
    let path = dir.join(format!("{evaluator}.manifest.toml"));
    std::fs::write(&path, forced).expect("manifest copy");
    path
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
fn treelite() -> Option<(libloading::Library, PathBuf)> {
    let path = std::env::var_os("VERDICT_TREELITE_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".verdict/treelite/fraud-gbt.so"));
    if !path.is_file() {
        return None;
    }
    // SAFETY: the library is the one scripts/ensure-treelite.sh compiles
    // from tl2cgen's generated C; loading it runs no initialisers of note.
    let lib = unsafe { libloading::Library::new(&path) }.expect("load the treelite library");
    Some((lib, path))
}

fn entries(row: &[f32]) -> Vec<Entry> {
    row.iter()
        .map(|v| {
            if v.is_nan() {
                Entry { missing: -1 }
            } else {
                Entry { fvalue: *v }
            }
        })
        .collect()
}

fn models(c: &mut Criterion) {
    let runtime = Runtime::discover(None).unwrap_or_else(|e| panic!("{e}"));
    let shipped = Manifest::load(&root().join("models/fraud-gbt.manifest.toml")).expect("manifest");
    let rows = golden_rows();
    let width = shipped.inputs.len();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    let native =
        Model::load_as(shipped.clone(), &runtime, 1, Evaluator::Native).expect("native model");
    let onnx =
        Model::load_as(shipped.clone(), &runtime, 1, Evaluator::OnnxRuntime).expect("ORT model");
    let lib = treelite();
    let predict = lib.as_ref().map(|(lib, _)| {
        // SAFETY: tl2cgen's `predict(union Entry*, int, float*)`.
        *unsafe { lib.get::<Predict>(b"predict") }.expect("predict symbol")
    });
    match &lib {
        Some((_, path)) => eprintln!("models: treelite library {}", path.display()),
        None => eprintln!(
            "models: skipping treelite/*: no compiled library at .verdict/treelite/fraud-gbt.so (run scripts/ensure-treelite.sh)"
        ),
    }

    let mut group = c.benchmark_group("model");
    for n in [1usize, 32] {
        group.throughput(Throughput::Elements(n as u64));
        let batch: Vec<Vec<f32>> = rows.iter().cycle().take(n).cloned().collect();
        let flat: Vec<f32> = batch.concat();
        let mut out = Vec::new();

        if n == 1 {
            // One row at a time, cycling through the golden rows, so the
            // branches are not learned from one row.
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
        } else {
            group.bench_with_input(BenchmarkId::new("native", n), &flat, |b, flat| {
                b.iter(|| {
                    native.run(black_box(flat), &mut out).expect("run");
                    black_box(out[0])
                })
            });
        }

        group.bench_with_input(
            BenchmarkId::new("onnxruntime-session", n),
            &flat,
            |b, flat| {
                b.iter(|| {
                    onnx.run(black_box(flat), &mut out).expect("run");
                    black_box(out[0])
                })
            },
        );

        let ort_manifest = manifest_with("onnxruntime");
        let mut cat = catalogue(&shipped);
        let scorer = Scorer::start(
            &ort_manifest,
            &mut cat,
            &runtime,
            Batching {
                max_batch: n,
                max_wait: Duration::from_micros(500),
                threads: 1,
            },
            Arc::new(NoObserver),
        )
        .expect("scorer");
        assert_eq!(scorer.backend(), Backend::OnnxRuntime);
        group.bench_with_input(
            BenchmarkId::new("onnxruntime-scorer", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    tokio.block_on(async {
                        let pending: Vec<_> =
                            batch.iter().map(|r| scorer.score(r.clone())).collect();
                        for f in pending {
                            black_box(f.await.expect("score"));
                        }
                    })
                })
            },
        );

        if let Some(predict) = predict {
            let mut data: Vec<Vec<Entry>> = batch.iter().map(|r| entries(r)).collect();
            let all: Vec<Vec<Entry>> = rows.iter().map(|r| entries(r)).collect::<Vec<_>>();
            let mut at = 0;
            let mut result = [0f32];
            group.bench_function(BenchmarkId::new("treelite", n), |b| {
                b.iter(|| {
                    if n == 1 {
                        at = (at + 1) % all.len();
                        data[0].copy_from_slice(&all[at]);
                    }
                    for row in data.iter_mut() {
                        // SAFETY: `row` has the model's 18 entries and
                        // `result` its one output.
                        unsafe { predict(row.as_mut_ptr(), 0, result.as_mut_ptr()) };
                        black_box(result[0]);
                    }
                })
            });
        }
    }

    // The engine's path for one event, from records.
    group.throughput(Throughput::Elements(1));
    let mut cat = catalogue(&shipped);
    let scorer = Scorer::start(
        &root().join("models/fraud-gbt.manifest.toml"),
        &mut cat,
        &runtime,
        Batching::default(),
        Arc::new(NoObserver),
    )
    .expect("native scorer");
    assert_eq!(scorer.backend(), Backend::Native);
    let records: Vec<(Vec<Value>, Vec<Value>)> = rows
        .iter()
        .map(|row| {
            let mut event = vec![Value::Missing; cat.len(Namespace::Event)];
            let mut features = vec![Value::Missing; cat.len(Namespace::Feature)];
            for (path, v) in shipped.inputs.iter().zip(row) {
                let slot = cat.lookup(path).expect("input").slot;
                let target = if slot.ns == Namespace::Event {
                    &mut event
                } else {
                    &mut features
                };
                if !v.is_nan() {
                    target[slot.index as usize] = Value::Number(f64::from(*v));
                }
            }
            (event, features)
        })
        .collect();
    let mut at = 0;
    group.bench_function(BenchmarkId::new("native-engine", 1), |b| {
        b.iter(|| {
            at = (at + 1) % records.len();
            let (event, features) = &records[at];
            let record = Record {
                event,
                features,
                model: &[],
            };
            black_box(
                scorer
                    .score_now(black_box(&record))
                    .expect("native")
                    .expect("score"),
            )
        })
    });

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
    group.finish();
    assert_eq!(width, 18);
}

criterion_group!(benches, models);
criterion_main!(benches);
