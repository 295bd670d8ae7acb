//! The whole engine without Kafka, on one thread: bytes in → parse →
//! features → model → rules → decision JSON out, on the generator's traffic
//! with a million users. One long run per configuration rather than
//! criterion samples; it prints events/s, µs per event, each stage's part
//! (the engine's own stage timings, as the latency histograms get them)
//! and heap allocations per event (a counting allocator).
//!
//! Set-up (not timed): the events are generated into memory; a warm-up pass
//! of `WARM` events (every user seen about once) fills the feature store
//! with the million users. Timed: the next `EVENTS` events, each prepared,
//! finished and written as JSON (a bad event: its dead letter) into one reused buffer, as a lane does.
//! Two configurations in the same run: the shipped one (review and deny
//! explained), then with explanations off.
//!
//! ```sh
//! cargo bench -p verdict-benches --bench engine            # 1M warm-up, 500k timed
//! EVENTS=2000000 cargo bench -p verdict-benches --bench engine
//! PASS=explanations-off cargo bench -p verdict-benches --bench engine  # one configuration
//! DEDUP_CAPACITY=4194304 cargo bench -p verdict-benches --bench engine  # a dedup ring still filling
//! cargo test -p verdict-benches --bench engine             # 2,000 events, unoptimised: a smoke test
//! ```

mod alloc_count;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use verdict::config::Config;
use verdict::engine::{Engine, StageTimings, StreamClock};
use verdict_core::{Action, Position};
use verdict_gen::{GenConfig, Generator};

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one timed pass measured.
struct Pass {
    events: usize,
    elapsed: Duration,
    stages: StageTimings,
    allocations: f64,
    outcomes: [usize; 3],
    explained: usize,
    dead_letters: usize,
    bytes_out: usize,
}

