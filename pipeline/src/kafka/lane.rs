//! A lane's deciding task: the messages its Kafka thread read go through
//! a [`Window`] (parse and features in read order, scoring and rules
//! concurrently), the outputs are produced in read order, and the
//! acknowledgements decide which offsets the Kafka thread may commit
//! ([`Offsets`]).
//!
//! Everything here is non-blocking: producing is handing a record to
//! librdkafka's queue, acknowledgements arrive on a channel from the
//! producer's delivery callback, and whatever must block (commits,
//! transactions, the committed offsets) is a [`Command`] to the Kafka
//! thread, awaited on a oneshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use crossbeam_channel as cb;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use tokio::sync::{mpsc, oneshot};
use verdict_core::Position;

use crate::config::KafkaConfig;
use crate::engine::{Engine, Output, StreamClock};
use crate::metrics::Metrics;
use crate::window::Window;

use super::LaneProducer;
use super::catch_up::Applied;
use super::consumer::{Batch, Command, Drained, FromKafka, OutputTopics, Revoking};
use super::offsets::{Epoch, Offsets};
use super::resume;

/// The producer's acknowledgement of one output.
#[derive(Debug)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    /// Why the broker refused it.
    pub error: Option<String>,
}

/// Everything one lane's task works with.
pub struct Lane {
    pub id: usize,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub kafka: KafkaConfig,
    pub applied: Arc<Applied>,
    pub producer: Arc<LaneProducer>,
    pub outputs: OutputTopics,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub from_kafka: mpsc::Receiver<FromKafka>,
    pub commands: cb::Sender<Command>,
    /// Batches handed back to the Kafka thread for reuse.
    pub recycle: cb::Sender<Batch>,
    /// Lanes leave the group only once all have committed, so that one
    /// leaving does not rebalance the others out of their last commit.
    pub finished: Arc<tokio::sync::Barrier>,
    pub kafka_thread: std::thread::JoinHandle<()>,
    /// Where every decision is archived with its event, if anywhere.
    pub history: Option<verdict_history::HistoryLogger>,
}

/// What the window carries for each event.
struct Tag {
    partition: i32,
    offset: i64,
    epoch: Epoch,
    /// The message key, kept only for a dead letter (keyed by it).
    key: Option<Box<[u8]>>,
    /// The event's bytes, kept only for the decision log.
    event: Option<Box<[u8]>>,
}

/// The lane's state besides the window.
struct State {
    id: usize,
    kafka: KafkaConfig,
    metrics: Arc<Metrics>,
    producer: Arc<LaneProducer>,
    commands: cb::Sender<Command>,
    offsets: Offsets,
    /// Exactly-once: a transaction is open.
    in_transaction: bool,
    /// The output being serialised.
    out: Vec<u8>,
    /// A revoke waiting for its partitions to drain, and until when.
    revoking: Option<(Revoking, Instant)>,
    outputs: OutputTopics,
    /// The `verdict.input` header of the output being produced.
    input_header: Vec<u8>,
    /// Per partition, the offsets ahead whose output is already on the
    /// topics (ascending); empty for almost every partition.
    already_decided: std::collections::HashMap<i32, std::collections::VecDeque<i64>>,
    /// Per owned partition, its event-time clock: the feature store's
    /// lateness rule judges an event by its own partition's order, however
    /// far this lane's other partitions or other lanes have run ahead.
    clocks: std::collections::HashMap<i32, StreamClock>,
    /// The decision log, if one is kept.
    history: Option<verdict_history::HistoryLogger>,
}

