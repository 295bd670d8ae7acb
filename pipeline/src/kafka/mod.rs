//! The Kafka source and sinks of `verdict run`: consume events, decide
//! them, produce decisions and dead letters, and commit offsets only once
//! their outputs are safe.
//!
//! ## Lanes
//!
//! The pipeline runs `kafka.lanes` lanes (one per core by default). Each
//! lane is a member of the consumer group with its own consumer and
//! producer, so Kafka spreads the partitions over the lanes and partitions
//! are decided in parallel, while the events of one partition, which belong
//! to one lane, are decided in order. A lane is two halves:
//! - its Kafka thread ([`consumer`]) owns the consumer and makes every
//!   blocking Kafka call, the rebalance callbacks included;
//! - its deciding task ([`lane`]) runs on the async runtime: messages go
//!   through a [`Window`](crate::window::Window), outputs are produced in
//!   read order, and [`offsets`] decides what may be committed.
//!
//! Events read but not yet safe are bounded by `kafka.max_in_flight`: when
//! a lane is full it stops taking messages, so a burst slows consumption
//! instead of growing memory.
//!
//! ## Delivery
//!
//! - At-least-once (default): every output is produced with `acks=all` by
//!   an idempotent producer; an input offset becomes committable only when
//!   its own output and the outputs of every earlier offset of its
//!   partition are acknowledged. A crash replays, never loses.
//! - Exactly-once (`kafka.exactly_once = true`): outputs are produced in a
//!   Kafka transaction, and the input offsets are sent to the same
//!   transaction, committed together every `commit_interval_ms`. A crash
//!   aborts the open transaction, so a `read_committed` reader of the
//!   decisions topic sees each event's decision once. Needs a broker with
//!   transactions.
//!
//! ## Rebalance
//!
//! Ownership is tracked per partition. Before partitions are revoked their
//! lane finishes their events, waits for their outputs to be acknowledged
//! (or commits its open transaction), and the Kafka thread commits their
//! offsets before letting them go; the new owner starts exactly after the
//! last decided event. Partitions a lane keeps (cooperative rebalancing:
//! `partition.assignment.strategy = cooperative-sticky`, or
//! `group.protocol = consumer`) are not touched. Only past the drain bound
//! (`kafka.shutdown_timeout_ms`) are the revoked partitions' remaining
//! outputs dropped, to be decided again by the new owner.
//!
//! ## Feature catch-up
//!
//! See [`catch_up`]: an assigned partition whose events are not all in the
//! feature store stays paused until they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel as cb;
use rdkafka::ClientContext;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc;

use crate::config::KafkaConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;

pub mod catch_up;
pub mod config;
pub mod consumer;
pub mod lane;
pub mod offsets;
pub mod resume;

pub use catch_up::Applied;
pub use config::{consumer_config, producer_config, unsafe_properties};

/// A lane's producer: its delivery callback reports to the lane.
pub type LaneProducer = ThreadedProducer<Acks>;

/// The producer's context: sends each acknowledgement to the lane.
pub struct Acks(mpsc::UnboundedSender<lane::Ack>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (partition, offset) = lane::decode(opaque);
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        let _ = self.0.send(lane::Ack {
            partition,
            offset,
            error,
        });
    }
}

/// The partition counts of the output topics and of the events topic,
/// asked of the brokers (off the async workers); a topic that does not
/// exist is an error that says so.
async fn topics(k: &KafkaConfig) -> Result<(consumer::OutputTopics, i32)> {
    let k = k.clone();
    tokio::task::spawn_blocking(move || {
        let client: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &k.brokers)
            .create()
            .context("cannot create a Kafka client")?;
        let count = |topic: &str| -> Result<i32> {
            let metadata = client
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(30))
                .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
            let n = metadata
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32);
            anyhow::ensure!(
                n > 0,
                "topic {topic} does not exist on {}: create it (kafka.decisions_topic and \
                 kafka.dead_letters_topic name Verdict's outputs)",
                k.brokers
            );
            Ok(n)
        };
        let outputs = consumer::OutputTopics {
            decisions: count(&k.decisions_topic)?,
            dead_letters: count(&k.dead_letters_topic)?,
        };
        Ok((outputs, count(&k.events_topic)?))
    })
    .await?
}

/// The Kafka pipeline's parts.
pub struct Pipeline {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub kafka: KafkaConfig,
    /// Set while every lane holds an assignment with its features caught
    /// up and every configured stage is serving (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Where every decision is archived, if anywhere.
    pub history: Option<verdict_history::HistoryLogger>,
}

