//! `verdict replay` loses nothing: every input line becomes a decision or a
//! dead letter that names its line, in input order.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use verdict::config::Config;
use verdict::engine::Engine;
use verdict::file::replay;
use verdict_core::{DeadLetter, Decision, Position};
use verdict_gen::{GenConfig, Generator, MALFORMED};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn engine() -> Engine {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config::load(&root.join("verdict.toml")).expect("the root verdict.toml loads");
    Engine::load(&config).expect("the example engine loads")
}

#[tokio::test]
async fn every_line_is_decided_or_dead_lettered() {
    let good = |i: u32| {
        format!(
            r#"{{"event_id":"e-{i}","event_type":"payment","timestamp":"2026-11-24T08:15:{:02}.000Z","user_id":"u_{i}","amount":{i}}}"#,
            i % 60
        )
    };
    let mut input = String::new();
    let mut bad_lines = Vec::new();
    for i in 1..=200u32 {
        let line = match i % 17 {
            0 => "{\"truncated\":".to_owned(),
            5 => r#"{"event_id":"x","event_type":"payment","timestamp":"soon","user_id":"u"}"#
                .to_owned(),
            9 => String::new(),
            _ => good(i),
        };
        if !line.starts_with("{\"event_id\":\"e-") {
            bad_lines.push(u64::from(i));
        }
        input.push_str(&line);
        input.push('\n');
    }
    let (mut decisions, mut dead) = (Vec::new(), Vec::new());
    let summary = replay(
        &engine(),
        Cursor::new(input),
        "in.jsonl",
        &mut decisions,
        &mut dead,
    )
    .await
    .unwrap();
    assert_eq!(summary.lines, 200);
    assert!(summary.nothing_lost(), "{summary}");
    assert_eq!(summary.dead_letters as usize, bad_lines.len());

    let decided: Vec<Decision> = String::from_utf8(decisions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decided.len() as u64, summary.decisions);
    let ids: Vec<u32> = decided
        .iter()
        .map(|d| d.event_id.trim_start_matches("e-").parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "decisions keep input order"
    );

    let letters: Vec<DeadLetter> = String::from_utf8(dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = letters
        .iter()
        .map(|l| match &l.position {
            Position::File { file, line } => {
                assert_eq!(file, "in.jsonl");
                *line
            }
            other => panic!("unexpected position {other:?}"),
        })
        .collect();
    assert_eq!(lines, bad_lines);
    assert!(letters.iter().all(|l| !l.reason.is_empty()));
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[test]
fn replay_of_generated_traffic_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("verdict-gen-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let decisions = dir.join("decisions.jsonl");
    let dead = dir.join("dead.jsonl");
    let config = dir.join("verdict.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nschema = {:?}\n",
            repo_root().join("examples/schema.toml")
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_verdict");
    let out = Command::new(bin)
        .args(["gen", "--seed", "3", "--count", "20000", "--out"])
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("20000 lines"), "{summary}");
    assert_eq!(count_lines(&events), 20_000);
    // The same configuration in-process says which lines are malformed.
    let mut g = Generator::new(GenConfig {
        seed: 3,
        ..GenConfig::default()
    });
    let expected_malformed = (0..20_000)
        .filter(|_| g.next_event().label == MALFORMED)
        .count();
    let out = Command::new(bin)
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&events)
        .arg("--output")
        .arg(&decisions)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_lines(&decisions) + count_lines(&dead), 20_000);
    assert_eq!(count_lines(&dead), expected_malformed);
    assert!(expected_malformed > 100);
    std::fs::remove_dir_all(&dir).ok();
}
