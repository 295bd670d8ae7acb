//! A `verdict run` process killed with SIGKILL mid-stream — no drain, no
//! last commit, a transaction left open — and a successor started in its
//! place: every event ends with exactly one decision or dead letter, in
//! at-least-once and in exactly-once mode.
//!
//! The successor resumes after the last output of each partition (see
//! `kafka/resume.rs`), so what the killed instance decided but never
//! committed is not decided again. On librdkafka's mock cluster, which
//! keeps no transactional offsets and shows open and aborted transactions
//! to every reader, the reader here sees every record written; on a
//! broker with transactions a `read_committed` reader would not see the
//! killed transaction's records, and the successor (reading back
//! `read_committed` too) decides those events again — once either way.
//!
//! `scripts/soak-crash.sh` repeats these tests and prints the tally.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const EVENTS: usize = 3_000;
const BAD_EVERY: usize = 97;

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Event `i`: a valid event, or every `BAD_EVERY`th a malformed one that
/// names `i` (its dead letter carries it back).
fn payload(i: usize) -> String {
    if i.is_multiple_of(BAD_EVERY) {
        format!("{{bad {i}")
    } else {
        format!(
            r#"{{"event_id":"c-{i}","event_type":"payment","timestamp":{},"user_id":"u_{}","amount":{}.5}}"#,
            1_764_000_000_000u64 + i as u64 * 250,
            i % 31,
            i % 700
        )
    }
}

/// Which event an output is for.
fn event_of(topic: &str, record: &serde_json::Value) -> usize {
    let text = if topic == "decisions" {
        record["event_id"]
            .as_str()
            .unwrap()
            .strip_prefix("c-")
            .unwrap()
    } else {
        record["original"]
            .as_str()
            .unwrap()
            .strip_prefix("{bad ")
            .unwrap()
    };
    text.parse().unwrap()
}

/// How far the producer may run ahead of the outputs while the first
/// instance lives: however slowly that instance starts, it cannot decide
/// the whole stream before the test kills it.
const AHEAD: i64 = 400;

/// Produces every event at about `per_second` (wall clock), so that the
/// stream is still flowing when an instance is killed, and never more than
/// `AHEAD` events past the outputs written until `killed` is set.
fn produce_all(brokers: &str, per_second: u64, killed: &AtomicBool) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let reader = watermark_reader(brokers);
    let mut started = Instant::now();
    let mut paced_from = 0;
    for i in 0..EVENTS {
        if i % 50 == 0 && !killed.load(Ordering::Acquire) {
            let mut held = false;
            while !killed.load(Ordering::Acquire) && i as i64 - written(&reader) > AHEAD {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(20));
                held = true;
            }
            if held {
                // Resume at the pace, not in a burst to catch up.
                started = Instant::now();
                paced_from = i;
            }
        }
        let due = started + Duration::from_secs_f64((i - paced_from) as f64 / per_second as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
            producer.poll(Duration::ZERO);
        }
        let key = format!("u_{}", i % 31);
        let p = payload(i);
        loop {
            match producer.send(BaseRecord::to("events").key(&key).payload(&p)) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(10)),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Outputs on both topics, per event, read from the start to the current
/// end of every partition.
fn outputs(brokers: &str) -> HashMap<usize, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "crash-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for topic in ["decisions", "dead-letters"] {
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap()
            .topics()[0]
            .partitions()
            .len();
        for p in 0..partitions as i32 {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            if high > 0 {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
                open += 1;
            }
        }
    }
    let mut seen = HashMap::new();
    if open == 0 {
        return seen;
    }
    consumer.assign(&tpl).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while open > 0 && Instant::now() < until {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let record: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap()).unwrap();
                *seen.entry(event_of(m.topic(), &record)).or_insert(0) += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            _ => {}
        }
    }
    seen
}

/// How many records the output topics hold (cheap: their end offsets).
fn outputs_written(brokers: &str) -> i64 {
    written(&watermark_reader(brokers))
}

fn watermark_reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

fn written(consumer: &BaseConsumer) -> i64 {
    let mut n = 0;
    for (topic, partitions) in [("decisions", 3), ("dead-letters", 1)] {
        for p in 0..partitions {
            n += consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(_, high)| high);
        }
    }
    n
}

