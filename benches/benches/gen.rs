//! Traffic generator throughput, in events per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_gen::{GenConfig, Generator};

const BATCH: u64 = 10_000;

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("gen");
    group.throughput(Throughput::Elements(BATCH));
    // write_next into one reused buffer: what `verdict gen` does.
    group.bench_function("write_next", |b| {
        let mut generator = Generator::new(GenConfig::default());
        let mut out = Vec::with_capacity(1 << 22);
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                black_box(generator.write_next(&mut out));
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    // next_event: an owned line and key per event, what a Kafka producer takes.
    group.bench_function("next_event", |b| {
        let mut generator = Generator::new(GenConfig::default());
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(generator.next_event());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, generate);
criterion_main!(benches);
