//! `verdict run`: consume events from Kafka, decide them, produce decisions
//! and dead letters, and commit offsets only once their outputs are safe.
//!
//! ## Lanes
//!
//! The pipeline runs `kafka.lanes` lanes (one per core by default). Each lane
//! is a member of the consumer group with its own consumer and producer, so
//! Kafka spreads the partitions over the lanes and partitions are decided in
//! parallel, while the events of one partition, which belong to one lane,
//! are decided in order.
//!
//! ## One lane
//!
//! Read → [`Engine::prepare`] (parse, features: in read order) → a window of
//! events being scored and decided concurrently ([`Engine::finish`], so the
//! model's micro-batcher sees many events at once) → outputs produced in read
//! order → delivery acknowledgements tracked per input partition. Events
//! read but not yet safe are bounded by `kafka.max_in_flight`: when the lane
//! is full it stops reading, so a burst slows consumption instead of growing
//! memory.
//!
//! ## Delivery
//!
//! - At-least-once (default): every output is produced with `acks=all` by an
//!   idempotent producer; an input offset becomes committable only when its
//!   own output and the outputs of every earlier offset of its partition are
//!   acknowledged. A crash replays, never loses.
//! - Exactly-once (`kafka.exactly_once = true`): outputs are produced in a
//!   Kafka transaction, and the input offsets are sent to the same
//!   transaction, committed together every `commit_interval_ms`. A crash
//!   aborts the open transaction, so a `read_committed` reader of the
//!   decisions topic sees each event's decision exactly once. That last
//!   property needs a broker with transactions to test, and none is at hand
//!   to the test suite: librdkafka's mock cluster implements neither
//!   `read_committed` nor transactional offsets, and tansu refuses
//!   transactions (see the exactly-once test in `tests/kafka.rs`).
//!
//! ## Rebalance
//!
//! Before partitions are revoked the lane drains: it waits for every
//! produced output to be acknowledged (at-least-once) or commits its open
//! transaction (exactly-once), commits the offsets of the revoked
//! partitions, and drops the outputs of their events still being decided,
//! which the new owner decides again from the committed offset.
//!
//! ## Feature catch-up
//!
//! Velocity features are only right if the store holds every event of a
//! partition before the one being decided. The pipeline knows, per
//! partition, the next offset whose event is in the store: seeded from the
//! restored snapshot's positions, advanced by every event the lanes read.
//! When a partition is assigned and the store is behind its committed
//! offset (the gap between the snapshot and a crash, or a partition this
//! instance never held), the lane pauses it, reads the missing events again
//! into the features only (not deciding them; the latest
//! `kafka.catch_up_max_events` at most: for a partition never held, from
//! the oldest the broker keeps), then resumes it. Its other partitions
//! flow meanwhile; `/readyz` waits for the catch-up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use verdict_core::{DeadLetter, Position};

use crate::config::{Config, KafkaConfig};
use crate::engine::{Decided, Engine};
use crate::metrics::Metrics;

/// Run the Kafka pipeline until SIGINT/SIGTERM.
///
/// Joins the consumer group on the events topic, decides every event, and
/// produces decisions and dead letters keyed by `user_id`. Offsets are
/// committed only after the outputs of their events are acknowledged (or,
/// with `kafka.exactly_once`, in the same transaction). On SIGTERM: stop
/// reading, finish in-flight events, produce, commit, exit 0 within
/// `kafka.shutdown_timeout_ms`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: crate::config::EngineOverrides,
    /// Check the configuration and everything it names (schema, rules,
    /// features, model, the Kafka client properties), print it, and exit:
    /// 0 when Verdict would start with it, 1 with the reason when not.
    /// Connects to no broker.
    #[arg(long)]
    pub check_config: bool,
}

/// The consumer's settings: offsets committed by Verdict only.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Consumer lag per partition comes from librdkafka's statistics.
        .set("statistics.interval.ms", "5000");
    if k.exactly_once {
        c.set("isolation.level", "read_committed");
    }
    for (key, v) in &k.consumer_properties {
        c.set(key, v);
    }
    c
}

/// The producer's settings: every record acknowledged by all in-sync
/// replicas, idempotent so retries neither duplicate nor reorder;
/// transactional in exactly-once mode.
pub fn producer_config(k: &KafkaConfig, lane: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true");
    if k.exactly_once {
        c.set(
            "transactional.id",
            format!("{}-lane-{lane}", k.transactional_id_prefix()),
        );
    }
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
    /// Set while every lane holds an assignment (`/readyz`).
    pub ready: Arc<AtomicBool>,
}

