//! A burst's entity operations, grouped by entity, and the step that
//! applies one entity's events to its state as Redis holds it.
//!
//! [`SharedBatch`] is what a source fills as it reads ([`FeatureStore::
//! push_shared`]) and what each event's features are read from once the
//! batch ran. A [`Group`] is one entity of one call: its operations in
//! read order, the state they were applied to and what each read, until
//! the commit of that state succeeds.
//!
//! Not here: connections, round trips and the deadline (`mod.rs`).

use std::sync::Arc;

use smallvec::SmallVec;
use verdict_core::{Event, Record, Value};

use crate::FeatureStore;
use crate::codec::{decode_values, encode_values};
use crate::defs::Agg;
use crate::entity::{Entity, Layout, PackedKey, Portable};
use crate::store::{UpdateOutcome, empty_value};

use super::{SharedConfig, SharedError};

/// Longest key Verdict sends (prefix, kind, entity key, layout and event id
/// together); an entity whose key is longer is not sent, and its features
/// read missing.
pub const MAX_KEY_BYTES: usize = 512;

/// Bytes of version in front of a stored state.
const VERSION_BYTES: usize = 8;

/// One shared kind, as a batch reads and applies it.
#[derive(Debug)]
pub(super) struct KindShape {
    /// The kind's index among the definitions' entities.
    entity: usize,
    name: String,
    /// Per feature of the kind: its slot and aggregate.
    slots: Vec<usize>,
    aggs: Vec<Agg>,
    layout: Layout,
    /// Names the layout in keys: a fingerprint of the kind's definitions.
    layout_tag: String,
    /// The state's time to live: the kind's longest window.
    ttl_ms: u64,
}

/// The shared kinds of one store's definitions.
#[derive(Debug)]
pub(super) struct Shape {
    kinds: Vec<KindShape>,
    prefix: String,
    dedup_ttl_ms: u64,
    /// Places an entity in a part of a split batch.
    hasher: ahash::RandomState,
}

/// One entity operation: one shared entity of one event.
#[derive(Debug)]
pub(super) struct Op {
    /// Index into `Shape::kinds`.
    kind: usize,
    /// Where its dedup key (`<state key>:e:<event id>`) lies in the
    /// batch's `keys`, and how long the state key in front of it is.
    key: std::ops::Range<usize>,
    state_len: usize,
    /// A hash of the event id, to find a repeat within a group cheaply.
    id_hash: u64,
    t: i64,
    /// Where its inputs start in `SharedBatch::inputs`.
    inputs: usize,
    /// Where what it read starts in `SharedBatch::values`, once answered.
    read: Option<usize>,
}

/// Where one event's shared features come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// This operation's answer.
    Op(usize),
    /// No key in the event for this kind: the features read empty.
    Empty,
    /// Not sent (a key over the bounds): the features read missing.
    Missing,
}

/// The entity operations of a burst of events, and, once executed, what
/// each event read. Reused from burst to burst ([`SharedBatch::clear`]).
pub struct SharedBatch {
    shape: Arc<Shape>,
    ops: Vec<Op>,
    /// Per operation, per feature of its kind: what the event adds, or
    /// `None` when the feature does not take it (its filter, or a late
    /// event).
    inputs: Vec<Option<Value>>,
    /// Per event, per shared kind (in `shape.kinds` order), its source.
    sources: Vec<Source>,
    /// What the answered operations read.
    values: Vec<Value>,
    /// Per operation, once split: its part and its place there.
    placed: Vec<(usize, usize)>,
    /// Every operation's keys, end to end.
    keys: String,
}

impl SharedBatch {
    fn state_key(&self, op: &Op) -> &str {
        &self.keys[op.key.start..op.key.start + op.state_len]
    }

    fn dedup_key(&self, op: &Op) -> &str {
        &self.keys[op.key.clone()]
    }
}

