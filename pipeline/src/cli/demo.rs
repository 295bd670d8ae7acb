//! `verdict demo`: the main job on an embedded default.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster) holds the
//! events, decisions and dead-letter topics; the traffic generator produces
//! labelled events to it at a steady wall-clock rate; the very pipeline of
//! `verdict run` consumes, decides and produces; and a watcher reads the
//! decisions back like a downstream application, printing a live progress
//! line and a summary at the end. `/metrics` and the analysts' workbench
//! (with demo logins) are served while it runs.
//!
//! It is not a load test: the mock broker lives in this process and shares
//! its cores. `benches/` measures throughput.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;
use crate::service::{Service, shutdown_signal};
use verdict_gen::{GenConfig, Generator};

/// Run the whole pipeline on an embedded broker with generated traffic.
///
/// Starts an in-process Kafka-protocol broker, produces synthetic
/// consumer-credit traffic (with labelled fraud scenarios and a share of
/// malformed events) at `--rate` events per second, decides it with the
/// configured schema, features, model and rules exactly as `verdict run`
/// would, and reads the decisions back. Prints a progress line every second
/// and a summary (decisions by outcome, latency percentiles, how each fraud
/// scenario was decided) at the end. Stops after `--duration` seconds or on
/// Ctrl-C. The analysts' workbench is served meanwhile on the same address
/// (`/workbench/`, logins printed at the start), its rule-set versions on
/// the embedded broker.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub engine: crate::config::EngineOverrides,
    /// Events per second the generator produces (wall clock).
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// How long traffic is produced, in seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Partitions of the events topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Share of generated events that belong to a fraud scenario (0–1).
    #[arg(long, default_value_t = 0.05)]
    pub fraud_rate: f64,
    /// Where `/metrics` and the workbench are served (overrides `[http]
    /// listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Leave out the analysts' workbench (on by default in the demo, with
    /// demo logins, its versions on the embedded broker, and a decision
    /// log in a temporary folder for its backtests).
    #[arg(long)]
    pub no_workbench: bool,
}

/// The demo's logins: each user's password is its name + `-demo`.
const DEMO_USERS: [(&str, verdict_workbench::Role); 3] = [
    ("analyst", verdict_workbench::Role::Analyst),
    ("approver", verdict_workbench::Role::Approver),
    ("admin", verdict_workbench::Role::Admin),
];

/// The workbench of the demo, in `dir`: its record, its versions on the
/// embedded broker (topic `verdict.rulesets`), and, unless one is
/// configured, a decision log that its backtests read.
fn demo_workbench(config: &mut Config, dir: &std::path::Path, brokers: &str) -> Result<()> {
    use verdict_workbench::config::{KafkaVersionsConfig, UserConfig};
    let users = DEMO_USERS
        .iter()
        .map(|(name, role)| UserConfig {
            name: (*name).into(),
            role: *role,
            password_hash: verdict_workbench::hash_password(&format!("{name}-demo")),
        })
        .collect();
    let mut wb = verdict_workbench::WorkbenchConfig::new(dir.join("workbench"), users);
    wb.versions.kafka = Some(KafkaVersionsConfig {
        brokers: brokers.into(),
        topic: DEMO_VERSIONS_TOPIC.into(),
        replication: 1,
        properties: Default::default(),
    });
    config.workbench = Some(wb);
    if config.history.is_none() {
        // Files close every few seconds, so a backtest sees the traffic
        // decided so far.
        config.history = Some(
            serde_json::from_value(serde_json::json!({
                "location": dir.join("decisions").to_string_lossy(),
                "instance": "demo",
                "file_max_age_secs": 5,
            }))
            .context("the demo's decision log")?,
        );
    }
    Ok(())
}

const DEMO_VERSIONS_TOPIC: &str = "verdict.rulesets";

/// What the demo says of its workbench: the address and the logins.
fn workbench_lines(addr: std::net::SocketAddr) -> String {
    let mut s = format!("  workbench     http://{addr}/workbench/  (logins:");
    for (i, (name, _)) in DEMO_USERS.iter().enumerate() {
        s += &format!("{} {name} / {name}-demo", if i == 0 { "" } else { "," });
    }
    s += ")";
    s
}

/// What the watcher has read back so far.
#[derive(Default)]
struct Tally {
    decisions: u64,
    dead_letters: u64,
    by_outcome: [u64; 3],
    degraded: u64,
    /// `latency_us` of every decision read.
    latencies: Vec<u32>,
    /// Index into `latencies` where the current progress interval starts.
    interval_start: usize,
    /// Outcome counts per generated label.
    by_label: HashMap<&'static str, [u64; 3]>,
}

