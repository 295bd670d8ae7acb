//! Rule-set versions in a compacted Kafka topic.
//!
//! One partition, so every instance reads the versions in one order; one
//! message per version, keyed by its zero-padded number, so compaction
//! keeps every version (it only drops a number published twice, keeping
//! the later). Every instance reads the topic from its start when it opens
//! it — the newest version that checks serves — and then follows it on a
//! thread of its own, so a deploy on any instance reaches all of them.
//!
//! Two instances that publish at the same moment may both take the next
//! number; the later message wins on every instance alike, since all read
//! the same partition in the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use verdict_core::Catalogue;

use super::{Follower, RuleSetVersion, StoreError, VersionStore};
use crate::config::KafkaVersionsConfig;
use crate::files::MAX_TOTAL_BYTES;

/// How long opening may take to read the topic up to its end.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a publish waits for the broker and then for the read-back.
const PUBLISH_SECS: u64 = 15;
/// A message is at most a rule set and its metadata.
const MAX_MESSAGE_BYTES: usize = MAX_TOTAL_BYTES + (1 << 20);

/// The topic of versions, followed.
pub struct KafkaVersions {
    topic: String,
    producer: FutureProducer,
    follower: Arc<Follower>,
    stop: Arc<AtomicBool>,
    /// The thread that follows the topic.
    reader: Option<std::thread::JoinHandle<()>>,
}

fn kafka_err(topic: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Kafka {
        topic: topic.to_owned(),
        why: why.to_string(),
    }
}

impl KafkaVersions {
    /// Creates the topic if it is missing, reads it from its start to its
    /// end, and follows it until dropped. Blocking.
    pub fn open(
        config: &KafkaVersionsConfig,
        catalogue: Arc<Catalogue>,
    ) -> Result<KafkaVersions, StoreError> {
        let topic = config.topic.clone();
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &config.brokers);
        for (k, v) in &config.properties {
            base.set(k, v);
        }
        create_topic(&base, &topic, config.replication)?;

        let producer: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()
            .map_err(|e| kafka_err(&topic, e))?;

        // No consumer group: every instance reads the whole topic itself and
        // commits nothing. librdkafka still wants a group id; one of its own
        // per instance keeps instances out of each other's way.
        let consumer: BaseConsumer = base
            .clone()
            .set(
                "group.id",
                format!("verdict-rulesets-{:016x}", rand::random::<u64>()),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.max.bytes", (MAX_MESSAGE_BYTES * 2).to_string())
            .set("max.partition.fetch.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()
            .map_err(|e| kafka_err(&topic, e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| kafka_err(&topic, e))?;
        consumer.assign(&tpl).map_err(|e| kafka_err(&topic, e))?;

        let follower = Follower::new(catalogue);
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map_err(|e| kafka_err(&topic, format!("cannot read its end offset: {e}")))?;
        let started = Instant::now();
        let mut next = 0i64;
        while next < high {
            if started.elapsed() > CATCH_UP {
                return Err(kafka_err(
                    &topic,
                    format!(
                        "read to offset {next} of {high} in {} s",
                        CATCH_UP.as_secs()
                    ),
                ));
            }
            if let Some(offset) = poll_one(&consumer, &follower, &topic, Duration::from_millis(200))
            {
                next = offset + 1;
            }
        }
        tracing::info!(
            topic,
            versions = follower.history().len(),
            serving = follower.current().map(|s| s.version.number),
            "rule-set versions read"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, t) = (follower.clone(), stop.clone(), topic.clone());
        let reader = std::thread::Builder::new()
            .name("rulesets-follow".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    poll_one(&consumer, &f, &t, Duration::from_millis(100));
                }
            })
            .map_err(|e| kafka_err(&topic, e))?;
        Ok(KafkaVersions {
            topic,
            producer,
            follower,
            stop,
            reader: Some(reader),
        })
    }
}

/// Reads at most one message and offers it; answers its offset.
fn poll_one(
    consumer: &BaseConsumer,
    follower: &Follower,
    topic: &str,
    wait: Duration,
) -> Option<i64> {
    match consumer.poll(wait)? {
        Ok(m) => {
            let payload = m.payload().unwrap_or_default();
            match serde_json::from_slice::<RuleSetVersion>(payload) {
                Ok(v) => follower.offer(v),
                // A message that is no version (or a deletion marker) is
                // skipped: it must not stop the instance from serving.
                Err(e) => {
                    tracing::warn!(topic, offset = m.offset(), error = %e, "a message of the rule-set topic is not a version; skipped")
                }
            }
            Some(m.offset())
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "reading the rule-set topic");
            None
        }
    }
}

/// Creates the topic unless the brokers already know it.
fn create_topic(base: &ClientConfig, topic: &str, replication: i32) -> Result<(), StoreError> {
    let admin: AdminClient<DefaultClientContext> =
        base.create().map_err(|e| kafka_err(topic, e))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_err(topic, format!("cannot read the brokers' metadata: {e}")))?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let max_bytes = MAX_MESSAGE_BYTES.to_string();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", &max_bytes);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // The admin client's futures are completed by librdkafka's own thread,
    // so waiting on one here needs no async runtime.
    let results = futures::executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| kafka_err(topic, e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(kafka_err(topic, format!("cannot create it: {code}"))),
        }
    }
    Ok(())
}

impl Drop for KafkaVersions {
    /// Stops the topic's reader and waits for it (at most one poll), so
    /// that it never outlives its store and reads from brokers that are
    /// going away.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl VersionStore for KafkaVersions {
    fn describe(&self) -> String {
        format!("the Kafka topic {}", self.topic)
    }

    fn writable(&self) -> bool {
        true
    }

    fn publish(&self, version: RuleSetVersion) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let number = version.number;
            let payload = serde_json::to_vec(&version).map_err(|e| kafka_err(&self.topic, e))?;
            let key = format!("{number:020}");
            self.producer
                .send(
                    FutureRecord::to(&self.topic).key(&key).payload(&payload),
                    Duration::from_secs(PUBLISH_SECS),
                )
                .await
                .map_err(|(e, _)| kafka_err(&self.topic, e))?;
            self.follower.read_back(number, PUBLISH_SECS).await
        })
    }

    fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }
}
