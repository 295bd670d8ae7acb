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
    let analyst = "analyst-token-5d20aa";
    let out = check_config(&[
        ("RUST_LOG", "trace"),
        ("VERDICT_HTTP__ADMIN_TOKEN", token),
        ("VERDICT_HTTP__ANALYST_TOKEN", analyst),
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
        !t.contains(token) && !t.contains(password) && !t.contains(analyst),
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
    assert!(
        err.contains("rules loaded"),
        "tracing lines are there: {err}"
    );
    assert!(!err.contains('\u{1b}'), "a colour code in:\n{err:?}");
}

/// Every query of the Grafana dashboard, `$__rate_interval` and the job
/// variable filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("helm/verdict/files/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// The dashboard's panels cover what an SRE needs, and every one of its
/// queries runs on a real Prometheus scraping Verdict's `/metrics` and
/// answers series: no panel names a metric or label that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_from_the_exported_metrics() {
    let queries = dashboard_queries();
    let titles: std::collections::HashSet<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Decisions by outcome",
        "Decision latency",
        "p99 per stage",
        "Consumer lag per partition",
        "Dead letters by reason",
        "Degraded decisions",
        "Rule hit rates",
        "Versions serving",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted}");
    }

    // Verdict's metrics, every series touched, served over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(
        listener,
        verdict::http::AppState::metrics_only(std::sync::Arc::new(common::every_metric())),
    ));
    // A Prometheus scraping them every second.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: verdict\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus not found: run scripts/test.sh, which installs it");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(prometheus);
    let query = |expr: String| async move {
        let url = format!("/api/v1/query?query={}", urlencode(&expr));
        let answer = http_get(port, &url).await?;
        serde_json::from_str::<serde_json::Value>(&answer).ok()
    };
    // Wait for enough scrapes for a rate over a minute window.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let scraped = query("count_over_time(verdict_events_total[1m])".into()).await;
        let n = scraped
            .as_ref()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0);
        if n >= 3.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "Prometheus scraped nothing: {scraped:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for (title, expr) in queries {
        let answer = query(expr.clone()).await.expect("Prometheus answers");
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(series > 0, "{title}: {expr} answers no series: {answer}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body of `GET path` on 127.0.0.1:`port`, or `None` when it does not
/// answer.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}
