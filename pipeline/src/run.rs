//! `verdict run`: consume events from Kafka, decide them, produce decisions
//! and dead letters, and commit offsets only once their outputs are
//! acknowledged by the broker (at-least-once).
//!
//! Events are decided in the order they are read, so the events of one
//! partition stay in order. Produced-but-unacknowledged records sit in one
//! ordered window (`FuturesOrdered`); an offset is stored only when its own
//! record and every record read before it are acknowledged, so a crash
//! replays rather than loses. The window is bounded by
//! `kafka.max_in_flight`: when full, reading waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use verdict_core::Position;

use crate::config::{Config, KafkaConfig};
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Logs one line per rebalance. Offsets of records still in flight when
/// partitions are revoked are not committed, so the new owner decides them
/// again: duplicates are possible across a rebalance, losses are not.
pub struct RebalanceLog;

impl rdkafka::ClientContext for RebalanceLog {}

impl rdkafka::consumer::ConsumerContext for RebalanceLog {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "rebalance: partitions assigned")
            }
            rdkafka::consumer::Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "rebalance: partitions revoked")
            }
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed")
            }
        }
    }
}

/// Run the Kafka pipeline until SIGINT/SIGTERM.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: crate::config::EngineOverrides,
    /// Load and check the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// The consumer's settings: manual offset store and commit.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (key, v) in &k.consumer_properties {
        c.set(key, v);
    }
    c
}

/// The producer's settings: every record acknowledged by all in-sync
/// replicas, idempotent so retries neither duplicate nor reorder.
pub fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true");
    for (key, v) in &k.producer_properties {
        c.set(key, v);
    }
    c
}

/// The pipeline's state shared with the HTTP endpoints.
pub struct Pipeline {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub kafka: KafkaConfig,
    /// Set while the consumer holds an assignment (`/readyz`).
    pub ready: Arc<AtomicBool>,
}

impl Pipeline {
    /// Consumes until `stop` is set, then drains the window, commits and
    /// returns.
    pub async fn run(&self, stop: Arc<AtomicBool>) -> Result<()> {
        let k = &self.kafka;
        let consumer: StreamConsumer<RebalanceLog> = consumer_config(k)
            .create_with_context(RebalanceLog)
            .context("cannot create the Kafka consumer")?;
        let producer: FutureProducer = producer_config(k)
            .create()
            .context("cannot create the Kafka producer")?;
        consumer
            .subscribe(&[&k.events_topic])
            .with_context(|| format!("cannot subscribe to {}", k.events_topic))?;
        tracing::info!(topic = %k.events_topic, group = %k.group_id, "consuming");

        let mut window: FuturesOrdered<_> = FuturesOrdered::new();
        let mut last_commit = Instant::now();
        let commit_every = Duration::from_millis(k.commit_interval_ms);
        let mut out = Vec::with_capacity(1024);
        let mut stored = false;
        let mut last_ready_check = Instant::now() - commit_every;
        while !stop.load(Ordering::Relaxed) {
            if last_ready_check.elapsed() >= commit_every {
                let assigned = consumer
                    .assignment()
                    .map(|a| a.count() > 0)
                    .unwrap_or(false);
                self.ready.store(assigned, Ordering::Relaxed);
                last_ready_check = Instant::now();
            }
            // Settle acknowledged records first; wait when the window is full.
            while window.len() >= k.max_in_flight.max(1) {
                if let Some(r) = window.next().await {
                    stored |= self.store(&consumer, r)?;
                }
            }
            let msg = tokio::select! {
                m = consumer.recv() => m,
                Some(r) = window.next(), if !window.is_empty() => {
                    stored |= self.store(&consumer, r)?;
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    continue;
                }
            };
            let read_at = Instant::now();
            self.metrics.event();
            let (partition, offset) = (msg.partition(), msg.offset());
            let bytes = msg.payload().unwrap_or_default();
            let topic = msg.topic();
            let prepared = self.engine.prepare(
                bytes,
                || Position::Kafka {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                },
                read_at,
            );
            out.clear();
            let delivery = match prepared {
                Ok(p) => {
                    let decided = self.engine.finish(p).await;
                    serde_json::to_writer(&mut out, &decided.decision)
                        .context("serialising a decision")?;
                    self.metrics.decision(
                        decided.decision.decision.as_str(),
                        decided.decision.latency_us,
                        &decided.timings,
                    );
                    let key: &str = decided.key.as_deref().unwrap_or("");
                    self.send(&producer, &k.decisions_topic, key.as_bytes(), &out)?
                }
                Err(dead) => {
                    serde_json::to_writer(&mut out, &dead).context("serialising a dead letter")?;
                    self.metrics.dead_letter(&dead.kind);
                    let key = msg.key().unwrap_or_default();
                    self.send(&producer, &k.dead_letters_topic, key, &out)?
                }
            };
            window.push_back(async move {
                let acked = delivery.await;
                (partition, offset, acked)
            });
            self.metrics.set_in_flight(window.len());
            if stored && last_commit.elapsed() >= commit_every {
                commit(&consumer, CommitMode::Async)?;
                last_commit = Instant::now();
                stored = false;
            }
        }
        tracing::info!(
            in_flight = window.len(),
            "stopping: draining in-flight records"
        );
        let bound = Duration::from_millis(k.shutdown_timeout_ms);
        let drained = tokio::time::timeout(bound, async {
            while let Some(r) = window.next().await {
                stored |= self.store(&consumer, r)?;
            }
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => anyhow::bail!(
                "in-flight records were not acknowledged within {} ms of the shutdown request; \
                 their offsets are left uncommitted and they are decided again on restart",
                k.shutdown_timeout_ms
            ),
        }
        self.metrics.set_in_flight(0);
        if stored {
            commit(&consumer, CommitMode::Sync)?;
        }
        tracing::info!("stopped; offsets committed");
        Ok(())
    }

    fn send(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<DeliveryFuture> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("cannot enqueue a record for {topic}: {e}"))
    }

