//! End to end on an in-process Kafka-protocol broker (librdkafka's mock
//! cluster; a tansu process with `E2E_TANSU`), one long run per figure
//! rather than criterion samples.
//!
//! Throughput is the rate of output records between the tenth and the
//! ninetieth percentile of their timestamps (set when the service hands
//! each to its producer), so the consumer group's join and rebalances
//! (seconds, on any broker) do not count.
//!
//! 1. **Pass-through**: a raw rdkafka consume → produce of the generated
//!    events, as many consumers as Verdict has lanes (each assigned its
//!    share of the partitions, no group protocol), with the
//!    same producer guarantees (`acks=all`, idempotent) and batching: the
//!    ceiling any Kafka service on this machine can reach.
//! 2. **Verdict**: the same events through `verdict run`'s pipeline with the
//!    shipped configuration (parse, features, model, rules; outputs
//!    produced and offsets committed after acknowledgement).
//! 3. **Latency at half load**: events produced at half the pass-through
//!    rate, then at half Verdict's own throughput, while Verdict decides
//!    them; `latency_us` percentiles of the decisions (read → handed to the
//!    producer, as the contract defines it).
//!
//! ```sh
//! cargo bench -p verdict-benches --bench e2e            # 200,000 events
//! # the same on a real broker process (tansu, as the end-to-end test uses)
//! E2E_TANSU=.verdict/bin/tansu cargo bench -p verdict-benches --bench e2e
//! # more events: the mock cluster keeps only the newest 100,000 records or
//! # 5 MB of each partition, so beyond 200,000 use tansu
//! E2E_TANSU=.verdict/bin/tansu EVENTS=1000000 cargo bench -p verdict-benches --bench e2e
//! # latency at more rates than the two above
//! LATENCY_RATES=5000,20000,50000 cargo bench -p verdict-benches --bench e2e
//! # only those
//! E2E_LATENCY_ONLY=1 LATENCY_RATES=20000 cargo bench -p verdict-benches --bench e2e
//! ```
//!
//! Every phase has its own cluster; the generator, the broker, the reader
//! and the service share the machine's cores, so the figures are a ratio
//! more than an absolute.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use verdict::config::Config;
use verdict::engine::Engine;
use verdict::kafka::Pipeline;
use verdict::metrics::Metrics;
use verdict_gen::{GenConfig, Generator};

const PARTITIONS: i32 = 4;

/// The most events a run on librdkafka's mock cluster can take whole.
const MOCK_MAX_EVENTS: usize = 200_000;

