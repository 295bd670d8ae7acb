//! The shared store: the windows of entity kinds placed `shared`, kept in
//! Redis 7 (standalone or Redis Cluster) so that every instance of a
//! consumer group reads and adds to the same state, whichever partition an
//! event arrives on.
//!
//! An entity's state in Redis is the local store's own (`entity.rs`):
//! its words as they are, its `last` values and side parts
//! (`Entity::encode`), behind 8 bytes of version,
//! at `<prefix>:{<kind>:<key>}:<layout>` (`<layout>` a fingerprint of the
//! kind's feature definitions, so that two versions of them never misread
//! each other's state), expiring when the kind's longest window has passed
//! without an event. Each event that added to the entity leaves a dedup
//! key beside it, `<state key>:e:<event_id>`, holding what the event read.
//! Both share one hash tag: one entity lives in one hash slot of a cluster.
//!
//! A burst of events ([`SharedBatch`]) is applied, per entity it touches,
//! here, in read order, with the same code as a local entity — each event
//! reads the windows before it, then adds itself (a late event only reads;
//! an event whose dedup key exists reads what its first delivery read and
//! adds nothing) — to the state the lane presumes Redis holds: the one it
//! committed last ([`Known`]), or none for an entity it has not seen. Then
//! one call of a Lua script (`commit.lua`, loaded once, called by its SHA)
//! writes the new state and the events' dedup keys only if the entity is
//! as presumed: its version unchanged and none of the events' dedup keys
//! there — a compare-and-set, one atomic step on the server, for every
//! entity of the burst in one round trip.
//!
//! When the entity is not as presumed (another instance or lane committed
//! it, the lane forgot it, an event is a redelivery), the script writes
//! nothing and answers the entity as it is; its events are applied again to
//! that and sent again, in the next round trip, up to [`MAX_ATTEMPTS`]
//! times. So an entity only this lane updates — a device of one user —
//! costs one round trip per burst, one others update too costs two, and
//! every entity's history is a sequence of commits each computed from the
//! one before: no event is lost or counted twice, and a redelivery — after
//! a crash, a rebalance or an aborted transaction, on any instance — reads
//! what its first delivery read.
//!
//! Why not a script that computes the windows in Redis: the arithmetic
//! then runs twice (Rust for local kinds, Lua for shared ones) and has to
//! be kept equal by hand, and it costs Redis tens of µs per entity per
//! event in Lua's tables. Here Redis only compares and stores bytes, once
//! per entity per burst, and the windows are one implementation.
//!
//! A source may split its bursts over several chains of calls
//! ([`SharedConfig::chains`]), each entity always on the same one, so that
//! Redis works on one chain's commit while Verdict applies another's.
//!
//! A distinct count is the local store's exact-then-sketch, not Redis's
//! HyperLogLog: exact up to [`EXACT_DISTINCT`](crate::entity::EXACT_DISTINCT)
//! values in the window, which is where fraud rules draw their lines (a
//! device with 3 accounts, not 3,000), and a 64-register sketch beyond it.
//! Redis's own `PFCOUNT` is approximate from the first value and would
//! make a shared device disagree with a local one. Values are hashed with
//! XXH64, a fixed function, so instances built apart agree.
//!
//! Bursts that queued up behind a round trip go out together in the next
//! ([`SharedStore::execute_all`]). A call has its own deadline: past it, or
//! with Redis down, it answers a [`SharedError`] at once — the caller
//! decides with those features missing — and the connection comes back by
//! itself when Redis does. The events of entities that did commit keep
//! what they read.
//!
//! Not here: which kinds are shared (the definitions' `[placement]`),
//! deciding or marking decisions degraded (the engine), metrics names (the
//! pipeline implements [`SharedObserver`]).

mod batch;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use batch::Group;
pub use batch::{MAX_KEY_BYTES, SharedBatch, apply_stored};

/// The script Redis runs to commit one entity.
pub const SCRIPT: &str = include_str!("commit.lua");

