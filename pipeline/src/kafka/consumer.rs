//! The Kafka thread of one lane: it owns the lane's consumer and makes
//! every blocking Kafka call — polling, the rebalance callbacks, commits,
//! committed offsets and watermarks, transaction commits — so that none of
//! them ever runs on an async worker.
//!
//! It talks to the lane's deciding task (see [`super::lane`]) through two
//! channels:
//! - to the lane, in order: batches of messages read (copied into a reused
//!   buffer), partitions assigned, partitions about to be revoked (the
//!   lane drains them and answers what to commit), commits that failed;
//! - from the lane: [`Command`]s (commit these offsets, commit the
//!   transaction, report the committed offsets, close).
//!
//! librdkafka calls the rebalance callbacks from inside `poll`, on this
//! thread. A revoke waits here for the lane to finish the revoked
//! partitions' events and for their outputs to be acknowledged, then
//! commits their offsets synchronously before the partitions go, so a
//! graceful handoff decides nothing twice, with the eager and the
//! cooperative protocols alike. While it waits it keeps serving the lane's
//! commands, so the two never wait on each other.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use crossbeam_channel as cb;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::Producer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::config::KafkaConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;

use super::LaneProducer;
use super::catch_up::{self, Applied, CatchUp};
use super::config::consumer_config;
use super::resume;

/// At most this many messages already fetched go to the lane in one
/// batch: enough for full model batches, few enough that the first of
/// them is not kept waiting.
pub const BURST: usize = 64;

/// How long one poll waits for a message when none is there; commands
/// from the lane wait at most this long when the thread is idle.
const POLL: Duration = Duration::from_millis(10);

/// Messages read, their bytes copied into one buffer the lane hands back
/// for reuse.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    pub messages: Vec<Message>,
}

/// One message of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    payload: Range<usize>,
    key: Range<usize>,
}

impl Batch {
    fn push(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let payload = m.payload().unwrap_or_default();
        let key = m.key().unwrap_or_default();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.bytes.extend_from_slice(key);
        self.messages.push(Message {
            partition: m.partition(),
            offset: m.offset(),
            payload: start..start + payload.len(),
            key: start + payload.len()..start + payload.len() + key.len(),
        });
    }

    pub fn payload(&self, m: &Message) -> &[u8] {
        &self.bytes[m.payload.clone()]
    }

    pub fn key(&self, m: &Message) -> &[u8] {
        &self.bytes[m.key.clone()]
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.messages.clear();
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// What the Kafka thread tells its lane, in order.
#[derive(Debug)]
pub enum FromKafka {
    /// Messages read.
    Batch(Batch),
    /// Partitions now the lane's (all of them after an eager rebalance,
    /// the added ones after a cooperative one), read from their committed
    /// offsets.
    Assigned(Vec<Assignment>),
    /// Partitions about to be taken away: finish them and answer.
    Revoking(Revoking),
    /// An asynchronous commit of these partitions failed: commit them
    /// again next time.
    CommitFailed(Vec<i32>),
}

/// One partition assigned to the lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub partition: i32,
    /// Offsets at or past the committed one whose output is already on the
    /// output topics (see [`super::resume`]), ascending: not decided again.
    pub already_decided: Vec<i64>,
}

/// The partition counts of the output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTopics {
    pub decisions: i32,
    pub dead_letters: i32,
}

/// A revoke waiting for the lane's answer.
#[derive(Debug)]
pub struct Revoking {
    pub partitions: Vec<i32>,
    reply: cb::Sender<Drained>,
}

impl Revoking {
    /// Answers the revoke: what to commit before the partitions go.
    pub fn reply(self, drained: Drained) {
        let _ = self.reply.send(drained);
    }
}

/// The lane's answer to a revoke.
#[derive(Debug, Default)]
pub struct Drained {
    /// Offsets to commit (partition, next offset): the revoked partitions'
    /// safe offsets, or in exactly-once mode those of every partition the
    /// open transaction covers.
    pub offsets: Vec<(i32, i64)>,
    /// Exactly-once with a transaction open: commit it with `offsets`, and
    /// say how it went here (the lane produces nothing until then).
    pub transaction: Option<oneshot::Sender<Result<(), String>>>,
}

