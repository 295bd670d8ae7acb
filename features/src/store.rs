//! The online store: per-entity states in `DashMap`s, read point-in-time
//! and then updated, once per event.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ahash::{AHashSet, RandomState};
use dashmap::DashMap;
use serde::Deserialize;
use smallvec::SmallVec;
use verdict_core::{Catalogue, Event, Record, Value};

use crate::batch::BatchTables;
use crate::defs::{Agg, FeatureDefs};
use crate::window::{State, width};

/// How the store behaves; `[features]` in `verdict.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events up to this much older than the newest seen still update the
    /// windows; older ones are decided but not added.
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

/// Counters for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub entities: u64,
    pub bytes: u64,
    pub late_events: u64,
    pub duplicates: u64,
    pub evictions: u64,
}

/// One entity's states, one per feature of its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityState {
    /// Event time of its newest event.
    pub last_seen: i64,
    pub states: Box<[State]>,
}

/// Recently seen event ids (hashes), bounded.
struct Dedup {
    seen: AHashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Dedup {
    /// True when `h` is new.
    fn insert(&mut self, h: u64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if !self.seen.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// The stable hash of values and ids (the same in every run, so that
/// snapshots restore).
pub(crate) fn hasher() -> RandomState {
    RandomState::with_seeds(0x5ee7_1a5e, 0x0dd5_eed5, 0x7e41_c0de, 0x0b5e_55ed)
}

/// The feature store.
pub struct FeatureStore {
    pub(crate) defs: FeatureDefs,
    /// Per entity kind, the indices of its features in `defs.features`.
    pub(crate) by_entity: Vec<Vec<usize>>,
    pub(crate) maps: Vec<DashMap<Box<str>, EntityState, RandomState>>,
    pub(crate) batch: BatchTables,
    dedup: Mutex<Dedup>,
    pub(crate) watermark: AtomicI64,
    /// The watermark at the last sweep.
    swept_at: AtomicI64,
    config: StoreConfig,
    late: AtomicU64,
    duplicates: AtomicU64,
    evictions: AtomicU64,
    updates: AtomicU64,
    /// Bytes the distinct counts have allocated beyond their fixed state.
    pub(crate) grown: AtomicI64,
    /// Bytes of one entity's states, per entity kind.
    entity_bytes: Vec<usize>,
    hash: RandomState,
}

impl FeatureStore {
    /// A store for `defs`; registers every feature in the catalogue, whose
    /// feature slots index the output of [`FeatureStore::read_and_update`].
    ///
    /// Loads the batch views (running their queries) before returning.
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
        let entity_bytes = by_entity
            .iter()
            .map(|fs| {
                96 + fs
                    .iter()
                    .map(|&i| State::new(defs.features[i].agg).bytes())
                    .sum::<usize>()
            })
            .collect();
        let maps = defs
            .entities
            .iter()
            .map(|_| DashMap::with_hasher(RandomState::new()))
            .collect();
        Ok(FeatureStore {
            by_entity,
            maps,
            batch,
            dedup: Mutex::new(Dedup {
                seen: AHashSet::new(),
                order: VecDeque::new(),
                capacity: config.dedup_capacity,
            }),
            watermark: AtomicI64::new(i64::MIN),
            swept_at: AtomicI64::new(i64::MIN),
            late: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            grown: AtomicI64::new(0),
            entity_bytes,
            hash: hasher(),
            config,
            defs,
        })
    }

    /// Runs the batch queries again (see [`BatchTables::refresh`]).
    pub fn refresh_batch(&self) -> Result<(), crate::FeatureError> {
        self.batch.refresh()
    }

    /// How often the batch views want refreshing, if there are any.
    pub fn batch_refresh_every(&self) -> Option<std::time::Duration> {
        self.batch.refresh_every()
    }

    pub fn defs(&self) -> &FeatureDefs {
        &self.defs
    }

    /// Bytes one entity of each kind holds (fixed by the definitions).
    pub fn bytes_per_entity(&self) -> Vec<(String, usize)> {
        self.defs
            .entities
            .iter()
            .zip(&self.entity_bytes)
            .map(|(e, b)| (e.name.clone(), *b))
            .collect()
    }

    /// Fills `out` (indexed by feature slot) with the features `event` sees
    /// from the events before it, then adds the event. Safe to call from
    /// several threads; call in order within one partition.
    pub fn read_and_update(&self, event: &Event, out: &mut [Value]) -> UpdateOutcome {
        self.update(event, out, true)
    }

    /// Adds an event read again from its source to rebuild the store (the
    /// events between a snapshot's positions and the committed offsets, or
    /// a partition received from another instance). Redeliveries are still
    /// dropped, but the lateness rule does not apply: the store's event time
    /// may have moved on with live traffic while older events are replayed,
    /// and each window takes an event as long as it falls in its span.
    pub fn replay(&self, event: &Event) -> UpdateOutcome {
        self.update(event, &mut [], false)
    }

    fn update(&self, event: &Event, out: &mut [Value], lateness: bool) -> UpdateOutcome {
        let t = event.timestamp_ms();
        let fresh = self
            .dedup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.hash.hash_one(event.id()));
        let watermark = self.watermark.fetch_max(t, Ordering::AcqRel).max(t);
        let late =
            lateness && t < watermark.saturating_sub(self.config.lateness_secs as i64 * 1000);
        let outcome = if !fresh {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            UpdateOutcome::Duplicate
        } else if late {
            self.late.fetch_add(1, Ordering::Relaxed);
            UpdateOutcome::TooLate
        } else {
            UpdateOutcome::Added
        };
        let update = outcome == UpdateOutcome::Added;
        let record = Record {
            event: event.values(),
            features: &[],
            model: &[],
        };
        // First find (or create) every entity of the event and start loading
        // its states into the cache, then read and update them: the cache
        // misses of a large store overlap instead of following one another.
        // Each entity kind has its own map, so the shard locks held together
        // are of different maps, always taken in the same order.
        let mut held: SmallVec<[(usize, EntityRef<'_>); 4]> = SmallVec::new();
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
            if features.is_empty() {
                continue;
            }
            let map = &self.maps[e];
            if !update {
                let state = map.get(&**key);
                for (k, &i) in features.iter().enumerate() {
                    let f = &self.defs.features[i];
                    if let Some(o) = out.get_mut(f.slot) {
                        *o = match state.as_deref() {
                            Some(s) => read(&s.states[k], f.agg, f.window_ms, t),
                            None => empty_value(f.agg),
                        };
                    }
                }
                continue;
            }
            // The key is copied only for a new entity.
            let entry = match map.get_mut(&**key) {
                Some(entry) => entry,
                None => map.entry(Box::from(&**key)).or_insert_with(|| EntityState {
                    last_seen: t,
                    states: features
                        .iter()
                        .map(|&i| State::new(self.defs.features[i].agg))
                        .collect(),
                }),
            };
            prefetch(&entry.states);
            held.push((e, entry));
        }
        for (e, mut entry) in held {
            let state = entry.value_mut();
            state.last_seen = state.last_seen.max(t);
            for (k, &i) in self.by_entity[e].iter().enumerate() {
                let f = &self.defs.features[i];
                let s = &mut state.states[k];
                if let Some(o) = out.get_mut(f.slot) {
                    *o = read(s, f.agg, f.window_ms, t);
                }
                if f.filter.as_ref().is_none_or(|flt| flt.matches(&record)) {
                    let value = f.field.map_or(&Value::Missing, |slot| event.get(slot));
                    let grown = add(s, f.agg, f.window_ms, t, value, &self.hash);
                    if grown != 0 {
                        self.grown.fetch_add(grown as i64, Ordering::Relaxed);
                    }
                }
            }
        }
        if update && self.updates.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            self.maybe_maintain();
        }
        outcome
    }

    /// Sweeps (see [`FeatureStore::maintain`]) when it can evict anything:
    /// when event time has moved on by a tenth of the idle limit since the
    /// last sweep, or when the store is over its memory budget. Checking
    /// costs a few loads; a sweep visits every entity.
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
        }
    }

    /// Evicts entities idle beyond the longest window, then the longest
    /// idle until the memory budget holds.
    pub fn maintain(&self) {
        let now = self.watermark.load(Ordering::Acquire);
        if now == i64::MIN {
            return;
        }
        let mut idle = self.defs.longest_window_ms();
        loop {
            let cutoff = now.saturating_sub(idle);
            for map in &self.maps {
                let before = map.len();
                let mut freed = 0;
                map.retain(|_, s| {
                    let keep = s.last_seen >= cutoff;
                    if !keep {
                        freed += s.states.iter().map(State::heap_bytes).sum::<usize>();
                    }
                    keep
                });
                self.grown.fetch_sub(freed as i64, Ordering::Relaxed);
                self.evictions
                    .fetch_add((before - map.len()) as u64, Ordering::Relaxed);
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

    /// The newest event time the store has seen, if any.
    pub fn watermark(&self) -> Option<i64> {
        Some(self.watermark.load(Ordering::Acquire)).filter(|w| *w != i64::MIN)
    }

    pub fn stats(&self) -> StoreStats {
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

/// An entity's states, with its map shard locked for writing.
type EntityRef<'a> = dashmap::mapref::one::RefMut<'a, Box<str>, EntityState>;

/// Asks the CPU to start loading `states` into its cache.
#[inline(always)]
fn prefetch(states: &[State]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let base = states.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(states)).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults, and the
            // address lies inside the `states` allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = states;
}

/// What a feature reads with no history.
fn empty_value(agg: Agg) -> Value {
    match agg {
        Agg::Count | Agg::Sum | Agg::DistinctCount => Value::Number(0.0),
        _ => Value::Missing,
    }
}

fn read(s: &State, agg: Agg, window_ms: i64, t: i64) -> Value {
    match s {
        State::Ring(r) => r.read(t.div_euclid(width(window_ms)), agg),
        State::Distinct(d) => Value::Number(d.read(t, t.div_euclid(width(window_ms)), window_ms)),
        State::Last { value, .. } => value.clone(),
        State::Since { at } if *at != i64::MIN => Value::Number((t - at).max(0) as f64 / 1000.0),
        State::Since { .. } => Value::Missing,
    }
}

/// Adds `v` at `t` to `s`; returns the bytes the state allocated doing so.
fn add(s: &mut State, agg: Agg, window_ms: i64, t: i64, v: &Value, hash: &RandomState) -> usize {
    match s {
        State::Ring(r) => {
            let x = match (agg, v) {
                (Agg::Count, _) => 0.0,
                (_, Value::Number(x)) => *x,
                _ => return 0,
            };
            r.add(t.div_euclid(width(window_ms)), x, agg);
        }
        State::Distinct(d) => {
            let h = match v {
                Value::String(s) => hash.hash_one(&**s),
                Value::Number(x) => hash.hash_one(x.to_bits()),
                Value::Bool(b) => hash.hash_one(*b),
                Value::Timestamp(x) => hash.hash_one(*x),
                Value::Missing => return 0,
            };
            let before = d.heap_bytes();
            d.add(t, t.div_euclid(width(window_ms)), window_ms, h);
            return d.heap_bytes() - before;
        }
        State::Last { value, at } => {
            if t >= *at && !v.is_missing() {
                *value = v.clone();
                *at = t;
            }
        }
        State::Since { at } => *at = (*at).max(t),
    }
    0
}
