//! Rebalancing under load, as a user scales out and back in: one `verdict
//! run` deciding a steady stream, a second joining the group, the first
//! leaving with SIGTERM. Every event must end with exactly one decision or
//! dead letter: a graceful handoff decides nothing twice and loses
//! nothing, with the eager protocol (`range`), the cooperative one
//! (`cooperative-sticky`) and the consumer-group protocol of KIP-848
//! (`group.protocol = consumer`) alike.
//!
//! Against librdkafka's mock cluster (in this process) and against tansu
//! (a real broker process); traffic is produced and read back by an
//! independent client (`confluent-kafka`, `tests/e2e/client.py`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

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

const PARTITIONS: i32 = 6;

/// A tansu broker on a free port with the three topics.
fn tansu() -> (Guard, String) {
    let tansu = tool("VERDICT_TANSU", ".verdict/bin/tansu", "tansu");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&tansu)
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
    let guard = Guard(child);
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (topic, partitions) in [
        ("events", PARTITIONS),
        ("decisions", PARTITIONS),
        ("dead-letters", 1),
    ] {
        let status = Command::new(&tansu)
            .args(["topic", "create", "--broker", &url, "--partitions"])
            .arg(partitions.to_string())
            .arg(topic)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "cannot create topic {topic}");
    }
    (guard, format!("127.0.0.1:{port}"))
}

/// A running `verdict run` and its HTTP port.
struct Verdict {
    child: Guard,
    port: u16,
}

