//! The shared store: the windows of entity kinds placed `shared`, kept in
//! Redis 7 (standalone or Redis Cluster) so that every instance of a
//! consumer group reads and adds to the same state, whichever partition an
//! event arrives on.
//!
//! Per event and shared entity, one call of a Lua script
//! (`update.lua`, loaded once with `SCRIPT LOAD` and called by its SHA with
//! `EVALSHA`, loaded again when a server answers `NOSCRIPT`) reads the
//! entity's features as they stood before the event, then adds the event,
//! in one atomic step on the server. Its keys, the entity's state hash
//! (`<prefix>:{<kind>:<key>}`, one field per feature, expiring when the
//! kind's longest window has passed without an event) and the event's
//! dedup key (`<prefix>:{<kind>:<key>}:e:<event_id>`, holding what the
//! event read), share one hash tag, so one entity lives in one hash slot
//! of a cluster. A redelivered event — after a crash, a rebalance or an
//! aborted transaction, on this instance or another — finds its dedup key,
//! adds nothing and reads what its first delivery read.
//!
//! The windows are the local store's (`entity.rs`): the same buckets, the
//! same arithmetic in the same order, so a shared feature answers what the
//! same feature kept locally would. A distinct count is the local store's
//! exact-then-sketch, not Redis's HyperLogLog: exact up to
//! [`EXACT_DISTINCT`](crate::entity::EXACT_DISTINCT) values in the window,
//! which is where fraud rules draw their lines (a device with 3 accounts,
//! not 3,000), and the same 64-register sketch beyond it. Redis's own
//! `PFCOUNT` is approximate from the first value and would make a shared
//! device disagree with a local one. Value hashes are XXH64 (a fixed
//! function, so instances built apart agree), registers and ranks computed
//! here, the estimate too, from the registers the script merges.
//!
//! A burst of events goes out as one [`SharedBatch`]: every entity
//! operation of every event, in read order, in one pipeline (standalone:
//! one round trip; cluster: the operations of each node together, the
//! nodes at once); bursts that queued up behind a round trip go out
//! together in the next ([`SharedStore::execute_all`]). It has its own
//! deadline: past it, or with Redis down, it answers a [`SharedError`] at
//! once — the caller decides with those features missing — and the
//! connection comes back by itself when Redis does. The operations of a
//! failed batch may have been applied: sending them again is safe, as the
//! dedup key answers for them.
//!
//! Not here: which kinds are shared (the definitions' `[placement]`),
//! deciding or marking decisions degraded (the engine), metrics names (the
//! pipeline implements [`SharedObserver`]).

mod reply;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use verdict_core::{Event, Record, Value};

use crate::FeatureStore;
use crate::defs::Agg;
use crate::entity::{hll_register, width};
use crate::store::{UpdateOutcome, empty_value};

pub use reply::{ReplyError, parse_reply};

/// The script, run by Redis for one entity of one event.
pub const SCRIPT: &str = include_str!("update.lua");

/// Longest key Verdict sends (kind, entity key and event id together); an
/// entity whose key is longer is not sent, and its features read missing.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest typed value a shared `last` keeps; a longer one is not added.
pub const MAX_VALUE_BYTES: usize = 1_024;

/// Where the shared store is and how long it may take; `[features.shared]`
/// in `verdict.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// `redis://host:port` (or `rediss://` for TLS, with `user:password@`
    /// when the server wants them); for a cluster, one or more of its nodes.
    /// One text (as from an environment variable) may give several,
    /// separated by commas.
    #[serde(deserialize_with = "one_or_many", serialize_with = "redacted_urls")]
    pub urls: Vec<String>,
    /// Whether `urls` are nodes of a Redis Cluster.
    pub cluster: bool,
    /// An ACL user name, over the URLs' (unset: theirs, or `default`).
    pub username: Option<String>,
    /// The password, over the URLs' (from a Secret, say:
    /// `VERDICT_FEATURES__SHARED__PASSWORD`); never shown.
    #[serde(serialize_with = "redacted_password")]
    pub password: Option<String>,
    /// How long one batch may take, round trip included, before its events
    /// are decided without the shared features.
    pub deadline_ms: u64,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// How long an event's dedup key (and the values it read) is kept:
    /// a redelivery later than this is counted again. Redeliveries come
    /// within the commit interval of a crash or a rebalance (seconds); the
    /// keys cost about 100 to 200 bytes per shared entity per event, so
    /// Redis holds events/s × shared kinds × this × ~150 B of them.
    pub dedup_ttl_secs: u64,
    /// The first part of every key, so that several deployments can share
    /// one Redis.
    pub key_prefix: String,
    /// Largest reply accepted for one entity operation.
    pub max_reply_bytes: usize,
}

