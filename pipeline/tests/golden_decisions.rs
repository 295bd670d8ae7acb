//! The decisions of a fixed traffic file are a golden file: any change to
//! parsing, features, scoring or rules that changes a decision shows here,
//! line by line. Only `latency_us`, `decided_at` and the folder of a dead
//! letter's input file are redacted.
//!
//! `tests/data/golden-traffic.jsonl` was made with `verdict gen --seed 7
//! --count 4000 --fraud-rate 0.1 --rate 2`; it is decided by `verdict
//! replay` with the repository's configuration. To accept a deliberate
//! change, run the test with `VERDICT_BLESS=1` and review the diff of
//! `tests/data/golden-*.jsonl`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// One output line with the fields that vary between runs fixed, in a
/// canonical form (keys sorted).
fn redact(line: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("an output line is not JSON ({e}): {line}"));
    if let Some(o) = v.as_object_mut() {
        for key in ["latency_us", "decided_at"] {
            if o.contains_key(key) {
                o.insert(key.into(), serde_json::Value::from("<redacted>"));
            }
        }
        // A dead letter names its input file: keep its name only, so the
        // golden file holds wherever the repository is checked out.
        if let Some(file) = o
            .get_mut("position")
            .and_then(|p| p.get_mut("file"))
            .filter(|f| f.is_string())
        {
            let name = std::path::Path::new(file.as_str().unwrap_or(""))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            *file = serde_json::Value::from(name);
        }
    }
    serde_json::to_string(&v).expect("a value serialises")
}

fn redacted(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(redact)
        .collect()
}

/// Compares `got` with the golden file `name` (or rewrites it when
/// blessing), naming the first lines that differ.
fn check(name: &str, got: &[String]) {
    let golden = data(name);
    if std::env::var_os("VERDICT_BLESS").is_some() {
        std::fs::write(&golden, got.join("\n") + "\n").unwrap();
        return;
    }
    let want: Vec<String> = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", golden.display()))
        .lines()
        .map(str::to_owned)
        .collect();
    let differing: Vec<usize> = (0..want.len().max(got.len()))
        .filter(|&i| want.get(i) != got.get(i))
        .collect();
    if differing.is_empty() {
        return;
    }
    let mut report = format!(
        "{} of {} lines of {name} differ ({} expected, {} produced); the first:\n",
        differing.len(),
        want.len().max(got.len()),
        want.len(),
        got.len()
    );
    for &i in differing.iter().take(5) {
        report += &format!(
            "line {}:\n  expected {}\n  produced {}\n",
            i + 1,
            want.get(i).map_or("(nothing)", String::as_str),
            got.get(i).map_or("(nothing)", String::as_str)
        );
    }
    report += "If the change is deliberate, run with VERDICT_BLESS=1 and review the diff.";
    panic!("{report}");
}

#[test]
fn the_decisions_of_the_golden_traffic_do_not_change() {
    let out = tempfile::tempdir().unwrap();
    let decisions = out.path().join("decisions.jsonl");
    let dead = out.path().join("dead.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["replay", "--config", "verdict.toml", "--input"])
        .arg(data("golden-traffic.jsonl"))
        .arg("--output")
        .arg(&decisions)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "verdict replay failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = redacted(&decisions);
    assert!(
        got.iter().all(|l| !l.contains("\"degraded\":true")),
        "a file is decided without wall-clock deadlines: no decision is degraded"
    );
    check("golden-decisions.jsonl", &got);
    check("golden-dead-letters.jsonl", &redacted(&dead));
}
