//! What the tests of `verdict run` with the workbench share: the
//! configuration (the repository's, with absolute paths, a decision log
//! and a workbench whose versions are on a given broker), the process, and
//! waiting with the logs shown on a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const USERS: [(&str, &str); 3] = [
    ("alice", "analyst"),
    ("bob", "approver"),
    ("vera", "viewer"),
];

pub fn password(user: &str) -> String {
    format!("{user}-correct-horse")
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The repository's `verdict.toml` with absolute paths, a decision log in
/// `dir`, and a workbench whose versions are on `brokers`, its record in
/// `dir/<instance>`, served over TLS with `tls` (certificate, key).
pub fn config_file(
    dir: &Path,
    brokers: &str,
    instance: &str,
    tls: Option<(&Path, &Path)>,
) -> PathBuf {
    let root = repo().canonicalize().unwrap();
    let mut text = std::fs::read_to_string(root.join("verdict.toml"))
        .unwrap()
        .replace("\"examples/", &format!("\"{}/examples/", root.display()))
        .replace("\"models/", &format!("\"{}/models/", root.display()));
    let features = std::fs::read_to_string(root.join("examples/features.toml"))
        .unwrap()
        .replace(
            "\"data/profiles.csv\"",
            &format!(
                "{:?}",
                root.join("examples/data/profiles.csv")
                    .display()
                    .to_string()
            ),
        );
    std::fs::write(dir.join("features.toml"), features).unwrap();
    text = text.replace(
        &format!("\"{}/examples/features.toml\"", root.display()),
        &format!("{:?}", dir.join("features.toml").display().to_string()),
    );
    text += &format!(
        "\n[history]\nlocation = {:?}\ninstance = {instance:?}\nfile_max_age_secs = 1\n",
        dir.join("decisions").display().to_string()
    );
    text += &format!(
        "\n[workbench]\ndata_dir = {:?}\n",
        dir.join(instance).display().to_string()
    );
    for (name, role) in USERS {
        text += &format!(
            "\n[[workbench.users]]\nname = {name:?}\nrole = {role:?}\npassword_hash = {:?}\n",
            verdict_workbench::hash_password(&password(name))
        );
    }
    text += &format!(
        "\n[workbench.versions.kafka]\nbrokers = {brokers:?}\ntopic = \"verdict.rulesets\"\n"
    );
    if let Some((cert, key)) = tls {
        text += &format!(
            "\n[workbench.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
    }
    let path = dir.join(format!("{instance}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A `verdict run` with the configuration `config`.
pub fn verdict_run(config: &Path, brokers: &str, http: u16, log: &Path) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["run", "--config"])
        .arg(config)
        .env("VERDICT_KAFKA__BROKERS", brokers)
        .env("VERDICT_KAFKA__LANES", "1")
        .env("VERDICT_KAFKA__COMMIT_INTERVAL_MS", "200")
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS",
            "3000",
        )
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__HEARTBEAT.INTERVAL.MS",
            "300",
        )
        .env("VERDICT_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("VERDICT_HTTP__ADMIN_TOKEN", ADMIN_TOKEN)
        .env("VERDICT_MODEL__EXPLAIN__TOP", "0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Guard(child)
}

pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

pub fn wait_until(what: impl Fn() -> bool, waiting_for: &str, logs: &[&Path]) {
    let until = Instant::now() + Duration::from_secs(90);
    while !what() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {waiting_for}\n{}",
            logs.iter()
                .map(|l| tail(l))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// librdkafka's mock cluster with the service's topics and the versions
/// topic (one partition).
pub fn cluster() -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>
{
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    for (topic, partitions) in [
        ("events", 2),
        ("decisions", 2),
        ("dead-letters", 1),
        ("verdict.rulesets", 1),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    cluster
}

/// Rows in the complete Parquet files of the decision log under `dir`.
pub fn parquet_rows(dir: &Path) -> u64 {
    verdict_history::HistoryReader::open(
        &dir.to_string_lossy(),
        &verdict_history::ReaderOptions::default(),
    )
    .map_or(0, |r| r.rows_hint())
}
