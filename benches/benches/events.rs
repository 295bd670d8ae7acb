//! Events parsed and validated per second on one core, against the example
//! schema, on the traffic generator's lines (`verdict gen`, ~230 bytes): the
//! first step of every event's path. Beside it, in the same run, the peers
//! that only parse (serde_json's `Value`), and the decision record written
//! by hand against serde_json's serialiser.
//!
//! Before measuring, each Verdict path prints its heap allocations per
//! event, counted by a global allocator.

mod alloc_count;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{Action, Decision, EventParser, Hit, Schema, Scores};
use verdict_gen::{GenConfig, Generator};

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

fn lines(n: usize) -> Vec<Vec<u8>> {
    let mut generator = Generator::new(GenConfig {
        malformed_rate: 0.0,
        fraud_rate: 0.05,
        ..GenConfig::default()
    });
    (0..n).map(|_| generator.next_event().bytes).collect()
}

fn parser() -> EventParser {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = Schema::load(&root.join("examples/schema.toml")).expect("example schema loads");
    EventParser::new(Arc::new(schema))
}

fn parse(c: &mut Criterion) {
    let parser = parser();
    let events = lines(1024);
    let bytes: usize = events.iter().map(Vec::len).sum();
    println!(
        "events: {} generator lines, {} bytes on average",
        events.len(),
        bytes / events.len()
    );
    let mut event = parser.new_event();
    let reuse = |event: &mut verdict_core::Event| {
        for e in &events {
            parser
                .parse_into(black_box(e), event)
                .expect("generated events are valid");
        }
    };
    reuse(&mut event);
    println!(
        "events/parse_into: {:.2} allocations per event",
        alloc_count::per_item(events.len(), || reuse(&mut event))
    );
    println!(
        "events/parse: {:.2} allocations per event",
        alloc_count::per_item(events.len(), || {
            for e in &events {
                black_box(parser.parse(e).expect("generated events are valid"));
            }
        })
    );

    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("parse_into", |b| b.iter(|| reuse(&mut event)));
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| {
            for e in &events {
                black_box(
                    parser
                        .parse(black_box(e))
                        .expect("generated events are valid"),
                );
            }
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for e in &events {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(black_box(e)).expect("valid JSON"),
                );
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("parse_into_bytes", |b| b.iter(|| reuse(&mut event)));
    group.finish();
}

/// Decisions of the shape the engine writes: a few hits, one score.
fn decisions(n: usize) -> Vec<Decision> {
    (0..n)
        .map(|i| Decision {
            event_id: format!("e-{i:08}").into(),
            decision: Action::ALL[i % 3],
            hits: (0..i % 3)
                .map(|k| Hit {
                    rule: format!("rule_{k}").into(),
                    action: Action::ALL[k % 3],
                    reason: "burst of applications from one device across \"several\" accounts"
                        .into(),
                })
                .collect(),
            shadow_hits: Vec::new(),
            scores: Scores::from([("fraud_score".into(), (i % 997) as f64 / 997.0)]),
            explanation: Vec::new(),
            ruleset_version: "rs-5f1c9a2e".into(),
            model_version: Some("fraud-gbt-2026-11-20".into()),
            degraded: i % 50 == 0,
            latency_us: 600 + i as u64 % 300,
            decided_at: 1_795_508_130_251 + i as i64,
        })
        .collect()
}

fn decision_json(c: &mut Criterion) {
    let ds = decisions(1024);
    let mut out = Vec::with_capacity(1 << 20);
    let write = |out: &mut Vec<u8>| {
        out.clear();
        for d in &ds {
            d.write_json(out);
            out.push(b'\n');
        }
    };
    write(&mut out);
    println!(
        "decision/write_json: {:.2} allocations per decision",
        alloc_count::per_item(ds.len(), || write(&mut out))
    );
    let mut group = c.benchmark_group("decision_json");
    group.throughput(Throughput::Elements(ds.len() as u64));
    group.bench_function("write_json", |b| b.iter(|| write(black_box(&mut out))));
    group.bench_function("serde_json_to_writer", |b| {
        b.iter(|| {
            out.clear();
            for d in &ds {
                serde_json::to_writer(&mut out, d).expect("a decision serialises");
                out.push(b'\n');
            }
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, parse, decision_json);
criterion_main!(benches);
