//! `verdict run` against an in-process Kafka-protocol broker
//! (librdkafka's mock cluster): order per partition, dead letters,
//! offsets committed only after outputs are acknowledged.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use verdict::config::{Config, EngineConfig, HttpConfig, KafkaConfig};
use verdict::engine::Engine;
use verdict::kafka::Pipeline;
use verdict::metrics::Metrics;

const USERS: usize = 7;
const PER_USER: usize = 40;
const BAD: usize = 5;

/// Verdict's logs, shown for a failing test.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("verdict=debug")
        .try_init();
}

fn config(brokers: &str) -> Config {
    Config {
        engine: EngineConfig {
            schema: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/schema.toml").into(),
            max_event_bytes: 65536,
            rules: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rules").into()),
            rules_watch_ms: 0,
            declared: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/declared.toml").into(),
            ),
            features: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/features.toml").into(),
            ),
        },
        kafka: KafkaConfig {
            brokers: brokers.to_owned(),
            max_in_flight: 16,
            commit_interval_ms: 10,
            lanes: Some(2),
            // Tests start instances right after others were stopped or
            // killed: the group should not wait long for the departed.
            consumer_properties: [
                ("session.timeout.ms".to_owned(), "6000".to_owned()),
                ("heartbeat.interval.ms".to_owned(), "500".to_owned()),
            ]
            .into(),
            ..KafkaConfig::default()
        },
        http: HttpConfig::default(),
        features: Default::default(),
        model: Some(verdict_models::ModelConfig::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/fraud-gbt.manifest.toml"
        ))),
        base: Default::default(),
    }
}

fn event(user: usize, seq: usize) -> String {
    format!(
        r#"{{"event_id":"e-{user}-{seq:04}","event_type":"payment","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_{user}","amount":{seq}.0}}"#
    )
}

/// Every user's events `0..PER_USER`, then `BAD` malformed messages.
fn produce_input(brokers: &str) {
    produce_seqs(brokers, 0..PER_USER);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for i in 0..BAD {
        let key = format!("bad_{i}");
        producer
            .send(BaseRecord::to("events").key(&key).payload("{not json"))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A mock cluster of `brokers` brokers with the events and decisions
/// topics (`partitions` each) and a one-partition dead-letters topic, and
/// its bootstrap servers. The cluster stops when dropped.
fn cluster(
    brokers: i32,
    partitions: i32,
) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(brokers).unwrap();
    cluster.create_topic("events", partitions, 1).unwrap();
    cluster.create_topic("decisions", partitions, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

/// [`produce_input`] off the async runtime.
async fn produce_input_async(brokers: &str) {
    let b = brokers.to_owned();
    tokio::task::spawn_blocking(move || produce_input(&b))
        .await
        .unwrap();
}

/// Reads a topic from the start until `want` records arrive (bounded wait).
fn read_all(brokers: &str, topic: &str, want: usize) -> Vec<(String, serde_json::Value)> {
    read_until(brokers, topic, &format!("reader-{topic}"), |out| {
        out.len() >= want
    })
}

/// Reads a topic from the start until `done` holds (bounded wait).
fn read_until(
    brokers: &str,
    topic: &str,
    group: &str,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while !done(&out) && Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decides_in_order_dead_letters_and_commits_after_ack() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    produce_input_async(&brokers).await;

    let metrics = Arc::new(Metrics::new());
    let pipeline = pipeline(&brokers, metrics.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { pipeline.run(s).await });

    let b = brokers.clone();
    let (decisions, dead) = tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "decisions", USERS * PER_USER),
            read_all(&b, "dead-letters", BAD),
        )
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();

    assert_eq!(decisions.len(), USERS * PER_USER);
    // In order per key. A partition moving between lanes while the group
    // settles may replay events (at-least-once): a replayed decision is a
    // repeat of an id already seen and is not an ordering violation.
    let mut last: HashMap<String, String> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (key, d) in &decisions {
        let id = d["event_id"].as_str().unwrap().to_owned();
        assert!(
            id.starts_with(&format!("e-{}-", &key[2..])),
            "{key} keyed {id}"
        );
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(prev) = last.insert(key.clone(), id.clone()) {
            assert!(prev < id, "{key}: {prev} decided after {id}");
        }
    }
    assert_eq!(last.len(), USERS);

    assert_eq!(dead.len(), BAD);
    for (key, d) in &dead {
        assert!(key.starts_with("bad_"));
        assert_eq!(d["original"], "{not json");
        assert_eq!(d["position"]["topic"], "events");
    }

    // Every input offset is committed once the pipeline stops.
    let committed: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "verdict")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("events", p);
    }
    let offsets = committed
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(total as usize, USERS * PER_USER + BAD);

    let text = metrics.render();
    assert!(text.contains(&format!("verdict_events_total {}", USERS * PER_USER + BAD)));
}