fn outcome_index(s: &str) -> Option<usize> {
    match s {
        "approve" => Some(0),
        "review" => Some(1),
        "deny" => Some(2),
        _ => None,
    }
}

/// The labels of produced events, by event sequence number (`e-00000042`
/// is 42), so the summary can say how each scenario was decided.
type Labels = Arc<Mutex<Vec<&'static str>>>;

fn sequence_of(event_id: &str) -> Option<usize> {
    event_id.strip_prefix("e-")?.parse().ok()
}

/// `verdict demo`.
pub fn run(args: DemoArgs) -> Result<std::process::ExitCode> {
    let mut config: Config = args.engine.load()?;
    if let Some(listen) = &args.listen {
        config.http.listen.clone_from(listen);
    }
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1 event per second");
    anyhow::ensure!(
        args.partitions > 0,
        "--partitions must be at least 1 (got {})",
        args.partitions
    );
    let generator = Generator::try_new(GenConfig {
        seed: args.seed,
        fraud_rate: args.fraud_rate,
        ..GenConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("invalid traffic settings: {}", e.0))?;

    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    let k = &config.kafka;
    for (topic, partitions) in [
        (&k.events_topic, args.partitions),
        (&k.decisions_topic, args.partitions),
        (&k.dead_letters_topic, 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create topic {topic} on the embedded broker"))?;
    }
    let brokers = cluster.bootstrap_servers();
    config.kafka.brokers.clone_from(&brokers);
    // Kept until the demo ends: the workbench's record and decision log.
    let scratch = tempfile::Builder::new()
        .prefix("verdict-demo-")
        .tempdir()
        .context("cannot make the demo's temporary folder")?;
    let workbench = !args.no_workbench && config.workbench.is_none();
    if workbench {
        cluster
            .create_topic(DEMO_VERSIONS_TOPIC, 1, 1)
            .context("cannot create the rule-set versions topic on the embedded broker")?;
        demo_workbench(&mut config, scratch.path(), &brokers)?;
    }
    // Small batches keep the demo's latency representative of a tuned
    // deployment rather than of the default linger.
    config
        .kafka
        .producer_properties
        .entry("linger.ms".into())
        .or_insert_with(|| "1".into());
    tracing::info!(%brokers, partitions = args.partitions, rate = args.rate, "embedded broker started");

    let service = Service::load(&config, &std::env::current_exe()?)?;
    let pipeline = service.pipeline(config.kafka.clone());
    let history_timeout = Duration::from_millis(config.kafka.shutdown_timeout_ms.max(5_000));
    let service = Arc::new(service);
    let serving = service.clone();

    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let summary = rt.block_on(async move {
        let service = serving;
        let addr = service.serve_http(&config).await.map_err(|e| {
            e.context("choose another address with --listen")
        })?;
        service.start_reporters();
        eprintln!("verdict demo: metrics at http://{addr}/metrics; Ctrl-C stops");
        if workbench {
            eprintln!("{}", workbench_lines(addr));
            if args.duration > 0 {
                eprintln!(
                    "  (the demo stops after {} s: `--duration 0` keeps it, and the workbench, running until Ctrl-C)",
                    args.duration
                );
            }
        }

        let interrupted = Arc::new(AtomicBool::new(false));
        let i = interrupted.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            i.store(true, Ordering::Relaxed);
        });

        let stop_pipeline = Arc::new(AtomicBool::new(false));
        let s = stop_pipeline.clone();
        let pipeline_task = tokio::spawn(async move { pipeline.run(s).await });

        let produced = Arc::new(AtomicU64::new(0));
        let stop_producing = Arc::new(AtomicBool::new(false));
        let labels: Labels = Arc::default();
        let producer = {
            let (brokers, topic) = (brokers.clone(), config.kafka.events_topic.clone());
            let (produced, stop, labels) =
                (produced.clone(), stop_producing.clone(), labels.clone());
            let rate = args.rate;
            std::thread::Builder::new()
                .name("demo-traffic".into())
                .spawn(move || produce(&brokers, &topic, generator, rate, &produced, &stop, &labels))
                .context("cannot start the traffic thread")?
        };

        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop_watching = Arc::new(AtomicBool::new(false));
        let watcher = {
            let brokers = brokers.clone();
            let topics = [
                config.kafka.decisions_topic.clone(),
                config.kafka.dead_letters_topic.clone(),
            ];
            let (tally, stop, labels) = (tally.clone(), stop_watching.clone(), labels.clone());
            std::thread::Builder::new()
                .name("demo-watcher".into())
                .spawn(move || watch(&brokers, &topics, &tally, &stop, &labels))
                .context("cannot start the watcher thread")?
        };

        let started = Instant::now();
        let progress = Progress::new();
        let mut last_tick = Instant::now();
        let mut last_counts = (0u64, 0u64);
        let deadline = (args.duration > 0).then(|| Duration::from_secs(args.duration));
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if pipeline_task.is_finished() {
                break;
            }
            let done = interrupted.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| started.elapsed() >= d);
            if done {
                break;
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                let dt = last_tick.elapsed().as_secs_f64();
                last_tick = Instant::now();
                let p = produced.load(Ordering::Relaxed);
                let mut t = tally.lock().expect("tally lock");
                let decided = t.decisions + t.dead_letters;
                let line = format!(
                    "[{:>4}s] produced {p} ({:.0}/s) · decided {} ({:.0}/s) · approve {} review {} deny {} · dead letters {} · p50 {} p99 {}",
                    started.elapsed().as_secs(),
                    (p - last_counts.0) as f64 / dt,
                    decided,
                    (decided - last_counts.1) as f64 / dt,
                    t.by_outcome[0],
                    t.by_outcome[1],
                    t.by_outcome[2],
                    t.dead_letters,
                    fmt_us(percentile_since(&t, 0.50)),
                    fmt_us(percentile_since(&t, 0.99)),
                );
                let n = t.latencies.len();
                t.interval_start = n;
                drop(t);
                last_counts = (p, decided);
                progress.line(&line);
            }
        }
        progress.finish();

        // Stop the traffic, then wait until everything produced is decided.
        stop_producing.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || producer.join()).await;
        let total = produced.load(Ordering::Relaxed);
        let drain_until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < drain_until && !pipeline_task.is_finished() {
            let accounted = {
                let t = tally.lock().expect("tally lock");
                t.decisions + t.dead_letters
            };
            if accounted >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_pipeline.store(true, Ordering::Relaxed);
        let pipeline_result = pipeline_task.await.context("the pipeline task failed")?;
        stop_watching.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
        pipeline_result?;
        let elapsed = started.elapsed();
        let t = std::mem::take(&mut *tally.lock().expect("tally lock"));
        let (mut text, complete) = summarise(total, t, elapsed);
        if workbench {
            text.push('\n');
            text += &workbench_lines(addr);
        }
        anyhow::Ok((text, complete))
    });
    // In order: the tasks (the workbench's among them), the decision log's
    // last file, the workbench's reader of the versions topic, then the
    // broker and the temporary folder they use.
    drop(rt);
    service.close_history(history_timeout);
    drop(service);
    drop(cluster);
    drop(scratch);
    let (text, complete) = summary?;
    println!("{text}");
    Ok(if complete {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Produces generated events at `rate` per second until `stop`.
fn produce(
    brokers: &str,
    topic: &str,
    mut generator: Generator,
    rate: u32,
    produced: &AtomicU64,
    stop: &AtomicBool,
    labels: &Mutex<Vec<&'static str>>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the demo's traffic producer");
            return;
        }
    };
    const TICK: Duration = Duration::from_millis(10);
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let g = generator.next_event();
            let mut record = BaseRecord::to(topic).payload(&g.bytes);
            if !g.key.is_empty() {
                record = record.key(&g.key);
            }
            // The label is known before the decision can come back.
            labels.lock().expect("labels lock").push(g.label);
            // A full local queue is waited out, never skipped: every
            // generated event is produced.
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, returned)) => {
                        if stop.load(Ordering::Relaxed) {
                            return flush(&producer);
                        }
                        tracing::debug!(error = %e, "traffic producer queue full");
                        std::thread::sleep(TICK);
                        record = returned;
                    }
                }
            }
            sent += 1;
            produced.store(sent, Ordering::Relaxed);
        }
        std::thread::sleep(TICK);
    }
    flush(&producer);
}

fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "traffic producer did not flush");
    }
}

/// Reads decisions and dead letters back until `stop`.
fn watch(
    brokers: &str,
    topics: &[String; 2],
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
    labels: &Mutex<Vec<&'static str>>,
) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "verdict-demo-watcher")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the demo's watcher");
            return;
        }
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&names) {
        tracing::error!(error = %e, "the demo's watcher cannot subscribe");
        return;
    }
    #[derive(serde::Deserialize)]
    struct Seen<'a> {
        #[serde(borrow)]
        event_id: &'a str,
        decision: &'a str,
        latency_us: u64,
        degraded: bool,
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let payload = m.payload().unwrap_or_default();
        let mut t = tally.lock().expect("tally lock");
        if m.topic() == topics[1] {
            t.dead_letters += 1;
            continue;
        }
        let Ok(seen) = serde_json::from_slice::<Seen>(payload) else {
            continue;
        };
        let Some(i) = outcome_index(seen.decision) else {
            continue;
        };
        t.decisions += 1;
        t.by_outcome[i] += 1;
        t.degraded += u64::from(seen.degraded);
        t.latencies
            .push(seen.latency_us.min(u64::from(u32::MAX)) as u32);
        let label = sequence_of(seen.event_id)
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| labels.lock().expect("labels lock").get(i).copied());
        if let Some(label) = label {
            t.by_label.entry(label).or_default()[i] += 1;
        }
    }
}