fn events(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut generator = Generator::new(GenConfig::default());
    (0..n)
        .map(|_| {
            let g = generator.next_event();
            (g.key.into_bytes(), g.bytes)
        })
        .collect()
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &[u8], payload: &[u8]) {
    let mut record = BaseRecord::to(topic).payload(payload);
    if !key.is_empty() {
        record = record.key(key);
    }
    while let Err((e, r)) = p.send(record) {
        assert!(
            matches!(
                e,
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull
                )
            ),
            "cannot produce to {topic}: {e}"
        );
        record = r;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn preload(brokers: &str, events: &[(Vec<u8>, Vec<u8>)]) {
    let p = producer(brokers);
    for (k, v) in events {
        send(&p, "events", k, v);
    }
    p.flush(Duration::from_secs(120)).expect("preload flushed");
}

/// The broker of one phase, dropped (stopped) at its end.
enum Broker {
    Mock(#[allow(dead_code)] MockCluster<'static, DefaultProducerContext>),
    Tansu(std::process::Child),
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh broker with the events topic and `outputs`: librdkafka's mock
/// cluster, or a tansu process when `E2E_TANSU` names its binary.
fn cluster(outputs: &[&str]) -> (Broker, String) {
    let topics = std::iter::once("events").chain(outputs.iter().copied());
    let Ok(tansu) = std::env::var("E2E_TANSU") else {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        for t in topics {
            cluster.create_topic(t, PARTITIONS, 1).expect("a topic");
        }
        let brokers = cluster.bootstrap_servers();
        return (Broker::Mock(cluster), brokers);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tansu starts");
    let broker = Broker::Tansu(child);
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in topics {
        let partitions = PARTITIONS.to_string();
        let status = std::process::Command::new(&tansu)
            .args([
                "topic",
                "create",
                "--broker",
                &url,
                "--partitions",
                &partitions,
                t,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success(), "cannot create topic {t}");
    }
    (broker, format!("127.0.0.1:{port}"))
}

/// What a reader saw: how many records, and the first and last of their
/// timestamps (set when the service handed each to its producer).
struct Arrivals {
    count: u64,
    stamps: Vec<i64>,
}

impl Arrivals {
    /// Records per second between the tenth and the ninetieth percentile of
    /// the outputs' timestamps: the steady rate, without the consumer
    /// group's join and rebalances at the start or the stragglers at the
    /// end.
    fn rate(&mut self) -> f64 {
        self.stamps.sort_unstable();
        let n = self.stamps.len();
        let (lo, hi) = (n / 10, n * 9 / 10);
        let span = (self.stamps[hi] - self.stamps[lo]).max(1) as f64 / 1000.0;
        (hi - lo) as f64 / span
    }
}

/// Counts records arriving on `topics` until `want`, calling `each` on
/// every payload; returns when they are all there.
fn read(
    brokers: &str,
    topics: &[&str],
    want: u64,
    mut each: impl FnMut(&[u8]),
    deadline: Duration,
) -> Arrivals {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader");
    consumer.subscribe(topics).expect("subscribed");
    let until = Instant::now() + deadline;
    let mut seen = Arrivals {
        count: 0,
        stamps: Vec::with_capacity(want.min(1 << 24) as usize),
    };
    while seen.count < want && Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            each(m.payload().unwrap_or_default());
            if let Some(ts) = m.timestamp().to_millis() {
                seen.stamps.push(ts);
            }
            seen.count += 1;
        }
    }
    seen
}

fn lanes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The raw pass-through: events/s.
fn pass_through(events: &[(Vec<u8>, Vec<u8>)]) -> f64 {
    let (_cluster, brokers) = cluster(&["out"]);
    preload(&brokers, events);
    let stop = Arc::new(AtomicBool::new(false));
    let lanes = lanes();
    let workers: Vec<_> = (0..lanes)
        .map(|w| {
            let (brokers, stop) = (brokers.clone(), stop.clone());
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", "pass-through")
                    .set("enable.auto.commit", "true")
                    .create()
                    .expect("a consumer");
                // Partitions dealt out without a group protocol: no join, no
                // rebalance, the best case.
                let mut tpl = rdkafka::TopicPartitionList::new();
                for p in (0..PARTITIONS).filter(|p| *p as usize % lanes == w) {
                    tpl.add_partition_offset("events", p, rdkafka::Offset::Beginning)
                        .expect("a partition");
                }
                consumer.assign(&tpl).expect("assigned");
                let p = producer(&brokers);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                        send(
                            &p,
                            "out",
                            m.key().unwrap_or_default(),
                            m.payload().unwrap_or_default(),
                        );
                    }
                }
                let _ = p.flush(Duration::from_secs(30));
            })
        })
        .collect();
    let mut got = read(
        &brokers,
        &["out"],
        events.len() as u64,
        |_| {},
        Duration::from_secs(600),
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    assert_eq!(
        got.count,
        events.len() as u64,
        "the pass-through lost events"
    );
    got.rate()
}

fn config(brokers: &str) -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config = Config::load(&root.join("verdict.toml")).expect("verdict.toml loads");
    config.kafka.brokers = brokers.to_owned();
    config.engine.rules_watch_ms = 0;
    config
}