/// What a lane asks of its Kafka thread.
#[derive(Debug)]
pub enum Command {
    /// Commit these offsets (partition, next offset), asynchronously.
    Commit(Vec<(i32, i64)>),
    /// The last commit: synchronous, retried while the group rebalances,
    /// within `kafka.shutdown_timeout_ms`.
    CommitSync {
        offsets: Vec<(i32, i64)>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Exactly-once: send `offsets` to the open transaction and commit it
    /// (aborting it when that fails).
    CommitTransaction {
        offsets: Vec<(i32, i64)>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The group's committed offsets of the lane's partitions.
    Committed {
        reply: oneshot::Sender<Vec<(i32, i64)>>,
    },
    /// The catch-up `job` of these partitions is over: resume those it
    /// still stands for.
    CaughtUp { job: u64, jobs: Vec<CatchUp> },
    /// Leave the group and end the thread.
    Close,
}

/// What the service reads of a lane: for `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct Status {
    /// Partitions assigned.
    pub partitions: AtomicUsize,
    /// Of them, paused while their features catch up.
    pub catching_up: AtomicUsize,
}

impl Status {
    /// Holds partitions, none of them waiting for a catch-up.
    pub fn ready(&self) -> bool {
        self.partitions.load(Ordering::Relaxed) > 0 && self.catching_up.load(Ordering::Relaxed) == 0
    }
}

/// Everything the Kafka thread needs; built by the lane's starter.
pub struct Setup {
    pub lane: usize,
    pub kafka: KafkaConfig,
    pub engine: Arc<Engine>,
    pub applied: Arc<Applied>,
    pub metrics: Arc<Metrics>,
    pub producer: Arc<LaneProducer>,
    pub outputs: OutputTopics,
    pub status: Arc<Status>,
    /// Set on shutdown: stops catch-ups early.
    pub stop: Arc<AtomicBool>,
    pub to_lane: mpsc::Sender<FromKafka>,
    /// Batches the lane is done with.
    pub recycled: cb::Receiver<Batch>,
}

/// A running Kafka thread.
pub struct KafkaThread {
    pub commands: cb::Sender<Command>,
    pub handle: std::thread::JoinHandle<()>,
}

/// Creates the lane's consumer, subscribes it to the events topic, and
/// starts its thread.
pub fn start(setup: Setup) -> Result<KafkaThread> {
    let (commands_tx, commands) = cb::unbounded();
    let lane = setup.lane;
    let topic = setup.kafka.events_topic.clone();
    let context = Context {
        drain_timeout: Duration::from_millis(setup.kafka.shutdown_timeout_ms),
        commands,
        commands_tx: commands_tx.clone(),
        batch: Mutex::new(Batch::default()),
        catching_up: Mutex::default(),
        next_job: Default::default(),
        closing: AtomicBool::new(false),
        in_callback: AtomicBool::new(false),
        failed_commits: Mutex::default(),
        last_commit: Mutex::default(),
        setup,
    };
    let consumer: BaseConsumer<Context> = consumer_config(&context.setup.kafka, lane)
        .create_with_context(context)
        .context("cannot create the Kafka consumer")?;
    consumer
        .subscribe(&[&topic])
        .with_context(|| format!("cannot subscribe to {topic}"))?;
    let handle = std::thread::Builder::new()
        .name(format!("kafka-lane-{lane}"))
        .spawn(move || run(consumer))
        .context("cannot start a Kafka thread")?;
    Ok(KafkaThread {
        commands: commands_tx,
        handle,
    })
}

/// The consumer's context: the rebalance callbacks and everything they
/// need, reached from the thread's loop through `consumer.context()`.
struct Context {
    setup: Setup,
    drain_timeout: Duration,
    commands: cb::Receiver<Command>,
    /// For the catch-up threads' "caught up".
    commands_tx: cb::Sender<Command>,
    /// The batch being filled. Only this thread takes the lock, never
    /// across a poll: a callback inside a poll takes it to send what was
    /// read before the rebalance ahead of the news of it.
    batch: Mutex<Batch>,
    /// Partitions paused for a catch-up, each with the catch-up it waits
    /// for (a partition revoked and assigned again waits for the newer).
    catching_up: Mutex<HashMap<i32, u64>>,
    /// The id of the next catch-up.
    next_job: std::sync::atomic::AtomicU64,
    /// Set once the lane asked to close: the callbacks of the consumer's
    /// own close have nothing left to do.
    closing: AtomicBool,
    /// Set while a rebalance callback runs: the consumer must not be
    /// polled from inside it.
    in_callback: AtomicBool,
    /// Partitions whose asynchronous commit failed, to tell the lane.
    failed_commits: Mutex<Vec<i32>>,
    /// The lane's last commit while it is being retried: the lane, with
    /// nothing in flight, waits for it and reads nothing else, so a revoke
    /// that comes meanwhile commits its partitions' part of it itself.
    last_commit: Mutex<Option<Vec<(i32, i64)>>>,
}

fn run(consumer: BaseConsumer<Context>) {
    let ctx = consumer.context();
    let lane = ctx.setup.lane;
    let mut errors = RateLimited::new();
    'outer: loop {
        while let Ok(command) = ctx.commands.try_recv() {
            if !ctx.serve(&consumer, command) {
                break 'outer;
            }
        }
        // A close served while waiting for room to send (see `send`).
        if ctx.closing.load(Ordering::Relaxed) {
            break;
        }
        let mut read = 0;
        let mut wait = POLL;
        while read < BURST {
            match consumer.poll(wait) {
                Some(Ok(m)) => {
                    ctx.lock_batch().push(&m);
                    read += 1;
                    wait = Duration::ZERO;
                }
                Some(Err(e)) => {
                    errors.warn(lane, &e);
                    break;
                }
                None => break,
            }
        }
        if !ctx.flush_batch(&consumer) {
            break;
        }
        let failed =
            std::mem::take(&mut *ctx.failed_commits.lock().unwrap_or_else(|e| e.into_inner()));
        if !failed.is_empty() && !ctx.send(&consumer, FromKafka::CommitFailed(failed)) {
            break;
        }
    }
    tracing::debug!(lane, "closing the consumer");
    ctx.closing.store(true, Ordering::Relaxed);
    drop(consumer);
}