impl Pipeline {
    /// Consumes until `stop` is set, then drains every lane, commits and
    /// returns the committed position of every partition the lanes held at
    /// the end (`topic/partition` → next offset). The first lane that fails
    /// stops the others.
    pub async fn run(&self, stop: Arc<AtomicBool>) -> Result<BTreeMap<String, i64>> {
        let lanes = self.kafka.lanes();
        tracing::info!(
            topic = %self.kafka.events_topic,
            group = %self.kafka.group_id,
            lanes,
            exactly_once = self.kafka.exactly_once,
            "consuming"
        );
        let finished = Arc::new(tokio::sync::Barrier::new(lanes));
        let assigned: Arc<Vec<AtomicBool>> =
            Arc::new((0..lanes).map(|_| AtomicBool::new(false)).collect());
        let positions = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let applied = Arc::new(Applied::from_snapshot(
            &self.kafka.events_topic,
            self.engine.restored_positions(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..lanes {
            let lane = Lane {
                id,
                engine: self.engine.clone(),
                metrics: self.metrics.clone(),
                kafka: self.kafka.clone(),
                assigned: assigned.clone(),
                ready: self.ready.clone(),
                finished: finished.clone(),
                positions: positions.clone(),
                applied: applied.clone(),
            };
            let stop = stop.clone();
            tasks.spawn(async move { lane.run(stop).await });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.context("a lane panicked").and_then(|r| r);
            if let Err(e) = result {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
        self.ready.store(false, Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped; offsets committed");
                let positions = positions.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(positions)
            }
        }
    }
}

/// One consumer-group member: its own consumer, producer and window.
struct Lane {
    id: usize,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    kafka: KafkaConfig,
    assigned: Arc<Vec<AtomicBool>>,
    ready: Arc<AtomicBool>,
    /// Lanes leave the group only once all have committed, so that one
    /// leaving does not rebalance the others out of their last commit.
    finished: Arc<tokio::sync::Barrier>,
    /// The committed positions of every lane's partitions, filled on stop.
    positions: Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
    /// How far each partition's events are in the feature store.
    applied: Arc<Applied>,
}

/// Per partition of the events topic, the next offset whose event is not
/// yet in the feature store. Shared by the lanes, so a partition moving
/// between lanes of one instance needs no catch-up.
pub struct Applied(dashmap::DashMap<i32, i64>);

impl Applied {
    /// Seeded from a restored snapshot's positions (`topic/partition` →
    /// next offset) of `topic`.
    pub fn from_snapshot(topic: &str, positions: &BTreeMap<String, i64>) -> Applied {
        let map = dashmap::DashMap::new();
        for (key, &offset) in positions {
            if let Some((t, p)) = key.rsplit_once('/')
                && t == topic
                && let Ok(p) = p.parse::<i32>()
            {
                map.insert(p, offset);
            }
        }
        Applied(map)
    }

    /// The event at `offset` of `partition` is in the store.
    pub fn advance(&self, partition: i32, offset: i64) {
        self.0
            .entry(partition)
            .and_modify(|next| *next = (*next).max(offset + 1))
            .or_insert(offset + 1);
    }

    pub fn get(&self, partition: i32) -> Option<i64> {
        self.0.get(&partition).map(|v| *v)
    }
}

/// Events of one assigned partition to read again into the features:
/// offsets `from..to` (`to` is the committed offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CatchUp {
    partition: i32,
    from: i64,
    to: i64,
}

/// What the window yields for one event, in read order.
struct Done {
    /// The assignment generation the event was read in.
    generation: u64,
    partition: i32,
    offset: i64,
    output: Output,
}

enum Output {
    Decision(Decided),
    DeadLetter(Box<DeadLetter>, Vec<u8>),
}

type LaneProducer = ThreadedProducer<Acks>;

impl Lane {
    async fn run(self, stop: Arc<AtomicBool>) -> Result<()> {
        let k = &self.kafka;
        let tracks = Arc::new(Tracks::new(k.exactly_once));
        let producer: Arc<LaneProducer> = Arc::new(
            producer_config(k, self.id)
                .create_with_context(Acks(tracks.clone()))
                .context("cannot create the Kafka producer")?,
        );
        let txn_timeout = Duration::from_millis(k.shutdown_timeout_ms);
        if k.exactly_once {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(txn_timeout))
                .await?
                .context(
                    "cannot initialise Kafka transactions (exactly-once needs a broker \
                     that supports them; set kafka.exactly_once = false otherwise)",
                )?;
        }
        let context = LaneContext {
            lane: self.id,
            topic: k.events_topic.clone(),
            tracks: tracks.clone(),
            producer: producer.clone(),
            metrics: self.metrics.clone(),
            drain_timeout: txn_timeout,
            engine: self.engine.clone(),
            applied: self.applied.clone(),
            catch_up_max_events: k.catch_up_max_events,
            catch_ups: Mutex::default(),
        };
        let consumer: StreamConsumer<LaneContext> = consumer_config(k)
            .set("client.id", format!("verdict-lane-{}", self.id))
            .create_with_context(context)
            .context("cannot create the Kafka consumer")?;
        consumer
            .subscribe(&[&k.events_topic])
            .with_context(|| format!("cannot subscribe to {}", k.events_topic))?;

        let engine = &*self.engine;
        let mut deciding = FuturesOrdered::new();
        let mut out = Vec::with_capacity(1024);
        let max_in_flight = k.max_in_flight.max(1);
        let commit_every = Duration::from_millis(k.commit_interval_ms);
        let mut last_commit = Instant::now();
        let mut last_ready_check = Instant::now() - commit_every;
        let mut catching_up: Option<tokio::task::JoinHandle<Vec<CatchUp>>> = None;
        while !stop.load(Ordering::Relaxed) {
            tracks.check_failure()?;
            if catching_up.is_none() {
                let jobs = std::mem::take(&mut *consumer.context().lock_catch_ups());
                if !jobs.is_empty() {
                    let (engine, applied, metrics) = (
                        self.engine.clone(),
                        self.applied.clone(),
                        self.metrics.clone(),
                    );
                    let (k, stop, lane) = (self.kafka.clone(), stop.clone(), self.id);
                    catching_up = Some(tokio::task::spawn_blocking(move || {
                        catch_up(lane, &engine, &applied, &metrics, &k, jobs, &stop)
                    }));
                }
            }
            if last_ready_check.elapsed() >= commit_every {
                self.check_ready(&consumer, catching_up.is_none());
                last_ready_check = Instant::now();
            }
            if last_commit.elapsed() >= commit_every {
                match self.commit(&consumer, &producer, &tracks, CommitMode::Async) {
                    Err(e) if !e.is::<Deferred>() => return Err(e),
                    _ => {}
                }
                last_commit = Instant::now();
            }
            let in_flight = deciding.len() + tracks.pending();
            self.metrics.set_in_flight(in_flight);
            tokio::select! {
                biased;
                jobs = async { catching_up.as_mut().expect("guarded").await },
                    if catching_up.is_some() =>
                {
                    catching_up = None;
                    match jobs {
                        Ok(jobs) => self.resume(&consumer, &jobs),
                        Err(e) => anyhow::bail!("the feature catch-up failed: {e}"),
                    }
                    last_ready_check = Instant::now() - commit_every;
                }
                Some(done) = deciding.next(), if !deciding.is_empty() => {
                    self.emit(done, &producer, &tracks, &mut out).await?;
                }
                msg = consumer.recv(), if in_flight < max_in_flight => {
                    // Take the burst librdkafka already holds (up to a bound),
                    // so its events are scored together.
                    let mut next = Some(msg);
                    let mut taken = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Ok(m) => {
                                deciding.push_back(self.accept(&m, &tracks));
                                taken += 1;
                            }
                            Err(e) => {
                                tracing::warn!(lane = self.id, error = %e, "Kafka consumer error")
                            }
                        }
                        if taken < BURST && deciding.len() + tracks.pending() < max_in_flight {
                            next = consumer.recv().now_or_never();
                        }
                    }
                    // Nothing more to read now: score what waits here rather
                    // than wait for the scoring thread to be scheduled.
                    engine.help_score();
                    // librdkafka's queue is outside tokio's cooperative
                    // budget: without this, a lane reading a long burst
                    // would run out of budget and stop seeing its model
                    // replies (tokio channels) until the burst was read.
                    tokio::task::consume_budget().await;
                }
                _ = tracks.acked.notified(), if in_flight >= max_in_flight => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }

        tracing::info!(
            lane = self.id,
            in_flight = deciding.len() + tracks.pending(),
            "stopping: finishing in-flight events"
        );
        let bound = Duration::from_millis(k.shutdown_timeout_ms);
        let drained = tokio::time::timeout(bound, async {
            while let Some(done) = deciding.next().await {
                self.emit(done, &producer, &tracks, &mut out).await?;
            }
            let p = producer.clone();
            if !k.exactly_once {
                tokio::task::spawn_blocking(move || p.flush(bound))
                    .await?
                    .context("outputs were not acknowledged")?;
            }
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => anyhow::bail!(
                "in-flight events were not decided and acknowledged within {} ms of the \
                 shutdown request; their offsets are left uncommitted and they are decided \
                 again on restart",
                k.shutdown_timeout_ms
            ),
        }
        tracks.check_failure()?;
        self.commit_final(&consumer, &producer, &tracks).await?;
        self.record_positions(&consumer);
        self.metrics.set_in_flight(0);
        let _ = tokio::time::timeout(bound, self.finished.wait()).await;
        tracing::info!(lane = self.id, "lane stopped; offsets committed");
        Ok(())
    }

    /// Parses one message and reads-then-updates its features now (in
    /// partition order), queues its model row, and returns the future of
    /// its output.
    fn accept<'a>(
        &'a self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        tracks: &Tracks,
    ) -> impl Future<Output = Done> + Send + 'a {
        let read_at = Instant::now();
        let generation = tracks.generation.load(Ordering::Acquire);
        self.metrics.event();
        let (partition, offset) = (msg.partition(), msg.offset());
        self.applied.advance(partition, offset);
        let topic = msg.topic();
        let output = match self.engine.prepare(
            msg.payload().unwrap_or_default(),
            || Position::Kafka {
                topic: topic.to_owned(),
                partition,
                offset,
            },
            read_at,
        ) {
            Ok(p) => Ok(self.engine.finish(p)),
            Err(dead) => Err((dead, msg.key().unwrap_or_default().to_vec())),
        };
        async move {
            let output = match output {
                Ok(decided) => Output::Decision(decided.await),
                Err((dead, key)) => Output::DeadLetter(dead, key),
            };
            Done {
                generation,
                partition,
                offset,
                output,
            }
        }
    }