fn pipeline(brokers: &str, metrics: Arc<Metrics>) -> Pipeline {
    pipeline_of(&config(brokers), metrics)
}

fn pipeline_of(config: &Config, metrics: Arc<Metrics>) -> Pipeline {
    Pipeline {
        engine: Arc::new(Engine::load(config).unwrap()),
        metrics,
        kafka: config.kafka.clone(),
        ready: Default::default(),
    }
}

/// A pipeline killed mid-stream loses nothing: a fresh one resumes from the
/// committed offsets, which never run ahead of acknowledged outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_resumes_without_loss() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    produce_input_async(&brokers).await;

    let first = pipeline(&brokers, Arc::new(Metrics::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { first.run(s).await });
    let b = brokers.clone();
    let early = tokio::task::spawn_blocking(move || read_all(&b, "decisions", 20))
        .await
        .unwrap();
    assert!(early.len() >= 20);
    task.abort();
    let _ = task.await;

    let second = pipeline(&brokers, Arc::new(Metrics::new()));
    let stop2 = Arc::new(AtomicBool::new(false));
    let s = stop2.clone();
    let task = tokio::spawn(async move { second.run(s).await });
    let b = brokers.clone();
    let all = tokio::task::spawn_blocking(move || {
        read_until(&b, "decisions", "reader-all", |out| {
            let ids: std::collections::HashSet<&str> = out
                .iter()
                .map(|(_, d)| d["event_id"].as_str().unwrap())
                .collect();
            ids.len() >= USERS * PER_USER
        })
    })
    .await
    .unwrap();
    stop2.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    let ids: std::collections::HashSet<String> = all
        .iter()
        .map(|(_, d)| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    for user in 0..USERS {
        for seq in 0..PER_USER {
            assert!(
                ids.contains(&format!("e-{user}-{seq:04}")),
                "lost e-{user}-{seq:04}"
            );
        }
    }
}

/// `/metrics` is valid Prometheus text (checked by promtool) and `/healthz`
/// answers.
#[tokio::test]
async fn metrics_endpoint_passes_promtool() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = Arc::new(common::every_metric());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(
        listener,
        verdict::http::AppState::metrics_only(metrics),
    ));
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
    let response = get("/metrics").await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap().to_owned();
    assert!(body.contains("verdict_decisions_total{outcome=\"approve\"} 1"));
    for line in [
        "verdict_feature_late_events_total 2",
        "verdict_feature_evictions_total 3",
        "verdict_model_errors_total 1",
        "verdict_info{model_version=\"m-1\",ruleset_version=\"rs-1\"} 1",
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary stops on SIGTERM after draining and committing, exit code 0,
/// and leaves a feature snapshot covering exactly the committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_commits_and_exits_zero() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    produce_input_async(&brokers).await;
    let state = tempfile::tempdir().unwrap();
    let snapshot = state.path().join("features.arrow");
    let child = verdict_run(&brokers)
        .env("VERDICT_FEATURES__SNAPSHOT", &snapshot)
        .env("RUST_LOG", "verdict=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = brokers.clone();
    let decisions =
        tokio::task::spawn_blocking(move || read_all(&b, "decisions", USERS * PER_USER))
            .await
            .unwrap();
    assert_eq!(decisions.len(), USERS * PER_USER);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "exit status {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let committed: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "verdict")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("events", p);
    }
    let offsets = committed
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(
        total as usize,
        USERS * PER_USER + BAD,
        "committed {:?}\n{}",
        offsets
            .elements()
            .iter()
            .map(|e| e.offset())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );

    // The snapshot restores into a fresh store with the same positions.
    let config = config(&brokers);
    let schema = verdict_core::Schema::load(&config.engine.schema).unwrap();
    let (_, store) = verdict::engine::catalogue_and_store(&config, &schema).unwrap();
    let store = store.unwrap();
    let positions = store.restore(&snapshot).unwrap();
    let covered: i64 = positions.values().sum();
    assert_eq!(covered, total, "{positions:?}");
    assert!(
        positions.keys().all(|k| k.starts_with("events/")),
        "{positions:?}"
    );
    assert!(store.stats().entities >= USERS as u64);
}