impl Lane {
    /// Decides until `stop`, then finishes what is in flight, commits, and
    /// answers the committed offsets of its partitions (partition → next
    /// offset).
    pub async fn run(self, stop: Arc<AtomicBool>) -> Result<Vec<(i32, i64)>> {
        let Lane {
            id,
            engine,
            metrics,
            kafka,
            applied,
            producer,
            outputs,
            mut acks,
            mut from_kafka,
            commands,
            recycle,
            finished,
            kafka_thread,
            history,
        } = self;
        let engine = &*engine;
        let k = kafka.clone();
        let mut state = State {
            id,
            offsets: Offsets::new(k.exactly_once),
            kafka,
            metrics,
            producer,
            commands,
            in_transaction: false,
            out: Vec::with_capacity(1024),
            revoking: None,
            outputs,
            input_header: Vec::with_capacity(24),
            already_decided: Default::default(),
            clocks: Default::default(),
            history,
        };
        let mut window = Window::new(k.max_in_flight);
        let mut burst = engine.burst();
        let max_in_flight = k.max_in_flight.max(1);
        let commit_every = Duration::from_millis(k.commit_interval_ms);
        let shutdown = Duration::from_millis(k.shutdown_timeout_ms);
        let mut last_commit = Instant::now();
        let mut stopping_since: Option<Instant> = None;
        loop {
            if let Some((r, until)) = &state.revoking
                && (state.offsets.drained(&r.partitions) || Instant::now() >= *until)
            {
                state.answer_revoke().await?;
            }
            if last_commit.elapsed() >= commit_every {
                state.commit().await?;
                last_commit = Instant::now();
            }
            if stop.load(Ordering::Relaxed) && stopping_since.is_none() {
                tracing::info!(
                    lane = id,
                    in_flight = window.len() + state.offsets.pending(),
                    "stopping: finishing in-flight events"
                );
                stopping_since = Some(Instant::now());
            }
            if let Some(since) = stopping_since {
                if window.is_empty() && state.offsets.pending() == 0 {
                    break;
                }
                if since.elapsed() > shutdown {
                    bail!(
                        "in-flight events were not decided and acknowledged within {} ms of \
                         the shutdown request; their offsets are left uncommitted and they are \
                         decided again on restart",
                        k.shutdown_timeout_ms
                    );
                }
            }
            let in_flight = window.len() + state.offsets.pending();
            state.metrics.set_in_flight(in_flight);
            let accepting = stopping_since.is_some() || in_flight < max_in_flight;
            tokio::select! {
                biased;
                Some(ack) = acks.recv() => {
                    state.ack(ack)?;
                    while let Ok(ack) = acks.try_recv() {
                        state.ack(ack)?;
                    }
                }
                Some((tag, output)) = window.next(), if !window.is_empty() => {
                    state.emit(tag, output).await?;
                }
                message = from_kafka.recv(), if accepting => match message {
                    Some(FromKafka::Batch(batch)) => {
                        if stopping_since.is_none() {
                            for m in &batch.messages {
                                let Some(epoch) = state.offsets.epoch(m.partition) else {
                                    // Read before its partition went.
                                    continue;
                                };
                                let read_at = Instant::now();
                                applied.advance(m.partition, m.offset);
                                if state.was_decided(m.partition, m.offset) {
                                    // Its output is on the topic already: its
                                    // features only.
                                    let clock = state.clocks.entry(m.partition).or_default();
                                    engine.replay_features(batch.payload(m), Some(clock));
                                    state.offsets.already_decided(m.partition, m.offset);
                                    state.metrics.resumed();
                                    continue;
                                }
                                state.metrics.event();
                                state.offsets.read(m.partition, m.offset);
                                let topic = &k.events_topic;
                                let (partition, offset) = (m.partition, m.offset);
                                let clock = state.clocks.entry(partition).or_default();
                                let prepared = engine
                                    .prepare_in(
                                        &mut burst,
                                        clock,
                                        batch.payload(m),
                                        || Position::Kafka {
                                            topic: topic.clone(),
                                            partition,
                                            offset,
                                        },
                                        read_at,
                                    )
                                    .map(|p| engine.finish(p));
                                let key = prepared.is_err().then(|| batch.key(m).into());
                                let event = (prepared.is_ok() && state.history.is_some())
                                    .then(|| batch.payload(m).into());
                                window.push(Tag { partition, offset, epoch, key, event }, prepared);
                            }
                            // The burst's shared features in one round trip.
                            burst.send();
                            // Nothing more to read now: score what waits here
                            // rather than wait for the scoring thread.
                            engine.help_score();
                        }
                        let mut batch = batch;
                        batch.clear();
                        let _ = recycle.try_send(batch);
                        // The channel is outside tokio's cooperative budget:
                        // without this a lane reading a long burst would not
                        // see its model replies until the burst was read.
                        tokio::task::consume_budget().await;
                    }
                    Some(FromKafka::Assigned(assignments)) => {
                        for a in assignments {
                            state.offsets.assign(a.partition);
                            if a.already_decided.is_empty() {
                                state.already_decided.remove(&a.partition);
                            } else {
                                state.already_decided.insert(a.partition, a.already_decided.into());
                            }
                        }
                    }
                    Some(FromKafka::Revoking(r)) => {
                        let until = Instant::now() + shutdown;
                        state.revoking = Some((r, until));
                    }
                    Some(FromKafka::CommitFailed(partitions)) => {
                        state.offsets.commit_failed(&partitions);
                    }
                    None => bail!("the lane's Kafka thread stopped"),
                },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }

        let positions = state.commit_final().await?;
        state.metrics.set_in_flight(0);
        let _ = tokio::time::timeout(shutdown, finished.wait()).await;
        let _ = state.commands.send(Command::Close);
        // The consumer leaves the group; answer whatever it still says
        // until its thread ends.
        while let Some(message) = from_kafka.recv().await {
            if let FromKafka::Revoking(r) = message {
                r.reply(Drained::default());
            }
        }
        let _ = tokio::task::spawn_blocking(move || kafka_thread.join()).await;
        tracing::info!(lane = id, "lane stopped; offsets committed");
        Ok(positions)
    }
}

/// Packs an input position into the delivery opaque (no allocation per
/// record): partition in the high 24 bits, offset in the low 40.
fn encode(partition: i32, offset: i64) -> usize {
    ((partition as u64 & 0xFF_FFFF) << 40 | (offset as u64 & 0xFF_FFFF_FFFF)) as usize
}

/// The input position a delivery opaque carries.
pub fn decode(opaque: usize) -> (i32, i64) {
    let v = opaque as u64;
    ((v >> 40) as i32, (v & 0xFF_FFFF_FFFF) as i64)
}

impl State {
    /// True when the event at `offset` already has its output on the
    /// topics (read back when its partition was assigned).
    fn was_decided(&mut self, partition: i32, offset: i64) -> bool {
        if self.already_decided.is_empty() {
            return false;
        }
        let Some(ahead) = self.already_decided.get_mut(&partition) else {
            return false;
        };
        while ahead.front().is_some_and(|&o| o < offset) {
            ahead.pop_front();
        }
        let decided = ahead.front() == Some(&offset);
        if decided {
            ahead.pop_front();
        }
        if ahead.is_empty() {
            self.already_decided.remove(&partition);
        }
        decided
    }