impl Verdict {
    /// Waits until `/readyz` says every lane holds partitions.
    fn wait_ready(&self, log: &Path) {
        let until = Instant::now() + Duration::from_secs(60);
        while !ready(self.port) {
            assert!(
                Instant::now() < until,
                "not ready within a minute:\n{}",
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.0 200")
}

/// `verdict run` with the repository's configuration and `properties` as
/// extra consumer properties, two lanes, its log written to `log`.
fn start_verdict(brokers: &str, properties: &[(&str, &str)], log: &Path) -> Verdict {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    cmd.current_dir(root())
        .args(["run", "--config", "verdict.toml"])
        .env("VERDICT_KAFKA__BROKERS", brokers)
        .env("VERDICT_KAFKA__LANES", "2")
        // Explanations (exact TreeSHAP on every review and deny) cost a
        // debug build milliseconds each; these tests are about delivery.
        .env("VERDICT_MODEL__EXPLAIN__TOP", "0")
        .env("VERDICT_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info,verdict=debug")
        .stderr(std::fs::File::create(log).expect("create the log file"));
    for (k, v) in properties {
        cmd.env(
            format!(
                "VERDICT_KAFKA__CONSUMER_PROPERTIES__{}",
                k.to_ascii_uppercase()
            ),
            v,
        );
    }
    Verdict {
        child: Guard(cmd.spawn().expect("start verdict run")),
        port,
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What a scenario must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one decision or dead letter per event.
    ExactlyOnce,
    /// At least one per event.
    NothingLost,
}

/// Produces `count` generated events at `rate` per second while instance A
/// decides; B joins after two seconds, and once it holds partitions (and
/// three fifths of the traffic are out) A leaves with SIGTERM. Asserts every event has exactly one decision or
/// dead letter.
fn scale_out_and_in(
    brokers: &str,
    properties: &[(&str, &str)],
    count: u64,
    rate: u64,
    one_per_batch: bool,
    expect: Expect,
) {
    let python = tool("VERDICT_PYTHON", ".verdict/venv/bin/python", "Python");
    let client = root().join("pipeline/tests/e2e/client.py");
    // VERDICT_KEEP_LOGS=1 keeps the instances' logs for a look after.
    let dir = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("VERDICT_KEEP_LOGS").is_some())
        .tempdir()
        .unwrap();
    let events = dir.path().join("events.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["gen", "--seed", "5", "--count", &count.to_string(), "--out"])
        .arg(&events)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    if std::env::var_os("VERDICT_KEEP_LOGS").is_some() {
        eprintln!("logs kept in {}", dir.path().display());
    }
    let mut a = start_verdict(brokers, properties, &a_log);
    a.wait_ready(&a_log);
    let started = Instant::now();
    let mut producer = Command::new(&python);
    producer
        .arg(&client)
        .args(["produce", brokers, "events"])
        .arg(&events)
        .args(["--rate", &rate.to_string()]);
    if one_per_batch {
        producer.arg("--one-per-batch");
    }
    let mut producer = Guard(
        producer
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let producing = Duration::from_secs_f64(count as f64 / rate as f64);
    std::thread::sleep((producing / 4).min(Duration::from_secs(2)));
    let mut b = start_verdict(brokers, properties, &b_log);
    b.wait_ready(&b_log);
    eprintln!(
        "B holds partitions {:.1} s into the traffic",
        started.elapsed().as_secs_f64()
    );
    assert!(
        started.elapsed() < producing,
        "B held partitions only after the traffic ended: the test shows no rebalance under load\n--- A ---\n{}\n--- B ---\n{}",
        tail(&a_log),
        tail(&b_log)
    );
    std::thread::sleep((producing * 3 / 5).saturating_sub(started.elapsed()));
    sigterm(&a.child.0);
    let a_exit = a.child.0.wait().unwrap();
    assert!(a_exit.success(), "A exit {a_exit}:\n{}", tail(&a_log));
    let produced = finish(&mut producer.0);
    assert!(produced.0.success(), "producing: {}", produced.1);

    let collected = Command::new(&python)
        .arg(&client)
        .args(["collect", brokers])
        .arg(&events)
        .args(["decisions", "dead-letters", "120", "events", "verdict"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&collected.stdout).into_owned();
    let logs = format!("--- A ---\n{}\n--- B ---\n{}", tail(&a_log), tail(&b_log));
    assert!(
        collected.status.success(),
        "events lost: {report} {}\n{logs}",
        String::from_utf8_lossy(&collected.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r["missing"], 0, "{report}\n{logs}");
    if expect == Expect::ExactlyOnce {
        assert_eq!(r["duplicates"], 0, "events decided twice: {report}\n{logs}");
        assert_eq!(r["duplicate_dead_letters"], 0, "{report}\n{logs}");
    } else {
        eprintln!("duplicates: {}", r["duplicates"]);
    }
    assert!(r["dead_letters"].as_u64().unwrap() > 0, "{report}");
    // Both instances decided: the handoff really happened both ways.
    for log in [&a_log, &b_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("rebalance: partitions assigned"),
            "{}:\n{logs}",
            log.display()
        );
    }
    sigterm(&b.child.0);
    let b_exit = b.child.0.wait().unwrap();
    assert!(b_exit.success(), "B exit {b_exit}:\n{}", tail(&b_log));
}

/// Waits for `child` and answers its status and standard error.
fn finish(child: &mut Child) -> (std::process::ExitStatus, String) {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (child.wait().unwrap(), err)
}

fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    cluster.create_topic("decisions", PARTITIONS, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

#[test]
fn eager_rebalancing_decides_every_event_once() {
    let (_cluster, brokers) = mock();
    scale_out_and_in(
        &brokers,
        &[
            ("partition.assignment.strategy", "range"),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "300"),
        ],
        60_000,
        3_000,
        false,
        Expect::ExactlyOnce,
    );
}

#[test]
fn cooperative_rebalancing_decides_every_event_once() {
    let (_cluster, brokers) = mock();
    scale_out_and_in(
        &brokers,
        &[
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "300"),
        ],
        60_000,
        3_000,
        false,
        Expect::ExactlyOnce,
    );
}

#[test]
fn the_consumer_group_protocol_decides_every_event_once() {
    let (_cluster, brokers) = mock();
    scale_out_and_in(
        &brokers,
        &[("group.protocol", "consumer")],
        60_000,
        3_000,
        false,
        Expect::ExactlyOnce,
    );
}

/// What a user tried on a real broker: 4,000 events/s, a second instance
/// joining, the first leaving, with incremental rebalancing. Nothing is
/// lost. Exactly-once is not asserted here: tansu 0.6 does not honour the
/// cooperative protocol's owned partitions and assigns a partition to a
/// second member while the first still holds it (the instances' logs show
/// one lane assigned partition 3 while another gives it up only later), so
/// both decide its events for a moment — a broker defect no client can
/// undo. The mock-cluster tests above show exactly-once for every protocol.
#[test]
fn cooperative_rebalancing_on_a_real_broker_loses_nothing() {
    let (_broker, brokers) = tansu();
    // tansu answers a fetch from inside a record batch with the batches
    // after it (see tests/tansu.rs): one event per batch keeps every
    // committed offset a batch boundary.
    scale_out_and_in(
        &brokers,
        &[
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "300"),
        ],
        80_000,
        4_000,
        true,
        Expect::NothingLost,
    );
}