/// The `event_id`s on the decisions topic, in order: read until `want`
/// arrive and then two quiet seconds more (so that one more would be seen
/// too), or for a minute at most.
fn decided_ids(brokers: &str, group: &str, want: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    consumer.subscribe(&["decisions"]).unwrap();
    let mut ids = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < until && quiet_until.is_none_or(|q| Instant::now() < q) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let d: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            ids.push(d["event_id"].as_str().unwrap().to_owned());
        }
        if ids.len() >= want && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    ids
}

/// A lane with nothing more to read scores its events itself: with a
/// scoring thread that would wait a second for a batch, past the model's
/// deadline, no decision is degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_scores_its_events_without_waiting_for_the_scoring_thread() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    produce_input_async(&brokers).await;

    let mut config = config(&brokers);
    let model = config.model.as_mut().unwrap();
    model.max_batch = 65_536;
    model.max_wait_us = 1_000_000;
    model.deadline_ms = 500;
    let pipeline = pipeline_of(&config, Arc::new(Metrics::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { pipeline.run(s).await });
    let b = brokers.clone();
    let decisions =
        tokio::task::spawn_blocking(move || read_all(&b, "decisions", USERS * PER_USER))
            .await
            .unwrap();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();

    assert_eq!(decisions.len(), USERS * PER_USER);
    let degraded = decisions
        .iter()
        .filter(|(_, d)| d["degraded"] == true)
        .count();
    assert_eq!(degraded, 0, "decisions that waited for the scoring thread");
    assert!(
        decisions
            .iter()
            .all(|(_, d)| d["scores"]["fraud_score"].is_number()),
        "every decision carries its score"
    );
}

/// `verdict run` with the repository's configuration against `brokers`,
/// its HTTP listener on a free port.
fn verdict_run(brokers: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["run", "--config", "verdict.toml"])
        .env("VERDICT_KAFKA__BROKERS", brokers)
        .env("VERDICT_HTTP__LISTEN", "127.0.0.1:0");
    cmd
}