impl SharedBatch {
    /// Forgets the operations and what they read, keeping the buffers.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.inputs.clear();
        self.sources.clear();
        self.values.clear();
        self.placed.clear();
        self.keys.clear();
    }

    /// An empty batch of the same shape, key prefix and dedup lifetime.
    pub fn empty_like(&self) -> SharedBatch {
        SharedBatch::empty(&self.shape)
    }

    fn empty(shape: &Arc<Shape>) -> SharedBatch {
        SharedBatch {
            shape: shape.clone(),
            ops: Vec::new(),
            inputs: Vec::new(),
            sources: Vec::new(),
            values: Vec::new(),
            placed: Vec::new(),
            keys: String::new(),
        }
    }

    /// How many events were pushed.
    pub fn events(&self) -> usize {
        self.sources
            .len()
            .checked_div(self.shape.kinds.len())
            .unwrap_or(0)
    }

    /// How many entity operations it holds (one per shared entity of each
    /// event).
    pub fn operations(&self) -> usize {
        self.ops.len()
    }

    pub(super) fn dedup_ttl_ms(&self) -> u64 {
        self.shape.dedup_ttl_ms
    }

    /// Moves the operations into `n` parts by entity — every operation on
    /// one entity in the same part, in order — for `n` chains of round
    /// trips to run at once; this batch keeps where each went, and
    /// [`rejoin`](SharedBatch::rejoin) takes back what they read. Empty
    /// parts are `None`.
    pub fn split(&mut self, n: usize) -> Vec<Option<SharedBatch>> {
        let mut parts: Vec<Option<SharedBatch>> = (0..n).map(|_| None).collect();
        self.placed.clear();
        let hasher = &self.shape.hasher;
        for op in &mut self.ops {
            let key = &self.keys[op.key.clone()];
            let p = (hasher.hash_one(&key[..op.state_len]) % n as u64) as usize;
            let part = parts[p].get_or_insert_with(|| SharedBatch::empty(&self.shape));
            let features = self.shape.kinds[op.kind].slots.len();
            let inputs = part.inputs.len();
            part.inputs.extend(
                self.inputs[op.inputs..op.inputs + features]
                    .iter_mut()
                    .map(std::mem::take),
            );
            self.placed.push((p, part.ops.len()));
            let at = part.keys.len();
            part.keys.push_str(key);
            part.ops.push(Op {
                kind: op.kind,
                key: at..part.keys.len(),
                state_len: op.state_len,
                id_hash: op.id_hash,
                t: op.t,
                inputs,
                read: None,
            });
        }
        parts
    }

    /// Takes back what the parts of [`split`](SharedBatch::split) read, once
    /// they ran (a part missing, or an operation it did not answer, reads
    /// missing).
    pub fn rejoin(&mut self, parts: &[Option<std::sync::Arc<SharedBatch>>]) {
        self.values.clear();
        for (o, &(p, i)) in self.placed.iter().enumerate() {
            let op = &mut self.ops[o];
            op.read = None;
            let Some(Some(part)) = parts.get(p) else {
                continue;
            };
            let Some(at) = part.ops.get(i).and_then(|x| x.read) else {
                continue;
            };
            let n = self.shape.kinds[op.kind].slots.len();
            op.read = Some(self.values.len());
            self.values.extend_from_slice(&part.values[at..at + n]);
        }
    }

    /// How many of its operations have been answered.
    pub(super) fn answered(&self) -> usize {
        self.ops.iter().filter(|op| op.read.is_some()).count()
    }

    pub(super) fn forget_reads(&mut self) {
        self.values.clear();
        for op in &mut self.ops {
            op.read = None;
        }
    }

    /// Writes event `n`'s shared features (the `n`th pushed) into `out`;
    /// false when some are missing because their entity did not commit
    /// (Redis failed, the deadline passed, the batch was not executed) or
    /// a key was over the bounds.
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
                Source::Op(i) => self.ops[*i]
                    .read
                    .map(|at| &self.values[at..at + kind.slots.len()]),
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

/// One entity of a call: its operations in read order (batch, operation),
/// what Redis last answered for each operation's dedup key, what each read
/// in the last application, and the commit that application calls for.
pub(super) struct Group {
    kind: usize,
    ops: SmallVec<[(usize, usize); 2]>,
    /// Per operation, its stored read, once Redis showed one.
    records: SmallVec<[Option<Vec<u8>>; 2]>,
    /// The operations whose dedup keys the next answer holds, in order:
    /// every one for the read, the committed ones after a conflict.
    asked: SmallVec<[usize; 2]>,
    /// Per operation, where what it read starts in `values`.
    starts: SmallVec<[usize; 2]>,
    values: Vec<Value>,
    /// The commit of the last application: the version it read (none when
    /// the entity had no state), the new state, and what each of the
    /// `asked` operations read, end to end (`ends` where each stops).
    read_version: Option<[u8; VERSION_BYTES]>,
    state: Vec<u8>,
    reads: Vec<u8>,
    ends: SmallVec<[usize; 2]>,
}