    fn ack(&mut self, ack: Ack) -> Result<()> {
        if let Some(e) = ack.error {
            bail!(
                "the broker refused the output of partition {} offset {}: {e}; stopping \
                 without committing it, so it is decided again on restart",
                ack.partition,
                ack.offset
            );
        }
        self.offsets.ack(ack.partition, ack.offset);
        Ok(())
    }

    /// Serialises one output and hands it to the producer, in read order;
    /// drops it when its partition was revoked since it was read.
    async fn emit(&mut self, tag: Tag, output: Output) -> Result<()> {
        if !self.offsets.produce(tag.partition, tag.epoch, tag.offset) {
            self.metrics.output_dropped();
            return Ok(());
        }
        let k = &self.kafka;
        self.out.clear();
        let (topic, key, partitions): (&str, &[u8], i32) = match &output {
            Output::Decision(decided) => {
                // Byte for byte serde_json's output, built without
                // serde's machinery (core's tests compare the two).
                decided.decision.write_json(&mut self.out);
                decided.count(&self.metrics);
                if let (Some(log), Some(event)) = (&self.history, &tag.event) {
                    let position = Position::Kafka {
                        topic: k.events_topic.clone(),
                        partition: tag.partition,
                        offset: tag.offset,
                    };
                    let logged = log.try_log(&verdict_history::LogEntry {
                        event,
                        timestamp_ms: decided.timestamp_ms,
                        decision: &decided.decision,
                        position: Some(&position),
                    });
                    if !logged {
                        self.metrics.history_dropped();
                    }
                }
                (
                    &k.decisions_topic,
                    decided.key.as_deref().unwrap_or("").as_bytes(),
                    self.outputs.decisions,
                )
            }
            Output::DeadLetter(rejected) => {
                serde_json::to_writer(&mut self.out, &rejected.letter)
                    .context("serialising a dead letter")?;
                self.metrics.dead_letter(rejected.kind);
                (
                    &k.dead_letters_topic,
                    tag.key.as_deref().unwrap_or(b""),
                    self.outputs.dead_letters,
                )
            }
        };
        resume::encode_input(&mut self.input_header, tag.partition, tag.offset);
        if k.exactly_once && !self.in_transaction {
            self.producer
                .begin_transaction()
                .context("cannot begin a Kafka transaction")?;
            self.in_transaction = true;
        }
        let mut record = BaseRecord::with_opaque_to(topic, encode(tag.partition, tag.offset))
            .key(key)
            .payload(self.out.as_slice())
            .headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: resume::INPUT_HEADER,
                value: Some(self.input_header.as_slice()),
            }));
        if let Some(p) = resume::output_partition(tag.partition, partitions) {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's local queue is full: wait for it to drain.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => bail!(
                    "cannot produce to {topic}: {e}; stopping without committing partition {} \
                     offset {}, so it is decided again on restart",
                    tag.partition,
                    tag.offset
                ),
            }
        }
    }

    /// Commits what is safe: acknowledged offsets (asynchronously, by the
    /// Kafka thread), or the open transaction with its offsets (awaited:
    /// nothing is produced meanwhile).
    async fn commit(&mut self) -> Result<()> {
        if self.kafka.exactly_once {
            if self.in_transaction {
                let offsets = self.offsets.safe_offsets();
                self.ask_transaction_commit(offsets).await?;
            }
            return Ok(());
        }
        let offsets = self.offsets.take_commit();
        if !offsets.is_empty() {
            let _ = self.commands.send(Command::Commit(offsets));
        }
        Ok(())
    }

    async fn ask_transaction_commit(&mut self, offsets: Vec<(i32, i64)>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::CommitTransaction { offsets, reply })
            .map_err(|_| anyhow::anyhow!("the lane's Kafka thread stopped"))?;
        let result = answer
            .await
            .map_err(|_| anyhow::anyhow!("the lane's Kafka thread stopped"))?;
        self.in_transaction = false;
        result.map_err(anyhow::Error::msg)
    }

    /// Answers the waiting revoke: what to commit before the partitions
    /// go (exactly-once: the open transaction, with the offsets of every
    /// partition it covers), then forgets them.
    async fn answer_revoke(&mut self) -> Result<()> {
        let Some((revoking, _)) = self.revoking.take() else {
            return Ok(());
        };
        let partitions = revoking.partitions.clone();
        let transaction =
            (self.kafka.exactly_once && self.in_transaction).then(|| self.offsets.safe_offsets());
        let released = self.offsets.revoke(&partitions);
        for p in &partitions {
            self.clocks.remove(p);
        }
        let abandoned: usize = released.iter().map(|r| r.abandoned).sum();
        if abandoned > 0 {
            tracing::warn!(
                lane = self.id,
                partitions = ?partitions,
                abandoned,
                "rebalance: events of revoked partitions were not finished in time; their \
                 next owner decides them again"
            );
        }
        match transaction {
            Some(offsets) => {
                let (done, answer) = oneshot::channel();
                revoking.reply(Drained {
                    offsets,
                    transaction: Some(done),
                });
                self.in_transaction = false;
                answer
                    .await
                    .map_err(|_| anyhow::anyhow!("the lane's Kafka thread stopped"))?
                    .map_err(anyhow::Error::msg)
            }
            // Exactly-once with nothing produced since the last commit:
            // nothing to commit.
            None if self.kafka.exactly_once => {
                revoking.reply(Drained::default());
                Ok(())
            }
            None => {
                revoking.reply(Drained {
                    offsets: released
                        .iter()
                        .filter_map(|r| r.commit.map(|c| (r.partition, c)))
                        .collect(),
                    transaction: None,
                });
                Ok(())
            }
        }
    }

    /// The last commit (synchronous: an earlier asynchronous one may still
    /// be on its way when the consumer closes), then the committed offsets.
    async fn commit_final(&mut self) -> Result<Vec<(i32, i64)>> {
        if self.kafka.exactly_once {
            if self.in_transaction {
                let offsets = self.offsets.safe_offsets();
                self.ask_transaction_commit(offsets).await?;
            }
        } else {
            self.offsets.recommit_all();
            let offsets = self.offsets.take_commit();
            let (reply, answer) = oneshot::channel();
            self.commands
                .send(Command::CommitSync { offsets, reply })
                .map_err(|_| anyhow::anyhow!("the lane's Kafka thread stopped"))?;
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the lane's Kafka thread stopped"))?
                .map_err(anyhow::Error::msg)?;
        }
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Committed { reply }).is_err() {
            return Ok(Vec::new());
        }
        Ok(answer.await.unwrap_or_default())
    }
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
}
