//! `verdict backtest` against an independent path: the outcome matrix of a
//! backtest equals the one made by pairing two `verdict replay` runs (the
//! baseline's rules and the candidate's) by event id; the same candidate
//! gives the same report byte for byte; a candidate equal to the baseline
//! moves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const TRAFFIC: &str = "pipeline/tests/data/golden-traffic.jsonl";

fn verdict(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verdict {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The example rules with the model's deny threshold lowered.
fn candidate(dir: &Path) -> PathBuf {
    let to = dir.join("candidate");
    copy_dir(&root().join("examples/rules"), &to);
    let file = to.join("60-model.rules");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replacen("model.fraud_score > 0.92", "model.fraud_score > 0.80", 1);
    assert_ne!(changed, text);
    std::fs::write(&file, changed).unwrap();
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Outcome by event id, from `verdict replay` with `rules`.
fn replayed(dir: &Path, rules: &Path, name: &str) -> HashMap<String, String> {
    let out = dir.join(format!("{name}.jsonl"));
    let dead = dir.join(format!("{name}-dead.jsonl"));
    verdict(&[
        "replay",
        "--input",
        TRAFFIC,
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| {
            let d: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                d["event_id"].as_str().unwrap().to_owned(),
                d["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn backtest(candidate: &Path, seed: &str) -> serde_json::Value {
    let out = verdict(&[
        "backtest",
        "--history",
        TRAFFIC,
        "--candidate-rules",
        candidate.to_str().unwrap(),
        "--label",
        "label",
        "--skip-invalid",
        "--seed",
        seed,
        "--json",
        "-",
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_matrix_is_two_replays_paired_and_the_report_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path());
    let base = replayed(dir.path(), &root().join("examples/rules"), "base");
    let cand = replayed(dir.path(), &candidate, "cand");
    assert_eq!(base.len(), cand.len());
    let mut want: HashMap<(String, String), u64> = HashMap::new();
    for (id, b) in &base {
        *want.entry((b.clone(), cand[id].clone())).or_default() += 1;
    }

    let report = backtest(&candidate, "7");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["events"], base.len() as u64);
    for cell in report["matrix"].as_array().unwrap() {
        let key = (
            cell["baseline"].as_str().unwrap().to_owned(),
            cell["candidate"].as_str().unwrap().to_owned(),
        );
        assert_eq!(
            cell["events"].as_u64().unwrap(),
            want.get(&key).copied().unwrap_or(0),
            "{key:?}"
        );
    }
    let moved = want[&("review".to_owned(), "deny".to_owned())];
    assert!(moved > 0, "the lower threshold denies some reviews");
    let rule = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "model_high_risk")
        .unwrap();
    assert_eq!(rule["status"], "changed", "{rule}");

    // The same history, candidate and seed: the same report, to the byte.
    assert_eq!(backtest(&candidate, "7"), report);
}

#[test]
fn a_candidate_equal_to_the_baseline_moves_nothing() {
    let report = backtest(&root().join("examples/rules"), "0");
    let events = report["events"].as_u64().unwrap();
    assert!(events > 3_000, "{report}");
    let diagonal: u64 = report["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] == c["candidate"])
        .map(|c| c["events"].as_u64().unwrap())
        .sum();
    assert_eq!(diagonal, events);
    assert!(
        report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "unchanged"),
        "{report}"
    );
}