fn percentile_since(t: &Tally, q: f64) -> Option<u32> {
    let start = t.interval_start.min(t.latencies.len());
    let mut window: Vec<u32> = t.latencies[start..].to_vec();
    percentile(&mut window, q)
}

fn percentile(values: &mut [u32], q: f64) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    Some(values[i])
}

fn fmt_us(us: Option<u32>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000 => format!("{us}µs"),
        Some(us) => format!("{:.1}ms", f64::from(us) / 1_000.0),
    }
}

/// The end-of-run report, and whether every produced event was accounted
/// for.
fn summarise(produced: u64, mut t: Tally, elapsed: Duration) -> (String, bool) {
    let accounted = t.decisions + t.dead_letters;
    let complete = accounted == produced;
    let mut s = String::new();
    let secs = elapsed.as_secs_f64().max(1e-9);
    s += &format!(
        "verdict demo: {produced} events produced in {secs:.1}s ({:.0}/s)\n",
        produced as f64 / secs
    );
    s += &format!(
        "  decisions     {:>9}  approve {} · review {} · deny {}{}\n",
        t.decisions,
        t.by_outcome[0],
        t.by_outcome[1],
        t.by_outcome[2],
        if t.degraded > 0 {
            format!(" · degraded {}", t.degraded)
        } else {
            String::new()
        }
    );
    s += &format!("  dead letters  {:>9}\n", t.dead_letters);
    s += &format!(
        "  accounted for {:>9} of {produced}: {}\n",
        accounted,
        if complete {
            "nothing lost".to_owned()
        } else {
            format!("{} missing", produced.saturating_sub(accounted))
        }
    );
    let mut all = std::mem::take(&mut t.latencies);
    s += &format!(
        "  latency       p50 {} · p90 {} · p99 {} · max {}\n",
        fmt_us(percentile(&mut all, 0.50)),
        fmt_us(percentile(&mut all, 0.90)),
        fmt_us(percentile(&mut all, 0.99)),
        fmt_us(all.last().copied()),
    );
    let mut labels: Vec<_> = t.by_label.into_iter().collect();
    labels.sort_by_key(|(l, _)| (*l != "legit", *l));
    s += "  by ground truth (approve / review / deny):\n";
    for (label, [a, r, d]) in labels {
        s += &format!("    {label:<17} {a:>8} / {r:>6} / {d:>6}\n");
    }
    (s.trim_end().to_owned(), complete)
}

/// The live progress line: rewritten in place on a terminal, one line per
/// five seconds otherwise (logs stay readable).
struct Progress {
    tty: bool,
    printed: std::cell::Cell<u64>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            printed: std::cell::Cell::new(0),
        }
    }

    fn line(&self, line: &str) {
        let n = self.printed.get();
        self.printed.set(n + 1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else if n.is_multiple_of(5) {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty && self.printed.get() > 0 {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(51));
        assert_eq!(percentile(&mut v, 0.99), Some(99));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn summary_flags_missing_events() {
        let t = Tally {
            decisions: 9,
            ..Tally::default()
        };
        let (text, complete) = summarise(10, t, Duration::from_secs(1));
        assert!(!complete);
        assert!(text.contains("1 missing"), "{text}");
    }

    #[test]
    fn event_ids_map_to_sequence_numbers() {
        assert_eq!(sequence_of("e-00000042"), Some(42));
        assert_eq!(sequence_of("x-1"), None);
    }
}
