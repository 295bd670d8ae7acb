//! A backtest of one million events of the generator's traffic (one
//! million users) from a Parquet decision log, reading included: the
//! events/s `verdict backtest` reaches on this machine. One long run, not
//! criterion samples.
//!
//! Set-up (not timed): the events are generated, decided by the shipped
//! configuration and archived to a decision log in a temporary folder, as
//! `verdict run` writes it. Timed: a fresh engine for files reads the log
//! in time order and decides every event with a candidate rule set (the
//! model's deny threshold lowered from 0.92 to 0.80) beside the recorded
//! decisions, into the full report (matrix, rules, labels, money,
//! samples), as `verdict backtest --history <log> --candidate-rules <dir>
//! --label label` does.
//!
//! ```sh
//! cargo bench -p verdict-benches --bench backtest              # 1,000,000 events
//! cargo test -p verdict-benches --bench backtest               # 2,000, unoptimised: a smoke test
//! EVENTS=200000 cargo bench -p verdict-benches --bench backtest
//! # keep the log in a folder, and on later runs backtest it without the
//! # set-up (for profiling the pass alone)
//! BACKTEST_LOG_DIR=/tmp/verdict-log cargo bench -p verdict-benches --bench backtest
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use verdict::backtest::{Job, LabelSource};
use verdict::config::Config;
use verdict::engine::{Engine, StreamClock};
use verdict_backtest::LabelRule;
use verdict_core::Position;
use verdict_gen::{GenConfig, Generator};
use verdict_history::{HistoryWriter, LogEntry, WriterConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config() -> Config {
    let mut config = Config::load(&root().join("verdict.toml")).expect("verdict.toml loads");
    config.engine.rules_watch_ms = 0;
    // A million users, each with a few dedup slots' worth of traffic.
    config.features.dedup_capacity = 4 << 20;
    config
}

/// Generates `n` events, decides them and archives them to `dir`.
fn write_log(n: usize, dir: &Path) -> usize {
    let config = config();
    let engine = Engine::load_for_files_in_process(&config).expect("the engine loads");
    let mut writer_config = WriterConfig::new(dir.to_str().expect("a UTF-8 path"), "bench");
    writer_config.queue = 1 << 16;
    writer_config.file_max_rows = 250_000;
    writer_config.file_max_age_secs = 86_400;
    let writer = HistoryWriter::start(&writer_config).expect("the decision log opens");
    let mut generator = Generator::new(GenConfig {
        users: 1_000_000,
        events_per_sec: 100.0,
        ..GenConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut decided = 0;
    let started = Instant::now();
    let mut clock = StreamClock::new();
    for i in 0..n {
        let g = generator.next_event();
        let position = || Position::File {
            file: "generated".into(),
            line: i as u64 + 1,
        };
        let Ok(prepared) = engine.prepare(&mut clock, &g.bytes, position, Instant::now()) else {
            continue;
        };
        let d = runtime.block_on(engine.finish(prepared));
        let entry = LogEntry {
            event: &g.bytes,
            timestamp_ms: d.timestamp_ms,
            decision: &d.decision,
            position: None,
        };
        while !writer.try_log(&entry) {
            std::thread::sleep(Duration::from_millis(1));
        }
        decided += 1;
        if (i + 1) % 200_000 == 0 {
            eprintln!(
                "backtest bench: set-up, {} events decided and logged ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let stats = writer
        .close(Duration::from_secs(300))
        .expect("the decision log closes");
    assert_eq!(
        stats.written, decided as u64,
        "every decision is in a complete file"
    );
    decided
}

/// The example rules with the model's deny threshold lowered.
fn candidate(dir: &Path) -> PathBuf {
    let to = dir.join("candidate");
    std::fs::create_dir_all(to.join("lists")).expect("candidate folder");
    let from = root().join("examples/rules");
    for entry in std::fs::read_dir(&from).expect("examples/rules") {
        let path = entry.expect("an entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("a name"))).expect("copy");
        }
    }
    for entry in std::fs::read_dir(from.join("lists")).expect("examples/rules/lists") {
        let path = entry.expect("an entry").path();
        std::fs::copy(
            &path,
            to.join("lists").join(path.file_name().expect("a name")),
        )
        .expect("copy");
    }
    let file = to.join("60-model.rules");
    let text = std::fs::read_to_string(&file).expect("60-model.rules");
    let changed = text.replacen("model.fraud_score > 0.92", "model.fraud_score > 0.80", 1);
    assert_ne!(changed, text, "the threshold is in 60-model.rules");
    std::fs::write(&file, changed).expect("write");
    to
}

/// The size of the `*.parquet` files under `dir`.
fn parquet_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("the log folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            total += parquet_bytes(&path);
        } else if path.extension().is_some_and(|x| x == "parquet") {
            total += path.metadata().expect("metadata").len();
        }
    }
    total
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench
    // skips this one.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"backtest".contains(a.as_str()))
    {
        return;
    }
    // `cargo test --all-targets` runs this target unoptimised, without
    // `--bench`: there it backtests a few thousand events, to show that the
    // bench works, and its figure means nothing.
    let measured = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| measured)
        .unwrap_or(if measured { 1_000_000 } else { 2_000 });
    let dir = tempfile::tempdir().expect("a temporary folder");
    let kept = std::env::var_os("BACKTEST_LOG_DIR")
        .map(PathBuf::from)
        .filter(|_| measured);
    let (log, decided) = match kept {
        Some(kept) if kept.exists() => {
            eprintln!("backtest bench: the log in {} (no set-up)", kept.display());
            (kept, None)
        }
        Some(kept) => {
            let decided = write_log(n, &kept);
            (kept, Some(decided))
        }
        None => {
            let log = dir.path().join("log");
            let decided = write_log(n, &log);
            (log, Some(decided))
        }
    };
    let bytes = parquet_bytes(&log);
    eprintln!(
        "backtest bench: {} MB of Parquet in the log",
        bytes as f64 / 1e6
    );

    let config = config();
    let engine = Engine::load_for_files_in_process(&config).expect("the engine loads");
    let job = Job {
        history: log.to_str().expect("a UTF-8 path").to_owned(),
        candidate_rules: Some(candidate(dir.path())),
        label: LabelSource::Field {
            field: "label".into(),
            rule: LabelRule::LegitValues(vec!["legit".into()]),
        },
        samples: 10,
        ..Job::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = runtime
        .block_on(job.run(&engine, |_, _| {}))
        .expect("the backtest runs");
    let report = &outcome.report;
    assert!(report.complete, "the report is complete");
    if let Some(decided) = decided {
        assert_eq!(
            report.events, decided as u64,
            "every logged event is compared"
        );
    }
    let secs = outcome.elapsed.as_secs_f64();
    println!(
        "backtest: {} events from {:.1} MB of Parquet in {secs:.2} s: {:.0} events/s ({:.2} µs per event); {} changed",
        report.events,
        bytes as f64 / 1e6,
        report.events as f64 / secs,
        secs * 1e6 / report.events as f64,
        report.changed.events
    );
}
