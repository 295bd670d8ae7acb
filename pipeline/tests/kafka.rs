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
use verdict::engine::{Engine, StreamClock};
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
        history: None,
        workbench: None,
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
        history: None,
        engine: Arc::new(Engine::load(config).unwrap()),
        metrics,
        kafka: config.kafka.clone(),
        ready: Default::default(),
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

/// One lane, offsets committed only at a handoff or a stop (no periodic
/// commit, no read-back of outputs to cover for a missing one), and the
/// cooperative assignor: what the rebalance tests look at.
fn handoff_config(brokers: &str) -> Config {
    let mut config = config(brokers);
    config.kafka.lanes = Some(1);
    config.kafka.commit_interval_ms = 3_600_000;
    config.kafka.resume_scan_max_records = 0;
    config.kafka.consumer_properties.insert(
        "partition.assignment.strategy".into(),
        "cooperative-sticky".into(),
    );
    config
}

/// A member of the group: a pipeline running on its own task.
struct Member {
    stop: Arc<AtomicBool>,
    task: Running,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

fn join(config: &Config) -> Member {
    let metrics = Arc::new(Metrics::new());
    let p = pipeline_of(config, metrics.clone());
    let ready = p.ready.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { p.run(s).await });
    Member {
        stop,
        task,
        metrics,
        ready,
    }
}