    /// Notes the committed offsets of the lane's partitions (the positions
    /// a feature snapshot taken now covers).
    fn record_positions(&self, consumer: &StreamConsumer<LaneContext>) {
        match consumer.committed(Duration::from_secs(5)) {
            Ok(tpl) => {
                let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
                for e in tpl.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        positions.insert(format!("{}/{}", e.topic(), e.partition()), o);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(lane = self.id, error = %e, "cannot read the committed offsets")
            }
        }
    }

    /// Resumes the partitions of finished catch-ups that are still assigned
    /// and not waiting for another catch-up.
    fn resume(&self, consumer: &StreamConsumer<LaneContext>, done: &[CatchUp]) {
        let queued: HashSet<i32> = consumer
            .context()
            .lock_catch_ups()
            .iter()
            .map(|j| j.partition)
            .collect();
        let assigned = consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for j in done {
            if !queued.contains(&j.partition)
                && assigned
                    .find_partition(&self.kafka.events_topic, j.partition)
                    .is_some()
            {
                tpl.add_partition(&self.kafka.events_topic, j.partition);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.resume(&tpl) {
            Ok(()) => tracing::info!(
                lane = self.id,
                partitions = ?partitions_of(&self.kafka.events_topic, &tpl),
                "features caught up; partitions resumed"
            ),
            Err(e) => tracing::warn!(lane = self.id, error = %e, "cannot resume partitions"),
        }
    }

    /// `/readyz` holds while every lane has partitions assigned (and their
    /// features caught up) and every configured stage (the model included)
    /// is serving.
    fn check_ready(&self, consumer: &StreamConsumer<LaneContext>, caught_up: bool) {
        let has = caught_up
            && consumer.context().lock_catch_ups().is_empty()
            && consumer
                .assignment()
                .map(|a| a.count() > 0)
                .unwrap_or(false);
        self.assigned[self.id].store(has, Ordering::Relaxed);
        let all = self.assigned.iter().all(|a| a.load(Ordering::Relaxed));
        self.ready
            .store(all && self.engine.stages_ready(), Ordering::Relaxed);
    }

    /// Serialises one output and hands it to the producer, in read order.
    async fn emit(
        &self,
        done: Done,
        producer: &LaneProducer,
        tracks: &Tracks,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let k = &self.kafka;
        out.clear();
        let (topic, key): (&str, &[u8]) = match &done.output {
            Output::Decision(decided) => {
                serde_json::to_writer(&mut *out, &decided.decision)
                    .context("serialising a decision")?;
                self.metrics.decided(decided);
                let key = decided.key.as_deref().unwrap_or("").as_bytes();
                (&k.decisions_topic, key)
            }
            Output::DeadLetter(dead, key) => {
                serde_json::to_writer(&mut *out, dead).context("serialising a dead letter")?;
                self.metrics.dead_letter(&dead.kind);
                (&k.dead_letters_topic, key.as_slice())
            }
        };
        if !tracks.will_produce(producer, done.generation, done.partition, done.offset)? {
            // The partition was revoked while this event was decided: its
            // owner decides it again from the committed offset.
            return Ok(());
        }
        let opaque = encode(done.partition, done.offset);
        let mut record = BaseRecord::with_opaque_to(topic, opaque)
            .key(key)
            .payload(out.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's local queue is full: wait for it to drain.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    anyhow::bail!(
                        "cannot produce to {topic}: {e}; stopping without committing \
                         partition {} offset {}, so it is decided again on restart",
                        done.partition,
                        done.offset
                    )
                }
            }
        }
    }

    /// Commits what is safe: acknowledged offsets (at-least-once), or the
    /// open transaction with its offsets (exactly-once).
    fn commit(
        &self,
        consumer: &StreamConsumer<LaneContext>,
        producer: &LaneProducer,
        tracks: &Tracks,
        mode: CommitMode,
    ) -> Result<()> {
        let k = &self.kafka;
        if k.exactly_once {
            let timeout = Duration::from_millis(k.shutdown_timeout_ms);
            let mut t = tracks.lock();
            if !t.in_txn {
                return Ok(());
            }
            let offsets = t.take_commit(&k.events_topic, None);
            let metadata = consumer
                .group_metadata()
                .context("the consumer has no group metadata for the transaction")?;
            let result = tokio::task::block_in_place(|| {
                producer.send_offsets_to_transaction(&offsets, &metadata, timeout)?;
                producer.commit_transaction(timeout)
            });
            t.in_txn = false;
            if let Err(e) = result {
                let _ = producer.abort_transaction(timeout);
                anyhow::bail!(
                    "cannot commit the transaction: {e}; it was aborted, and its events \
                     are decided again on restart"
                );
            }
            return Ok(());
        }
        let offsets = tracks.lock().take_commit(&k.events_topic, None);
        if offsets.count() == 0 {
            return Ok(());
        }
        match consumer.commit(&offsets, mode) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId),
            )) => {
                // The group is rebalancing: the offsets stay safe and are
                // committed on the next attempt (or by the revoke drain).
                tracing::debug!(lane = self.id, ?code, "commit deferred by a rebalance");
                tracks.lock().uncommit(&offsets);
                Err(Deferred.into())
            }
            Err(e) => Err(e).context("cannot commit offsets"),
        }
    }

    /// The last commit, retried while the group rebalances (polling the
    /// consumer so the rebalance completes), within the shutdown bound.
    async fn commit_final(
        &self,
        consumer: &StreamConsumer<LaneContext>,
        producer: &LaneProducer,
        tracks: &Tracks,
    ) -> Result<()> {
        let until = Instant::now() + Duration::from_millis(self.kafka.shutdown_timeout_ms);
        // Commit every safe offset again, synchronously: an earlier
        // asynchronous commit may still be on its way when the consumer
        // closes.
        tracks.lock().uncommit_all();
        loop {
            match self.commit(consumer, producer, tracks, CommitMode::Sync) {
                Err(e) if e.is::<Deferred>() && Instant::now() < until => {
                    // Messages fetched now are not decided and their offsets
                    // not committed: the next owner reads them.
                    let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
                }
                other => return other,
            }
        }
    }
}

