//! Devices and IPs placed `shared`, against a real Redis (Debian's
//! `redis-server` on a free loopback port) and `verdict run` processes on
//! librdkafka's mock cluster:
//! - three instances in one consumer group, each owning a share of the
//!   partitions, decide exactly what one process replaying the same
//!   traffic decides, for devices and IPs whose users land on different
//!   partitions;
//! - with Redis stopped mid-stream every event is still decided, degraded,
//!   and decisions are whole again once Redis is back;
//! - an instance killed mid-stream leaves nothing counted twice or lost;
//! - with devices and IPs kept local, a second instance in the group makes
//!   both say (gauge and log, once per change) that those kinds are
//!   incomplete, until it is gone.

#[allow(dead_code)]
#[path = "../../features/tests/common/servers.rs"]
mod servers;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use servers::RedisServer;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example definitions with devices and IPs shared, written to `dir`.
fn shared_features(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/features.toml")).unwrap();
    let commented = "# [placement]\n# device = \"shared\"\n# ip = \"shared\"";
    assert!(text.contains(commented), "the example names its placement");
    let profiles = repo().join("examples/data/profiles.csv");
    let text = text
        .replace(
            commented,
            "[placement]\ndevice = \"shared\"\nip = \"shared\"",
        )
        .replace(
            "\"data/profiles.csv\"",
            &format!("{:?}", profiles.display().to_string()),
        );
    let path = dir.join("features.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Event `i`: loan applications and payments of 24 users over 4 devices
/// and 3 IPs, a second apart, so that each device and IP is used by users
/// on every partition, enough for the velocity rules to fire.
fn event(i: usize) -> (String, String) {
    let user = format!("u_{}", (i * 7) % 24);
    let kind = if i.is_multiple_of(3) {
        "payment"
    } else {
        "loan_application"
    };
    let json = format!(
        r#"{{"event_id":"s-{i}","event_type":"{kind}","timestamp":{},"user_id":"{user}","device_id":"d_{}","ip":"10.0.0.{}","amount":{}.25,"currency":"EUR","attributes":{{"channel":"app","new_device":{}}}}}"#,
        1_764_000_000_000u64 + i as u64 * 1_000,
        (i / 2) % 4,
        i % 3,
        100 + (i * 37) % 900,
        i.is_multiple_of(5),
    );
    (user, json)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long an instance's shared-store bursts may take, and how long its
/// producer holds decisions before sending them.
#[derive(Clone, Copy)]
struct Timing {
    deadline_ms: u64,
    linger_ms: u64,
}

/// A `verdict run` reading `brokers`, with devices and IPs in `redis`.
fn verdict_run(
    brokers: &str,
    features: &Path,
    redis: &str,
    prefix: &str,
    http: u16,
    log: &Path,
    timing: Timing,
) -> Guard {
    let Timing {
        deadline_ms,
        linger_ms,
    } = timing;
    let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(repo())
        .args(["run", "--config", "verdict.toml"])
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
        .env(
            "VERDICT_KAFKA__PRODUCER_PROPERTIES__LINGER.MS",
            linger_ms.to_string(),
        )
        .env("VERDICT_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("VERDICT_ENGINE__FEATURES", features)
        .env("VERDICT_ENGINE__RULES_WATCH_MS", "0")
        .env("VERDICT_MODEL__EXPLAIN__TOP", "0")
        .env("VERDICT_FEATURES__SHARED__URLS", redis)
        .env("VERDICT_FEATURES__SHARED__KEY_PREFIX", prefix)
        .env(
            "VERDICT_FEATURES__SHARED__DEADLINE_MS",
            deadline_ms.to_string(),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Guard(child)
}

/// The body of `GET path` on the instance's HTTP port, if it answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// The value of an unlabelled metric (or the sum of a labelled one's
/// children) on the instance.
fn metric(port: u16, name: &str) -> f64 {
    http_get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The last lines of each log, for a failure's message.
fn tails(logs: &[&Path]) -> String {
    logs.iter()
        .map(|l| tail(l))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    cluster.create_topic("decisions", 3, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    cluster
}

/// Reads every decision of the decisions topic as it comes.
struct Decisions {
    consumer: BaseConsumer,
    /// Event id → (its decision, the partition it was decided on).
    seen: BTreeMap<String, (serde_json::Value, i32)>,
}

impl Decisions {
    fn new(brokers: &str) -> Decisions {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "shared-test-reader")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset("decisions", p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Decisions {
            consumer,
            seen: BTreeMap::new(),
        }
    }

    /// Waits until event `id` has its decision.
    fn wait_for(&mut self, id: &str, logs: &[&Path]) -> &serde_json::Value {
        let until = Instant::now() + Duration::from_secs(60);
        while !self.seen.contains_key(id) {
            assert!(
                Instant::now() < until,
                "no decision for {id} within a minute:\n{}",
                tails(logs)
            );
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                let d: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                let id = d["event_id"].as_str().unwrap().to_owned();
                assert!(
                    self.seen.insert(id.clone(), (d, m.partition())).is_none(),
                    "two decisions for {id}"
                );
            }
        }
        &self.seen[id].0
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

fn produce(producer: &BaseProducer, key: &str, payload: &str) {
    producer
        .send(BaseRecord::to("events").key(key).payload(payload))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Waits until every instance (by its HTTP port) has had partitions
/// assigned, and the group has settled.
fn wait_for_group(ports: &[u16], logs: &[&Path]) {
    wait_until(
        || {
            ports
                .iter()
                .all(|&p| metric(p, "verdict_rebalances_total") >= 1.0)
        },
        "the group formed",
        logs,
    );
    std::thread::sleep(Duration::from_secs(4));
}

/// A decision without what depends on when and how fast it was made.
fn comparable(d: &serde_json::Value) -> serde_json::Value {
    let mut d = d.clone();
    let o = d.as_object_mut().unwrap();
    o.remove("latency_us");
    o.remove("decided_at");
    d
}

#[test]
fn three_instances_sharing_redis_decide_what_one_process_decides() {
    const EVENTS: usize = 150;
    let redis = RedisServer::start();
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let features = shared_features(dir.path());
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("{i}.log")))
        .collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _instances: Vec<Guard> = (0..3)
        .map(|i| {
            verdict_run(
                &brokers,
                &features,
                &redis.url(),
                "equivalence",
                ports[i],
                &logs[i],
                Timing {
                    deadline_ms: 5_000,
                    linger_ms: 0,
                },
            )
        })
        .collect();
    let log_refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    wait_for_group(&ports, &log_refs);

    // One event at a time: each is produced once the one before is decided,
    // so the stream's order is the same for every instance and for replay.
    let producer = producer(&brokers);
    let mut decisions = Decisions::new(&brokers);
    let mut lines = String::new();
    for i in 0..EVENTS {
        let (key, json) = event(i);
        produce(&producer, &key, &json);
        decisions.wait_for(&format!("s-{i}"), &log_refs);
        lines.push_str(&json);
        lines.push('\n');
    }
    let events_per_instance: Vec<f64> = ports
        .iter()
        .map(|&p| metric(p, "verdict_events_total"))
        .collect();
    assert!(
        events_per_instance.iter().all(|&n| n > 0.0),
        "every instance decides a share: {events_per_instance:?}"
    );
    assert!(
        ports
            .iter()
            .all(|&p| metric(p, "verdict_shared_store_errors_total") == 0.0),
        "no shared-store error"
    );

    // The same traffic through one process: `verdict replay`, every kind local.
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, &lines).unwrap();
    let output = dir.path().join("replayed.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(repo())
        .args(["replay", "--config", "verdict.toml", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .env("VERDICT_ENGINE__FEATURES", &features)
        .env("VERDICT_MODEL__EXPLAIN__TOP", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed.len(), EVENTS);
    for (i, one) in replayed.iter().enumerate() {
        let id = format!("s-{i}");
        let (three, _) = &decisions.seen[&id];
        assert_eq!(
            comparable(three),
            comparable(one),
            "{id}: three instances sharing Redis (left) and one process (right) differ"
        );
        assert_eq!(three["degraded"], false, "{id} decided degraded");
    }

    // What the equality shows: devices and IPs seen on several partitions,
    // and the rules that count them firing.
    let mut partitions_of_device: BTreeMap<usize, BTreeSet<i32>> = BTreeMap::new();
    for i in 0..EVENTS {
        let (_, partition) = decisions.seen[&format!("s-{i}")];
        partitions_of_device
            .entry((i / 2) % 4)
            .or_default()
            .insert(partition);
    }
    assert!(
        partitions_of_device.values().all(|p| p.len() >= 2),
        "each device's events are decided on several partitions: {partitions_of_device:?}"
    );
    for rule in ["device_application_burst", "ip_account_burst"] {
        let hits = replayed
            .iter()
            .filter(|d| d["hits"].to_string().contains(rule))
            .count();
        assert!(hits > 0, "`{rule}` fires on this traffic");
    }
}

#[test]
fn with_redis_stopped_every_event_is_decided_degraded_and_whole_again_after() {
    let mut redis = RedisServer::start();
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let features = shared_features(dir.path());
    let log = dir.path().join("run.log");
    let port = free_port();
    let _instance = verdict_run(
        &brokers,
        &features,
        &redis.url(),
        "outage",
        port,
        &log,
        Timing {
            deadline_ms: 200,
            linger_ms: 0,
        },
    );
    let producer = producer(&brokers);
    let mut decisions = Decisions::new(&brokers);
    let logs = [log.as_path()];
    let mut degraded = Vec::new();
    let phase = |from: usize, to: usize, decisions: &mut Decisions| -> Vec<bool> {
        (from..to)
            .map(|i| {
                let (key, json) = event(i);
                produce(&producer, &key, &json);
                decisions.wait_for(&format!("s-{i}"), &logs)["degraded"]
                    .as_bool()
                    .unwrap()
            })
            .collect()
    };
    degraded.push(phase(0, 20, &mut decisions));
    redis.stop();
    degraded.push(phase(20, 40, &mut decisions));
    redis.restart();
    // Reconnecting takes a moment: the first events after the restart may
    // still be degraded, and then none is.
    let until = Instant::now() + Duration::from_secs(30);
    let mut i = 40;
    loop {
        let d = phase(i, i + 1, &mut decisions);
        i += 1;
        if !d[0] {
            break;
        }
        assert!(
            Instant::now() < until,
            "still degraded 30 s after Redis came back:\n{}",
            tail(&log)
        );
    }
    degraded.push(phase(i, i + 20, &mut decisions));
    assert!(
        degraded[0].iter().all(|d| !d),
        "whole before: {:?}",
        degraded[0]
    );
    assert!(
        degraded[1].iter().all(|d| *d),
        "degraded while Redis is down: {:?}",
        degraded[1]
    );
    assert!(
        degraded[2].iter().all(|d| !d),
        "whole again after: {:?}",
        degraded[2]
    );
    assert_eq!(
        decisions.seen.len(),
        i + 20,
        "every event has exactly one decision"
    );
    assert!(metric(port, "verdict_shared_store_errors_total") >= 1.0);
    assert!(metric(port, "verdict_decisions_degraded_total") >= 20.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        (
            text.matches("shared features missing").count(),
            text.matches("shared feature store answers again").count()
        ),
        (1, 1),
        "the outage and the recovery are each said once:\n{}",
        tail(&log)
    );
}

/// Event `i` of the crash test: 30 users over 8 devices and 5 IPs, 100 ms
/// apart (the whole stream well inside the store's lateness).
fn crash_event(i: usize) -> (String, String) {
    let user = format!("u_{}", i % 30);
    let kind = if i.is_multiple_of(2) {
        "payment"
    } else {
        "loan_application"
    };
    let json = format!(
        r#"{{"event_id":"k-{i}","event_type":"{kind}","timestamp":{},"user_id":"{user}","device_id":"d_{}","ip":"10.1.0.{}","amount":{}.5,"currency":"EUR"}}"#,
        1_764_000_000_000u64 + i as u64 * 100,
        (i / 3) % 8,
        i % 5,
        10 + i % 400,
    );
    (user, json)
}

/// The device and IP features that probe events read after `events`, each
/// probe then added: from the shared store under `prefix`, or (`None`)
/// from a local store fed `events` in order. Counts and exact distinct
/// counts do not depend on the order the events came in, only on each
/// being counted once.
fn probe_totals(
    features: &Path,
    events: &[String],
    shared: Option<(&str, &str)>,
) -> Vec<Vec<verdict_core::Value>> {
    use verdict_core::{Catalogue, EventParser, Namespace, Schema, Value};
    use verdict_features::shared::{NoObserver, SharedConfig, SharedStore};
    use verdict_features::{FeatureDefs, FeatureStore, StoreConfig, StreamClock};
    let schema = Schema::load(&repo().join("examples/schema.toml")).unwrap();
    let mut defs = FeatureDefs::load(features, &schema).unwrap();
    if shared.is_none() {
        defs.place_all_local();
    }
    let mut catalogue = Catalogue::from_schema(&schema);
    let store = FeatureStore::new(defs, &mut catalogue, StoreConfig::default()).unwrap();
    let parser = EventParser::new(std::sync::Arc::new(schema));
    let n = catalogue.len(Namespace::Feature);
    let mut out = vec![Value::Missing; n];
    let mut clock = StreamClock::new();
    for e in events {
        store.read_and_update(&parser.parse(e.as_bytes()).unwrap(), &mut out, &mut clock);
    }
    let paths: Vec<usize> = catalogue
        .entries()
        .iter()
        .filter(|e| e.path.starts_with("feature.device.") || e.path.starts_with("feature.ip."))
        .map(|e| e.slot.index as usize)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = shared.map(|(url, prefix)| {
        let config = SharedConfig {
            urls: vec![url.to_owned()],
            key_prefix: prefix.to_owned(),
            deadline_ms: 5_000,
            ..SharedConfig::default()
        };
        (
            store.shared_batch(&config),
            SharedStore::new(config, Box::new(NoObserver)).unwrap(),
        )
    });
    let mut client = client;
    (0..8)
        .map(|j| {
            let probe = format!(
                r#"{{"event_id":"probe-{j}","event_type":"payment","timestamp":{},"user_id":"probe","device_id":"d_{j}","ip":"10.1.0.{}","amount":1}}"#,
                // Just after the stream: the 1 h counts hold all of it.
                1_764_000_000_000u64 + 300_000,
                j % 5
            );
            let event = parser.parse(probe.as_bytes()).unwrap();
            let mut out = vec![Value::Missing; n];
            let outcome = store.read_and_update(&event, &mut out, &mut clock);
            if let Some((batch, client)) = &mut client {
                batch.clear();
                store.push_shared(&event, outcome, batch);
                rt.block_on(client.execute(batch)).unwrap();
                assert!(batch.read(0, &mut out), "the probe reads every shared feature");
            }
            paths.iter().map(|&i| out[i].clone()).collect()
        })
        .collect()
}

#[test]
fn an_instance_killed_mid_stream_leaves_nothing_counted_twice_or_lost() {
    const EVENTS: usize = 2_000;
    let redis = RedisServer::start();
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let features = shared_features(dir.path());
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("{i}.log")))
        .collect();
    let log_refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let run = |i: usize| {
        verdict_run(
            &brokers,
            &features,
            &redis.url(),
            "crash",
            ports[i],
            &logs[i],
            Timing {
                deadline_ms: 5_000,
                // The doomed instance holds its decisions for seconds
                // before producing them: killed, it leaves events it added
                // to Redis without an output, and the survivor decides
                // them again.
                linger_ms: if i == 0 { 3_000 } else { 0 },
            },
        )
    };
    let mut doomed = run(0);
    let _survivor = run(1);
    wait_for_group(&ports, &log_refs);

    let b = brokers.clone();
    let producing = std::thread::spawn(move || {
        let producer = producer(&b);
        let started = Instant::now();
        for i in 0..EVENTS {
            let due = started + Duration::from_millis(i as u64 * 4);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (key, json) = crash_event(i);
            producer
                .send(BaseRecord::to("events").key(&key).payload(&json))
                .unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });

    // Every decision as it comes, duplicates kept.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "shared-crash-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("decisions", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut killed_at = None;
    let until = Instant::now() + Duration::from_secs(120);
    while seen.len() < EVENTS {
        assert!(
            Instant::now() < until,
            "{} of {EVENTS} events decided in two minutes:\n{}",
            seen.len(),
            tails(&log_refs)
        );
        if killed_at.is_none() && seen.len() >= EVENTS / 3 {
            doomed.0.kill().unwrap(); // SIGKILL: no drain, no commit
            doomed.0.wait().unwrap();
            killed_at = Some(seen.len());
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let d: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let id = d["event_id"].as_str().unwrap().to_owned();
            seen.entry(id).or_default().push(d);
        }
    }
    producing.join().unwrap();
    let killed_at = killed_at.unwrap();
    assert!(
        killed_at < EVENTS * 2 / 3,
        "killed mid-stream, at {killed_at}"
    );
    for (id, decisions) in &seen {
        for d in &decisions[1..] {
            assert_eq!(
                comparable(d),
                comparable(&decisions[0]),
                "{id} decided twice, differently: a redelivery read other features"
            );
        }
        assert_eq!(decisions[0]["degraded"], false, "{id} decided degraded");
    }

    // Nothing counted twice: what the shared store holds equals each event
    // counted once.
    let events: Vec<String> = (0..EVENTS).map(|i| crash_event(i).1).collect();
    let shared = probe_totals(&features, &events, Some((&redis.url(), "crash")));
    let once = probe_totals(&features, &events, None);
    assert_eq!(
        shared, once,
        "the shared windows count every event exactly once"
    );
    assert!(
        once.iter()
            .flatten()
            .any(|v| matches!(v, verdict_core::Value::Number(x) if *x >= 100.0)),
        "the probes read real totals: {once:?}"
    );
}

/// The gauge of local kinds whose windows are incomplete, on an instance.
fn local_incomplete(port: u16) -> f64 {
    metric(port, "verdict_local_kinds_incomplete")
}

/// How often an instance's log has said that its local kinds are
/// incomplete.
fn incomplete_warnings(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("these kinds are local")
        .count()
}

/// Waits until `what` holds, or fails saying `waiting_for`.
fn wait_until(what: impl Fn() -> bool, waiting_for: &str, logs: &[&Path]) {
    let until = Instant::now() + Duration::from_secs(60);
    while !what() {
        assert!(
            Instant::now() < until,
            "not yet {waiting_for} after a minute:\n{}",
            tails(logs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Devices and IPs kept local (the example's placement) are complete while
/// one instance owns every partition; once a second joins the group each
/// sees part of their events, and both say so — the gauge counts the two
/// kinds, the log says it once per change of ownership, not per event —
/// until the second is gone and the first owns everything again.
#[test]
fn local_devices_and_ips_on_part_of_the_partitions_are_said_once_per_change() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let features = repo().join("examples/features.toml");
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("{i}.log")))
        .collect();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let timing = Timing {
        deadline_ms: 50,
        linger_ms: 0,
    };
    // No kind is shared: the store's address is never used.
    let unused = "redis://127.0.0.1:1";
    let run = |i: usize| {
        verdict_run(
            &brokers, &features, unused, "local", ports[i], &logs[i], timing,
        )
    };
    let both: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let first = run(0);
    wait_for_group(&ports[..1], &both[..1]);
    let producer = producer(&brokers);
    let mut decisions = Decisions::new(&brokers);
    for i in 0..10 {
        let (key, json) = event(i);
        produce(&producer, &key, &json);
        decisions.wait_for(&format!("s-{i}"), &both[..1]);
    }
    assert_eq!(local_incomplete(ports[0]), 0.0, "alone, it sees everything");
    assert_eq!(incomplete_warnings(&logs[0]), 0, "{}", tail(&logs[0]));

    let mut second = run(1);
    wait_until(
        || ports.iter().all(|&p| local_incomplete(p) == 2.0),
        "both instances count device and ip as incomplete",
        &both,
    );
    for i in 10..40 {
        let (key, json) = event(i);
        produce(&producer, &key, &json);
        decisions.wait_for(&format!("s-{i}"), &both);
    }
    for (port, log) in ports.iter().zip(&logs) {
        let (said, rebalances) = (
            incomplete_warnings(log),
            metric(*port, "verdict_rebalances_total"),
        );
        assert!(
            said >= 1 && said as f64 <= rebalances,
            "said {said} times over {rebalances} rebalances, 30 events:\n{}",
            tail(log)
        );
    }

    second.0.kill().unwrap();
    second.0.wait().unwrap();
    wait_until(
        || local_incomplete(ports[0]) == 0.0,
        "the first instance owns every partition again",
        &both[..1],
    );
    let said = incomplete_warnings(&logs[0]);
    for i in 40..50 {
        let (key, json) = event(i);
        produce(&producer, &key, &json);
        decisions.wait_for(&format!("s-{i}"), &both[..1]);
    }
    assert_eq!(
        incomplete_warnings(&logs[0]),
        said,
        "nothing more said while it owns everything"
    );
    drop(first);
}