/// The operations of `batches`, grouped by entity; each group's operations
/// in the batches' order, then each batch's.
pub(super) fn groups(batches: &[SharedBatch]) -> Vec<Group> {
    let n: usize = batches.iter().map(|b| b.ops.len()).sum();
    let mut index: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::with_capacity(n);
    let mut groups: Vec<Group> = Vec::with_capacity(n);
    for (b, batch) in batches.iter().enumerate() {
        for (o, op) in batch.ops.iter().enumerate() {
            let g = *index.entry(batch.state_key(op)).or_insert_with(|| {
                groups.push(Group {
                    kind: op.kind,
                    ops: SmallVec::new(),
                    records: SmallVec::new(),
                    asked: SmallVec::new(),
                    starts: SmallVec::new(),
                    values: Vec::new(),
                    read_version: None,
                    state: Vec::new(),
                    reads: Vec::new(),
                    ends: SmallVec::new(),
                });
                groups.len() - 1
            });
            let group = &mut groups[g];
            group.asked.push(group.ops.len());
            group.ops.push((b, o));
            group.records.push(None);
        }
    }
    groups
}

fn bytes_of(v: redis::Value, limit: usize) -> Result<Option<Vec<u8>>, SharedError> {
    let bytes = match v {
        redis::Value::Nil => return Ok(None),
        redis::Value::BulkString(b) => b,
        redis::Value::SimpleString(s) => s.into_bytes(),
        other => {
            return Err(SharedError::Reply(format!(
                "a stored value is {}",
                super::kind_of(&other)
            )));
        }
    };
    if bytes.len() > limit {
        return Err(SharedError::TooLarge(bytes.len()));
    }
    Ok(Some(bytes))
}

impl Group {
    /// How many keys the group asks Redis for next: its state and the
    /// `asked` dedup keys.
    pub(super) fn asked_keys(&self) -> usize {
        1 + self.asked.len()
    }

    /// Appends the keys the group asks for (to an `MGET`, or a commit's
    /// keys): its state, then the `asked` dedup keys. One hash slot.
    pub(super) fn write_keys(&self, batches: &[SharedBatch], cmd: &mut redis::Cmd) {
        cmd.arg(self.state_key(batches));
        for &j in &self.asked {
            let (b, o) = self.ops[j];
            cmd.arg(batches[b].dedup_key(&batches[b].ops[o]));
        }
    }

    /// The state the last application wrote, version included.
    pub(super) fn state(&self) -> &[u8] {
        &self.state
    }