/// The URLs with their passwords hidden: a configuration shown is never a
/// credential leaked.
fn redacted_urls<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact(u)))
}

fn redacted_password<S: serde::Serializer>(p: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

/// A list of texts, or one text of comma-separated ones.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
        Urls::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_a_list_or_one_text_of_several() {
        let c: SharedConfig = toml::from_str("urls = [\"redis://a:1\", \"redis://b:2\"]").unwrap();
        assert_eq!(c.urls, ["redis://a:1", "redis://b:2"]);
        let c: SharedConfig = toml::from_str("urls = \"redis://a:1, redis://b:2\"").unwrap();
        assert_eq!(c.urls, ["redis://a:1", "redis://b:2"]);
        assert!(toml::from_str::<SharedConfig>("urls = 3").is_err());
        let shown = toml::to_string(&SharedConfig {
            urls: vec!["rediss://verdict:s3cret@r:6380".into()],
            ..SharedConfig::default()
        })
        .unwrap();
        assert!(
            shown.contains("rediss://***@r:6380") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            username: None,
            password: None,
            deadline_ms: 50,
            connect_timeout_ms: 1_000,
            dedup_ttl_secs: 900,
            key_prefix: "verdict".into(),
            max_reply_bytes: 64 * 1024,
        }
    }
}

/// What kind of failure a [`SharedError`] is, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedErrorKind {
    /// The batch's deadline passed.
    Timeout,
    /// No connection: Redis down, unreachable, or a cluster without a
    /// primary for a slot.
    Unavailable,
    /// Redis answered with an error (the script failed, out of memory…).
    Server,
    /// A reply that is not what the script sends.
    Reply,
    /// A key or reply over Verdict's bounds.
    TooLarge,
}

impl SharedErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedErrorKind::Timeout => "timeout",
            SharedErrorKind::Unavailable => "unavailable",
            SharedErrorKind::Server => "server",
            SharedErrorKind::Reply => "reply",
            SharedErrorKind::TooLarge => "too_large",
        }
    }
}

/// What can go wrong with the shared store.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The configuration cannot work (a bad URL, no URL).
    #[error("shared feature store: {0}; fix [features.shared] in the configuration")]
    Config(String),
    /// The batch did not complete within its deadline.
    #[error(
        "shared feature store: no answer within {0:?}; the events were decided without their shared features"
    )]
    Timeout(Duration),
    /// Redis could not be reached or answered with an error.
    #[error("shared feature store: {message}; Verdict reconnects by itself when Redis answers")]
    Redis {
        kind: SharedErrorKind,
        message: String,
    },
    /// A reply that does not parse as the script's.
    #[error(
        "shared feature store: a malformed reply ({0}); is another program writing these keys?"
    )]
    Reply(#[from] ReplyError),
}

impl SharedError {
    pub fn kind(&self) -> SharedErrorKind {
        match self {
            SharedError::Config(_) => SharedErrorKind::Unavailable,
            SharedError::Timeout(_) => SharedErrorKind::Timeout,
            SharedError::Redis { kind, .. } => *kind,
            SharedError::Reply(ReplyError::TooLarge(_)) => SharedErrorKind::TooLarge,
            SharedError::Reply(_) => SharedErrorKind::Reply,
        }
    }
}

fn redis_error(e: redis::RedisError) -> SharedError {
    let kind = if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
    {
        SharedErrorKind::Unavailable
    } else {
        SharedErrorKind::Server
    };
    SharedError::Redis {
        kind,
        message: e.to_string(),
    }
}

/// Where the shared store reports what it does; the pipeline's metrics
/// implement it. Called once per batch, never per event, from the task
/// that ran the batch.
pub trait SharedObserver: Send + Sync {
    /// A batch completed: its entity operations and how long it took.
    fn completed(&self, operations: usize, elapsed: Duration) {
        let _ = (operations, elapsed);
    }
    /// A batch (or some of its operations: `operations`) failed.
    fn failed(&self, kind: SharedErrorKind, operations: usize) {
        let _ = (kind, operations);
    }
}

/// An observer that records nothing.
pub struct NoObserver;
impl SharedObserver for NoObserver {}