/// A second instance joining the group takes partitions over: the first
/// finishes the revoked partitions' events and their committed offsets
/// cover every event it decided before the new owner reads them. With no
/// periodic commit at all, only the handoff commits: a missing drain shows
/// as events decided twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_drains_and_loses_nothing() {
    logs();
    let (_cluster, brokers) = cluster(1, 4);
    produce_input_async(&brokers).await;

    let config = handoff_config(&brokers);
    let a = join(&config);
    // A decides everything before B arrives: every event B could decide
    // again is one A decided and must have committed at the handoff.
    let b = brokers.clone();
    tokio::task::spawn_blocking(move || read_all(&b, "decisions", USERS * PER_USER))
        .await
        .unwrap();
    let b_run = join(&config);
    // B gets partitions (however long the group takes on a busy machine);
    // then new events on every partition.
    let until = Instant::now() + Duration::from_secs(90);
    while !b_run.ready.load(Ordering::Acquire) {
        assert!(
            Instant::now() < until,
            "the second instance got no partition in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&brokers, PER_USER..PER_USER + 10).await;
    let all = USERS * (PER_USER + 10);
    let b = brokers.clone();
    let decided = tokio::task::spawn_blocking(move || {
        read_until(&b, "decisions", "reader-rebalance", |out| {
            let ids: std::collections::HashSet<&str> = out
                .iter()
                .map(|(_, d)| d["event_id"].as_str().unwrap())
                .collect();
            ids.len() >= all
        })
    })
    .await
    .unwrap();
    a.stop.store(true, Ordering::Relaxed);
    b_run.stop.store(true, Ordering::Relaxed);
    a.task.await.unwrap().unwrap();
    b_run.task.await.unwrap().unwrap();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, d) in &decided {
        *count.entry(d["event_id"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(count.len(), all, "events lost across the rebalance");
    assert!(
        metric(&b_run.metrics.render(), "verdict_decisions_total") > 0.0,
        "the second instance never held a partition: no handoff happened"
    );
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events decided again by the new owner (the handoff did not commit them), e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
}

/// An instance stopped while a second member joins the group: its last
/// commit meets the rebalance, whose revoke comes while that commit is
/// retried. The stop ends at once, without error, and every event it
/// decided is committed — the revoked partitions' part by the revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_the_group_rebalances_commits_everything() {
    logs();
    let (_cluster, brokers) = cluster(1, 4);
    produce_input_async(&brokers).await;

    let mut config = handoff_config(&brokers);
    // A revoke waits this long for a lane that does not answer.
    config.kafka.shutdown_timeout_ms = 20_000;
    let a = join(&config);
    let b = brokers.clone();
    tokio::task::spawn_blocking(move || read_all(&b, "decisions", USERS * PER_USER))
        .await
        .unwrap();
    // The second member's join takes the group into a rebalance that waits
    // for the first to rejoin; the first stops inside it.
    let b = join(&config);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    let a_result = a.task.await.unwrap();
    let took = stopping.elapsed();
    b.stop.store(true, Ordering::Relaxed);
    b.task.await.unwrap().unwrap();
    a_result.unwrap_or_else(|e| panic!("the stop failed after {took:?}: {e:#}"));
    assert!(
        took < Duration::from_millis(config.kafka.shutdown_timeout_ms),
        "the stop took {took:?}: a revoke waited for a lane busy with its last commit"
    );

    let committed = common::committed_total(&brokers, "verdict", "events", 4);
    assert_eq!(
        committed,
        (USERS * PER_USER + BAD) as i64,
        "offsets committed for every event read (stop took {took:?})"
    );
}

/// `/readyz` answers 503 until every lane holds partitions, 200 while the
/// pipeline decides, and 503 again once it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_lanes_assignments() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    logs();
    let (_cluster, brokers) = cluster(1, 3);
    let pipeline = pipeline(&brokers, Arc::new(Metrics::new()));
    let ready = pipeline.ready.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(
        listener,
        verdict::http::AppState {
            metrics: Arc::new(Metrics::new()),
            engine: Some(pipeline.engine.clone()),
            admin_token: None,
            ready,
            max_body_bytes: 4096,
            max_in_flight: 4,
            backtest: None,
        },
    ));
    let readyz = || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text[9..12].parse::<u16>().unwrap()
    };
    assert_eq!(readyz().await, 503, "not ready before the pipeline runs");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { pipeline.run(s).await });
    let until = Instant::now() + Duration::from_secs(60);
    while readyz().await != 200 {
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    assert_eq!(readyz().await, 503, "not ready once stopped");
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

/// What a pipeline run in a task returns: its committed positions.
type Running = tokio::task::JoinHandle<anyhow::Result<std::collections::BTreeMap<String, i64>>>;

/// A pipeline with `config` started in a task: its engine, the flag that
/// stops it, and the task.
fn start(config: &Config) -> (Arc<Engine>, Arc<AtomicBool>, Running) {
    let engine = Arc::new(Engine::load(config).unwrap());
    let pipeline = Pipeline {
        history: None,
        engine: engine.clone(),
        metrics: Arc::new(Metrics::new()),
        kafka: config.kafka.clone(),
        ready: Default::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move { pipeline.run(s).await });
    (engine, stop, task)
}

/// Runs a pipeline with `config` until the events of `seqs` are decided,
/// then stops it gracefully; returns its engine and committed positions.
async fn run_until_decided(
    config: &Config,
    seqs: std::ops::Range<usize>,
) -> (Arc<Engine>, std::collections::BTreeMap<String, i64>) {
    let (engine, stop, task) = start(config);
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
    let mut clock = StreamClock::new();
    for seq in seqs {
        for user in 0..USERS {
            let e = event(user, seq);
            engine
                .prepare(
                    &mut clock,
                    e.as_bytes(),
                    || unreachable!("valid"),
                    Instant::now(),
                )
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

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A group coordinator slow to answer during a rebalance: the lane whose
/// partition is revoked waits in its rebalance callback for a commit, and
/// meanwhile `POST /v1/decisions` is answered and the lane that keeps its
/// partitions goes on deciding. Shown by order, not by timing: both are
/// seen while a lane is still inside the callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_during_a_rebalance_stalls_neither_http_nor_the_other_lanes() {
    use rdkafka::mocking::MockCoordinator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    logs();
    let cluster = MockCluster::new(2).unwrap();
    for (topic, n) in [("events", 4), ("decisions", 4), ("dead-letters", 1)] {
        cluster.create_topic(topic, n, 1).unwrap();
        for p in 0..n {
            cluster.partition_leader(topic, p, Some(1)).unwrap();
        }
    }
    cluster
        .coordinator(MockCoordinator::Group("verdict".into()), 2)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut config = config(&brokers);
    config.kafka.commit_interval_ms = 100;
    config.kafka.consumer_properties = [
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "300"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    // Instance A: two lanes and the HTTP API, on this runtime.
    let metrics = Arc::new(Metrics::new());
    let a = pipeline_of(&config, metrics.clone());
    let engine = a.engine.clone();
    let ready = a.ready.clone();
    let stop_a = Arc::new(AtomicBool::new(false));
    let s = stop_a.clone();
    let a_task = tokio::spawn(async move { a.run(s).await });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(
        listener,
        verdict::http::AppState {
            metrics: metrics.clone(),
            engine: Some(engine),
            admin_token: None,
            ready: ready.clone(),
            max_body_bytes: 65536,
            max_in_flight: 64,
            backtest: None,
        },
    ));
    let until = Instant::now() + Duration::from_secs(60);
    while !ready.load(Ordering::Relaxed) {
        assert!(Instant::now() < until, "A never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Steady traffic on every partition.
    let producing = Arc::new(AtomicBool::new(true));
    let (b, p) = (brokers.clone(), producing.clone());
    let producer = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("linger.ms", "1")
            .create()
            .unwrap();
        let mut seq = 0;
        while p.load(Ordering::Relaxed) {
            for user in 0..USERS {
                let key = format!("u_{user}");
                let _ = producer.send(
                    BaseRecord::to("events")
                        .key(&key)
                        .payload(&event(user, seq)),
                );
            }
            seq = (seq + 1) % 10_000;
            producer.poll(Duration::from_millis(2));
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    });

    // The coordinator turns slow, then instance B joins: partitions move.
    cluster
        .broker_round_trip_time(2, Duration::from_millis(1500))
        .unwrap();
    let mut b_config = config.clone();
    b_config.kafka.lanes = Some(1);
    let b = pipeline_of(&b_config, Arc::new(Metrics::new()));
    let stop_b = Arc::new(AtomicBool::new(false));
    let s = stop_b.clone();
    let b_task = tokio::spawn(async move { b.run(s).await });

    // Wait for a lane of A to be inside a rebalance callback.
    let until = Instant::now() + Duration::from_secs(60);
    let in_rebalance = || metric(&metrics.render(), "verdict_lanes_in_rebalance");
    loop {
        assert!(Instant::now() < until, "no lane of A entered a rebalance");
        if in_rebalance() >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let decided_before = metric(&metrics.render(), "verdict_decisions_total");
    // The HTTP API answers meanwhile.
    let body = r#"{"event_id":"h-1","event_type":"payment","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_009991","amount":5.0}"#;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/decisions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("\"decision\":\"deny\""), "{answer}");
    let answered_inside = in_rebalance() >= 1.0;
    // And events go on being decided by the lane that is not waiting.
    let mut decided_inside = false;
    let until = Instant::now() + Duration::from_secs(60);
    while in_rebalance() >= 1.0 && Instant::now() < until {
        if metric(&metrics.render(), "verdict_decisions_total") > decided_before + 1.0 {
            decided_inside = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producing.store(false, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    cluster
        .broker_round_trip_time(2, Duration::from_millis(0))
        .unwrap();
    stop_a.store(true, Ordering::Relaxed);
    stop_b.store(true, Ordering::Relaxed);
    // Bounded, so that a lane that never finishes fails the test with
    // its name rather than hold the suite.
    let finish = Duration::from_secs(120);
    tokio::time::timeout(finish, a_task)
        .await
        .expect("instance A did not stop within 2 minutes of its stop")
        .unwrap()
        .unwrap();
    tokio::time::timeout(finish, b_task)
        .await
        .expect("instance B did not stop within 2 minutes of its stop")
        .unwrap()
        .unwrap();
    assert!(
        answered_inside,
        "the HTTP answer came only after the rebalance callback ended"
    );
    assert!(
        decided_inside,
        "no event was decided while a lane waited in its rebalance callback"
    );
}

/// `events` (user, event id, time in ms) produced to `partition`.
fn produce_to(brokers: &str, partition: i32, events: &[(&str, String, i64)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (user, id, t) in events {
        let payload = format!(
            r#"{{"event_id":"{id}","event_type":"payment","timestamp":{t},"user_id":"{user}","amount":1.0}}"#
        );
        producer
            .send(
                BaseRecord::to("events")
                    .partition(partition)
                    .key(*user)
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// One lane holds two partitions whose event times are a day apart: the
/// partition behind is judged by its own order, so none of its events is
/// "too late" because the other partition ran ahead — while an event a day
/// older than the one before it in its own partition still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_is_judged_per_partition_not_by_the_partition_ahead() {
    logs();
    let (_cluster, brokers) = cluster(1, 2);
    let mut config = config(&brokers);
    config.kafka.lanes = Some(1);
    let (engine, stop, task) = start(&config);
    const T: i64 = 1_764_000_000_000;
    const DAY: i64 = 86_400_000;
    let ahead: Vec<_> = (0..5)
        .map(|i| ("u_ahead", format!("ahead-{i}"), T + DAY + i * 1_000))
        .collect();
    let behind: Vec<_> = (0..5)
        .map(|i| ("u_behind", format!("behind-{i}"), T + i * 1_000))
        .collect();
    let b = brokers.clone();
    let decided = tokio::task::spawn_blocking(move || {
        // The partition ahead is decided first, then the one behind.
        produce_to(&b, 1, &ahead);
        read_until(&b, "decisions", "reader-ahead", |out| out.len() >= 5);
        produce_to(&b, 0, &behind);
        read_until(&b, "decisions", "reader-behind", |out| out.len() >= 10);
        // In the partition behind, an event a day older than its last.
        produce_to(&b, 0, &[("u_behind", "behind-old".into(), T - DAY)]);
        read_until(&b, "decisions", "reader-old", |out| out.len() >= 11)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap().unwrap();
    assert_eq!(decided.len(), 11, "{decided:?}");
    let stats = engine.feature_stats().unwrap();
    assert_eq!(
        stats.late_events, 1,
        "only the event late in its own partition is too late"
    );
}