    /// The entity's state key (its first operation's).
    pub(super) fn state_key<'a>(&self, batches: &'a [SharedBatch]) -> &'a str {
        let (b, o) = self.ops[0];
        batches[b].state_key(&batches[b].ops[o])
    }

    /// Appends the commit's arguments, as `commit.lua` reads them for one
    /// entity: how many dedup keys, the version read, the new state, its
    /// time to live, then what each event read.
    pub(super) fn write_commit(&self, batches: &[SharedBatch], cmd: &mut redis::Cmd) {
        let ttl_ms = self
            .ops
            .first()
            .map_or(0, |&(b, _)| batches[b].shape.kinds[self.kind].ttl_ms);
        cmd.arg(self.asked.len())
            .arg(self.read_version.as_ref().map_or(&[][..], |v| &v[..]))
            .arg(self.state.as_slice())
            .arg(ttl_ms);
        let mut from = 0;
        for &end in &self.ends {
            cmd.arg(&self.reads[from..end]);
            from = end;
        }
    }

    /// Applies the group's events to what Redis holds — the next
    /// [`asked_keys`](Group::asked_keys) items of `stored`: the state and
    /// the asked dedup keys (all of them after the read, those of the last
    /// commit after a conflict). True when that calls for a commit, with
    /// a new state written as `version`; false when every event was
    /// answered by its dedup key.
    pub(super) fn apply(
        &mut self,
        batches: &[SharedBatch],
        stored: &mut impl Iterator<Item = redis::Value>,
        limit: usize,
        version: u64,
    ) -> Result<bool, SharedError> {
        let short = || SharedError::Reply("fewer stored values than keys asked".into());
        let state = bytes_of(stored.next().ok_or_else(short)?, limit)?;
        for &j in &self.asked {
            self.records[j] = bytes_of(stored.next().ok_or_else(short)?, limit)?;
        }
        self.asked.clear();

        let shape = &batches[self.ops[0].0].shape;
        let kind = &shape.kinds[self.kind];
        let layout = &kind.layout;
        let n = kind.slots.len();
        self.read_version = None;
        let mut entity = match &state {
            None => Entity::new(layout, 0, &PackedKey::from_elem(0, 1), i64::MIN),
            Some(bytes) if bytes.len() >= VERSION_BYTES => {
                let (v, rest) = bytes.split_at(VERSION_BYTES);
                self.read_version = v.try_into().ok();
                Entity::decode(layout, rest).ok_or_else(|| {
                    SharedError::Reply(format!(
                        "the state at {} does not decode",
                        self.state_key(batches)
                    ))
                })?
            }
            Some(_) => {
                return Err(SharedError::Reply(format!(
                    "the state at {} is too short",
                    self.state_key(batches)
                )));
            }
        };

        self.values.clear();
        self.starts.clear();
        self.reads.clear();
        self.ends.clear();
        let mut changed = false;
        for j in 0..self.ops.len() {
            let (b, o) = self.ops[j];
            let op = &batches[b].ops[o];
            let start = self.values.len();
            self.starts.push(start);
            if let Some(record) = &self.records[j] {
                // An earlier delivery's read.
                if !decode_values(record, n, &mut self.values) {
                    return Err(SharedError::Reply(format!(
                        "the read kept at {} does not decode",
                        batches[b].dedup_key(op)
                    )));
                }
                continue;
            }
            // The same event earlier in this group: what it read.
            let earlier = (0..j).find(|&p| {
                let (pb, po) = self.ops[p];
                let other = &batches[pb].ops[po];
                other.id_hash == op.id_hash
                    && batches[pb].dedup_key(other) == batches[b].dedup_key(op)
            });
            if let Some(p) = earlier {
                let from = self.starts[p];
                self.values.extend_from_within(from..from + n);
                continue;
            }
            for (k, agg) in kind.aggs.iter().enumerate() {
                self.values.push(entity.read(layout, k, *agg, op.t));
            }
            let inputs = &batches[b].inputs[op.inputs..op.inputs + n];
            for (k, input) in inputs.iter().enumerate() {
                if let Some(v) = input {
                    entity.add(layout, k, op.t, v, &Portable);
                    entity.last_seen = entity.last_seen.max(op.t);
                    changed = true;
                }
            }
            encode_values(&self.values[start..], &mut self.reads);
            self.ends.push(self.reads.len());
            self.asked.push(j);
        }
        if self.asked.is_empty() {
            return Ok(false);
        }
        // A state unchanged (only late events) keeps its version: the
        // commit still checks nobody wrote in between, and writes the
        // events' reads.
        self.state.clear();
        match (state, changed) {
            (Some(old), false) => self.state = old,
            _ => {
                self.state.extend_from_slice(&version.to_le_bytes());
                entity.encode(layout, &mut self.state);
            }
        }
        Ok(true)
    }

    /// Writes what each of the group's events read into its batch: the
    /// last application stands (committed, or answered by Redis alone).
    pub(super) fn answer(&self, batches: &mut [SharedBatch]) {
        let Some(&(b, _)) = self.ops.first() else {
            return;
        };
        let n = batches[b].shape.kinds[self.kind].slots.len();
        for (j, &(b, o)) in self.ops.iter().enumerate() {
            let batch = &mut batches[b];
            let at = batch.values.len();
            let from = self.starts[j];
            batch.values.extend_from_slice(&self.values[from..from + n]);
            batch.ops[o].read = Some(at);
        }
    }
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
                let features = &self.inner.by_entity[e];
                let longest = features
                    .iter()
                    .map(|&i| defs.features[i].window_ms)
                    .max()
                    .unwrap_or(0)
                    .max(defs.longest_window_ms());
                // What the state's bytes mean: each feature's aggregate,
                // window, field and filter, in order, and the encoding.
                let mut described = format!("shared-state=2;buckets={};", crate::defs::BUCKETS);
                for &i in features {
                    let f = &defs.features[i];
                    described += &format!(
                        "{}:{:?}:{}:{:?}:{};",
                        f.name,
                        f.agg,
                        f.window_ms,
                        f.field,
                        f.filter.as_ref().map_or("", |x| x.text())
                    );
                }
                let tag = twox_hash::XxHash64::oneshot(0, described.as_bytes()) as u32;
                KindShape {
                    entity: e,
                    name: entity.name.clone(),
                    slots: features.iter().map(|&i| defs.features[i].slot).collect(),
                    aggs: features.iter().map(|&i| defs.features[i].agg).collect(),
                    layout: self.inner.layouts[e].clone(),
                    layout_tag: format!("{tag:08x}"),
                    ttl_ms: longest as u64,
                }
            })
            .collect();
        SharedBatch {
            shape: Arc::new(Shape {
                kinds,
                prefix: config.key_prefix.clone(),
                dedup_ttl_ms: config.dedup_ttl_secs.saturating_mul(1000).max(1),
                hasher: ahash::RandomState::new(),
            }),
            ops: Vec::new(),
            inputs: Vec::new(),
            sources: Vec::new(),
            values: Vec::new(),
            placed: Vec::new(),
            keys: String::new(),
        }
    }

    /// Adds `event`'s operations on its shared entities to `batch`, in
    /// order. `outcome` is what the local store made of the event
    /// ([`FeatureStore::read_and_update`]): a late event is read but not
    /// added; a duplicate is sent as it is (Redis answers it from its dedup
    /// key, with the values its first delivery read).
    pub fn push_shared(&self, event: &Event, outcome: UpdateOutcome, batch: &mut SharedBatch) {
        let add = outcome != UpdateOutcome::TooLate;
        let record = Record {
            event: event.values(),
            features: &[],
            model: &[],
        };
        let defs = &self.inner.defs;
        let id_hash = self.inner.keys.hash_one(event.id());
        let shape = batch.shape.clone();
        for (k, kind) in shape.kinds.iter().enumerate() {
            let entity = &defs.entities[kind.entity];
            let Value::String(key) = event.get(entity.key_slot) else {
                batch.sources.push(Source::Empty);
                continue;
            };
            let at = batch.keys.len();
            for part in [
                &shape.prefix,
                ":{",
                &kind.name,
                ":",
                key,
                "}:",
                &kind.layout_tag,
            ] {
                batch.keys.push_str(part);
            }
            let state_len = batch.keys.len() - at;
            batch.keys.push_str(":e:");
            batch.keys.push_str(event.id());
            if batch.keys.len() - at > MAX_KEY_BYTES {
                batch.keys.truncate(at);
                batch.sources.push(Source::Missing);
                continue;
            }
            let inputs = batch.inputs.len();
            for &i in &self.inner.by_entity[kind.entity] {
                let f = &defs.features[i];
                let takes = add && f.filter.as_ref().is_none_or(|flt| flt.matches(&record));
                batch.inputs.push(takes.then(|| {
                    f.field
                        .map_or(Value::Missing, |slot| event.get(slot).clone())
                }));
            }
            batch.sources.push(Source::Op(batch.ops.len()));
            batch.ops.push(Op {
                kind: k,
                key: at..batch.keys.len(),
                state_len,
                id_hash,
                t: event.timestamp_ms(),
                inputs,
                read: None,
            });
        }
    }
}

/// Applies the first entity of kind `kind` in `batch` to bytes as Redis
/// could hand them back — its stored state and one stored read per
/// operation on it, each possibly absent — as a call does; for the fuzz
/// target and tests. Bytes from the network: an error for anything
/// malformed, never a panic.
#[doc(hidden)]
pub fn apply_stored(
    batch: &SharedBatch,
    kind: &str,
    state: Option<&[u8]>,
    reads: &[Option<&[u8]>],
) -> Result<(), SharedError> {
    let batches = std::slice::from_ref(batch);
    let Some(mut group) = groups(batches)
        .into_iter()
        .find(|g| batch.shape.kinds[g.kind].name == kind)
    else {
        return Ok(());
    };
    let item =
        |b: Option<&[u8]>| b.map_or(redis::Value::Nil, |b| redis::Value::BulkString(b.to_vec()));
    let mut stored = vec![item(state)];
    stored.extend(reads.iter().take(group.ops.len()).map(|r| item(*r)));
    stored.resize(1 + group.ops.len(), redis::Value::Nil);
    group.apply(batches, &mut stored.into_iter(), usize::MAX, 1)?;
    Ok(())
}