/// A connection, made on first use.
#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The client of the shared store. Cheap to share between lanes
/// (`Arc<SharedStore>`): its connection multiplexes their batches.
pub struct SharedStore {
    config: SharedConfig,
    script: redis::Script,
    conn: tokio::sync::OnceCell<Conn>,
    observer: Box<dyn SharedObserver>,
}

impl SharedStore {
    /// A store of `config`, reporting to `observer`. Connects on first use
    /// (so that Verdict starts while Redis is down); an invalid URL is an
    /// error now.
    pub fn new(
        config: SharedConfig,
        observer: Box<dyn SharedObserver>,
    ) -> Result<SharedStore, SharedError> {
        if config.urls.is_empty() {
            return Err(SharedError::Config("no Redis URL in `urls`".into()));
        }
        if !config.cluster && config.urls.len() > 1 {
            return Err(SharedError::Config(
                "several `urls` name a cluster's nodes: set `cluster = true`, or give one".into(),
            ));
        }
        for url in &config.urls {
            redis::Client::open(url.as_str()).map_err(|e| {
                SharedError::Config(format!("`{}` is not a Redis URL: {e}", redact(url)))
            })?;
        }
        Ok(SharedStore {
            script: redis::Script::new(SCRIPT),
            config,
            conn: tokio::sync::OnceCell::new(),
            observer,
        })
    }

    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// The standalone server's address, with the configured credentials.
    fn connection_info(&self) -> Result<redis::ConnectionInfo, SharedError> {
        use redis::IntoConnectionInfo;
        let info = self.config.urls[0]
            .as_str()
            .into_connection_info()
            .map_err(redis_error)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.config.password {
            settings = settings.set_password(password);
        }
        Ok(info.set_redis_settings(settings))
    }

    /// The servers, passwords hidden, for logs.
    pub fn describe(&self) -> String {
        let urls: Vec<String> = self.config.urls.iter().map(|u| redact(u)).collect();
        format!(
            "{}{}",
            if self.config.cluster { "cluster " } else { "" },
            urls.join(",")
        )
    }

    async fn connection(&self) -> Result<Conn, SharedError> {
        let connect = Duration::from_millis(self.config.connect_timeout_ms);
        self.conn
            .get_or_try_init(|| async {
                if self.config.cluster {
                    let mut builder =
                        redis::cluster::ClusterClient::builder(self.config.urls.clone());
                    if let Some(user) = &self.config.username {
                        builder = builder.username(user.clone());
                    }
                    if let Some(password) = &self.config.password {
                        builder = builder.password(password.clone());
                    }
                    let client = builder
                        .connection_timeout(connect)
                        .response_timeout(Duration::from_millis(self.config.deadline_ms.max(1) * 4))
                        .retries(2)
                        .build()
                        .map_err(redis_error)?;
                    let conn = client.get_async_connection().await.map_err(redis_error)?;
                    Ok(Conn::Cluster(conn))
                } else {
                    let client =
                        redis::Client::open(self.connection_info()?).map_err(redis_error)?;
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(connect))
                        .set_response_timeout(None)
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_secs(1));
                    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(redis_error)?;
                    Ok(Conn::Single(conn))
                }
            })
            .await
            .cloned()
    }

    /// Runs every operation of `batch` (its reads and updates), in order,
    /// within the deadline. On success each event's shared features are in
    /// the batch ([`SharedBatch::read`]); on an error none are.
    pub async fn execute(&self, batch: &mut SharedBatch) -> Result<(), SharedError> {
        self.execute_all(std::slice::from_mut(batch)).await
    }

    /// Runs the operations of several batches, one after another in their
    /// order, in one pipelined round trip with one deadline: what a lane
    /// whose bursts queued up while Redis answered the last sends next. On
    /// success every batch holds its replies; on an error none does.
    pub async fn execute_all(&self, batches: &mut [SharedBatch]) -> Result<(), SharedError> {
        for batch in batches.iter_mut() {
            batch.replies.clear();
        }
        let n: usize = batches.iter().map(|b| b.ops.len()).sum();
        if n == 0 {
            return Ok(());
        }
        let deadline = Duration::from_millis(self.config.deadline_ms);
        let started = Instant::now();
        let result = match tokio::time::timeout(deadline, self.round_trip(batches)).await {
            Ok(result) => result,
            Err(_) => Err(SharedError::Timeout(deadline)),
        };
        match result {
            Ok(()) => {
                self.observer.completed(n, started.elapsed());
                Ok(())
            }
            Err(e) => {
                for batch in batches.iter_mut() {
                    batch.replies.clear();
                }
                self.observer.failed(e.kind(), n);
                Err(e)
            }
        }
    }

    async fn round_trip(&self, batches: &mut [SharedBatch]) -> Result<(), SharedError> {
        let conn = self.connection().await?;
        let sha = self.script.get_hash();
        let ops: Vec<&Op> = batches.iter().flat_map(|b| &b.ops).collect();
        let mut answers = send(&conn, &ops, sha).await?;
        if answers.iter().any(is_noscript) {
            // A server restarted or flushed its scripts (or a new cluster
            // primary never had it): load it everywhere, then send again.
            // Operations that did run are answered by their dedup keys.
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).clone();
            match &conn {
                Conn::Single(c) => {
                    let _: String = load
                        .query_async(&mut c.clone())
                        .await
                        .map_err(redis_error)?;
                }
                Conn::Cluster(c) => {
                    let _: redis::Value = load
                        .query_async(&mut c.clone())
                        .await
                        .map_err(redis_error)?;
                }
            }
            answers = send(&conn, &ops, sha).await?;
        }
        let limit = self.config.max_reply_bytes;
        let mut answers = answers.into_iter();
        for batch in batches.iter_mut() {
            for (op, answer) in batch.ops.iter().zip(answers.by_ref()) {
                let bytes = match answer {
                    Ok(redis::Value::BulkString(b)) => b,
                    Ok(redis::Value::SimpleString(s)) => s.into_bytes(),
                    Ok(other) => {
                        return Err(ReplyError::Shape(format!("{:?}", kind_of(&other))).into());
                    }
                    Err(e) => return Err(redis_error(e)),
                };
                if bytes.len() > limit {
                    return Err(ReplyError::TooLarge(bytes.len()).into());
                }
                let shape = &batch.shape.kinds[op.kind];
                batch.replies.push(parse_reply(&bytes, &shape.aggs)?);
            }
        }
        Ok(())
    }
}