/// `verdict run` in exactly-once mode against `brokers`, as a process of its
/// own (so that it can be killed with SIGKILL), committing its transaction
/// every `commit_ms`.
fn exactly_once_process(brokers: &str, commit_ms: u64) -> std::process::Child {
    verdict_run(brokers)
        .env("VERDICT_KAFKA__EXACTLY_ONCE", "true")
        .env("VERDICT_KAFKA__TRANSACTIONAL_ID", "verdict-crash-test")
        .env("VERDICT_KAFKA__LANES", "1")
        .env("VERDICT_KAFKA__COMMIT_INTERVAL_MS", commit_ms.to_string())
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS",
            "6000",
        )
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__HEARTBEAT.INTERVAL.MS",
            "500",
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Exactly-once mode runs against a broker with transactions: `verdict run`
/// decides every event inside transactions; killed with SIGKILL, a new
/// process with the same transactional id initialises (fencing the dead
/// one), decides the events, and drains and exits 0 on SIGTERM.
///
/// What this cannot show: that a `read_committed` reader sees each decision
/// once across the crash. librdkafka's mock cluster implements neither side
/// of it (`rdkafka_mock_handlers.c`: Fetch answers the high watermark as the
/// last stable offset with no aborted transactions, so `read_committed`
/// readers see open and aborted transactions; TxnOffsetCommit acknowledges
/// a transaction's offsets without storing them, so a successor starts from
/// the beginning), and tansu refuses transactions. The reader below is
/// `read_uncommitted` so as not to claim otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_mode_decides_and_a_successor_takes_over_after_a_kill() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    produce_input_async(&brokers).await;
    let all = USERS * PER_USER;
    let distinct = |ids: &[String]| ids.iter().collect::<std::collections::HashSet<_>>().len();

    let mut first = exactly_once_process(&brokers, 3_600_000);
    let b = brokers.clone();
    let ids = tokio::task::spawn_blocking(move || decided_ids(&b, "first", all))
        .await
        .unwrap();
    assert_eq!(distinct(&ids), all, "the first process decides every event");
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = exactly_once_process(&brokers, 50);
    // The mock cluster keeps no transactional offsets: the successor decides
    // every event again, after the first process's decisions.
    let b = brokers.clone();
    let ids = tokio::task::spawn_blocking(move || decided_ids(&b, "second", 2 * all))
        .await
        .unwrap();
    assert_eq!(
        ids.len(),
        2 * all,
        "the successor decides every event again"
    );
    assert_eq!(distinct(&ids[all..]), all);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait().unwrap().success(), "exits 0 after SIGTERM");
}

