//! The online store: per-entity states in sharded hash tables, read
//! point-in-time and then updated, once per event.
//!
//! Each entity kind has its own table, split into shards by the key's
//! hash, each behind a `std::sync::Mutex` (never held across an await: the
//! store is synchronous). An event locks at most one shard per kind, always
//! in kind order, so two lanes wait for each other only when they touch
//! the same shard of the same kind at the same moment.
//!
//! Eviction runs on a thread the store owns (see [`FeatureStore::maintain`]),
//! never on an event's path: the event path only counts its updates and
//! wakes that thread every [`SWEEP_EVERY`] of them, and the thread sweeps
//! when event time or memory says there is something to evict. Owning the
//! thread, rather than leaving the caller to run sweeps, keeps the memory
//! budget a property of the store: no deployment can forget it. Its timing
//! follows the events, not a clock, so tests with fewer events never see a
//! sweep they did not ask for.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ahash::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use serde::Deserialize;
use smallvec::SmallVec;
use verdict_core::{Catalogue, Event, Record, Value};

use crate::batch::BatchTables;
use crate::dedup::{Dedup, DedupSlot, Seen};
use crate::defs::{Agg, FeatureDefs, Placement};
use crate::entity::{Entity, Layout, PackedKey, pack_key};

/// Added events between two wake-ups of the maintenance thread.
pub const SWEEP_EVERY: u64 = 65_536;
/// Shards per entity kind (a power of two).
const SHARDS: usize = 64;

/// How the store behaves; `[features]` in `verdict.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events up to this much older than the newest event before them in
    /// their stream ([`StreamClock`]: a Kafka partition, a file) still
    /// update the windows; older ones are decided but not added.
    pub lateness_secs: u64,
    /// How many recent event ids are remembered to drop redeliveries.
    pub dedup_capacity: usize,
    /// Memory the store may hold; beyond it the longest-idle entities are
    /// evicted first.
    pub memory_budget_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            lateness_secs: 300,
            dedup_capacity: 1 << 20,
            memory_budget_mb: 4096,
        }
    }
}

/// What happened to an event's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Read, then added.
    Added,
    /// Its `event_id` was seen recently: read only, not counted again.
    Duplicate,
    /// Older than the allowed lateness: read only.
    TooLate,
}

/// What happened to an event's update, with where the dedup remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub outcome: UpdateOutcome,
    /// For a fresh event (added or too late), the slot its id now holds;
    /// for a duplicate, the slot of its first delivery. `None` only when
    /// the dedup remembers nothing (`dedup_capacity = 0`).
    pub slot: Option<DedupSlot>,
    /// The hash the dedup keeps of the event id. A slot changes hands when
    /// its id is forgotten, and also through [`FeatureStore::replay`],
    /// whose events a caller may not record: keep this beside whatever is
    /// stored at the slot and compare it before trusting it.
    pub id_hash: u64,
}

/// The event time of one ordered stream of events: a Kafka partition, a
/// file, the requests of one HTTP listener. The lateness rule judges an
/// event against the newest event before it *in its own stream*, so whether
/// an event is too late depends on that stream's order alone — not on how
/// a process interleaves its partitions, how far one lane runs ahead of
/// another, or how many instances share the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    newest: i64,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { newest: i64::MIN }
    }
}

impl StreamClock {
    /// A stream that has carried no event yet.
    pub fn new() -> StreamClock {
        StreamClock::default()
    }

    /// The newest event time (ms) the stream has carried, if any.
    pub fn newest(&self) -> Option<i64> {
        (self.newest != i64::MIN).then_some(self.newest)
    }

    /// Notes an event of the stream at `t`; the stream's newest time after.
    #[inline]
    pub fn observe(&mut self, t: i64) -> i64 {
        self.newest = self.newest.max(t);
        self.newest
    }
}

/// Counters for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub entities: u64,
    pub bytes: u64,
    pub late_events: u64,
    pub duplicates: u64,
    pub evictions: u64,
}

/// The stable hash of values (the same in every run, so that snapshots
/// restore).
pub(crate) fn hasher() -> RandomState {
    RandomState::with_seeds(0x5ee7_1a5e, 0x0dd5_eed5, 0x7e41_c0de, 0x0b5e_55ed)
}

/// A shard on a cache line pair of its own, so that lanes locking
/// neighbouring shards do not fight over one line.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