/// At most this many events already fetched are read in one go before
/// the lane scores and emits: enough for full model batches, few enough
/// that the first of them is not kept waiting.
const BURST: usize = 64;

/// A commit the group's rebalance deferred; retried later.
#[derive(Debug)]
struct Deferred;

impl std::fmt::Display for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the commit was deferred by a consumer-group rebalance that did not settle in time",
        )
    }
}

impl std::error::Error for Deferred {}

/// Packs an input position into the delivery opaque (no allocation per
/// record): partition in the high 24 bits, offset in the low 40.
fn encode(partition: i32, offset: i64) -> usize {
    ((partition as u64 & 0xFF_FFFF) << 40 | (offset as u64 & 0xFF_FFFF_FFFF)) as usize
}

fn decode(opaque: usize) -> (i32, i64) {
    let v = opaque as u64;
    ((v >> 40) as i32, (v & 0xFF_FFFF_FFFF) as i64)
}

/// Which input offsets are safe to commit, per partition of one lane.
struct Tracks {
    exactly_once: bool,
    state: Mutex<TrackState>,
    /// A delivery the broker refused: the lane stops without committing it.
    failure: Mutex<Option<String>>,
    /// Woken on every acknowledgement, for a lane waiting on a full window.
    acked: tokio::sync::Notify,
    /// Incremented on every revoke: an event read before it is not
    /// produced after it, even if its partition comes back.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct TrackState {
    partitions: HashMap<i32, Track>,
    /// Partitions this lane owns; outputs of others are dropped.
    owned: HashSet<i32>,
    /// Outputs produced and not yet acknowledged (at-least-once).
    pending: usize,
    /// A transaction is open (exactly-once).
    in_txn: bool,
    /// Offsets of revoked partitions whose commit the rebalance refused;
    /// committed as soon as the rebalance completes.
    orphans: Vec<(i32, i64)>,
}

