//! Records for the decision-log tests: events and decisions made from a
//! number, so that every test can say what it expects back.
#![allow(dead_code)]

pub mod moto;

use std::sync::Arc;
use std::time::Duration;

use verdict_core::{Action, Decision, Hit, Position, Scores};
use verdict_history::{HistoryReader, HistoryWriter, LogEntry, ReaderOptions, WriterConfig};

/// 2026-11-24T08:00:00Z.
pub const T0: i64 = 1_795_507_200_000;

pub struct Record {
    pub event: Vec<u8>,
    pub timestamp_ms: i64,
    pub decision: Decision,
    pub position: Position,
}

impl Record {
    pub fn entry(&self) -> LogEntry<'_> {
        LogEntry {
            event: &self.event,
            timestamp_ms: self.timestamp_ms,
            decision: &self.decision,
            position: Some(&self.position),
        }
    }
}

/// Record `i`: event time `T0 + ts_ms`, decided `decided_ms` after T0.
/// `pad` bytes of filler make the event as large as a test needs.
pub fn record(i: u64, ts_ms: i64, decided_ms: i64, pad: usize) -> Record {
    let id = format!("e-{i:08}");
    let ts = T0 + ts_ms;
    // xorshift: filler that compresses about as well as hex of random
    // bytes, so that a test can make files of the size it needs.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let filler: String = (0..pad)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x % 16) as usize])
        })
        .collect();
    let event = format!(
        r#"{{"event_id":"{id}","event_type":"payment","timestamp":{ts},"user_id":"u_{u}","amount":{a}.5,"pad":"{filler}"}}"#,
        u = i % 97,
        a = i % 1000
    )
    .into_bytes();
    let action = Action::ALL[(i % 3) as usize];
    let hits = if action == Action::Approve {
        vec![]
    } else {
        vec![
            Hit {
                rule: Arc::from(format!("rule_{}", i % 5)),
                action,
                reason: Arc::from("because"),
            },
            Hit {
                rule: Arc::from("velocity"),
                action: Action::Review,
                reason: Arc::from("too fast"),
            },
        ]
    };
    let shadow_hits = if i.is_multiple_of(4) {
        vec![Hit {
            rule: Arc::from("shadow_rule"),
            action: Action::Deny,
            reason: Arc::from("trial"),
        }]
    } else {
        vec![]
    };
    let decision = Decision {
        event_id: id.into(),
        decision: action,
        hits,
        shadow_hits,
        scores: Scores::from([(Arc::from("fraud_score"), (i % 100) as f64 / 100.0)]),
        explanation: Vec::new(),
        ruleset_version: Arc::from("rs-0000abcd"),
        model_version: if i.is_multiple_of(2) {
            Some(Arc::from("gbt-1"))
        } else {
            None
        },
        degraded: i.is_multiple_of(7),
        latency_us: 100 + i,
        decided_at: T0 + decided_ms,
    };
    let position = match i % 3 {
        0 => Position::Kafka {
            topic: "events".into(),
            partition: (i % 4) as i32,
            offset: i as i64,
        },
        1 => Position::File {
            file: "in.jsonl".into(),
            line: i + 1,
        },
        _ => Position::Http {
            http: format!("req-{i}"),
        },
    };
    Record {
        event,
        timestamp_ms: ts,
        decision,
        position,
    }
}

/// `n` records one second apart, decided as they come.
pub fn records(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| record(i, i as i64 * 1000, i as i64 * 1000 + 5, 40))
        .collect()
}

/// Writes `records` with `config` and closes the writer.
pub fn write_all(config: &WriterConfig, records: &[Record]) -> verdict_history::WriterStats {
    let w = HistoryWriter::start(config).expect("writer starts");
    for r in records {
        // A queue as large as the test's record count never drops.
        while !w.try_log(&r.entry()) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    w.close(Duration::from_secs(60)).expect("writer closes")
}

/// One event as read back, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub event_id: String,
    pub timestamp_ms: i64,
    pub event: Vec<u8>,
    pub decision: Option<Decision>,
    pub instance: Option<String>,
    pub position: Option<Position>,
}

pub fn read_all(
    spec: &str,
    options: &ReaderOptions,
) -> Result<Vec<Read>, verdict_history::HistoryError> {
    let mut r = HistoryReader::open(spec, options)?;
    let mut out = Vec::new();
    while let Some(e) = r.next()? {
        out.push(Read {
            event_id: e.event_id.to_owned(),
            timestamp_ms: e.timestamp_ms,
            event: e.event.to_vec(),
            decision: e.recorded.map(|d| d.to_decision(e.event_id)),
            instance: e.recorded.map(|d| d.instance().to_owned()),
            position: e.recorded.and_then(|d| d.position().to_position()),
        });
    }
    Ok(out)
}

/// Every `*.parquet` file below `dir`, relative, sorted.
pub fn parquet_files(dir: &std::path::Path) -> Vec<String> {
    fn walk(d: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|f| f.ends_with(".parquet"));
    out.sort();
    out
}

/// Writes record after record until the process is killed (the child of
/// the kill tests).
pub fn write_until_killed(config: &WriterConfig, pad: usize) -> ! {
    let w = HistoryWriter::start(config).expect("writer starts");
    let mut i = 0u64;
    loop {
        let r = record(i, i as i64, i as i64, pad);
        while !w.try_log(&r.entry()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        i += 1;
    }
}

/// Runs this test binary's test `name` alone in a child process, with
/// `env` set.
pub fn spawn_self(name: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null());
    cmd.spawn().expect("the test binary starts again")
}

/// Waits until `ready` holds, for at most two minutes.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