fn kind_of(v: &redis::Value) -> &'static str {
    match v {
        redis::Value::Nil => "nil",
        redis::Value::Int(_) => "an integer",
        redis::Value::Array(_) => "an array",
        redis::Value::ServerError(_) => "an error",
        _ => "an unexpected type",
    }
}

fn is_noscript(r: &Result<redis::Value, redis::RedisError>) -> bool {
    match r {
        Err(e) => e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
        Ok(redis::Value::ServerError(e)) => e.code() == "NOSCRIPT",
        Ok(_) => false,
    }
}

fn command(op: &Op, sha: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(2).arg(&op.state_key).arg(&op.dedup_key);
    for a in &op.args {
        cmd.arg(a.as_bytes());
    }
    cmd
}

/// Sends the operations: one pipeline to a single server; to a cluster,
/// each operation routed to its slot's primary, all at once (the
/// connection to each node writes them in order, together).
async fn send(
    conn: &Conn,
    ops: &[&Op],
    sha: &str,
) -> Result<Vec<Result<redis::Value, redis::RedisError>>, SharedError> {
    match conn {
        Conn::Single(c) => {
            let mut pipe = redis::pipe();
            for op in ops {
                pipe.add_command(command(op, sha));
            }
            pipe.ignore_errors();
            let answers: Vec<redis::RedisResult<redis::Value>> = pipe
                .query_async(&mut c.clone())
                .await
                .map_err(redis_error)?;
            if answers.len() != ops.len() {
                return Err(ReplyError::Shape(format!(
                    "{} answers to {} operations",
                    answers.len(),
                    ops.len()
                ))
                .into());
            }
            Ok(answers)
        }
        Conn::Cluster(c) => {
            let calls = ops.iter().map(|op| {
                let mut c = c.clone();
                let cmd = command(op, sha);
                async move { cmd.query_async::<redis::Value>(&mut c).await }
            });
            Ok(futures::future::join_all(calls).await)
        }
    }
}

/// A URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// How to read one shared kind's reply into the feature array.
#[derive(Debug)]
struct KindShape {
    /// The kind's index among the definitions' entities.
    entity: usize,
    name: String,
    /// Per feature of the kind: its index in the definitions.
    features: Vec<usize>,
    slots: Vec<usize>,
    aggs: Vec<Agg>,
    /// The state hash's time to live: the kind's longest window.
    ttl_ms: u64,
}