#[derive(Default)]
struct Track {
    /// Produced offsets in read order, with whether each is acknowledged.
    queue: VecDeque<(i64, bool)>,
    /// The next offset to commit: everything before it is safe.
    safe: Option<i64>,
    committed: Option<i64>,
}

impl Tracks {
    fn new(exactly_once: bool) -> Tracks {
        Tracks {
            exactly_once,
            state: Mutex::default(),
            failure: Mutex::default(),
            acked: tokio::sync::Notify::new(),
            generation: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> usize {
        self.lock().pending
    }

    fn check_failure(&self) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => anyhow::bail!("{f}"),
            None => Ok(()),
        }
    }

    /// Records that the output of `offset` is about to be produced; false
    /// when its partition is no longer owned. Opens a transaction in
    /// exactly-once mode.
    fn will_produce(
        &self,
        producer: &LaneProducer,
        generation: u64,
        partition: i32,
        offset: i64,
    ) -> Result<bool> {
        let mut t = self.lock();
        if generation != self.generation.load(Ordering::Acquire) || !t.owned.contains(&partition) {
            return Ok(false);
        }
        if self.exactly_once {
            if !t.in_txn {
                producer
                    .begin_transaction()
                    .context("cannot begin a Kafka transaction")?;
                t.in_txn = true;
            }
            t.partitions.entry(partition).or_default().safe = Some(offset + 1);
        } else {
            t.partitions
                .entry(partition)
                .or_default()
                .queue
                .push_back((offset, false));
            t.pending += 1;
        }
        Ok(true)
    }
}

impl TrackState {
    /// The offsets to commit (of `only` these partitions, or all), marked
    /// committed.
    fn take_commit(&mut self, topic: &str, only: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (&p, track) in &mut self.partitions {
            if only.is_some_and(|o| !o.contains(&p)) {
                continue;
            }
            if let Some(safe) = track.safe
                && track.committed != Some(safe)
            {
                let _ = tpl.add_partition_offset(topic, p, Offset::Offset(safe));
                track.committed = Some(safe);
            }
        }
        tpl
    }

