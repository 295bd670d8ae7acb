//! `verdict run` with `[history]`: every event it decided is in the
//! decision log once, with the decision it put on the decisions topic,
//! in complete Parquet files after a graceful stop; a dead letter is not
//! archived. The log then backtests.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use verdict_history::{HistoryReader, ReaderOptions};

const EVENTS: usize = 1_500;
const BAD_EVERY: usize = 101;

fn payload(i: usize) -> String {
    if i.is_multiple_of(BAD_EVERY) {
        format!("{{bad {i}")
    } else {
        format!(
            r#"{{"event_id":"h-{i}","event_type":"payment","timestamp":{},"user_id":"u_{}","amount":{}.5}}"#,
            1_764_000_000_000u64 + i as u64 * 250,
            i % 29,
            i % 900
        )
    }
}

/// Every decision on the topic: event id → outcome.
fn decisions(brokers: &str) -> HashMap<String, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "log-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("decisions", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut open, mut seen) = (3, HashMap::new());
    let until = Instant::now() + Duration::from_secs(60);
    while open > 0 && Instant::now() < until {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let d: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                seen.insert(
                    d["event_id"].as_str().unwrap().to_owned(),
                    d["decision"].as_str().unwrap().to_owned(),
                );
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            _ => {}
        }
    }
    seen
}

fn written(brokers: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
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

#[test]
fn every_decided_event_is_archived_once_with_its_decision() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    cluster.create_topic("decisions", 3, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..EVENTS {
        let (key, p) = (format!("u_{}", i % 29), payload(i));
        while producer
            .send(BaseRecord::to("events").key(&key).payload(&p))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("decisions");
    let stderr = dir.path().join("verdict.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["run", "--config", "verdict.toml"])
        .env("VERDICT_KAFKA__BROKERS", &brokers)
        .env("VERDICT_HTTP__LISTEN", "127.0.0.1:0")
        .env("VERDICT_KAFKA__LANES", "2")
        .env("VERDICT_HISTORY__LOCATION", log_dir.to_str().unwrap())
        .env("VERDICT_HISTORY__INSTANCE", "test-0")
        // Partitions are read interleaved: with the default lateness some
        // events would come too late for the windows here and not in the
        // backtest's time order. Generous, so that both count every event.
        .env("VERDICT_FEATURES__LATENESS_SECS", "86400")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(90);
    while (written(&brokers) as usize) < EVENTS {
        if Instant::now() > until {
            let _ = child.kill();
            panic!(
                "{} of {EVENTS} outputs in 90 s:\n{}",
                written(&brokers),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = child.wait().unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(log.contains("decision log closed"), "{log}");

    let on_topic = decisions(&brokers);
    let valid = EVENTS - EVENTS.div_ceil(BAD_EVERY);
    assert_eq!(on_topic.len(), valid);
    let mut reader = HistoryReader::open(log_dir.to_str().unwrap(), &ReaderOptions::default())
        .expect("the log's files are complete Parquet files");
    assert!(reader.files().all(|f| f.ends_with(".parquet")));
    let mut archived: HashMap<String, String> = HashMap::new();
    let mut last_time = i64::MIN;
    while let Some(ev) = reader.next().unwrap() {
        assert!(
            ev.timestamp_ms >= last_time,
            "read back in event-time order"
        );
        last_time = ev.timestamp_ms;
        let recorded = ev.recorded.expect("a log row carries its decision");
        let event: serde_json::Value = serde_json::from_slice(ev.event).unwrap();
        assert_eq!(event["event_id"], ev.event_id);
        let before = archived.insert(ev.event_id.to_owned(), recorded.decision.as_str().into());
        assert!(before.is_none(), "{} archived twice", ev.event_id);
    }
    assert_eq!(archived, on_topic);

    // The log backtests: its recorded decisions are the baseline, and the
    // configured rules as the candidate move nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["backtest", "--history", log_dir.to_str().unwrap()])
        .args(["--candidate-rules", "examples/rules", "--json", "-"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], valid as u64, "{report}");
    assert_eq!(report["baseline"]["name"], "recorded decisions", "{report}");
    let off_diagonal: u64 = report["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] != c["candidate"])
        .map(|c| c["events"].as_u64().unwrap())
        .sum();
    assert_eq!(off_diagonal, 0, "{report}");
}