/// The shared kinds of one store's definitions.
#[derive(Debug)]
struct Shape {
    kinds: Vec<KindShape>,
}

/// One entity operation.
#[derive(Debug)]
struct Op {
    /// Index into `Shape::kinds`.
    kind: usize,
    state_key: String,
    dedup_key: String,
    args: Vec<String>,
}

/// Where one event's shared features come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The reply of this operation.
    Op(usize),
    /// No key in the event for this kind: the features read empty.
    Empty,
    /// Not sent (a key over the bounds): the features read missing.
    Missing,
}

/// The entity operations of a burst of events, and, once executed, what
/// each event read. Reused from burst to burst ([`SharedBatch::clear`]).
pub struct SharedBatch {
    shape: std::sync::Arc<Shape>,
    ops: Vec<Op>,
    /// Per event, per shared kind (in `shape.kinds` order), its source.
    sources: Vec<Source>,
    replies: Vec<Vec<Value>>,
    prefix: String,
    dedup_ttl_ms: u64,
}

impl SharedBatch {
    /// Forgets the operations and replies, keeping the buffers.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.sources.clear();
        self.replies.clear();
    }

    /// An empty batch of the same shape, key prefix and dedup lifetime.
    pub fn empty_like(&self) -> SharedBatch {
        SharedBatch {
            shape: self.shape.clone(),
            ops: Vec::new(),
            sources: Vec::new(),
            replies: Vec::new(),
            prefix: self.prefix.clone(),
            dedup_ttl_ms: self.dedup_ttl_ms,
        }
    }

    /// How many events were pushed.
    pub fn events(&self) -> usize {
        self.sources
            .len()
            .checked_div(self.shape.kinds.len())
            .unwrap_or(0)
    }

    /// How many entity operations go to Redis (one per shared entity of
    /// each event).
    pub fn operations(&self) -> usize {
        self.ops.len()
    }

    /// Writes event `n`'s shared features (the `n`th pushed) into `out`;
    /// false when some are missing because the batch failed (or was not
    /// executed) or a key was over the bounds.
    pub fn read(&self, n: usize, out: &mut [Value]) -> bool {
        let k = self.shape.kinds.len();
        let mut complete = true;
        for (kind, source) in self
            .shape
            .kinds
            .iter()
            .zip(&self.sources[n * k..(n + 1) * k])
        {
            let values = match source {
                Source::Op(i) => self.replies.get(*i),
                Source::Empty => {
                    for (slot, agg) in kind.slots.iter().zip(&kind.aggs) {
                        if let Some(o) = out.get_mut(*slot) {
                            *o = empty_value(*agg);
                        }
                    }
                    continue;
                }
                Source::Missing => None,
            };
            match values {
                Some(values) => {
                    for (slot, v) in kind.slots.iter().zip(values) {
                        if let Some(o) = out.get_mut(*slot) {
                            *o = v.clone();
                        }
                    }
                }
                None => {
                    complete = false;
                    for slot in &kind.slots {
                        if let Some(o) = out.get_mut(*slot) {
                            *o = Value::Missing;
                        }
                    }
                }
            }
        }
        complete
    }
}

/// The XXH64 hash a shared distinct count keeps of a value (typed, so that
/// the number 1 and the string "1" differ).
fn shared_value_hash(v: &Value) -> Option<u64> {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0x7e41_c0de);
    match v {
        Value::String(s) => {
            h.write_u8(b's');
            h.write(s.as_bytes());
        }
        Value::Number(x) => {
            h.write_u8(b'n');
            h.write_u64(x.to_bits());
        }
        Value::Bool(b) => {
            h.write_u8(b'b');
            h.write_u8(u8::from(*b));
        }
        Value::Timestamp(t) => {
            h.write_u8(b't');
            h.write_i64(*t);
        }
        Value::Missing => return None,
    }
    Some(h.finish())
}

/// A `last` value as the script keeps it: a type letter, then the value.
fn typed(v: &Value) -> Option<String> {
    Some(match v {
        Value::Missing => return None,
        Value::Number(x) => format!("n{x}"),
        Value::String(s) => format!("s{s}"),
        Value::Bool(b) => format!("b{}", u8::from(*b)),
        Value::Timestamp(t) => format!("t{t}"),
    })
}