    /// A commit of `offsets` failed: they are committed next time.
    fn uncommit(&mut self, offsets: &TopicPartitionList) {
        for e in offsets.elements() {
            if let Some(track) = self.partitions.get_mut(&e.partition()) {
                track.committed = None;
            }
        }
    }

    fn uncommit_all(&mut self) {
        for track in self.partitions.values_mut() {
            track.committed = None;
        }
    }

    /// An output was acknowledged: advance its partition's safe offset over
    /// the acknowledged prefix.
    fn ack(&mut self, partition: i32, offset: i64) {
        let Some(track) = self.partitions.get_mut(&partition) else {
            return;
        };
        if let Some(entry) = track.queue.iter_mut().find(|(o, _)| *o == offset) {
            entry.1 = true;
            self.pending = self.pending.saturating_sub(1);
        }
        while let Some(&(o, true)) = track.queue.front() {
            track.safe = Some(o + 1);
            track.queue.pop_front();
        }
    }
}

/// The producer's context: records each acknowledgement.
struct Acks(Arc<Tracks>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (partition, offset) = decode(opaque);
        match result {
            Ok(_) => {
                if !self.0.exactly_once {
                    self.0.lock().ack(partition, offset);
                }
            }
            Err((e, _)) => {
                let mut f = self.0.failure.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert_with(|| {
                    format!(
                        "the broker refused the output of partition {partition} offset \
                         {offset}: {e}; stopping without committing it, so it is decided \
                         again on restart"
                    )
                });
            }
        }
        self.0.acked.notify_one();
    }
}

/// The consumer's context: drains on revoke, tracks ownership, exports lag.
struct LaneContext {
    lane: usize,
    topic: String,
    tracks: Arc<Tracks>,
    producer: Arc<LaneProducer>,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
    engine: Arc<Engine>,
    applied: Arc<Applied>,
    catch_up_max_events: u64,
    /// Partitions assigned (and paused) whose features need catching up;
    /// the lane takes them and resumes each when done.
    catch_ups: Mutex<Vec<CatchUp>>,
}

impl ClientContext for LaneContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (&p, partition) in &topic.partitions {
                if p >= 0 && partition.consumer_lag >= 0 {
                    self.metrics
                        .set_consumer_lag(name, p, partition.consumer_lag);
                }
            }
        }
    }
}

fn partitions_of(topic: &str, tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts = partitions_of(&self.topic, tpl);
        if parts.is_empty() {
            return;
        }
        self.tracks.generation.fetch_add(1, Ordering::AcqRel);
        let result = if self.tracks.exactly_once {
            self.drain_transaction(consumer, &parts)
        } else {
            self.drain_acknowledged(consumer, &parts)
        };
        match result {
            Ok(committed) => tracing::info!(
                lane = self.lane,
                partitions = ?parts,
                committed,
                "rebalance: drained and committed before giving partitions up"
            ),
            Err(e) => tracing::warn!(
                lane = self.lane,
                partitions = ?parts,
                error = format!("{e:#}"),
                "rebalance: could not commit before giving partitions up; their new owner \
                 decides the uncommitted events again"
            ),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            // An asynchronous commit failed (a rebalance, say): commit those
            // offsets again on the next attempt.
            tracing::debug!(lane = self.lane, error = %e, "commit failed; retried");
            self.tracks.lock().uncommit(offsets);
        }
    }

    fn post_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                let parts = partitions_of(&self.topic, tpl);
                let orphans = std::mem::take(&mut self.tracks.lock().orphans);
                if !orphans.is_empty() {
                    let mut offsets = TopicPartitionList::new();
                    for (p, o) in &orphans {
                        let _ = offsets.add_partition_offset(&self.topic, *p, Offset::Offset(*o));
                    }
                    match consumer.commit(&offsets, CommitMode::Sync) {
                        Ok(()) => tracing::info!(
                            lane = self.lane,
                            partitions = orphans.len(),
                            "rebalance: committed the offsets of partitions given up"
                        ),
                        Err(e) => tracing::warn!(
                            lane = self.lane,
                            error = %e,
                            "rebalance: the offsets of partitions given up stay uncommitted; \
                             their new owner decides those events again"
                        ),
                    }
                }
                let mut t = self.tracks.lock();
                t.owned.extend(parts.iter().copied());
                // A partition received again starts from its committed
                // offset: forget what was tracked for it before.
                for p in &parts {
                    t.partitions.remove(p);
                }
                drop(t);
                tracing::info!(lane = self.lane, partitions = ?parts, "rebalance: partitions assigned");
                if !parts.is_empty() {
                    self.plan_catch_up(consumer, &parts);
                }
            }
            rdkafka::consumer::Rebalance::Revoke(_) => {}
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(lane = self.lane, error = %e, "rebalance failed")
            }
        }
    }
}

