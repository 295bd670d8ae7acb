//! `verdict run` against an in-process Kafka-protocol broker
//! (librdkafka's mock cluster): order per partition, dead letters,
//! offsets committed only after outputs are acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use verdict::config::{Config, EngineConfig, HttpConfig, KafkaConfig};
use verdict::engine::Engine;
use verdict::metrics::Metrics;
use verdict::run::Pipeline;

const USERS: usize = 7;
const PER_USER: usize = 40;
const BAD: usize = 5;

fn config(brokers: &str) -> Config {
    Config {
        engine: EngineConfig {
            schema: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/schema.toml").into(),
            max_event_bytes: 65536,
        },
        kafka: KafkaConfig {
            brokers: brokers.to_owned(),
            max_in_flight: 16,
            commit_interval_ms: 10,
            ..KafkaConfig::default()
        },
        http: HttpConfig::default(),
        base: Default::default(),
    }
}

fn event(user: usize, seq: usize) -> String {
    format!(
        r#"{{"event_id":"e-{user}-{seq:04}","event_type":"payment","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_{user}","amount":{seq}.0}}"#
    )
}

fn produce_input(brokers: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for seq in 0..PER_USER {
        for user in 0..USERS {
            let key = format!("u_{user}");
            let payload = event(user, seq);
            producer
                .send(BaseRecord::to("events").key(&key).payload(&payload))
                .unwrap();
        }
    }
    for i in 0..BAD {
        let key = format!("bad_{i}");
        producer
            .send(BaseRecord::to("events").key(&key).payload("{not json"))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Reads a topic from the start until `want` records arrive (bounded wait).
fn read_all(brokers: &str, topic: &str, want: usize) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decides_in_order_dead_letters_and_commits_after_ack() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    cluster.create_topic("decisions", 3, 1).unwrap();
    cluster.create_topic("dead-letters", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let b = brokers.clone();
    tokio::task::spawn_blocking(move || produce_input(&b))
        .await
        .unwrap();

    let config = config(&brokers);
    let metrics = Arc::new(Metrics::new());
    let pipeline = Pipeline {
        engine: Arc::new(Engine::load(&config).unwrap()),
        metrics: metrics.clone(),
        kafka: config.kafka.clone(),
    };
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
    let mut last: HashMap<String, String> = HashMap::new();
    for (key, d) in &decisions {
        let id = d["event_id"].as_str().unwrap().to_owned();
        assert!(
            id.starts_with(&format!("e-{}-", &key[2..])),
            "{key} keyed {id}"
        );
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