/// Decides `events`: the first `warm` untimed, the rest timed.
fn pass(config: &Config, events: &[Vec<u8>], warm: usize) -> Pass {
    let engine = Engine::load_for_files_in_process(config).expect("the engine loads");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut out = Vec::with_capacity(4096);
    let mut clock = StreamClock::new();
    let mut decide = |i: usize, bytes: &[u8], out: &mut Vec<u8>| {
        let position = || Position::File {
            file: "generated".into(),
            line: i as u64 + 1,
        };
        out.clear();
        match engine.prepare(&mut clock, bytes, position, Instant::now()) {
            Ok(prepared) => {
                let d = runtime.block_on(engine.finish(prepared));
                d.decision.write_json(out);
                Some(d)
            }
            // The generator's share of bad events: their dead letters, as a
            // lane writes them.
            Err(rejected) => {
                serde_json::to_writer(&mut *out, &rejected.letter).expect("a dead letter");
                None
            }
        }
    };
    let started = Instant::now();
    for (i, bytes) in events[..warm].iter().enumerate() {
        decide(i, bytes, &mut out);
        if (i + 1) % 250_000 == 0 {
            eprintln!(
                "engine bench: warm-up, {} events ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let timed = &events[warm..];
    let mut stages = StageTimings::default();
    let mut outcomes = [0usize; 3];
    let mut explained = 0;
    let mut bytes_out = 0;
    let mut dead_letters = 0;
    let before = alloc_count::count();
    let started = Instant::now();
    for (i, bytes) in timed.iter().enumerate() {
        let Some(d) = decide(warm + i, bytes, &mut out) else {
            dead_letters += 1;
            bytes_out += out.len();
            continue;
        };
        stages.parse += d.timings.parse;
        stages.features += d.timings.features;
        stages.model += d.timings.model;
        stages.rules += d.timings.rules;
        outcomes[match d.decision.decision {
            Action::Approve => 0,
            Action::Review => 1,
            Action::Deny => 2,
        }] += 1;
        explained += usize::from(!d.decision.explanation.is_empty());
        bytes_out += out.len();
    }
    let elapsed = started.elapsed();
    let allocations = (alloc_count::count() - before) as f64 / timed.len() as f64;
    Pass {
        events: timed.len(),
        elapsed,
        stages,
        allocations,
        outcomes,
        explained,
        dead_letters,
        bytes_out,
    }
}

fn report(name: &str, p: &Pass) {
    let n = p.events as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let total = us(p.elapsed);
    let staged = [
        ("parse + validate", us(p.stages.parse)),
        ("features", us(p.stages.features)),
        ("model (and explanation)", us(p.stages.model)),
        ("rules", us(p.stages.rules)),
    ];
    let rest = total - staged.iter().map(|(_, v)| v).sum::<f64>();
    println!(
        "engine/{name}: {} events in {:.2} s: {:.0} events/s on one thread, {total:.2} µs per event, {:.2} heap allocations per event",
        p.events,
        p.elapsed.as_secs_f64(),
        n / p.elapsed.as_secs_f64(),
        p.allocations,
    );
    for (stage, v) in staged {
        println!("  {stage:<28} {v:>7.2} µs  {:>5.1}%", 100.0 * v / total);
    }
    println!(
        "  {:<28} {rest:>7.2} µs  {:>5.1}%",
        "decision, JSON out, the rest",
        100.0 * rest / total
    );
    println!(
        "  decisions: {} approve, {} review, {} deny; {} explained; {} dead letters; {:.0} bytes of JSON each",
        p.outcomes[0],
        p.outcomes[1],
        p.outcomes[2],
        p.explained,
        p.dead_letters,
        p.bytes_out as f64 / n
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // unoptimised without it: a smoke test of a few events.
    let benching = std::env::args().any(|a| a == "--bench");
    let (users, warm, timed) = if benching {
        (
            env_usize("USERS", 1_000_000) as u32,
            env_usize("WARM", 1_000_000),
            env_usize("EVENTS", 500_000),
        )
    } else {
        (10_000, 1_000, 1_000)
    };
    let mut config = Config::load(&root().join("verdict.toml")).expect("verdict.toml loads");
    config.engine.rules_watch_ms = 0;
    // The dedup (and the first decisions kept beside it) as shipped, a
    // million slots: the warm-up fills the ring, so the timed events find
    // it as a running service does, each taking the slot of an event long
    // forgotten. DEDUP_CAPACITY=4194304 measures a ring still filling.
    config.features.dedup_capacity = env_usize("DEDUP_CAPACITY", config.features.dedup_capacity);

    let mut generator = Generator::new(GenConfig {
        users,
        events_per_sec: 100.0,
        ..GenConfig::default()
    });
    let events: Vec<Vec<u8>> = (0..warm + timed)
        .map(|_| generator.next_event().bytes)
        .collect();
    eprintln!(
        "engine bench: {} events generated ({users} users), {warm} to warm up, {timed} timed",
        events.len()
    );

    // PASS=shipped or PASS=explanations-off runs one configuration only
    // (to profile it); by default both run and are compared.
    let only = std::env::var("PASS").ok();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut off = config.clone();
    if let Some(model) = &mut off.model {
        model.explain.top = 0;
    }
    let shipped = runs("shipped").then(|| pass(&config, &events, warm));
    if let Some(shipped) = &shipped {
        report("shipped", shipped);
    }
    let unexplained = runs("explanations-off").then(|| pass(&off, &events, warm));
    if let Some(unexplained) = &unexplained {
        report("explanations-off", unexplained);
        assert_eq!(unexplained.explained, 0);
    }

    // Both configurations decide the same events the same way; only the
    // explanations differ.
    if let (Some(shipped), Some(unexplained)) = (&shipped, &unexplained) {
        assert_eq!(shipped.outcomes, unexplained.outcomes);
        assert_eq!(shipped.dead_letters, unexplained.dead_letters);
    }
    if let Some(shipped) = &shipped {
        assert_eq!(
            shipped.explained,
            shipped.outcomes[1] + shipped.outcomes[2],
            "every review and deny is explained in the shipped configuration"
        );
    }
}