/// Most times one entity's commit is computed and sent within one call
/// when other writers keep changing it; past them its events are decided
/// without its features ([`SharedError::Conflict`]).
pub const MAX_ATTEMPTS: usize = 16;

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
    /// keys cost about 100 to 150 bytes per shared entity per event, so
    /// Redis holds events/s × shared kinds × this × ~120 B of them.
    pub dedup_ttl_secs: u64,
    /// The first part of every key, so that several deployments can share
    /// one Redis.
    pub key_prefix: String,
    /// Largest reply accepted for one stored state or read.
    pub max_reply_bytes: usize,
    /// How many chains of round trips each source (a Kafka lane, the HTTP
    /// listener) keeps to Redis at once. An entity always goes by the same
    /// chain, so its events reach Redis in the order they were read; with
    /// several, Redis works on one chain's commit while Verdict applies
    /// another's events.
    pub chains: usize,
    /// How many entities each source remembers the state it last committed
    /// of (its bytes and about 70 more: some 230 bytes for a device of the
    /// example definitions, 60 MB for 262,144 of them), so that its next
    /// commit of one takes one round trip instead of two. Devices and IPs
    /// that one user's events alone update are right to remember; 0 always
    /// reads first.
    pub known_entities: usize,
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
            chains: 1,
            known_entities: 262_144,
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
    /// An entity changed by other writers on every attempt to commit it.
    Conflict,
}

impl SharedErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedErrorKind::Timeout => "timeout",
            SharedErrorKind::Unavailable => "unavailable",
            SharedErrorKind::Server => "server",
            SharedErrorKind::Reply => "reply",
            SharedErrorKind::TooLarge => "too_large",
            SharedErrorKind::Conflict => "conflict",
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
    /// A reply, a stored state or a stored read that does not decode.
    #[error(
        "shared feature store: {0}; is another program (or another version of Verdict's feature definitions) writing these keys?"
    )]
    Reply(String),
    /// A reply or stored value over `max_reply_bytes`.
    #[error(
        "shared feature store: a reply of {0} bytes is over max_reply_bytes; raise it in [features.shared] if entities hold that much"
    )]
    TooLarge(usize),
    /// Other writers changed the entities every time this instance tried
    /// to commit them.
    #[error(
        "shared feature store: {0} entities changed by other writers on every attempt to commit; their events were decided without their shared features"
    )]
    Conflict(usize),
}

