//! End to end against a real Kafka-protocol broker process (tansu) and a
//! real client (the `confluent-kafka` Python package): the client produces
//! generated traffic, `verdict run` decides it, is killed with SIGKILL
//! mid-stream and restarted, and the client then finds a decision or a dead
//! letter for every event it produced. When something is missing, the
//! report says where the missing events sit on the events topic and the
//! group's committed offsets, and the failure shows both instances' logs.
//!
//! Needs `tansu` and the Python client, which the README's test command
//! (`scripts/test.sh`) installs into `.verdict/`; `VERDICT_TANSU` and
//! `VERDICT_PYTHON` point elsewhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const EVENTS: u64 = 30_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(var: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        path.exists(),
        "{what} not found at {}: run scripts/test.sh, which installs it (or set {var})",
        path.display()
    );
    path
}

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_broker(tansu: &Path, port: u16) -> Guard {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for topic in ["events", "decisions", "dead-letters"] {
        let status = Command::new(tansu)
            .args([
                "topic",
                "create",
                "--broker",
                &url,
                "--partitions",
                "3",
                topic,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "cannot create topic {topic}");
    }
    Guard(child)
}

/// Starts `verdict run`, its log written to `log`.
fn start_verdict(brokers: &str, log: &Path) -> Guard {
    Guard(
        Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(root())
            .args(["run", "--config", "verdict.toml"])
            .env("VERDICT_KAFKA__BROKERS", brokers)
            .env("VERDICT_KAFKA__COMMIT_INTERVAL_MS", "200")
            .env("VERDICT_HTTP__LISTEN", "127.0.0.1:0")
            .stderr(std::fs::File::create(log).expect("create the log file"))
            .spawn()
            .expect("start verdict run"),
    )
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Counts records on the decisions topic until `want` (bounded wait).
fn wait_for_decisions(brokers: &str, want: usize) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-progress")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["decisions"]).unwrap();
    let mut n = 0;
    let until = Instant::now() + Duration::from_secs(120);
    while n < want && Instant::now() < until {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            n += 1;
        }
    }
    n
}

#[test]
fn killed_and_restarted_against_a_real_broker_loses_nothing() {
    let tansu = tool("VERDICT_TANSU", ".verdict/bin/tansu", "tansu");
    let python = tool("VERDICT_PYTHON", ".verdict/venv/bin/python", "Python");
    let client = root().join("pipeline/tests/e2e/client.py");
    let port = free_port();
    let _broker = start_broker(&tansu, port);
    let brokers = format!("127.0.0.1:{port}");

    let dir = std::env::temp_dir().join(format!("verdict-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args([
            "gen",
            "--seed",
            "3",
            "--count",
            &EVENTS.to_string(),
            "--out",
        ])
        .arg(&events)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let produced = Command::new(&python)
        .arg(&client)
        .args(["produce", &brokers, "events"])
        .arg(&events)
        // tansu 0.6 answers a fetch from an offset inside a record batch
        // with the batches that start after it, so a consumer resuming
        // from a committed offset mid-batch never sees the rest of that
        // batch (a Kafka broker returns the whole batch and the client
        // skips to the offset). One event per batch makes every committed
        // offset a batch boundary, so what this test measures is Verdict.
        .arg("--one-per-batch")
        .output()
        .unwrap();
    assert!(
        produced.status.success(),
        "producing: {}",
        String::from_utf8_lossy(&produced.stderr)
    );

    // Decide some, then crash hard.
    let first_log = dir.join("first.log");
    let mut first = start_verdict(&brokers, &first_log);
    let seen = wait_for_decisions(&brokers, (EVENTS / 10) as usize);
    assert!(seen > 0, "no decision before the crash");
    first.0.kill().unwrap(); // SIGKILL: no drain, no commit
    first.0.wait().unwrap();

    // Restart and let it finish.
    let second_log = dir.join("second.log");
    let mut second = start_verdict(&brokers, &second_log);
    let collected = Command::new(&python)
        .arg(&client)
        .args(["collect", &brokers])
        .arg(&events)
        .args(["decisions", "dead-letters", "180", "events", "verdict"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&collected.stdout);
    assert!(
        collected.status.success(),
        "events lost across kill -9 and restart: {report} {}\n\
         --- first instance (killed) ---\n{}\n--- second instance ---\n{}",
        String::from_utf8_lossy(&collected.stderr),
        tail(&first_log),
        tail(&second_log),
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r["missing"], 0);
    assert!(r["decided"].as_u64().unwrap() > EVENTS * 9 / 10, "{report}");
    assert!(r["dead_letters"].as_u64().unwrap() > 0, "{report}");

    // The restarted instance stops cleanly on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = second.0.wait().unwrap();
    assert!(code.success(), "exit status {code}");
    let _ = std::fs::remove_dir_all(&dir);
}