impl FeatureStore {
    /// An empty batch for this store's shared kinds, with the key prefix
    /// and dedup lifetime of `config`.
    pub fn shared_batch(&self, config: &SharedConfig) -> SharedBatch {
        let defs = &self.inner.defs;
        let kinds = defs
            .entities
            .iter()
            .enumerate()
            .filter(|(_, e)| e.placement == crate::defs::Placement::Shared)
            .map(|(e, entity)| {
                let features = self.inner.by_entity[e].clone();
                let longest = features
                    .iter()
                    .map(|&i| defs.features[i].window_ms)
                    .max()
                    .unwrap_or(0)
                    .max(defs.longest_window_ms());
                KindShape {
                    entity: e,
                    name: entity.name.clone(),
                    slots: features.iter().map(|&i| defs.features[i].slot).collect(),
                    aggs: features.iter().map(|&i| defs.features[i].agg).collect(),
                    features,
                    ttl_ms: longest as u64,
                }
            })
            .collect();
        SharedBatch {
            shape: std::sync::Arc::new(Shape { kinds }),
            ops: Vec::new(),
            sources: Vec::new(),
            replies: Vec::new(),
            prefix: config.key_prefix.clone(),
            dedup_ttl_ms: config.dedup_ttl_secs.saturating_mul(1000).max(1),
        }
    }

    /// Adds `event`'s operations on its shared entities to `batch`, in
    /// order. `outcome` is what the local store made of the event
    /// ([`FeatureStore::read_and_update`]): a late event is read but not
    /// added; a duplicate is sent as it is (Redis answers it from its dedup
    /// key, with the values its first delivery read).
    pub fn push_shared(&self, event: &Event, outcome: UpdateOutcome, batch: &mut SharedBatch) {
        let add = outcome != UpdateOutcome::TooLate;
        let t = event.timestamp_ms();
        let record = Record {
            event: event.values(),
            features: &[],
            model: &[],
        };
        let defs = &self.inner.defs;
        let shape = batch.shape.clone();
        for (k, kind) in shape.kinds.iter().enumerate() {
            let entity = &defs.entities[kind.entity];
            let Value::String(key) = event.get(entity.key_slot) else {
                batch.sources.push(Source::Empty);
                continue;
            };
            let state_key = format!("{}:{{{}:{}}}", batch.prefix, kind.name, key);
            if state_key.len() + event.id().len() + 3 > MAX_KEY_BYTES {
                batch.sources.push(Source::Missing);
                continue;
            }
            let dedup_key = format!("{state_key}:e:{}", event.id());
            let mut args = Vec::with_capacity(4 + 6 * kind.features.len());
            args.push(t.to_string());
            args.push(if add { "1" } else { "0" }.to_owned());
            args.push(kind.ttl_ms.to_string());
            args.push(batch.dedup_ttl_ms.to_string());
            for &i in &kind.features {
                let f = &defs.features[i];
                let code = match f.agg {
                    Agg::Count => "c",
                    Agg::Sum => "s",
                    Agg::Avg => "a",
                    Agg::Min => "n",
                    Agg::Max => "x",
                    Agg::DistinctCount => "d",
                    Agg::Last => "l",
                    Agg::SecsSinceLast => "e",
                };
                let applies = f.filter.as_ref().is_none_or(|flt| flt.matches(&record));
                let v = f.field.map_or(&Value::Missing, |slot| event.get(slot));
                let value = match f.agg {
                    Agg::Sum | Agg::Avg | Agg::Min | Agg::Max => match v {
                        Value::Number(x) => format!("{x}"),
                        _ => String::new(),
                    },
                    Agg::DistinctCount => shared_value_hash(v).map_or(String::new(), |h| {
                        let (reg, rank) = hll_register(h);
                        format!("{h:016x},{reg},{rank}")
                    }),
                    Agg::Last => typed(v)
                        .filter(|s| s.len() <= MAX_VALUE_BYTES)
                        .unwrap_or_default(),
                    Agg::Count | Agg::SecsSinceLast => String::new(),
                };
                let w = width(f.window_ms);
                args.push(code.to_owned());
                args.push(f.window_ms.to_string());
                args.push(w.to_string());
                args.push(t.div_euclid(w).to_string());
                args.push(if applies { "1" } else { "0" }.to_owned());
                args.push(value);
            }
            batch.sources.push(Source::Op(batch.ops.len()));
            batch.ops.push(Op {
                kind: k,
                state_key,
                dedup_key,
                args,
            });
        }
    }
}