/// A second instance joining the group takes partitions over: the first
/// drains and commits before giving them up, and no event is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_drains_and_loses_nothing() {
    logs();
    let (_cluster, brokers) = cluster(1, 4);
    produce_input_async(&brokers).await;

    let mut config = config(&brokers);
    config.kafka.lanes = Some(1);
    let start = |config: &Config| {
        let p = pipeline_of(config, Arc::new(Metrics::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        (stop, tokio::spawn(async move { p.run(s).await }))
    };
    let (stop_a, a) = start(&config);
    let b = brokers.clone();
    tokio::task::spawn_blocking(move || read_all(&b, "decisions", 10))
        .await
        .unwrap();
    let (stop_b, b_task) = start(&config);
    let b = brokers.clone();
    let all = tokio::task::spawn_blocking(move || {
        read_until(&b, "decisions", "reader-rebalance", |out| {
            let ids: std::collections::HashSet<&str> = out
                .iter()
                .map(|(_, d)| d["event_id"].as_str().unwrap())
                .collect();
            ids.len() >= USERS * PER_USER
        })
    })
    .await
    .unwrap();
    stop_a.store(true, Ordering::Relaxed);
    stop_b.store(true, Ordering::Relaxed);
    a.await.unwrap().unwrap();
    b_task.await.unwrap().unwrap();
    let ids: std::collections::HashSet<&str> = all
        .iter()
        .map(|(_, d)| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        USERS * PER_USER,
        "no event lost across the rebalance"
    );
}

/// Every user's events of `seqs`, from the async tests.
async fn produce(brokers: &str, seqs: std::ops::Range<usize>) {
    let b = brokers.to_owned();
    tokio::task::spawn_blocking(move || produce_seqs(&b, seqs))
        .await
        .unwrap();
}

/// Every user's events of `seqs`, in sequence order.
fn produce_seqs(brokers: &str, seqs: std::ops::Range<usize>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for seq in seqs {
        for user in 0..USERS {
            let key = format!("u_{user}");
            let payload = event(user, seq);
            producer
                .send(BaseRecord::to("events").key(&key).payload(&payload))
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Runs a pipeline with `config` until the events of `seqs` are decided,
/// then stops it gracefully; returns its engine and committed positions.
async fn run_until_decided(
    config: &Config,
    seqs: std::ops::Range<usize>,
) -> (Arc<Engine>, std::collections::BTreeMap<String, i64>) {
    let engine = Arc::new(Engine::load(config).unwrap());
    let pipeline = Pipeline {
        engine: engine.clone(),
        metrics: Arc::new(Metrics::new()),
        kafka: config.kafka.clone(),
        ready: Default::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { pipeline.run(s).await });
    let brokers = config.kafka.brokers.clone();
    let want: std::collections::HashSet<String> = seqs
        .clone()
        .flat_map(|seq| (0..USERS).map(move |user| format!("e-{user}-{seq:04}")))
        .collect();
    let group = format!("reader-{}-{}", seqs.start, seqs.end);
    let w = want.clone();
    let decided = tokio::task::spawn_blocking(move || {
        read_until(&brokers, "decisions", &group, |out| {
            let seen: std::collections::HashSet<&str> = out
                .iter()
                .map(|(_, d)| d["event_id"].as_str().unwrap())
                .collect();
            w.iter().all(|id| seen.contains(id.as_str()))
        })
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let positions = task.await.unwrap().unwrap();
    let seen: std::collections::HashSet<String> = decided
        .iter()
        .map(|(_, d)| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(want.is_subset(&seen), "events of {seqs:?} were not decided");
    (engine, positions)
}

/// The feature store of an uninterrupted run over the events of `seqs`.
fn uninterrupted(config: &Config, seqs: std::ops::Range<usize>) -> Arc<Engine> {
    let mut config = config.clone();
    config.features.snapshot = None;
    let engine = Arc::new(Engine::load(&config).unwrap());
    for seq in seqs {
        for user in 0..USERS {
            let e = event(user, seq);
            engine
                .prepare(e.as_bytes(), || unreachable!("valid"), Instant::now())
                .unwrap();
        }
    }
    engine
}

fn entities(engine: &Engine) -> std::collections::BTreeMap<(usize, Box<str>), Vec<u8>> {
    engine.feature_store().unwrap().encoded_entities()
}

/// Features are caught up before an assigned partition is decided on:
/// after a crash, the events between the restored snapshot and the
/// committed offsets are read again into the store; on a partition the
/// instance never held, the events its windows still cover. Either way the
/// store ends exactly as an uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_catch_up_after_a_crash_and_on_partitions_never_held() {
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&brokers);
    config.features.snapshot = Some(state.path().join("features.arrow"));

    // Decided, committed, and snapshotted at the committed offsets on a
    // graceful stop.
    produce(&brokers, 0..10).await;
    let (engine, positions) = run_until_decided(&config, 0..10).await;
    engine.snapshot_features(&positions).unwrap();
    drop(engine);

    // Decided and committed by an instance that then dies: no snapshot.
    produce(&brokers, 10..20).await;
    let (crashed, _) = run_until_decided(&config, 10..20).await;
    drop(crashed);

    // The restart restores the snapshot, which lacks 10..20: they are read
    // again into the features before 20..25 are decided.
    produce(&brokers, 20..25).await;
    let (restarted, _) = run_until_decided(&config, 20..25).await;
    assert_eq!(
        entities(&restarted),
        entities(&uninterrupted(&config, 0..25)),
        "the restarted store differs from an uninterrupted run's"
    );
    drop(restarted);

    // An instance with no snapshot at all receives the partitions: it
    // rebuilds their features from the log.
    let mut fresh = config.clone();
    fresh.features.snapshot = None;
    produce(&brokers, 25..30).await;
    let (rebuilt, _) = run_until_decided(&fresh, 25..30).await;
    assert_eq!(
        entities(&rebuilt),
        entities(&uninterrupted(&config, 0..30)),
        "the rebuilt store differs from an uninterrupted run's"
    );
}