impl SharedError {
    pub fn kind(&self) -> SharedErrorKind {
        match self {
            SharedError::Config(_) => SharedErrorKind::Unavailable,
            SharedError::Timeout(_) => SharedErrorKind::Timeout,
            SharedError::Redis { kind, .. } => *kind,
            SharedError::Reply(_) => SharedErrorKind::Reply,
            SharedError::TooLarge(_) => SharedErrorKind::TooLarge,
            SharedError::Conflict(_) => SharedErrorKind::Conflict,
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
    /// Commits of `entities` found them changed by another writer and were
    /// computed and sent again.
    fn retried(&self, entities: usize) {
        let _ = entities;
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
    /// The next version this instance writes: random at start, then
    /// counted, so that no two commits anywhere write the same one.
    versions: AtomicU64,
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
            versions: AtomicU64::new(std::collections::hash_map::RandomState::new().hash_one(0u8)),
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

    /// Runs `batch`: applies and commits every entity it touches, within
    /// the deadline, presuming nothing of what Redis holds. Each event
    /// whose entities committed can then be read ([`SharedBatch::read`]).
    pub async fn execute(&self, batch: &mut SharedBatch) -> Result<(), SharedError> {
        self.execute_all(std::slice::from_mut(batch), &mut Known::new(0))
            .await
    }

    /// Runs several batches, their events one after another in their order,
    /// in the same round trips with one deadline: what a lane whose bursts
    /// queued up while Redis answered the last sends next. `known` is what
    /// the caller's chain of calls committed before. On an error, the
    /// events of the entities that committed keep what they read; the
    /// others read missing.
    pub async fn execute_all(
        &self,
        batches: &mut [SharedBatch],
        known: &mut Known,
    ) -> Result<(), SharedError> {
        for batch in batches.iter_mut() {
            batch.forget_reads();
        }
        let n: usize = batches.iter().map(SharedBatch::operations).sum();
        if n == 0 {
            return Ok(());
        }
        let deadline = Duration::from_millis(self.config.deadline_ms);
        let started = Instant::now();
        let mut groups = batch::groups(batches);
        let result =
            match tokio::time::timeout(deadline, self.run(batches, &mut groups, known)).await {
                Ok(result) => result,
                Err(_) => Err(SharedError::Timeout(deadline)),
            };
        match result {
            Ok(()) => {
                self.observer.completed(n, started.elapsed());
                Ok(())
            }
            Err(e) => {
                // A state presumed wrongly (what a failed call left is
                // unknown) costs one more round trip, no more.
                let answered: usize = batches.iter().map(SharedBatch::answered).sum();
                self.observer.failed(e.kind(), n - answered);
                Err(e)
            }
        }
    }

    /// Commit round trips until every entity has committed, failed, or
    /// used up its attempts. A group's outcome is written into `batches`
    /// as soon as it is known.
    ///
    /// The first commit of an entity presumes its state is what this chain
    /// last committed (`known`), or none, and its events new: right for
    /// an entity only this instance updates (a device of one user) and for
    /// one seen for the first time, in one round trip. Otherwise the script
    /// answers what Redis holds, and the events are applied to that and
    /// sent again.
    ///
    /// A single server gets one commit script for all the call's entities
    /// (their keys side by side: one command to parse and one script to
    /// start, however many entities); a cluster one per entity, routed to
    /// its slot's primary.
    async fn run(
        &self,
        batches: &mut [SharedBatch],
        groups: &mut [Group],
        known: &mut Known,
    ) -> Result<(), SharedError> {
        let conn = self.connection().await?;
        let limit = self.config.max_reply_bytes;
        let mut first_error: Option<SharedError> = None;
        let mut fail = |e: SharedError| first_error = first_error.take().or(Some(e));
        // The groups whose last application calls for a commit.
        let mut committing: Vec<usize> = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter_mut().enumerate() {
            let presumed = known
                .get(group.state_key(batches))
                .map_or(redis::Value::Nil, |s| redis::Value::BulkString(s.to_vec()));
            let mut items = std::iter::once(presumed);
            let version = self.versions.fetch_add(1, Ordering::Relaxed);
            match group.apply(
                batches,
                &mut items.by_ref().chain(std::iter::repeat(redis::Value::Nil)),
                limit,
                version,
            ) {
                Ok(true) => committing.push(g),
                Ok(false) => group.answer(batches),
                Err(e) => fail(e),
            }
        }
        for attempt in 0..MAX_ATTEMPTS {
            if committing.is_empty() {
                break;
            }
            if attempt > 0 {
                self.observer.retried(committing.len());
            }
            let chunks = self.chunks(&committing);
            let commits: Vec<redis::Cmd> = chunks
                .iter()
                .map(|chunk| {
                    let keys: usize = chunk.iter().map(|&g| groups[g].asked_keys()).sum();
                    let mut cmd = redis::cmd("EVALSHA");
                    cmd.arg(self.script.get_hash()).arg(keys);
                    for &g in *chunk {
                        groups[g].write_keys(batches, &mut cmd);
                    }
                    cmd.arg(self.dedup_ttl_ms(batches));
                    for &g in *chunk {
                        groups[g].write_commit(batches, &mut cmd);
                    }
                    cmd
                })
                .collect();
            let answers = self.eval(&conn, &commits).await?;
            let mut again = Vec::new();
            for (chunk, answer) in chunks.iter().zip(answers) {
                let items = match answer {
                    Ok(redis::Value::Array(items)) if items.len() == chunk.len() => items,
                    Ok(other) => {
                        fail(SharedError::Reply(format!(
                            "the commit script answered {}",
                            kind_of(&other)
                        )));
                        continue;
                    }
                    Err(e) => {
                        fail(redis_error(e));
                        continue;
                    }
                };
                for (&g, item) in chunk.iter().zip(items) {
                    let group = &mut groups[g];
                    match item {
                        redis::Value::Int(1) => {
                            group.answer(batches);
                            known.insert(group.state_key(batches), group.state());
                        }
                        // Not as presumed: the entity as it is now.
                        redis::Value::Array(now) => {
                            let version = self.versions.fetch_add(1, Ordering::Relaxed);
                            match group.apply(batches, &mut now.into_iter(), limit, version) {
                                Ok(true) => again.push(g),
                                Ok(false) => group.answer(batches),
                                Err(e) => fail(e),
                            }
                        }
                        other => fail(SharedError::Reply(format!(
                            "the commit script answered {} for an entity",
                            kind_of(&other)
                        ))),
                    }
                }
            }
            committing = again;
        }
        if !committing.is_empty() {
            fail(SharedError::Conflict(committing.len()));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The groups of one command each: all of them to a single server,
    /// one per command to a cluster.
    fn chunks<'a>(&self, groups: &'a [usize]) -> Vec<&'a [usize]> {
        if self.config.cluster {
            groups.chunks(1).collect()
        } else if groups.is_empty() {
            Vec::new()
        } else {
            vec![groups]
        }
    }

    fn dedup_ttl_ms(&self, batches: &[SharedBatch]) -> u64 {
        batches.first().map_or(1, SharedBatch::dedup_ttl_ms)
    }

    /// Sends the commit commands; loads the script where a server does not
    /// have it (restarted, flushed, a new cluster primary) and sends those
    /// again (a command refused with `NOSCRIPT` wrote nothing).
    async fn eval(
        &self,
        conn: &Conn,
        commits: &[redis::Cmd],
    ) -> Result<Vec<Result<redis::Value, redis::RedisError>>, SharedError> {
        let mut answers = send(conn, commits).await?;
        if answers.iter().any(is_noscript) {
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).clone();
            match conn {
                Conn::Single(c) => {
                    let _: String = load
                        .query_async(&mut c.clone())
                        .await
                        .map_err(redis_error)?;
                }
                Conn::Cluster(c) => {
                    // Routed to every primary.
                    let _: redis::Value = load
                        .query_async(&mut c.clone())
                        .await
                        .map_err(redis_error)?;
                }
            }
            let again: Vec<usize> = (0..answers.len())
                .filter(|&i| is_noscript(&answers[i]))
                .collect();
            let cmds: Vec<redis::Cmd> = again.iter().map(|&i| commits[i].clone()).collect();
            for (i, answer) in again.into_iter().zip(send(conn, &cmds).await?) {
                answers[i] = answer;
            }
        }
        Ok(answers)
    }
}

/// What one chain of calls committed last of each entity: the state it
/// wrote, version included, so that its next commit of the entity presumes
/// it instead of reading it first. Bounded: past `capacity` entities the
/// oldest are forgotten (and presumed to have no state). A state presumed
/// wrongly — forgotten, stale, or left by a call that failed — costs one
/// more round trip: the commit script answers what Redis holds.
pub struct Known {
    /// By a hash of the entity's state key: two entities that share one
    /// are only a wrong presumption, which the commit script corrects.
    states: hashbrown::HashMap<u64, Vec<u8>>,
    order: std::collections::VecDeque<u64>,
    capacity: usize,
    hasher: ahash::RandomState,
}

impl Known {
    /// Remembers at most `capacity` entities (none with 0). Its tables
    /// are sized at once: growing them while events wait would copy every
    /// entry remembered, a pause of milliseconds at a few hundred thousand.
    pub fn new(capacity: usize) -> Known {
        Known {
            states: hashbrown::HashMap::with_capacity(capacity),
            order: std::collections::VecDeque::with_capacity(capacity),
            capacity,
            hasher: ahash::RandomState::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        if self.capacity == 0 {
            return None;
        }
        self.states
            .get(&self.hasher.hash_one(key))
            .map(Vec::as_slice)
    }

    fn insert(&mut self, key: &str, state: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let h = self.hasher.hash_one(key);
        if let Some(kept) = self.states.get_mut(&h) {
            kept.clear();
            kept.extend_from_slice(state);
            return;
        }
        let mut buffer = Vec::new();
        while self.states.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.states.remove(&oldest) {
                buffer = evicted;
            }
        }
        buffer.clear();
        buffer.extend_from_slice(state);
        self.order.push_back(h);
        self.states.insert(h, buffer);
    }
}

fn kind_of(v: &redis::Value) -> &'static str {
    match v {
        redis::Value::Nil => "nil",
        redis::Value::Int(_) => "an integer",
        redis::Value::Array(_) => "an array",
        redis::Value::ServerError(_) => "an error",
        redis::Value::BulkString(_) | redis::Value::SimpleString(_) => "a string",
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

/// Sends commands, each answered on its own. To a single server, one
/// command as it is (a call makes one of each kind there), several in one
/// pipeline; to a cluster, each command routed to its slot's primary, all
/// at once (the connection to each node writes them in order, together).
async fn send(
    conn: &Conn,
    cmds: &[redis::Cmd],
) -> Result<Vec<Result<redis::Value, redis::RedisError>>, SharedError> {
    match (conn, cmds) {
        (_, []) => Ok(Vec::new()),
        (Conn::Single(c), [cmd]) => Ok(vec![cmd.query_async(&mut c.clone()).await]),
        (Conn::Single(c), _) => {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            pipe.ignore_errors();
            let answers: Vec<redis::RedisResult<redis::Value>> = pipe
                .query_async(&mut c.clone())
                .await
                .map_err(redis_error)?;
            if answers.len() != cmds.len() {
                return Err(SharedError::Reply(format!(
                    "{} answers to {} commands",
                    answers.len(),
                    cmds.len()
                )));
            }
            Ok(answers
                .into_iter()
                .map(|a| match a {
                    Ok(redis::Value::ServerError(e)) => Err(e.into()),
                    other => other,
                })
                .collect())
        }
        (Conn::Cluster(c), _) => {
            let calls = cmds.iter().map(|cmd| {
                let mut c = c.clone();
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
