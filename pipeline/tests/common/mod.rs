//! What several test files share.

#![allow(dead_code)]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use verdict::metrics::Metrics;
use verdict_core::{Action, RejectionKind};

/// Metrics with every series touched once, so that the exposition shows
/// each metric and each label the service exports.
pub fn every_metric() -> Metrics {
    let m = Metrics::new();
    m.event();
    m.dead_letter(RejectionKind::NotJson);
    m.decision(Action::Approve, 640, [Duration::from_micros(5); 4], true);
    m.decision(Action::Review, 640, [Duration::from_micros(5); 4], false);
    m.decision(Action::Deny, 640, [Duration::from_micros(5); 4], false);
    m.set_consumer_lag("events", 0, 12);
    m.rule_hit(&"model_high_risk".into());
    m.observe_model_batch(8);
    m.model_timeout();
    m.model_error();
    m.set_versions("rs-1", "m-1");
    m.reload("rules", true);
    m.reload("model", false);
    m.rebalance("assign");
    m.output_dropped();
    m.features_replayed(1);
    m.set_in_flight(3);
    m.shared_completed(12, Duration::from_micros(300));
    m.shared_failed("timeout", 4);
    m.set_local_incomplete(1);
    m.set_feature_store(&verdict_features::StoreStats {
        entities: 10,
        bytes: 4096,
        late_events: 2,
        duplicates: 1,
        evictions: 3,
    });
    m
}

/// Sends one HTTP/1.0 request with `headers` (each ending in `\r\n`) and a
/// JSON body to the service at `addr`; answers (status, body).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The sum of `group`'s committed offsets on `partitions` partitions of
/// `topic` (a partition without one counts 0).
pub fn committed_total(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}