type Table = HashTable<Entity>;

/// One entity kind's table.
pub(crate) struct EntityMap {
    shards: Box<[Padded<Mutex<Table>>]>,
}

impl EntityMap {
    fn new() -> EntityMap {
        EntityMap {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Table> {
        // Bits the table's own probing (low bits) and tags (top 7) leave.
        lock(&self.shards[(hash >> 40) as usize & (SHARDS - 1)].0)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }

    /// Calls `f` on every entity, shard by shard.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entity)) {
        for s in self.shards.iter() {
            lock(&s.0).iter().for_each(&mut f);
        }
    }

    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            lock(&s.0).clear();
        }
    }

    /// Adds an entity whose key is not in the table.
    pub(crate) fn insert(&self, e: Entity) {
        self.shard(e.hash).insert_unique(e.hash, e, |x| x.hash);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves whole entities behind (every
    // update of one completes before the next starts), so the data stays
    // usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the store shares with its maintenance thread.
pub(crate) struct Inner {
    pub(crate) defs: FeatureDefs,
    /// Per entity kind, the indices of its features in `defs.features`.
    pub(crate) by_entity: Vec<Vec<usize>>,
    pub(crate) layouts: Vec<Layout>,
    pub(crate) maps: Vec<EntityMap>,
    pub(crate) batch: BatchTables,
    dedup: Dedup,
    pub(crate) watermark: AtomicI64,
    /// The watermark at the last sweep.
    swept_at: AtomicI64,
    config: StoreConfig,
    late: AtomicU64,
    duplicates: AtomicU64,
    evictions: AtomicU64,
    updates: AtomicU64,
    sweeps: AtomicU64,
    /// Bytes held beyond the entities' fixed states: keys and what distinct
    /// counts allocate as they grow.
    pub(crate) grown: AtomicI64,
    /// Bytes of one entity's states, per entity kind.
    entity_bytes: Vec<usize>,
    /// Hashes distinct values (stable: snapshots hold these hashes).
    pub(crate) hash: RandomState,
    /// Hashes entity keys and event ids (in memory only).
    pub(crate) keys: RandomState,
}

/// The maintenance thread and how to stop it.
struct Maintainer {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// The feature store.
pub struct FeatureStore {
    pub(crate) inner: Arc<Inner>,
    maintainer: Maintainer,
}

impl Drop for FeatureStore {
    fn drop(&mut self) {
        self.maintainer.stop.store(true, Ordering::Release);
        if let Some(thread) = self.maintainer.thread.take() {
            thread.thread().unpark();
            // A sweep in progress finishes first; the thread holds no lock
            // a caller could be waiting on here.
            let _ = thread.join();
        }
    }
}

/// One entity of an event, found before any is read.
struct Probe<'a> {
    kind: usize,
    hash: u64,
    key: PackedKey,
    shard: Option<MutexGuard<'a, Table>>,
}

impl FeatureStore {
    /// A store for `defs`; registers every feature in the catalogue, whose
    /// feature slots index the output of [`FeatureStore::read_and_update`].
    ///
    /// Loads the batch views (running their queries) before returning, and
    /// starts the store's maintenance thread.
    pub fn new(
        mut defs: FeatureDefs,
        catalogue: &mut Catalogue,
        config: StoreConfig,
    ) -> Result<FeatureStore, crate::FeatureError> {
        for f in &mut defs.features {
            let slot = catalogue.add_feature(&defs.entities[f.entity].name, &f.name, f.ty);
            f.slot = slot.index as usize;
        }
        let batch = BatchTables::load(&defs, catalogue)?;
        let mut by_entity = vec![Vec::new(); defs.entities.len()];
        for (i, f) in defs.features.iter().enumerate() {
            by_entity[f.entity].push(i);
        }
        let layouts: Vec<Layout> = by_entity.iter().map(|fs| Layout::new(&defs, fs)).collect();
        let entity_bytes = layouts.iter().map(Layout::bytes).collect();
        let maps = defs.entities.iter().map(|_| EntityMap::new()).collect();
        let inner = Arc::new(Inner {
            by_entity,
            layouts,
            maps,
            batch,
            dedup: Dedup::new(config.dedup_capacity),
            watermark: AtomicI64::new(i64::MIN),
            swept_at: AtomicI64::new(i64::MIN),
            late: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            grown: AtomicI64::new(0),
            entity_bytes,
            hash: hasher(),
            keys: RandomState::new(),
            config,
            defs,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inner: Weak<Inner> = Arc::downgrade(&inner);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("feature-sweep".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        match inner.upgrade() {
                            Some(inner) => inner.maybe_maintain(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| crate::FeatureError::Thread(e.to_string()))?
        };
        Ok(FeatureStore {
            inner,
            maintainer: Maintainer {
                thread: Some(thread),
                stop,
            },
        })
    }

    /// Runs the batch queries again (see [`BatchTables::refresh`]).
    pub fn refresh_batch(&self) -> Result<(), crate::FeatureError> {
        self.inner.batch.refresh()
    }

    /// How often the batch views want refreshing, if there are any.
    pub fn batch_refresh_every(&self) -> Option<std::time::Duration> {
        self.inner.batch.refresh_every()
    }

    pub fn defs(&self) -> &FeatureDefs {
        &self.inner.defs
    }

    /// Bytes one entity of each kind holds (fixed by the definitions; its
    /// key is charged beside).
    pub fn bytes_per_entity(&self) -> Vec<(String, usize)> {
        self.inner
            .defs
            .entities
            .iter()
            .zip(&self.inner.entity_bytes)
            .map(|(e, b)| (e.name.clone(), *b))
            .collect()
    }

    /// How many [`DedupSlot`]s there are: every slot an [`Update`] names is
    /// below this, so an array this long, indexed by slot, can keep
    /// something per remembered event id.
    pub fn dedup_slots(&self) -> usize {
        self.inner.dedup.slots()
    }

    /// Fills `out` (indexed by feature slot) with the features `event` sees
    /// from the events before it, then adds the event — unless it is a
    /// redelivery, or older than the newest event before it in its stream
    /// (`clock`) by more than the allowed lateness. Safe to call from
    /// several threads; call in order within one stream, each stream with
    /// its own clock. The features of kinds placed `shared` are not written
    /// here: push the event to a [`SharedBatch`](crate::shared::SharedBatch)
    /// with this outcome, and read them from it once it has run.
    pub fn read_and_update(
        &self,
        event: &Event,
        out: &mut [Value],
        clock: &mut StreamClock,
    ) -> UpdateOutcome {
        self.update(event, out, Some(clock)).outcome
    }

    /// [`FeatureStore::read_and_update`], also telling where the dedup
    /// remembers the event id (see [`Update`]).
    pub fn read_and_update_slot(
        &self,
        event: &Event,
        out: &mut [Value],
        clock: &mut StreamClock,
    ) -> Update {
        self.update(event, out, Some(clock))
    }

    /// Adds an event read again from its source to rebuild the store (the
    /// events between a snapshot's positions and the committed offsets, or
    /// a partition received from another instance). Redeliveries are still
    /// dropped, but the lateness rule does not apply: the store's event time
    /// may have moved on with live traffic while older events are replayed,
    /// and each window takes an event as long as it falls in its span.
    ///
    /// `clock`, when the replayed events are the start of a stream read on
    /// afterwards, is advanced by them as by live events.
    pub fn replay(&self, event: &Event, clock: Option<&mut StreamClock>) -> UpdateOutcome {
        if let Some(clock) = clock {
            clock.observe(event.timestamp_ms());
        }
        self.update(event, &mut [], None).outcome
    }

    /// Fills `out` with the features `event` would see now, changing
    /// nothing: the event is not added, not remembered by the dedup, and
    /// does not move the store's event time. For questions about an event
    /// (an explanation) that must not count as traffic. The features of
    /// kinds placed `shared` are left as they are.
    pub fn peek(&self, event: &Event, out: &mut [Value]) {
        self.inner.visit(event, out, Visit::Peek);
    }

    /// `clock`: the event's stream, whose lateness rule applies; `None`
    /// for a replay, where it does not.
    fn update(&self, event: &Event, out: &mut [Value], clock: Option<&mut StreamClock>) -> Update {
        let update = self.inner.visit(event, out, Visit::Live { clock });
        if update.outcome == UpdateOutcome::Added
            && self.inner.updates.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
        {
            self.wake();
        }
        update
    }

    /// Evicts entities idle beyond the longest window, then the longest
    /// idle until the memory budget holds. The maintenance thread calls it
    /// when due; a caller may too (tests do, to evict at a known moment).
    pub fn maintain(&self) {
        self.inner.maintain();
    }

    /// How many sweeps the maintenance thread has run.
    pub fn sweeps(&self) -> u64 {
        self.inner.sweeps.load(Ordering::Acquire)
    }

    /// The newest event time the store has seen in any stream, if any (the
    /// clock its evictions follow).
    pub fn watermark(&self) -> Option<i64> {
        Some(self.inner.watermark.load(Ordering::Acquire)).filter(|w| *w != i64::MIN)
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    /// Bytes the dedup holds (event ids remembered), apart from
    /// [`StoreStats::bytes`].
    pub fn dedup_bytes(&self) -> usize {
        self.inner.dedup.bytes()
    }

    /// Wakes the maintenance thread.
    fn wake(&self) {
        if let Some(t) = &self.maintainer.thread {
            t.thread().unpark();
        }
    }
}

/// What a visit of the store does with an event.
enum Visit<'c> {
    /// Read, then add (unless a redelivery or, with the clock of the
    /// event's stream, too late for it).
    Live { clock: Option<&'c mut StreamClock> },
    /// Read only.
    Peek,
}

impl Inner {
    fn visit(&self, event: &Event, out: &mut [Value], visit: Visit<'_>) -> Update {
        let t = event.timestamp_ms();
        let id_hash = self.keys.hash_one(event.id());
        let peek = matches!(visit, Visit::Peek);
        let (seen, late) = match visit {
            Visit::Live { clock } => {
                let seen = self.dedup.insert(id_hash);
                // The store's clock (evictions) only moves forward; the
                // stream's judges lateness.
                if self.watermark.load(Ordering::Relaxed) < t {
                    self.watermark.fetch_max(t, Ordering::AcqRel);
                }
                let late = clock.is_some_and(|c| {
                    t < c
                        .observe(t)
                        .saturating_sub(self.config.lateness_secs as i64 * 1000)
                });
                (seen, late)
            }
            // Read as a redelivery is: the windows as they are, unchanged.
            Visit::Peek => (Seen::Fresh(None), false),
        };
        let (outcome, slot) = match seen {
            Seen::Fresh(_) if peek => (UpdateOutcome::Duplicate, None),
            Seen::Again(slot) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                (UpdateOutcome::Duplicate, Some(slot))
            }
            Seen::Fresh(slot) if late => {
                self.late.fetch_add(1, Ordering::Relaxed);
                (UpdateOutcome::TooLate, slot)
            }
            Seen::Fresh(slot) => (UpdateOutcome::Added, slot),
        };
        let update = outcome == UpdateOutcome::Added;
        // Every entity of the event is hashed and its shard locked before
        // any is looked up: with no atomic operation between the lookups,
        // the CPU overlaps their cache misses instead of taking them one
        // after another. Kinds are locked in one order (each kind its own
        // table), so two events never wait for each other in a cycle.
        let mut probes: SmallVec<[Probe<'_>; 4]> = SmallVec::new();
        for (e, entity) in self.defs.entities.iter().enumerate() {
            let features = &self.by_entity[e];
            let Value::String(key) = event.get(entity.key_slot) else {
                for &i in features {
                    let f = &self.defs.features[i];
                    if let Some(o) = out.get_mut(f.slot) {
                        *o = empty_value(f.agg);
                    }
                }
                continue;
            };
            self.batch.read(e, key, out);
            // A shared kind's features come from the shared store.
            if features.is_empty() || entity.placement == Placement::Shared {
                continue;
            }
            let hash = self.keys.hash_one(&**key);
            let mut packed = PackedKey::new();
            pack_key(key, &mut packed);
            probes.push(Probe {
                kind: e,
                hash,
                key: packed,
                shard: None,
            });
        }
        for p in probes.iter_mut() {
            p.shard = Some(self.maps[p.kind].shard(p.hash));
        }
        let mut grown = 0usize;
        let mut found: SmallVec<[(usize, Option<&mut Entity>); 4]> = SmallVec::new();
        for p in probes.iter_mut() {
            let (hash, key) = (p.hash, &p.key);
            let table = p.shard.as_mut().expect("locked above");
            let entity = if update {
                Some(match table.entry(hash, |x| x.is(hash, key), |x| x.hash) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        let e = Entity::new(&self.layouts[p.kind], hash, key, t);
                        grown += e.key_bytes();
                        v.insert(e).into_mut()
                    }
                })
            } else {
                table.find_mut(hash, |x| x.is(hash, key))
            };
            if let Some(e) = &entity {
                e.prefetch();
            }
            found.push((p.kind, entity));
        }
        let record = Record {
            event: event.values(),
            features: &[],
            model: &[],
        };
        for (e, entity) in found {
            let layout = &self.layouts[e];
            let features = &self.by_entity[e];
            let Some(entity) = entity else {
                for &i in features {
                    let f = &self.defs.features[i];
                    if let Some(o) = out.get_mut(f.slot) {
                        *o = empty_value(f.agg);
                    }
                }
                continue;
            };
            if update {
                entity.last_seen = entity.last_seen.max(t);
            }
            for (k, &i) in features.iter().enumerate() {
                let f = &self.defs.features[i];
                if let Some(o) = out.get_mut(f.slot) {
                    *o = entity.read(layout, k, f.agg, t);
                }
                if update && f.filter.as_ref().is_none_or(|flt| flt.matches(&record)) {
                    let value = f.field.map_or(&Value::Missing, |slot| event.get(slot));
                    grown += entity.add(layout, k, t, value, &self.hash);
                }
            }
        }
        drop(probes);
        if grown != 0 {
            self.grown.fetch_add(grown as i64, Ordering::Relaxed);
        }
        Update {
            outcome,
            slot,
            id_hash,
        }
    }

    /// Sweeps when it can evict anything: when event time has moved on by
    /// a tenth of the idle limit since the last sweep, or when the store is
    /// over its memory budget. Checking costs a few loads and a pass over
    /// the shards' lengths; a sweep visits every entity.
    fn maybe_maintain(&self) {
        let now = self.watermark.load(Ordering::Acquire);
        let last = self.swept_at.load(Ordering::Relaxed);
        let budget = self.config.memory_budget_mb.saturating_mul(1 << 20);
        let due = last == i64::MIN
            || now.saturating_sub(last) >= self.defs.longest_window_ms() / 10
            || self.stats().bytes > budget;
        if due {
            self.swept_at.store(now, Ordering::Relaxed);
            self.maintain();
            self.sweeps.fetch_add(1, Ordering::Release);
        }
    }

    fn maintain(&self) {
        let now = self.watermark.load(Ordering::Acquire);
        if now == i64::MIN {
            return;
        }
        let mut idle = self.defs.longest_window_ms();
        loop {
            let cutoff = now.saturating_sub(idle);
            for map in &self.maps {
                for shard in map.shards.iter() {
                    let mut table = lock(&shard.0);
                    let before = table.len();
                    let mut freed = 0;
                    table.retain(|s| {
                        let keep = s.last_seen >= cutoff;
                        if !keep {
                            freed += s.heap_bytes() + s.key_bytes();
                        }
                        keep
                    });
                    let evicted = before - table.len();
                    drop(table);
                    self.grown.fetch_sub(freed as i64, Ordering::Relaxed);
                    self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
                }
            }
            let budget = self.config.memory_budget_mb.saturating_mul(1 << 20);
            if self.stats().bytes <= budget || idle <= 1_000 {
                if idle < self.defs.longest_window_ms() {
                    tracing::warn!(
                        budget_mb = self.config.memory_budget_mb,
                        idle_secs = idle / 1000,
                        "feature store over its memory budget: evicted entities idle longer than this"
                    );
                }
                return;
            }
            idle /= 2;
        }
    }

    fn stats(&self) -> StoreStats {
        let mut entities = 0;
        let mut bytes = 0;
        for (map, per) in self.maps.iter().zip(&self.entity_bytes) {
            let n = map.len() as u64;
            entities += n;
            bytes += n * (*per as u64 + 24);
        }
        bytes += self.batch.bytes() as u64;
        bytes += self.grown.load(Ordering::Relaxed).max(0) as u64;
        StoreStats {
            entities,
            bytes,
            late_events: self.late.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// What a feature reads with no history.
pub(crate) fn empty_value(agg: Agg) -> Value {
    match agg {
        Agg::Count | Agg::Sum | Agg::DistinctCount => Value::Number(0.0),
        _ => Value::Missing,
    }
}