impl LaneContext {
    fn lock_catch_ups(&self) -> MutexGuard<'_, Vec<CatchUp>> {
        self.catch_ups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For each assigned partition whose events before the committed offset
    /// are not all in the feature store, pauses it and queues its catch-up.
    fn plan_catch_up(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) {
        if self.catch_up_max_events == 0 {
            return;
        }
        if self.engine.feature_store().is_none() {
            return;
        }
        let timeout = Duration::from_secs(10);
        let mut tpl = TopicPartitionList::new();
        for &p in parts {
            tpl.add_partition(&self.topic, p);
        }
        let committed = match consumer.committed_offsets(tpl, timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    lane = self.lane,
                    error = %e,
                    "cannot read the committed offsets of the assigned partitions; their \
                     features are not caught up"
                );
                return;
            }
        };
        let mut jobs = Vec::new();
        for e in committed.elements() {
            // Nothing committed: the partition is read, and every event
            // decided, from its start.
            let Offset::Offset(to) = e.offset() else {
                continue;
            };
            let p = e.partition();
            let from = match self.applied.get(p) {
                Some(next) => next,
                None => self.earliest(consumer, p, timeout),
            };
            let from = from.max(to.saturating_sub(self.catch_up_max_events as i64));
            if from < to {
                jobs.push(CatchUp {
                    partition: p,
                    from,
                    to,
                });
            }
        }
        if jobs.is_empty() {
            return;
        }
        let mut paused = TopicPartitionList::new();
        for j in &jobs {
            paused.add_partition(&self.topic, j.partition);
        }
        if let Err(e) = consumer.pause(&paused) {
            tracing::warn!(
                lane = self.lane,
                error = %e,
                "cannot pause partitions for the feature catch-up; their first events may \
                 see incomplete features"
            );
        }
        tracing::info!(
            lane = self.lane,
            partitions = ?jobs.iter().map(|j| (j.partition, j.from, j.to)).collect::<Vec<_>>(),
            "rebalance: the feature store is behind these partitions (partition, from, to); \
             reading their events again before deciding more"
        );
        let mut queued = self.lock_catch_ups();
        queued.retain(|q| !jobs.iter().any(|j| j.partition == q.partition));
        queued.extend(jobs);
    }

    /// The first offset the broker still holds of partition `p` (0 when it
    /// cannot say).
    fn earliest(&self, consumer: &BaseConsumer<Self>, p: i32, timeout: Duration) -> i64 {
        consumer
            .fetch_watermarks(&self.topic, p, timeout)
            .map_or(0, |(low, _)| low)
    }

    /// At-least-once: wait for every produced output to be acknowledged,
    /// then commit the revoked partitions' safe offsets.
    fn drain_acknowledged(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) -> Result<usize> {
        self.producer
            .flush(self.drain_timeout)
            .context("outputs were not acknowledged in time")?;
        let offsets = {
            let mut t = self.tracks.lock();
            let offsets = t.take_commit(&self.topic, Some(parts));
            for p in parts {
                t.owned.remove(p);
                if let Some(track) = t.partitions.remove(p) {
                    t.pending = t.pending.saturating_sub(track.queue.len());
                }
            }
            offsets
        };
        let n = offsets.count();
        if n > 0
            && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
        {
            // A group that is already rebalancing refuses commits: commit
            // these as soon as it has settled (see `post_rebalance`).
            self.tracks
                .lock()
                .orphans
                .extend(offsets.elements().iter().filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                }));
            return Err(e)
                .context("cannot commit offsets now; retried when the rebalance completes");
        }
        Ok(n)
    }

    /// Exactly-once: commit the open transaction with the offsets of every
    /// partition it covers.
    fn drain_transaction(&self, consumer: &BaseConsumer<Self>, parts: &[i32]) -> Result<usize> {
        let mut t = self.tracks.lock();
        for p in parts {
            t.owned.remove(p);
        }
        if !t.in_txn {
            return Ok(0);
        }
        let offsets = t.take_commit(&self.topic, None);
        t.in_txn = false;
        let n = offsets.count();
        let metadata = consumer
            .group_metadata()
            .context("the consumer has no group metadata")?;
        let result = self
            .producer
            .send_offsets_to_transaction(&offsets, &metadata, self.drain_timeout)
            .and_then(|()| self.producer.commit_transaction(self.drain_timeout));
        if let Err(e) = result {
            let _ = self.producer.abort_transaction(self.drain_timeout);
            return Err(e).context("the transaction was aborted");
        }
        Ok(n)
    }
}

