//! The traffic generator: determinism, scenario rates, and agreement with
//! the event parser.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use verdict_core::{EventParser, Schema};
use verdict_gen::{GenConfig, Generator, LABELS, MALFORMED, Scenario, ScenarioMix};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn parser() -> EventParser {
    let schema = Schema::load(&repo_root().join("examples/schema.toml")).unwrap();
    EventParser::new(Arc::new(schema))
}

fn bytes_of(config: GenConfig, n: usize) -> Vec<u8> {
    let mut g = Generator::new(config);
    let mut out = Vec::new();
    for _ in 0..n {
        g.write_next(&mut out);
        out.push(b'\n');
    }
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let seed = |seed| GenConfig {
        seed,
        ..GenConfig::default()
    };
    let a = bytes_of(seed(11), 5_000);
    assert_eq!(a, bytes_of(seed(11), 5_000));
    assert_ne!(a, bytes_of(seed(12), 5_000));
}

#[test]
fn next_event_and_write_next_agree() {
    let mut a = Generator::new(GenConfig::default());
    let mut b = Generator::new(GenConfig::default());
    for _ in 0..2_000 {
        let owned = a.next_event();
        let mut line = Vec::new();
        let label = b.write_next(&mut line);
        assert_eq!(owned.bytes, line);
        assert_eq!(owned.label, label);
    }
}

#[test]
fn rates_are_as_configured() {
    let config = GenConfig {
        seed: 5,
        ..GenConfig::default()
    };
    let n = 200_000;
    let mut g = Generator::new(config.clone());
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut line = Vec::new();
    for _ in 0..n {
        line.clear();
        *counts.entry(g.write_next(&mut line)).or_default() += 1;
    }
    let share = |label: &str| *counts.get(label).unwrap_or(&0) as f64 / n as f64;
    let fraud: f64 = Scenario::ALL.iter().map(|s| share(s.as_str())).sum();
    assert!((fraud - 0.02).abs() < 0.002, "fraud share {fraud}");
    let malformed = share(MALFORMED);
    assert!(
        (malformed - 0.01).abs() < 0.001,
        "malformed share {malformed}"
    );
    for s in Scenario::ALL {
        let expected = 0.02 * config.mix.share(s);
        let got = share(s.as_str());
        assert!(
            (got - expected).abs() < 0.25 * expected,
            "{}: {got} of lines, expected {expected}",
            s.as_str()
        );
    }
    for label in counts.keys() {
        assert!(LABELS.contains(label), "unknown label {label}");
    }
}

#[test]
fn a_custom_mix_and_rates_are_followed() {
    let n = 100_000;
    let mut g = Generator::new(GenConfig {
        fraud_rate: 0.10,
        malformed_rate: 0.05,
        mix: "velocity=3,under_limit=1".parse::<ScenarioMix>().unwrap(),
        ..GenConfig::default()
    });
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut line = Vec::new();
    for _ in 0..n {
        line.clear();
        *counts.entry(g.write_next(&mut line)).or_default() += 1;
    }
    let share = |label: &str| *counts.get(label).unwrap_or(&0) as f64 / n as f64;
    assert!((share("velocity") - 0.075).abs() < 0.01, "{counts:?}");
    assert!((share("under_limit") - 0.025).abs() < 0.005, "{counts:?}");
    assert!((share(MALFORMED) - 0.05).abs() < 0.003, "{counts:?}");
    for s in ["device_burst", "account_takeover", "night_activity"] {
        assert_eq!(share(s), 0.0, "{s} is switched off");
    }
}

#[test]
fn valid_lines_parse_and_malformed_lines_are_rejected() {
    let parser = parser();
    let mut g = Generator::new(GenConfig {
        seed: 9,
        malformed_rate: 0.05,
        fraud_rate: 0.05,
        ..GenConfig::default()
    });
    let mut kinds: HashMap<&str, u64> = HashMap::new();
    let mut epoch_ms = 0;
    for i in 0..100_000 {
        let line = g.next_event();
        let text = String::from_utf8_lossy(&line.bytes).into_owned();
        assert!(!line.bytes.contains(&b'\n'), "line {i} has a newline");
        match parser.parse(&line.bytes) {
            Ok(event) => {
                assert_ne!(line.label, MALFORMED, "malformed line {i} accepted: {text}");
                assert_eq!(event.id(), format!("e-{:08}", i + 1));
                let v: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
                assert_eq!(v["label"], line.label);
                assert_eq!(v["user_id"], line.key.as_str());
                assert_eq!(v["currency"], "CNY");
                let ip: Vec<u8> = v["ip"]
                    .as_str()
                    .unwrap()
                    .split('.')
                    .map(|o| o.parse().unwrap())
                    .collect();
                assert_eq!(ip.len(), 4);
                match event.event_type() {
                    "login" => assert!(v.get("amount").is_none()),
                    "payment" => assert!(v["attributes"]["merchant"].is_string()),
                    "loan_application" => assert!(v["attributes"]["term_months"].is_u64()),
                    other => panic!("event type {other}"),
                }
                if v["timestamp"].is_number() {
                    epoch_ms += 1;
                }
            }
            Err(rejection) => {
                assert_eq!(
                    line.label, MALFORMED,
                    "line {i} rejected: {rejection}: {text}"
                );
                *kinds.entry(rejection.kind().as_str()).or_default() += 1;
            }
        }
    }
    for kind in [
        "not_json",
        "not_object",
        "missing_field",
        "wrong_type",
        "bad_timestamp",
    ] {
        assert!(kinds.get(kind).copied().unwrap_or(0) > 100, "{kinds:?}");
    }
    assert!(
        (2_000..4_000).contains(&epoch_ms),
        "{epoch_ms} epoch-ms timestamps"
    );
}

#[test]
fn profiles_cover_the_users_of_the_traffic() {
    let g = Generator::new(GenConfig {
        users: 300,
        ..GenConfig::default()
    });
    let mut csv = Vec::new();
    g.profiles().write_csv(&mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let ids: std::collections::HashSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 300);
    let mut g = Generator::new(GenConfig {
        users: 300,
        ..GenConfig::default()
    });
    for _ in 0..5_000 {
        let line = g.next_event();
        if !line.key.is_empty() {
            assert!(
                ids.contains(line.key.as_str()),
                "{} has no profile",
                line.key
            );
        }
    }
}

#[test]
fn committed_profiles_match_the_default_population() {
    let committed =
        std::fs::read_to_string(repo_root().join("examples/data/profiles.csv")).unwrap();
    let mut csv = Vec::new();
    Generator::new(GenConfig::default())
        .profiles()
        .write_csv(&mut csv)
        .unwrap();
    assert!(
        committed == String::from_utf8(csv).unwrap(),
        "examples/data/profiles.csv is stale: regenerate it with `verdict gen profiles --out examples/data/profiles.csv`"
    );
}
