//! Events parsed and validated per second on one core, against the example
//! schema: the first step of every event's path.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_core::{EventParser, Schema};

fn sample_events(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"event_id":"e-{i:08}","event_type":"loan_application","timestamp":"2026-11-24T08:{:02}:{:02}.250Z","user_id":"u_{:06}","device_id":"d_{:06}","ip":"10.{}.{}.{}","amount":{}.5,"currency":"CNY","attributes":{{"channel":"app","term_months":12,"new_device":false}},"label":"legit"}}"#,
                i / 60 % 60,
                i % 60,
                i % 5000,
                i % 7000,
                i % 200,
                i % 250,
                i % 251,
                100 + i % 9000
            )
            .into_bytes()
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema = Schema::load(&root.join("examples/schema.toml")).expect("example schema loads");
    let parser = EventParser::new(Arc::new(schema));
    let events = sample_events(1024);
    let bytes: usize = events.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| {
            for e in &events {
                black_box(parser.parse(black_box(e)).expect("sample events are valid"));
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("parse_and_validate_bytes", |b| {
        b.iter(|| {
            for e in &events {
                black_box(parser.parse(black_box(e)).expect("sample events are valid"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
