//! What an operator deploys, checked: `verdict run --check-config`, the
//! alert rules (promtool's checks and unit tests, and that they name only
//! metrics Verdict exports), and the Helm chart (lint, render, Kubernetes
//! schema, and the rendered configuration accepted by `--check-config`).
//!
//! Needs promtool and the Python packages of `scripts/requirements.txt`,
//! which the README's test command (`scripts/test.sh`) installs;
//! `VERDICT_PYTHON` points at another Python.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `verdict run --check-config` with the repository's configuration and
/// `env` on top (no broker is contacted).
fn check_config(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    cmd.current_dir(root())
        .args(["run", "--check-config", "--config", "verdict.toml"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn check_config_accepts_the_shipped_configuration() {
    let out = check_config(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verdict would start with this configuration"),
        "{stdout}"
    );
    // What it prints is the resolved configuration, as TOML that Verdict
    // reads back.
    let resolved: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(resolved["kafka"]["group_id"].as_str(), Some("verdict"));
    assert_eq!(
        resolved["kafka"]["producer_properties"]["linger.ms"].as_str(),
        Some("5")
    );
}

/// Credentials are never printed, in the resolved configuration or in any
/// log line, even at the most verbose level.
#[test]
fn check_config_prints_no_secret() {
    let (token, password) = ("admin-token-3f9c1e", "sasl-password-77ab2d");
    let out = check_config(&[
        ("RUST_LOG", "trace"),
        ("VERDICT_HTTP__ADMIN_TOKEN", token),
        (
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SECURITY.PROTOCOL",
            "SASL_PLAINTEXT",
        ),
        (
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SASL.MECHANISM",
            "PLAIN",
        ),
        (
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SASL.USERNAME",
            "verdict",
        ),
        (
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SASL.PASSWORD",
            password,
        ),
        (
            "VERDICT_KAFKA__PRODUCER_PROPERTIES__SSL.KEY.PASSWORD",
            password,
        ),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("sasl.username"), "the properties are shown: {t}");
    assert!(
        !t.contains(token) && !t.contains(password),
        "a secret was printed:\n{t}"
    );
    assert!(t.contains("<redacted>"), "{t}");
}

/// A consumer or producer property Verdict cannot honour safely is refused
/// with the reason, before anything starts.
#[test]
fn check_config_refuses_unsafe_kafka_properties() {
    let out = check_config(&[
        (
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__ENABLE.AUTO.COMMIT",
            "true",
        ),
        ("VERDICT_KAFKA__PRODUCER_PROPERTIES__ACKS", "1"),
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("`enable.auto.commit` = `true` cannot be honoured")
            && t.contains("`acks` = `1` cannot be honoured"),
        "{t}"
    );
    let out = check_config(&[(
        "VERDICT_KAFKA__CONSUMER_PROPERTIES__PARTITION.ASSIGNMENT.STRATEGY",
        "cooperative-sticky",
    )]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The check loads what the configuration names, not only the file: a rule
/// folder that is not there is refused, naming it.
#[test]
fn check_config_refuses_what_verdict_could_not_start_with() {
    let out = check_config(&[("VERDICT_ENGINE__RULES", "no-such-folder")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot read the rule folder") && text(&out).contains("no-such-folder"),
        "{}",
        text(&out)
    );

    // librdkafka refuses an unknown property when the client is created.
    let out = check_config(&[(
        "VERDICT_KAFKA__CONSUMER_PROPERTIES__FETCH.WAIT.MAXX.MS",
        "5",
    )]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("consumer_properties") && t.contains("fetch.wait.maxx.ms"),
        "{t}"
    );

    // A number-looking value of a raw property stays text and is accepted.
    let out = check_config(&[("VERDICT_KAFKA__PRODUCER_PROPERTIES__LINGER.MS", "10")]);
    assert!(out.status.success(), "{}", text(&out));
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .current_dir(root().join("helm"))
        .args(args)
        .output()
        .expect("promtool not found: run scripts/test.sh, which installs it")
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let out = promtool(&["check", "rules", "verdict/files/alerts.yml"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = promtool(&["test", "rules", "tests/alerts.test.yml"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// An alert on a metric that does not exist never fires: every `verdict_*`
/// name in the rules is one `/metrics` exports.
#[test]
fn alert_rules_name_only_exported_metrics() {
    let m = common::every_metric();
    let exported: std::collections::HashSet<String> = m
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let rules = std::fs::read_to_string(root().join("helm/verdict/files/alerts.yml")).unwrap();
    let names = rules.match_indices("verdict_").map(|(at, _)| {
        let rest = &rules[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    });
    let mut checked = 0;
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
            .unwrap_or(name);
        assert!(
            exported.contains(base),
            "alerts.yml names {name}, which /metrics does not export"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} metric names found in alerts.yml"
    );
}

#[test]
fn the_helm_chart_lints_renders_and_its_configuration_checks() {
    let python = std::env::var_os("VERDICT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".verdict/venv/bin/python"));
    let out = Command::new(&python)
        .arg(root().join("helm/tests/chart.py"))
        .arg(env!("CARGO_BIN_EXE_verdict"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/test.sh, which installs it (or set VERDICT_PYTHON)",
                python.display()
            )
        });
    assert!(out.status.success(), "{}", text(&out));
}

/// Logs written to a file or a pipe (a collector, the demo's log) are
/// plain text: no terminal colour codes.
#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"event_id\":\"e-1\",\"event_type\":\"login\",\"timestamp\":0,\"user_id\":\"u\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .args(["replay", "--config", "verdict.toml", "--input"])
        .arg(&events)
        .arg("--output")
        .arg(dir.path().join("d.jsonl"))
        .arg("--dead-letter")
        .arg(dir.path().join("dl.jsonl"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rules loaded"), "tracing lines are there: {err}");
    assert!(!err.contains('\u{1b}'), "a colour code in:\n{err:?}");
}