fn verdict_run(brokers: &str, exactly_once: bool, log: &std::path::Path) -> Guard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["run", "--config", "verdict.toml"])
        .env("VERDICT_KAFKA__BROKERS", brokers)
        .env("VERDICT_HTTP__LISTEN", "127.0.0.1:0")
        .env("VERDICT_KAFKA__LANES", "2")
        // Explanations (exact TreeSHAP on every review and deny) cost a
        // debug build milliseconds each; these tests are about delivery.
        .env("VERDICT_MODEL__EXPLAIN__TOP", "0")
        // Commits far enough apart that a kill finds decided events whose
        // offsets are not committed yet.
        .env("VERDICT_KAFKA__COMMIT_INTERVAL_MS", "1000")
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS",
            "3000",
        )
        .env(
            "VERDICT_KAFKA__CONSUMER_PROPERTIES__HEARTBEAT.INTERVAL.MS",
            "300",
        )
        .env("RUST_LOG", "info,verdict=debug")
        .stderr(std::fs::File::create(log).unwrap());
    if exactly_once {
        cmd.env("VERDICT_KAFKA__EXACTLY_ONCE", "true")
            .env("VERDICT_KAFKA__TRANSACTIONAL_ID", "verdict-crash-test");
    }
    Guard(cmd.stdout(Stdio::null()).spawn().unwrap())
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn killed_mid_stream(exactly_once: bool) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    cluster.create_topic("decisions", 3, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let b = brokers.clone();
    let killed = Arc::new(AtomicBool::new(false));
    let k = killed.clone();
    let producing = std::thread::spawn(move || produce_all(&b, 500, &k));
    let dir = tempfile::tempdir().unwrap();
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));

    let mut first = verdict_run(&brokers, exactly_once, &first_log);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let decided = outputs_written(&brokers) as usize;
        let committed = common::committed_total(&brokers, "verdict", "events", 3);
        // At-least-once: killed once it has committed part of the stream,
        // so the successor must resume from there; exactly-once on the mock
        // commits its offsets nowhere, so only the outputs count.
        if decided >= EVENTS / 3 && (exactly_once || (committed > 0 && decided as i64 > committed))
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the first instance decided {decided} and committed {committed} in a minute:\n{}",
            tail(&first_log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().unwrap(); // SIGKILL: no drain, no commit
    first.0.wait().unwrap();
    killed.store(true, Ordering::Release);
    let before = outputs(&brokers);
    let committed = common::committed_total(&brokers, "verdict", "events", 3);
    assert!(
        before.len() < EVENTS,
        "killed after deciding everything: the test shows no crash mid-stream"
    );
    // What makes the crash interesting: decided events whose offsets were
    // never committed (all of them in exactly-once mode on the mock).
    assert!(
        (before.len() as i64) > committed,
        "every decided event was committed ({committed} committed, {} with an output, {} \
         output records): nothing was left for the successor to skip",
        before.len(),
        outputs_written(&brokers)
    );

    producing.join().unwrap();
    let mut second = verdict_run(&brokers, exactly_once, &second_log);
    let until = Instant::now() + Duration::from_secs(90);
    let after = loop {
        let seen = outputs(&brokers);
        if seen.len() >= EVENTS {
            break seen;
        }
        assert!(
            Instant::now() < until,
            "{} of {EVENTS} events have an output a minute and a half after the restart:\n\
             --- first ---\n{}\n--- second ---\n{}",
            seen.len(),
            tail(&first_log),
            tail(&second_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = second.0.wait().unwrap();
    assert!(exit.success(), "exit {exit}:\n{}", tail(&second_log));

    let after = {
        // Everything the successor wrote, after it stopped.
        let final_outputs = outputs(&brokers);
        assert!(final_outputs.len() >= after.len());
        final_outputs
    };
    let missing: Vec<usize> = (0..EVENTS).filter(|i| !after.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<(&usize, &usize)> = after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events have more than one output, e.g. {:?}:\n--- second ---\n{}",
        twice.len(),
        &twice[..twice.len().min(5)],
        tail(&second_log)
    );
}

#[test]
fn at_least_once_killed_mid_stream_loses_nothing_and_decides_nothing_twice() {
    killed_mid_stream(false);
}

#[test]
fn exactly_once_killed_mid_stream_loses_nothing_and_decides_nothing_twice() {
    killed_mid_stream(true);
}
