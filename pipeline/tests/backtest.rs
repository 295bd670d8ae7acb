//! `verdict backtest` against an independent path: the outcome matrix of a
//! backtest equals the one made by pairing two `verdict replay` runs (the
//! baseline's rules or model and the candidate's) by event id; the same
//! candidate gives the same report byte for byte; a candidate equal to the
//! baseline moves nothing; a candidate model whose outputs the rules do
//! not read is refused before any event is read.

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

/// A second model, trained on fewer inputs, giving `fraud_score` too.
const LGBM: &str = "models/tests/data/lgbm.manifest.toml";

/// Outcome by event id, from `verdict replay` with `rules`.
fn replayed(dir: &Path, rules: &Path, name: &str) -> HashMap<String, String> {
    replayed_with(dir, &["--rules", rules.to_str().unwrap()], name)
}

/// Outcome by event id, from `verdict replay` with `overrides`.
fn replayed_with(dir: &Path, overrides: &[&str], name: &str) -> HashMap<String, String> {
    let out = dir.join(format!("{name}.jsonl"));
    let dead = dir.join(format!("{name}-dead.jsonl"));
    let mut args = vec!["replay", "--input", TRAFFIC];
    args.extend_from_slice(overrides);
    args.extend([
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    verdict(&args);
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
    backtest_with(&["--candidate-rules", candidate.to_str().unwrap()], seed)
}

fn backtest_with(candidate: &[&str], seed: &str) -> serde_json::Value {
    let mut args = vec!["backtest", "--history", TRAFFIC];
    args.extend_from_slice(candidate);
    args.extend([
        "--label",
        "label",
        "--skip-invalid",
        "--seed",
        seed,
        "--json",
        "-",
    ]);
    let out = verdict(&args);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_no_rule_changed(report: &serde_json::Value) {
    assert!(
        report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "unchanged"),
        "{report}"
    );
}

/// The matrix cells of a report against outcomes paired by event id.
fn assert_matrix_is_paired(
    report: &serde_json::Value,
    base: &HashMap<String, String>,
    cand: &HashMap<String, String>,
) -> HashMap<(String, String), u64> {
    assert_eq!(base.len(), cand.len());
    let mut want: HashMap<(String, String), u64> = HashMap::new();
    for (id, b) in base {
        *want.entry((b.clone(), cand[id].clone())).or_default() += 1;
    }
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
    want
}

#[test]
fn the_matrix_is_two_replays_paired_and_the_report_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path());
    let base = replayed(dir.path(), &root().join("examples/rules"), "base");
    let cand = replayed(dir.path(), &candidate, "cand");
    let report = backtest(&candidate, "7");
    let want = assert_matrix_is_paired(&report, &base, &cand);
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
    assert_no_rule_changed(&report);
}

#[test]
fn a_candidate_model_is_two_replays_paired() {
    let dir = tempfile::tempdir().unwrap();
    let base = replayed_with(dir.path(), &[], "base");
    let cand = replayed_with(dir.path(), &["--model", LGBM], "cand");
    let report = backtest_with(&["--candidate-model", LGBM], "3");
    let want = assert_matrix_is_paired(&report, &base, &cand);
    let changed: u64 = want
        .iter()
        .filter(|((b, c), _)| b != c)
        .map(|(_, n)| n)
        .sum();
    assert!(changed > 0, "the other model moves some events: {want:?}");
    assert_eq!(report["candidate"]["model_version"], "lgbm-1", "{report}");
    assert_ne!(report["baseline"]["model_version"], "lgbm-1", "{report}");
    // The rules are the same on both sides: no rule changed.
    assert_no_rule_changed(&report);

    // The same model as baseline and candidate: nothing moves.
    let same = backtest_with(&["--baseline-model", LGBM, "--candidate-model", LGBM], "3");
    assert_matrix_is_paired(&same, &cand, &cand);
}

#[test]
fn a_candidate_model_with_other_outputs_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .args([
            "backtest",
            "--history",
            TRAFFIC,
            "--candidate-model",
            "models/tests/data/lgbm-multi.manifest.toml",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no report: {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`model.low`") && stderr.contains("model.fraud_score"),
        "{stderr}"
    );
}

/// `verdict backtest` that must fail: exit 1, the reason on standard
/// error, and no report anywhere (standard output empty, no JSON file).
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .arg("backtest")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: no report on stdout");
    assert!(!json.exists(), "{args:?}: no report file");
    stderr
}

#[test]
fn what_cannot_be_backtested_is_an_error_and_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("examples/rules");
    let rules = rules.to_str().unwrap();

    // A candidate that does not check: every error, with its place.
    let broken = dir.path().join("broken");
    copy_dir(&root().join("examples/rules"), &broken);
    std::fs::write(
        broken.join("70-broken.rules"),
        "rule broken_rule {\n  when event.amount > \"ten\"\n  then deny\n}\n",
    )
    .unwrap();
    let err = refused(&[
        "--history",
        TRAFFIC,
        "--skip-invalid",
        "--candidate-rules",
        broken.to_str().unwrap(),
    ]);
    assert!(
        err.contains("candidate rules") && err.contains("70-broken.rules:2"),
        "{err}"
    );

    // A history line that is not an event, without --skip-invalid: the
    // file and line.
    let err = refused(&["--history", TRAFFIC, "--candidate-rules", rules]);
    assert!(err.contains("golden-traffic.jsonl:"), "{err}");

    // A file that claims to be Parquet and is not.
    let bad = dir.path().join("decisions.parquet");
    std::fs::write(&bad, b"PAR1 but not really a parquet file").unwrap();
    let err = refused(&[
        "--history",
        bad.to_str().unwrap(),
        "--candidate-rules",
        rules,
    ]);
    assert!(err.contains("decisions.parquet"), "{err}");

    // A label field no event has.
    let err = refused(&[
        "--history",
        TRAFFIC,
        "--skip-invalid",
        "--candidate-rules",
        rules,
        "--label",
        "no_such_field",
    ]);
    assert!(err.contains("no_such_field"), "{err}");
}