/// Runs Verdict's pipeline on `brokers` while `body` runs; returns what
/// `body` returns.
fn with_pipeline<T>(brokers: &str, body: impl FnOnce(&AtomicBool) -> T) -> T {
    let config = config(brokers);
    let engine = Arc::new(Engine::load(&config).expect("the engine loads"));
    let metrics = Arc::new(Metrics::new());
    engine.attach_metrics(metrics.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let pipeline = Pipeline {
        history: None,
        engine,
        metrics: metrics.clone(),
        kafka: config.kafka.clone(),
        ready: ready.clone(),
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = rt.spawn(async move { pipeline.run(s).await });
    let out = body(&ready);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(task)
        .expect("the pipeline task")
        .expect("the pipeline stops cleanly");
    let rendered = metrics.render();
    report_model(&rendered);
    if let Some(path) = std::env::var_os("E2E_METRICS") {
        let _ = std::fs::write(path, &rendered);
    }
    out
}

/// The model's mean batch size and deadline misses, from the metrics.
fn report_model(metrics: &str) {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        value("verdict_model_batch_size_sum"),
        value("verdict_model_batch_size_count"),
    );
    eprintln!(
        "e2e:   model: {count:.0} batches, mean {:.1} events, {:.0} past the deadline",
        sum / count.max(1.0),
        value("verdict_model_timeouts_total"),
    );
}

/// Verdict on preloaded events: events/s.
fn verdict_throughput(events: &[(Vec<u8>, Vec<u8>)]) -> f64 {
    let (_cluster, brokers) = cluster(&["decisions", "dead-letters"]);
    preload(&brokers, events);
    let mut got = with_pipeline(&brokers, |_| {
        read(
            &brokers,
            &["decisions", "dead-letters"],
            events.len() as u64,
            |_| {},
            Duration::from_secs(600),
        )
    });
    assert_eq!(got.count, events.len() as u64, "Verdict lost events");
    got.rate()
}

/// Verdict at `rate` events/s for `secs`: (p50, p99, max) of latency_us.
fn verdict_latency(events: &[(Vec<u8>, Vec<u8>)], rate: f64, secs: u64) -> (u64, u64, u64, u64) {
    let (_cluster, brokers) = cluster(&["decisions", "dead-letters"]);
    let n = ((rate * secs as f64) as usize).min(events.len());
    let produced = Arc::new(AtomicU64::new(0));
    let mut latencies = with_pipeline(&brokers, |ready| {
        // Let the lanes join the group (`/readyz`) before the clock starts.
        let joined = Instant::now();
        while !ready.load(Ordering::Relaxed) && joined.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let feeder = {
            let (brokers, produced) = (brokers.clone(), produced.clone());
            let events = events[..n].to_vec();
            std::thread::spawn(move || {
                let p = producer(&brokers);
                let started = Instant::now();
                for (i, (k, v)) in events.iter().enumerate() {
                    let due = Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    send(&p, "events", k, v);
                    produced.fetch_add(1, Ordering::Relaxed);
                }
                let _ = p.flush(Duration::from_secs(30));
            })
        };
        let mut latencies = Vec::with_capacity(n);
        read(
            &brokers,
            &["decisions", "dead-letters"],
            n as u64,
            |payload| {
                if let Ok(d) = serde_json::from_slice::<serde_json::Value>(payload)
                    && let Some(l) = d["latency_us"].as_u64()
                {
                    latencies.push(l);
                }
            },
            Duration::from_secs(secs + 30),
        );
        let _ = feeder.join();
        latencies
    });
    assert!(
        !latencies.is_empty(),
        "no decision arrived at {rate:.0} events/s"
    );
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (latencies.len() as u64, at(0.5), at(0.99), at(1.0))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // target too, unoptimised, where its figures would mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("e2e: a benchmark; run it with cargo bench -p verdict-benches --bench e2e");
        return;
    }
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    if n > MOCK_MAX_EVENTS && std::env::var_os("E2E_TANSU").is_none() {
        eprintln!(
            "e2e: EVENTS={n} is more than the mock cluster keeps ({MOCK_MAX_EVENTS}: it drops \
             the oldest records of a partition past 100,000 or 5 MB); set E2E_TANSU to run \
             that many on tansu"
        );
        std::process::exit(2);
    }
    eprintln!("e2e: generating {n} events");
    let events = events(n);
    let mut rates = Vec::new();
    // Only the latency at LATENCY_RATES: E2E_LATENCY_ONLY=1
    if std::env::var_os("E2E_LATENCY_ONLY").is_none() {
        let raw = pass_through(&events);
        eprintln!("e2e: raw pass-through   {raw:>9.0} events/s");
        let verdict = verdict_throughput(&events);
        eprintln!(
            "e2e: verdict            {verdict:>9.0} events/s ({:.0}% of the pass-through)",
            100.0 * verdict / raw
        );
        rates.push((raw / 2.0, "half the pass-through".to_owned()));
        rates.push((verdict / 2.0, "half Verdict's own throughput".to_owned()));
    }
    // More points of the latency curve: LATENCY_RATES=5000,20000,50000
    if let Ok(extra) = std::env::var("LATENCY_RATES") {
        for r in extra
            .split(',')
            .filter_map(|r| r.trim().parse::<f64>().ok())
        {
            rates.push((r, "LATENCY_RATES".to_owned()));
        }
    }
    for (rate, what) in rates {
        let (count, p50, p99, max) = verdict_latency(&events, rate, 10);
        eprintln!(
            "e2e: at {rate:.0} events/s ({what}) for 10 s: {count} decisions, \
             latency p50 {p50} µs, p99 {p99} µs, max {max} µs"
        );
    }
}