impl Context {
    fn lock_batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_last_commit(&self) -> MutexGuard<'_, Option<Vec<(i32, i64)>>> {
        self.last_commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The revoked `partitions`' part of the lane's last commit, taken out
    /// of it, if the lane is making that commit now.
    fn take_from_last_commit(&self, partitions: &[i32]) -> Option<Drained> {
        let mut last = self.lock_last_commit();
        let offsets = last.as_mut()?;
        let (revoked, kept) = offsets.iter().partition(|(p, _)| partitions.contains(p));
        *offsets = kept;
        Some(Drained {
            offsets: revoked,
            transaction: None,
        })
    }

    /// Sends the batch being filled, if any, to the lane; false when the
    /// lane is gone.
    fn flush_batch(&self, consumer: &BaseConsumer<Context>) -> bool {
        let full = {
            let mut b = self.lock_batch();
            if b.is_empty() {
                return true;
            }
            let fresh = self.setup.recycled.try_recv().unwrap_or_default();
            std::mem::replace(&mut *b, fresh)
        };
        self.send(consumer, FromKafka::Batch(full))
    }

    /// Sends `message` to the lane, waiting for room while serving the
    /// lane's commands; false when the lane is gone or asked to close.
    fn send(&self, consumer: &BaseConsumer<Context>, message: FromKafka) -> bool {
        let mut message = message;
        loop {
            if self.closing.load(Ordering::Relaxed) {
                return false;
            }
            match self.setup.to_lane.try_send(message) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    message = m;
                    if let Ok(command) = self.commands.recv_timeout(Duration::from_millis(1))
                        && !self.serve(consumer, command)
                    {
                        self.closing.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Carries out one command; false for [`Command::Close`].
    fn serve(&self, consumer: &BaseConsumer<Context>, command: Command) -> bool {
        let k = &self.setup.kafka;
        match command {
            Command::Commit(offsets) => {
                let tpl = self.list(&offsets);
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(lane = self.setup.lane, error = %e, "commit refused; retried");
                    self.tell_commit_failed(consumer, &tpl);
                }
            }
            Command::CommitSync { offsets, reply } => {
                *self.lock_last_commit() = Some(offsets);
                let result = self.commit_sync_with(consumer, || {
                    self.lock_last_commit().clone().unwrap_or_default()
                });
                *self.lock_last_commit() = None;
                let _ = reply.send(result);
            }
            Command::CommitTransaction { offsets, reply } => {
                let _ = reply.send(self.commit_transaction(consumer, &offsets));
            }
            Command::Committed { reply } => {
                let mut out = Vec::new();
                match consumer.committed(Duration::from_secs(5)) {
                    Ok(tpl) => {
                        for e in tpl.elements_for_topic(&k.events_topic) {
                            if let Offset::Offset(o) = e.offset() {
                                out.push((e.partition(), o));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        lane = self.setup.lane,
                        error = %e,
                        "cannot read the committed offsets"
                    ),
                }
                let _ = reply.send(out);
            }
            Command::CaughtUp { job, jobs } => self.resume(consumer, job, &jobs),
            Command::Close => return false,
        }
        true
    }

    fn list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            let _ = tpl.add_partition_offset(&self.setup.kafka.events_topic, p, Offset::Offset(o));
        }
        tpl
    }

    fn tell_commit_failed(&self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let parts = partitions_of(&self.setup.kafka.events_topic, tpl);
        if !parts.is_empty() {
            self.send(consumer, FromKafka::CommitFailed(parts));
        }
    }

    /// A synchronous commit, retried while the group rebalances (polling
    /// the consumer so that the rebalance completes; what such a poll
    /// returns is not decided, so its offsets are never committed here),
    /// within the shutdown bound. Inside a rebalance callback it is tried
    /// once: the group cannot settle while this member waits in it.
    fn commit_sync(
        &self,
        consumer: &BaseConsumer<Context>,
        offsets: &[(i32, i64)],
    ) -> Result<(), String> {
        self.commit_sync_with(consumer, || offsets.to_vec())
    }

    /// [`commit_sync`](Self::commit_sync) of what `offsets` answers at each
    /// attempt (a revoke during a retry's poll takes its partitions out).
    fn commit_sync_with(
        &self,
        consumer: &BaseConsumer<Context>,
        offsets: impl Fn() -> Vec<(i32, i64)>,
    ) -> Result<(), String> {
        let until = Instant::now() + self.drain_timeout;
        loop {
            let offsets = offsets();
            if offsets.is_empty() {
                return Ok(());
            }
            match consumer.commit(&self.list(&offsets), CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                    return Ok(());
                }
                Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId,
                )) if Instant::now() < until && !self.in_callback.load(Ordering::Relaxed) => {
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("cannot commit offsets: {e}")),
            }
        }
    }

    /// Sends `offsets` to the open transaction and commits it; aborts it
    /// when either fails.
    fn commit_transaction(
        &self,
        consumer: &BaseConsumer<Context>,
        offsets: &[(i32, i64)],
    ) -> Result<(), String> {
        let producer = &self.setup.producer;
        let timeout = self.drain_timeout;
        let result = consumer
            .group_metadata()
            .ok_or_else(|| "the consumer has no group metadata".to_owned())
            .and_then(|metadata| {
                producer
                    .send_offsets_to_transaction(&self.list(offsets), &metadata, timeout)
                    .and_then(|()| producer.commit_transaction(timeout))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = &result {
            let _ = producer.abort_transaction(timeout);
            return Err(format!(
                "cannot commit the transaction: {e}; it was aborted, and its events are \
                 decided again by the partitions' next reader"
            ));
        }
        Ok(())
    }

    /// A revoke: the lane finishes the partitions' events and answers what
    /// to commit; the offsets are committed before the partitions go. A
    /// revoke that comes while the lane's last commit is retried (the
    /// group rebalancing as the instance stops) commits those partitions'
    /// part of that commit instead — the lane, with nothing in flight, is
    /// waiting for it and would not answer — or, refused, leaves it to
    /// that commit's next attempt.
    fn revoke(&self, consumer: &BaseConsumer<Context>, partitions: Vec<i32>) {
        let lane = self.setup.lane;
        let metrics = &self.setup.metrics;
        metrics.rebalance("revoke");
        let started = Instant::now();
        let from_last_commit = self.take_from_last_commit(&partitions);
        let last_commit = from_last_commit.is_some();
        let Some(drained) = from_last_commit.or_else(|| self.drain(consumer, &partitions, started))
        else {
            return;
        };
        let result = match drained.transaction {
            Some(done) => {
                let r = self.commit_transaction(consumer, &drained.offsets);
                let _ = done.send(r.clone());
                r
            }
            None => self.commit_sync(consumer, &drained.offsets),
        };
        let secs = format!("{:.3}", started.elapsed().as_secs_f64());
        match result {
            Ok(()) => tracing::info!(
                lane,
                partitions = ?partitions,
                committed = ?drained.offsets,
                secs,
                "rebalance: drained and committed before giving partitions up"
            ),
            Err(e) if last_commit => {
                // Back into the last commit, retried once the group settles.
                if let Some(offsets) = self.lock_last_commit().as_mut() {
                    offsets.extend_from_slice(&drained.offsets);
                }
                tracing::info!(
                    lane,
                    partitions = ?partitions,
                    error = %e,
                    "rebalance: could not commit before giving partitions up; committed with \
                     the last commit once the group settles"
                );
            }
            Err(e) => tracing::warn!(
                lane,
                partitions = ?partitions,
                error = %e,
                secs,
                "rebalance: could not commit before giving partitions up; their next owner \
                 decides the uncommitted events again"
            ),
        }
    }

    /// Asks the lane to finish the revoked `partitions`' events and waits
    /// for what it answers is safe to commit, serving its commands
    /// meanwhile; `None` when it is gone or did not answer in time.
    fn drain(
        &self,
        consumer: &BaseConsumer<Context>,
        partitions: &[i32],
        started: Instant,
    ) -> Option<Drained> {
        if !self.flush_batch(consumer) {
            return None;
        }
        let (reply, answer) = cb::bounded(1);
        let revoking = Revoking {
            partitions: partitions.to_vec(),
            reply,
        };
        if !self.send(consumer, FromKafka::Revoking(revoking)) {
            return None;
        }
        // The lane drains within the drain timeout and then answers with
        // what is safe; a little more is allowed for its answer to come.
        let until = started + self.drain_timeout + Duration::from_secs(1);
        let drained = loop {
            let left = until.saturating_duration_since(Instant::now());
            cb::select! {
                recv(answer) -> a => break a.ok(),
                recv(self.commands) -> c => match c {
                    Ok(c) => if !self.serve(consumer, c) {
                        self.closing.store(true, Ordering::Relaxed);
                    },
                    Err(_) => break None,
                },
                default(left) => break None,
            }
        };
        if drained.is_none() {
            tracing::warn!(
                lane = self.setup.lane,
                partitions = ?partitions,
                "rebalance: the lane did not answer in time; the partitions' next owner decides \
                 their uncommitted events again"
            );
        }
        drained
    }

    /// An assignment: finds the events past the committed offsets that
    /// already have an output, tells the lane, then plans the partitions'
    /// feature catch-up (pausing those that need one).
    fn assigned(&self, consumer: &BaseConsumer<Context>, partitions: Vec<i32>) {
        let lane = self.setup.lane;
        self.setup.metrics.rebalance("assign");
        if !self.flush_batch(consumer) {
            return;
        }
        let k = &self.setup.kafka;
        let timeout = Duration::from_secs(10);
        let committed = if partitions.is_empty() {
            None
        } else {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition(&k.events_topic, p);
            }
            match consumer.committed_offsets(tpl, timeout) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(
                        lane,
                        error = %e,
                        "cannot read the committed offsets of the assigned partitions; events \
                         past them are decided again and their features are not caught up"
                    );
                    None
                }
            }
        };
        let assignments: Vec<Assignment> = partitions
            .iter()
            .map(|&p| {
                let from = committed.as_ref().and_then(|c| {
                    match c.find_partition(&k.events_topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Some(o),
                        // Nothing committed: from the oldest event kept.
                        _ => consumer
                            .fetch_watermarks(&k.events_topic, p, timeout)
                            .ok()
                            .map(|(low, _)| low),
                    }
                });
                Assignment {
                    partition: p,
                    already_decided: from.map_or_else(Vec::new, |c| self.already_decided(p, c)),
                }
            })
            .collect();
        let resumed: usize = assignments.iter().map(|a| a.already_decided.len()).sum();
        tracing::info!(
            lane,
            partitions = ?partitions,
            already_decided = resumed,
            "rebalance: partitions assigned"
        );
        if !self.send(consumer, FromKafka::Assigned(assignments)) {
            return;
        }
        self.count_partitions(consumer);
        if let Some(committed) = committed {
            self.plan_catch_up(consumer, &committed);
        }
        // A partition paused for a catch-up and revoked before it ended
        // stays paused in the client: one assigned again without a
        // catch-up to wait for is resumed here.
        let mut flowing = TopicPartitionList::new();
        {
            let catching = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
            for &p in &partitions {
                if !catching.contains_key(&p) {
                    flowing.add_partition(&k.events_topic, p);
                }
            }
        }
        if flowing.count() > 0
            && let Err(e) = consumer.resume(&flowing)
        {
            tracing::warn!(lane, error = %e, "cannot resume assigned partitions");
        }
    }

    /// The offsets of input `partition` at or past `committed` whose
    /// output is already on the output topics (see [`super::resume`]).
    fn already_decided(&self, partition: i32, committed: i64) -> Vec<i64> {
        let s = &self.setup;
        let k = &s.kafka;
        if k.resume_scan_max_records <= 0 {
            return Vec::new();
        }
        let mut decided = Vec::new();
        let mut complete = true;
        for (topic, count) in [
            (&k.decisions_topic, s.outputs.decisions),
            (&k.dead_letters_topic, s.outputs.dead_letters),
        ] {
            let scanned: Vec<i32> = match resume::output_partition(partition, count) {
                Some(q) => vec![q],
                None => (0..count).collect(),
            };
            for q in scanned {
                match resume::scan(
                    k,
                    s.lane,
                    topic,
                    q,
                    partition,
                    committed,
                    k.resume_scan_max_records,
                ) {
                    Ok(found) => {
                        complete &= found.complete;
                        decided.extend(found.decided);
                    }
                    Err(e) => {
                        tracing::warn!(
                            lane = s.lane,
                            partition,
                            error = %e,
                            "cannot read back the newest outputs; events past the committed \
                             offset are decided again"
                        );
                        return Vec::new();
                    }
                }
            }
        }
        if !complete {
            tracing::warn!(
                lane = s.lane,
                partition,
                max = k.resume_scan_max_records,
                "the newest outputs read back do not reach the committed offset \
                 (kafka.resume_scan_max_records): older events past it are decided again"
            );
        }
        decided.sort_unstable();
        decided.dedup();
        decided
    }

    fn count_partitions(&self, consumer: &BaseConsumer<Context>) {
        if self.closing.load(Ordering::Relaxed) {
            // Inside the consumer's close (its last revoke): asking
            // librdkafka for the assignment waits on its main thread, which
            // is busy closing this consumer — it would never answer. Nothing
            // is assigned any more.
            self.setup.status.partitions.store(0, Ordering::Relaxed);
            return;
        }
        let n = consumer.assignment().map_or(0, |a| a.count());
        self.setup.status.partitions.store(n, Ordering::Relaxed);
    }

    /// For each assigned partition whose events before the committed offset
    /// are not all in the feature store, pauses it and starts its catch-up
    /// on a thread of its own.
    fn plan_catch_up(&self, consumer: &BaseConsumer<Context>, committed: &TopicPartitionList) {
        let s = &self.setup;
        let k = &s.kafka;
        if k.catch_up_max_events == 0 || s.engine.feature_store().is_none() {
            return;
        }
        let timeout = Duration::from_secs(10);
        let jobs = catch_up::plan(committed, &s.applied, k.catch_up_max_events, |p| {
            consumer
                .fetch_watermarks(&k.events_topic, p, timeout)
                .map_or(0, |(low, _)| low)
        });
        if jobs.is_empty() {
            return;
        }
        let mut paused = TopicPartitionList::new();
        for j in &jobs {
            paused.add_partition(&k.events_topic, j.partition);
        }
        if let Err(e) = consumer.pause(&paused) {
            tracing::warn!(
                lane = s.lane,
                error = %e,
                "cannot pause partitions for the feature catch-up; their first events may \
                 see incomplete features"
            );
        }
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        {
            let mut catching = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
            catching.extend(jobs.iter().map(|j| (j.partition, job)));
            s.status
                .catching_up
                .store(catching.len(), Ordering::Relaxed);
        }
        tracing::info!(
            lane = s.lane,
            partitions = ?jobs.iter().map(|j| (j.partition, j.from, j.to)).collect::<Vec<_>>(),
            "rebalance: the feature store is behind these partitions (partition, from, to); \
             reading their events again before deciding more"
        );
        let (engine, applied, metrics) = (s.engine.clone(), s.applied.clone(), s.metrics.clone());
        let (k, stop, lane) = (k.clone(), s.stop.clone(), s.lane);
        let done = self.commands_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("catch-up-{lane}"))
            .spawn(move || {
                catch_up::catch_up(lane, &engine, &applied, &metrics, &k, &jobs, &stop);
                let _ = done.send(Command::CaughtUp { job, jobs });
            });
        if let Err(e) = spawned {
            tracing::error!(lane = s.lane, error = %e, "cannot start the feature catch-up");
        }
    }

    /// Resumes the partitions of finished catch-up `job` that still wait
    /// for it (still assigned, and not assigned again since).
    fn resume(&self, consumer: &BaseConsumer<Context>, job: u64, done: &[CatchUp]) {
        let topic = &self.setup.kafka.events_topic;
        let assigned = consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        {
            let mut catching = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
            for j in done {
                if catching.get(&j.partition) != Some(&job) {
                    continue;
                }
                catching.remove(&j.partition);
                if assigned.find_partition(topic, j.partition).is_some() {
                    tpl.add_partition(topic, j.partition);
                }
            }
            self.setup
                .status
                .catching_up
                .store(catching.len(), Ordering::Relaxed);
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.resume(&tpl) {
            Ok(()) => tracing::info!(
                lane = self.setup.lane,
                partitions = ?partitions_of(topic, &tpl),
                "features caught up; partitions resumed"
            ),
            Err(e) => {
                tracing::warn!(lane = self.setup.lane, error = %e, "cannot resume partitions")
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

impl ClientContext for Context {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (&p, partition) in &topic.partitions {
                if p >= 0 && partition.consumer_lag >= 0 {
                    self.setup
                        .metrics
                        .set_consumer_lag(name, p, partition.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions_of(&self.setup.kafka.events_topic, tpl);
            if !parts.is_empty() {
                self.in_callback.store(true, Ordering::Relaxed);
                self.setup.metrics.in_rebalance(true);
                self.revoke(consumer, parts);
                self.setup.metrics.in_rebalance(false);
                self.in_callback.store(false, Ordering::Relaxed);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if !self.closing.load(Ordering::Relaxed) {
                    let parts = partitions_of(&self.setup.kafka.events_topic, tpl);
                    self.in_callback.store(true, Ordering::Relaxed);
                    self.setup.metrics.in_rebalance(true);
                    self.assigned(consumer, parts);
                    self.setup.metrics.in_rebalance(false);
                    self.in_callback.store(false, Ordering::Relaxed);
                }
            }
            Rebalance::Revoke(tpl) => {
                let mut catching = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
                for p in partitions_of(&self.setup.kafka.events_topic, tpl) {
                    catching.remove(&p);
                }
                self.setup
                    .status
                    .catching_up
                    .store(catching.len(), Ordering::Relaxed);
                drop(catching);
                self.count_partitions(consumer);
            }
            Rebalance::Error(e) => {
                tracing::warn!(lane = self.setup.lane, error = %e, "rebalance failed")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // An asynchronous commit failed (a rebalance, say): the lane
            // commits those offsets again next time; it is told after the
            // poll this callback runs in.
            tracing::debug!(lane = self.setup.lane, error = %e, "commit failed; retried");
            let parts = partitions_of(&self.setup.kafka.events_topic, offsets);
            self.failed_commits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(parts);
        }
    }
}

/// A warning at most every ten seconds, with how many were held back.
struct RateLimited {
    last: Option<Instant>,
    held: u64,
}

impl RateLimited {
    fn new() -> RateLimited {
        RateLimited {
            last: None,
            held: 0,
        }
    }

    fn warn(&mut self, lane: usize, e: &KafkaError) {
        if self
            .last
            .is_some_and(|l| l.elapsed() < Duration::from_secs(10))
        {
            self.held += 1;
            return;
        }
        tracing::warn!(lane, error = %e, repeated = self.held, "Kafka consumer error");
        self.last = Some(Instant::now());
        self.held = 0;
    }
}