impl Pipeline {
    /// Consumes until `stop` is set, then drains every lane, commits and
    /// returns the committed position of every partition the lanes held at
    /// the end (`topic/partition` → next offset). The first lane that fails
    /// stops the others.
    pub async fn run(&self, stop: Arc<AtomicBool>) -> Result<BTreeMap<String, i64>> {
        let k = &self.kafka;
        let refused = unsafe_properties(k);
        if !refused.is_empty() {
            anyhow::bail!("{}", refused.join("\n"));
        }
        let lanes = k.lanes();
        tracing::info!(
            topic = %k.events_topic,
            group = %k.group_id,
            lanes,
            exactly_once = k.exactly_once,
            "consuming"
        );
        let (outputs, events_partitions) = topics(k).await?;
        let mut ownership = Ownership::new(&self.engine, events_partitions);
        let finished = Arc::new(tokio::sync::Barrier::new(lanes));
        let applied = Arc::new(Applied::from_snapshot(
            &k.events_topic,
            self.engine.restored_positions(),
        ));
        let mut statuses = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..lanes {
            let (acks_tx, acks) = mpsc::unbounded_channel();
            let producer: Arc<LaneProducer> = Arc::new(
                producer_config(k, id)
                    .create_with_context(Acks(acks_tx))
                    .context("cannot create the Kafka producer")?,
            );
            if k.exactly_once {
                let p = producer.clone();
                let timeout = Duration::from_millis(k.shutdown_timeout_ms);
                tokio::task::spawn_blocking(move || {
                    rdkafka::producer::Producer::init_transactions(&*p, timeout)
                })
                .await?
                .context(
                    "cannot initialise Kafka transactions (exactly-once needs a broker that \
                     supports them; set kafka.exactly_once = false otherwise)",
                )?;
            }
            let (to_lane, from_kafka) = mpsc::channel(4);
            let (recycle, recycled) = cb::bounded(8);
            let status = Arc::new(consumer::Status::default());
            statuses.push(status.clone());
            let thread = consumer::start(consumer::Setup {
                lane: id,
                kafka: k.clone(),
                engine: self.engine.clone(),
                applied: applied.clone(),
                metrics: self.metrics.clone(),
                producer: producer.clone(),
                outputs,
                status,
                stop: stop.clone(),
                to_lane,
                recycled,
            })?;
            let lane = lane::Lane {
                id,
                engine: self.engine.clone(),
                metrics: self.metrics.clone(),
                kafka: k.clone(),
                applied: applied.clone(),
                producer,
                outputs,
                acks,
                from_kafka,
                commands: thread.commands,
                recycle,
                finished: finished.clone(),
                kafka_thread: thread.handle,
                history: self.history.clone(),
            };
            let stop = stop.clone();
            tasks.spawn(async move { lane.run(stop).await });
        }
        let mut first_error = None;
        let mut positions = BTreeMap::new();
        let mut readiness = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                joined = tasks.join_next() => {
                    let Some(joined) = joined else { break };
                    match joined.context("a lane panicked").and_then(|r| r) {
                        Ok(lane_positions) => {
                            for (p, o) in lane_positions {
                                positions.insert(format!("{}/{p}", k.events_topic), o);
                            }
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            first_error.get_or_insert(e);
                        }
                    }
                }
                _ = readiness.tick() => {
                    let owned = statuses.iter().map(|s| s.partitions.load(Ordering::Relaxed)).sum();
                    ownership.observe(owned, &self.metrics);
                    let all = statuses.iter().all(|s| s.ready());
                    self.ready.store(
                        all && self.engine.stages_ready() && !stop.load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                }
            }
        }
        self.ready.store(false, Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped; offsets committed");
                Ok(positions)
            }
        }
    }
}

/// Whether the local kinds that are not keyed by the message key see
/// every event: only while this instance owns every partition of the
/// events topic. Said once per change of ownership, and as
/// `verdict_local_kinds_incomplete`.
struct Ownership {
    /// Local kinds not keyed by the message key.
    kinds: Vec<String>,
    partitions: usize,
    /// Partitions owned when last observed.
    owned: usize,
}

impl Ownership {
    fn new(engine: &Engine, partitions: i32) -> Ownership {
        Ownership {
            kinds: engine
                .placements()
                .into_iter()
                .filter(|p| p.incomplete_when_scaled())
                .map(|p| p.kind)
                .collect(),
            partitions: partitions.max(0) as usize,
            owned: 0,
        }
    }

    /// This process's lanes own `owned` partitions now.
    fn observe(&mut self, owned: usize, metrics: &Metrics) {
        if owned == self.owned || self.kinds.is_empty() {
            return;
        }
        self.owned = owned;
        let incomplete = owned > 0 && owned < self.partitions;
        metrics.set_local_incomplete(if incomplete { self.kinds.len() } else { 0 });
        if incomplete {
            tracing::warn!(
                kinds = %self.kinds.join(","),
                owned,
                partitions = self.partitions,
                "other instances own part of the events topic, and these kinds are local: each \
                 instance counts only its share of their events, so the rules on them are \
                 weakened; place them shared ([placement] in the feature definitions, or \
                 [features.placement]) with [features.shared]"
            );
        }
    }
}