    /// Stores the offset after an acknowledged record. A record the broker
    /// refused stops the pipeline: its offset must not be committed.
    fn store(
        &self,
        consumer: &StreamConsumer<RebalanceLog>,
        (partition, offset, acked): (
            i32,
            i64,
            Result<
                rdkafka::producer::future_producer::OwnedDeliveryResult,
                futures::channel::oneshot::Canceled,
            >,
        ),
    ) -> Result<bool> {
        match acked {
            Ok(Ok(_)) => {
                consumer
                    .store_offset(&self.kafka.events_topic, partition, offset)
                    .context("cannot store an offset")?;
                Ok(true)
            }
            Ok(Err((e, _))) => anyhow::bail!(
                "the broker refused the output of partition {partition} offset {offset}: {e}; \
                 stopping without committing it, so it is decided again on restart"
            ),
            Err(_) => anyhow::bail!("the producer was dropped before acknowledging a record"),
        }
    }
}

fn commit(consumer: &StreamConsumer<RebalanceLog>, mode: CommitMode) -> Result<()> {
    match consumer.commit_consumer_state(mode) {
        Ok(())
        | Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        Err(e) => Err(e).context("cannot commit offsets"),
    }
}

/// `verdict run`.
pub fn run(args: RunArgs) -> Result<std::process::ExitCode> {
    let config: Config = args.engine.load()?;
    if args.check_config {
        println!("{config:#?}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let engine = Arc::new(Engine::load(&config)?);
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let pipeline = Pipeline {
        engine: engine.clone(),
        metrics: metrics.clone(),
        kafka: config.kafka.clone(),
        ready: ready.clone(),
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        tracing::info!(url = %format!("http://{}/metrics", config.http.listen), "serving metrics");
        let state = crate::http::AppState {
            metrics,
            engine: Some(engine),
            admin: None,
            admin_token: config.http.admin_token.clone(),
            ready: ready.clone(),
            max_body_bytes: config.http.max_body_bytes,
        };
        tokio::spawn(crate::http::serve(listener, state));
        let s = stop.clone();
        tokio::spawn(async move {
            crate::http::shutdown_signal().await;
            tracing::info!("shutdown requested");
            s.store(true, Ordering::Relaxed);
        });
        pipeline.run(stop).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
