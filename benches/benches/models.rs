//! Model inference of the shipped fraud model, in time per event.
//!
//! `scorer/N`: N rows in flight through [`Scorer`]'s thread (queue,
//! micro-batch of N, one session call, one answer per row).
//! `caller/N`: the same N rows queued and scored by the caller
//! ([`Scorer::help`]) — the path a Kafka lane and an HTTP request take when
//! they have nothing else to do.
//! `session/N`: the same N rows straight through [`Model::run`], for the
//! cost of the batching machinery. Criterion reports time per iteration of
//! N rows and, with the element throughput, rows per second; divide the
//! iteration time by N for µs per event. Rows are the golden rows saved at
//! training time (real held-out traffic, with missing values).
//!
//! Needs ONNX Runtime (scripts/ensure-python.sh).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{Catalogue, Schema, ValueType};
use verdict_models::{Batching, Manifest, Model, NoObserver, Runtime, Scorer};

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

fn models(c: &mut Criterion) {
    let runtime = Runtime::discover(None).unwrap_or_else(|e| panic!("{e}"));
    let manifest_path = root().join("models/fraud-gbt.manifest.toml");
    let manifest = Manifest::load(&manifest_path).expect("manifest");
    let rows = golden_rows();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");

    let mut group = c.benchmark_group("model");
    for n in [1usize, 8, 32, 128] {
        group.throughput(Throughput::Elements(n as u64));
        let batch: Vec<Vec<f32>> = rows.iter().cycle().take(n).cloned().collect();

        let mut cat = catalogue(&manifest);
        let scorer = Scorer::start(
            &manifest_path,
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
        group.bench_with_input(BenchmarkId::new("scorer", n), &batch, |b, batch| {
            b.iter(|| {
                tokio.block_on(async {
                    let pending: Vec<_> = batch.iter().map(|r| scorer.score(r.clone())).collect();
                    for f in pending {
                        black_box(f.await.expect("score"));
                    }
                })
            })
        });

        group.bench_with_input(BenchmarkId::new("caller", n), &batch, |b, batch| {
            b.iter(|| {
                tokio.block_on(async {
                    let pending: Vec<_> = batch.iter().map(|r| scorer.score(r.clone())).collect();
                    scorer.help();
                    for f in pending {
                        black_box(f.await.expect("score"));
                    }
                })
            })
        });

        let mut model = Model::load(manifest.clone(), &runtime, 1).expect("model");
        let flat: Vec<f32> = batch.concat();
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::new("session", n), &flat, |b, flat| {
            b.iter(|| {
                model.run(black_box(flat), &mut out).expect("run");
                black_box(out[0])
            })
        });
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