/// Reads the events of `jobs` again into the feature store (not deciding
/// them) with a consumer of its own, outside the group; returns the jobs.
/// Gives a partition up (logged) when the broker has nothing for it for
/// half a minute; stops early on shutdown.
fn catch_up(
    lane: usize,
    engine: &Engine,
    applied: &Applied,
    metrics: &Metrics,
    k: &KafkaConfig,
    jobs: Vec<CatchUp>,
    stop: &AtomicBool,
) -> Vec<CatchUp> {
    let started = Instant::now();
    let consumer: BaseConsumer = match consumer_config(k)
        .set("group.id", format!("{}-catch-up", k.group_id))
        .set("client.id", format!("verdict-lane-{lane}-catch-up"))
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(lane, error = %e, "cannot create the catch-up consumer");
            return jobs;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for j in &jobs {
        let _ = tpl.add_partition_offset(&k.events_topic, j.partition, Offset::Offset(j.from));
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::warn!(lane, error = %e, "cannot assign the catch-up consumer");
        return jobs;
    }
    let mut remaining: HashMap<i32, i64> = jobs.iter().map(|j| (j.partition, j.to)).collect();
    let total: i64 = jobs.iter().map(|j| j.to - j.from).sum();
    let (mut replayed, mut unparsable) = (0u64, 0u64);
    let mut last_message = Instant::now();
    let mut last_report = Instant::now();
    while !remaining.is_empty() && !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                let Some(&to) = remaining.get(&p) else {
                    continue;
                };
                if o >= to {
                    remaining.remove(&p);
                    continue;
                }
                if engine.replay_features(m.payload().unwrap_or_default()) {
                    replayed += 1;
                } else {
                    unparsable += 1;
                }
                applied.advance(p, o);
                if o + 1 >= to {
                    remaining.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(lane, error = %e, "catch-up consumer error"),
            None if last_message.elapsed() > Duration::from_secs(30) => {
                tracing::warn!(
                    lane,
                    partitions = ?remaining.keys().collect::<Vec<_>>(),
                    "the broker sent nothing for 30 s; deciding on without the rest of \
                     these partitions' events in the features"
                );
                break;
            }
            None => {}
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(lane, replayed, of = total, "catching the features up");
            last_report = Instant::now();
        }
    }
    metrics.features_replayed(replayed);
    tracing::info!(
        lane,
        replayed,
        unparsable,
        secs = format!("{:.1}", started.elapsed().as_secs_f64()),
        "feature catch-up done"
    );
    jobs
}

/// Exports the feature store's size and counters every few seconds.
pub async fn report_features(engine: Arc<Engine>, metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        if let Some(stats) = engine.feature_stats() {
            metrics.set_feature_store(&stats);
        }
    }
}

/// What `verdict run` would load before it reads an event: the engine (every
/// file the configuration names, compiled) and the Kafka clients (librdkafka
/// refuses an unknown or malformed property when a client is created, before
/// it connects).
fn check_config(config: &Config) -> Result<()> {
    let engine = Engine::load_vetted(config, &std::env::current_exe()?)?;
    let k = &config.kafka;
    consumer_config(k)
        .create::<BaseConsumer>()
        .context("the Kafka consumer settings are not valid ([kafka] consumer_properties)")?;
    producer_config(k, 0)
        .create::<rdkafka::producer::BaseProducer>()
        .context("the Kafka producer settings are not valid ([kafka] producer_properties)")?;
    tracing::info!(
        ruleset_version = %engine.ruleset_version(),
        model_version = engine.model_version().as_deref().unwrap_or("none"),
        "configuration ok"
    );
    Ok(())
}

/// `verdict run`.
pub fn run(args: RunArgs) -> Result<std::process::ExitCode> {
    let config: Config = args.engine.load()?;
    if args.check_config {
        check_config(&config)?;
        println!("{config:#?}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let engine = Arc::new(Engine::load_vetted(&config, &std::env::current_exe()?)?);
    let metrics = Arc::new(Metrics::new());
    engine.attach_metrics(metrics.clone());
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
        tracing::info!(url = %format!("http://{}/metrics", listener.local_addr()?), "serving metrics");
        let state = crate::http::AppState {
            metrics,
            engine: Some(engine.clone()),
            admin: Some(engine),
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
        tokio::spawn(report_features(pipeline.engine.clone(), pipeline.metrics.clone()));
        let positions = pipeline.run(stop).await?;
        // Every event up to the committed positions is in the store: a
        // restart restores this and resumes from those offsets.
        pipeline.engine.snapshot_features(&positions)
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_round_trips_positions() {
        for (p, o) in [
            (0, 0),
            (3, 41),
            (1_000, 1 << 39),
            (0xFF_FFFF, 0xFF_FFFF_FFFF),
        ] {
            assert_eq!(decode(encode(p, o)), (p, o));
        }
    }

    #[test]
    fn safe_offset_advances_over_the_acknowledged_prefix_only() {
        let mut t = TrackState::default();
        for o in 10..15 {
            t.partitions
                .entry(0)
                .or_default()
                .queue
                .push_back((o, false));
            t.pending += 1;
        }
        t.ack(0, 12);
        t.ack(0, 11);
        assert_eq!(t.partitions[&0].safe, None, "10 is not acknowledged yet");
        t.ack(0, 10);
        assert_eq!(t.partitions[&0].safe, Some(13));
        let tpl = t.take_commit("events", None);
        assert_eq!(tpl.count(), 1);
        assert_eq!(t.take_commit("events", None).count(), 0, "committed once");
        t.ack(0, 14);
        assert_eq!(t.partitions[&0].safe, Some(13), "13 still missing");
        assert_eq!(t.pending, 1);
    }
}
