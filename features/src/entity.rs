//! One entity's state in one allocation: its key and every feature's
//! buckets side by side in a slice of words, laid out at load from the
//! definitions so that each aggregate keeps only what it reads.
//!
//! A window of length `W` has [`BUCKETS`] buckets of width `W / BUCKETS`.
//! A read at time `t` covers the buckets from `t`'s back to `BUCKETS - 1`
//! before it: the events of the last `W`, to within one bucket width (a 1 h
//! window is precise to 5 minutes, 24 h to 2 hours, 30 d to 2.5 days).
//! Memory per window is fixed: it does not grow with traffic.
//!
//! Per feature, in words: a count is its newest bucket index and twelve
//! 32-bit counts (7 words); a sum or a minimum or maximum, the index and
//! twelve numbers (13); an average, both (19); a distinct count, its index,
//! the end of its inexact spell, the length of its exact list and the list's
//! first four entries (11); `last` and `secs_since_last`, the time (1).
//! An event's read and update walk the words front to back: for the example
//! definitions a user is 11 cache lines, a device or an IP 3, where a
//! boxed state per feature took four times as many.
//!
//! `distinct_count` is exact while at most [`EXACT_DISTINCT`] distinct
//! values fall in the window; beyond that it answers from a HyperLogLog of
//! 64 registers per bucket, whose standard error is about 13%. The exact
//! list's entries past the first four, and the sketch, live in a side
//! allocation made when the list first outgrows its inline room (most
//! entities never do).
//!
//! This module does not lock, hash keys or evict: the store does.

use ahash::RandomState;
use smallvec::SmallVec;
use verdict_core::Value;

use crate::defs::{Agg, BUCKETS, FeatureDefs};
use crate::window::{Distinct, Registers, Ring, State};

/// Distinct values tracked exactly per entity and feature.
pub const EXACT_DISTINCT: usize = 32;
pub(crate) const HLL_REGISTERS: usize = 64;
/// Exact-list entries held in the entity's own words.
const INLINE_DISTINCT: usize = 4;
/// Bytes the exact list's side part is charged at, once spilled (its
/// largest size, as it never shrinks).
const SPILL_BYTES: usize = (EXACT_DISTINCT - INLINE_DISTINCT) * 16 + 64;
const SKETCH_BYTES: usize = BUCKETS * HLL_REGISTERS;
const NONE: u64 = i64::MIN as u64;
const NAN: u64 = 0x7ff8_0000_0000_0000;
const B: i64 = BUCKETS as i64;

/// The bucket width of a window of `window_ms`.
pub(crate) fn width(window_ms: i64) -> i64 {
    (window_ms / B).max(1)
}

fn slot(i: i64) -> usize {
    i.rem_euclid(B) as usize
}

/// Whether bucket index `j` (held by a ring) falls in the window read at
/// bucket index `i`.
pub(crate) fn in_window(j: i64, i: i64) -> bool {
    j <= i && j > i - B
}

/// How a feature's state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// With its index among the kind's distinct counts (its side part).
    Distinct(usize),
    /// With its index among the kind's `last` values.
    Last(usize),
    Since,
}

impl Kind {
    fn words(self) -> usize {
        match self {
            Kind::Count => 1 + BUCKETS / 2,
            Kind::Sum | Kind::Min | Kind::Max => 1 + BUCKETS,
            Kind::Avg => 1 + BUCKETS / 2 + BUCKETS,
            Kind::Distinct(_) => 3 + 2 * INLINE_DISTINCT,
            Kind::Last(_) | Kind::Since => 1,
        }
    }

    /// Where the numbers of a ring start, past its index (and its counts).
    fn numbers(self) -> usize {
        match self {
            Kind::Avg => 1 + BUCKETS / 2,
            _ => 1,
        }
    }
}

/// One feature's place in its entity's words.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub kind: Kind,
    /// Offset from the start of the states.
    pub off: usize,
    pub window_ms: i64,
    pub width: i64,
}

/// The layout of one entity kind, in the order of its features in the
/// definitions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub places: Vec<Place>,
    /// The states of an entity with no history.
    initial: Box<[u64]>,
    values: usize,
    distincts: usize,
}

impl Layout {
    /// The layout of the features `features` (indices into `defs.features`).
    pub(crate) fn new(defs: &FeatureDefs, features: &[usize]) -> Layout {
        let mut layout = Layout::default();
        let mut words = Vec::new();
        for &i in features {
            let f = &defs.features[i];
            let kind = match f.agg {
                Agg::Count => Kind::Count,
                Agg::Sum => Kind::Sum,
                Agg::Avg => Kind::Avg,
                Agg::Min => Kind::Min,
                Agg::Max => Kind::Max,
                Agg::DistinctCount => {
                    layout.distincts += 1;
                    Kind::Distinct(layout.distincts - 1)
                }
                Agg::Last => {
                    layout.values += 1;
                    Kind::Last(layout.values - 1)
                }
                Agg::SecsSinceLast => Kind::Since,
            };
            let off = words.len();
            words.resize(off + kind.words(), 0);
            // Every index and time starts as "none"; extremes as NaN.
            words[off] = NONE;
            match kind {
                Kind::Min | Kind::Max => words[off + 1..].fill(NAN),
                Kind::Distinct(_) => words[off + 1] = NONE,
                _ => {}
            }
            layout.places.push(Place {
                kind,
                off,
                window_ms: f.window_ms,
                width: width(f.window_ms),
            });
        }
        layout.initial = words.into();
        layout
    }

    /// Bytes of one entity with no history, its key aside.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Entity>()
            + self.initial.len() * 8
            + self.values * std::mem::size_of::<Value>()
    }
}

/// The side part of one distinct count.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Spill {
    /// The exact list past its inline entries.
    exact: Vec<(u64, i64)>,
    registers: Option<Box<Registers>>,
}

/// A key packed into words (its length first), as an entity holds it.
pub(crate) type PackedKey = SmallVec<[u64; 8]>;

pub(crate) fn pack_key(key: &str, out: &mut PackedKey) {
    out.clear();
    out.push(key.len() as u64);
    for chunk in key.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        out.push(u64::from_le_bytes(w));
    }
}

/// One entity: its key's hash and last event time inline (read by lookups
/// and sweeps without following a pointer), then one allocation of words
/// holding the key and every state, and the `last` values beside them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entity {
    pub hash: u64,
    /// Event time of its newest event.
    pub last_seen: i64,
    words: Box<[u64]>,
    values: Box<[Value]>,
    /// Empty until one of its distinct counts outgrows its inline room.
    spill: Box<[Spill]>,
}

impl Entity {
    pub(crate) fn new(layout: &Layout, hash: u64, key: &PackedKey, t: i64) -> Entity {
        let mut words = Vec::with_capacity(key.len() + layout.initial.len());
        words.extend_from_slice(key);
        words.extend_from_slice(&layout.initial);
        Entity {
            hash,
            last_seen: t,
            words: words.into(),
            values: vec![Value::Missing; layout.values].into(),
            spill: Box::default(),
        }
    }

    fn base(&self) -> usize {
        1 + (self.words[0] as usize).div_ceil(8)
    }

    /// Whether this is the entity of the packed key `key`.
    #[inline]
    pub(crate) fn is(&self, hash: u64, key: &PackedKey) -> bool {
        self.hash == hash && self.words.get(..key.len()) == Some(key.as_slice())
    }

    pub(crate) fn key(&self) -> String {
        let len = self.words[0] as usize;
        let bytes: Vec<u8> = self.words[1..self.base()]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(len)
            .collect();
        String::from_utf8(bytes).expect("a key is stored from a str")
    }

    /// Bytes of the key, charged beside the layout's fixed bytes.
    pub(crate) fn key_bytes(&self) -> usize {
        self.base() * 8
    }

    /// Bytes held in side parts, charged as they grow.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.spill
            .iter()
            .map(|s| {
                (if s.exact.capacity() > 0 {
                    SPILL_BYTES
                } else {
                    0
                }) + s.registers.as_ref().map_or(0, |_| SKETCH_BYTES)
            })
            .sum()
    }

    /// Asks the CPU to start loading the entity's words into its cache.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let base = self.words.as_ptr().cast::<i8>();
            for offset in (0..self.words.len() * 8).step_by(64) {
                // SAFETY: a prefetch is a hint that never faults, and the
                // address lies inside the words' allocation.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(offset)) };
            }
        }
    }

    /// The value of feature `k` (of the layout) read at `t`.
    #[inline]
    pub(crate) fn read(&self, layout: &Layout, k: usize, agg: Agg, t: i64) -> Value {
        let p = &layout.places[k];
        let w = &self.words[self.base() + p.off..][..p.kind.words()];
        match p.kind {
            Kind::Count | Kind::Sum | Kind::Avg | Kind::Min | Kind::Max => {
                ring_read(w, p.kind, agg, t.div_euclid(p.width))
            }
            Kind::Distinct(d) => Value::Number(distinct_read(
                w,
                self.spill.get(d),
                t,
                t.div_euclid(p.width),
                p.window_ms,
            )),
            Kind::Last(v) => self.values[v].clone(),
            Kind::Since if w[0] != NONE => Value::Number((t - w[0] as i64).max(0) as f64 / 1000.0),
            Kind::Since => Value::Missing,
        }
    }

    /// Adds value `v` of an event at `t` to feature `k`; returns the bytes
    /// the entity allocated doing so.
    #[inline]
    pub(crate) fn add(
        &mut self,
        layout: &Layout,
        k: usize,
        t: i64,
        v: &Value,
        hash: &impl ValueHash,
    ) -> usize {
        let p = &layout.places[k];
        let base = self.base();
        let w = &mut self.words[base + p.off..][..p.kind.words()];
        match p.kind {
            Kind::Count => {
                ring_add(w, p.kind, t.div_euclid(p.width), 0.0);
            }
            Kind::Sum | Kind::Avg | Kind::Min | Kind::Max => {
                if let Value::Number(x) = v {
                    ring_add(w, p.kind, t.div_euclid(p.width), *x);
                }
            }
            Kind::Distinct(d) => {
                let Some(h) = hash.value_hash(v) else {
                    return 0;
                };
                return distinct_add(
                    w,
                    &mut self.spill,
                    layout.distincts,
                    d,
                    t,
                    t.div_euclid(p.width),
                    p.window_ms,
                    h,
                );
            }
            Kind::Last(i) => {
                if t >= w[0] as i64 && !v.is_missing() {
                    self.values[i] = v.clone();
                    w[0] = t as u64;
                }
            }
            Kind::Since => w[0] = (w[0] as i64).max(t) as u64,
        }
        0
    }

    /// The entity's states in their portable form (as snapshots hold them).
    pub(crate) fn export(&self, layout: &Layout) -> Vec<State> {
        let base = self.base();
        layout
            .places
            .iter()
            .map(|p| {
                let w = &self.words[base + p.off..][..p.kind.words()];
                match p.kind {
                    Kind::Count | Kind::Sum | Kind::Avg | Kind::Min | Kind::Max => {
                        let mut r = Ring {
                            head: w[0] as i64,
                            ..Ring::default()
                        };
                        for b in 0..BUCKETS {
                            match p.kind {
                                Kind::Count => r.count[b] = count(w, b),
                                Kind::Sum => r.sum[b] = number(w, p.kind, b),
                                Kind::Avg => {
                                    r.count[b] = count(w, b);
                                    r.sum[b] = number(w, p.kind, b);
                                }
                                _ => r.ext[b] = number(w, p.kind, b),
                            }
                        }
                        State::Ring(r)
                    }
                    Kind::Distinct(d) => {
                        let spill = self.spill.get(d);
                        let n = w[2] as usize;
                        let exact = (0..n).map(|e| pair(w, spill, e)).collect();
                        State::Distinct(Distinct {
                            exact,
                            head: w[0] as i64,
                            inexact_until: w[1] as i64,
                            registers: spill.and_then(|s| s.registers.clone()),
                        })
                    }
                    Kind::Last(v) => State::Last {
                        value: self.values[v].clone(),
                        at: w[0] as i64,
                    },
                    Kind::Since => State::Since { at: w[0] as i64 },
                }
            })
            .collect()
    }

    /// Appends the entity's states, without its key, in the shared store's
    /// byte form: the time of its newest event, its words as they are,
    /// its `last` values, then each distinct count's side part.
    pub(crate) fn encode(&self, layout: &Layout, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.last_seen.to_le_bytes());
        for w in &self.words[self.base()..] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in &self.values {
            crate::codec::put_value(out, v);
        }
        out.push(u8::from(!self.spill.is_empty()));
        for d in 0..layout.distincts {
            let Some(spill) = self.spill.get(d) else {
                break;
            };
            out.push(spill.exact.len() as u8);
            for (h, t) in &spill.exact {
                out.extend_from_slice(&h.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
            }
            match &spill.registers {
                Some(regs) => {
                    out.push(1);
                    for row in regs.iter() {
                        out.extend_from_slice(row);
                    }
                }
                None => out.push(0),
            }
        }
    }

    /// An entity (with an empty key) from the bytes of
    /// [`encode`](Entity::encode); `None` when they do not fit the layout
    /// or hold what no entity holds.
    pub(crate) fn decode(layout: &Layout, bytes: &[u8]) -> Option<Entity> {
        let mut r = crate::codec::Reader::new(bytes);
        let last_seen = r.i64()?;
        let mut words = Vec::with_capacity(1 + layout.initial.len());
        words.push(0);
        for _ in 0..layout.initial.len() {
            words.push(r.i64()? as u64);
        }
        let mut values = Vec::with_capacity(layout.values);
        for _ in 0..layout.values {
            values.push(r.value()?);
        }
        let mut spill: Vec<Spill> = Vec::new();
        if r.u8()? == 1 {
            for _ in 0..layout.distincts {
                let n = usize::from(r.u8()?);
                if n > EXACT_DISTINCT - INLINE_DISTINCT {
                    return None;
                }
                let mut exact = Vec::new();
                if n > 0 {
                    exact.reserve_exact(EXACT_DISTINCT - INLINE_DISTINCT);
                }
                for _ in 0..n {
                    exact.push((r.i64()? as u64, r.i64()?));
                }
                let registers = match r.u8()? {
                    0 => None,
                    1 => {
                        let mut regs = Box::new([[0; HLL_REGISTERS]; BUCKETS]);
                        for row in regs.iter_mut() {
                            row.copy_from_slice(r.take(HLL_REGISTERS)?);
                        }
                        Some(regs)
                    }
                    _ => return None,
                };
                spill.push(Spill { exact, registers });
            }
        }
        if !r.is_empty() {
            return None;
        }
        let e = Entity {
            hash: 0,
            last_seen,
            words: words.into(),
            values: values.into(),
            spill: spill.into(),
        };
        e.is_sane(layout).then_some(e)
    }

    /// Whether every state holds what the store's own updates could leave:
    /// times and bucket indices "none" or far from overflowing, exact lists
    /// no longer than kept, and their entries past the inline ones in the
    /// side part. A state from outside the process (a snapshot, Redis) is
    /// checked before it is read, so that no arithmetic on it overflows.
    pub(crate) fn is_sane(&self, layout: &Layout) -> bool {
        const LIMIT: i64 = 1 << 60;
        let fine = |x: u64| x as i64 == i64::MIN || (x as i64).abs() < LIMIT;
        let base = self.base();
        if self.words.len() != base + layout.initial.len() || self.values.len() != layout.values {
            return false;
        }
        if !self.spill.is_empty() && self.spill.len() != layout.distincts {
            return false;
        }
        layout.places.iter().all(|p| {
            let w = &self.words[base + p.off..][..p.kind.words()];
            match p.kind {
                Kind::Distinct(d) => {
                    let n = w[2] as usize;
                    let spilled = self.spill.get(d).map_or(0, |s| s.exact.len());
                    n <= EXACT_DISTINCT
                        && spilled == n.saturating_sub(INLINE_DISTINCT)
                        && fine(w[0])
                        && fine(w[1])
                        && (0..n).all(|e| fine(pair(w, self.spill.get(d), e).1 as u64))
                }
                _ => fine(w[0]),
            }
        })
    }

    /// An entity from its portable states; `None` when they do not fit the
    /// layout.
    pub(crate) fn import(
        layout: &Layout,
        hash: u64,
        key: &str,
        last_seen: i64,
        states: Vec<State>,
    ) -> Option<Entity> {
        if states.len() != layout.places.len() {
            return None;
        }
        let mut packed = PackedKey::new();
        pack_key(key, &mut packed);
        let mut e = Entity::new(layout, hash, &packed, last_seen);
        let base = e.base();
        for (p, state) in layout.places.iter().zip(states) {
            let w = &mut e.words[base + p.off..][..p.kind.words()];
            match (p.kind, state) {
                (Kind::Count | Kind::Sum | Kind::Avg | Kind::Min | Kind::Max, State::Ring(r)) => {
                    w[0] = r.head as u64;
                    for b in 0..BUCKETS {
                        match p.kind {
                            Kind::Count => set_count(w, b, r.count[b]),
                            Kind::Sum => set_number(w, p.kind, b, r.sum[b]),
                            Kind::Avg => {
                                set_count(w, b, r.count[b]);
                                set_number(w, p.kind, b, r.sum[b]);
                            }
                            _ => set_number(w, p.kind, b, r.ext[b]),
                        }
                    }
                }
                (Kind::Distinct(d), State::Distinct(dist)) => {
                    if dist.exact.len() > EXACT_DISTINCT {
                        return None;
                    }
                    w[0] = dist.head as u64;
                    w[1] = dist.inexact_until as u64;
                    w[2] = dist.exact.len() as u64;
                    let spills = dist.exact.len() > INLINE_DISTINCT || dist.registers.is_some();
                    if spills && e.spill.is_empty() {
                        e.spill = vec![Spill::default(); layout.distincts].into();
                    }
                    for (n, &(h, t)) in dist.exact.iter().enumerate() {
                        if n < INLINE_DISTINCT {
                            w[3 + 2 * n] = h;
                            w[4 + 2 * n] = t as u64;
                        } else {
                            let s = &mut e.spill[d].exact;
                            if s.capacity() == 0 {
                                s.reserve_exact(EXACT_DISTINCT - INLINE_DISTINCT);
                            }
                            s.push((h, t));
                        }
                    }
                    if let Some(regs) = dist.registers {
                        e.spill[d].registers = Some(regs);
                    }
                }
                (Kind::Last(v), State::Last { value, at }) => {
                    w[0] = at as u64;
                    e.values[v] = value;
                }
                (Kind::Since, State::Since { at }) => w[0] = at as u64,
                _ => return None,
            }
        }
        e.is_sane(layout).then_some(e)
    }
}

/// How a distinct count hashes the values it keeps.
pub(crate) trait ValueHash {
    /// The hash of `v`; none for a missing value.
    fn value_hash(&self, v: &Value) -> Option<u64>;
}

/// The local store's hash: stable across runs, so that snapshots restore.
impl ValueHash for RandomState {
    fn value_hash(&self, v: &Value) -> Option<u64> {
        Some(match v {
            Value::String(s) => self.hash_one(&**s),
            Value::Number(x) => self.hash_one(x.to_bits()),
            Value::Bool(b) => self.hash_one(*b),
            Value::Timestamp(x) => self.hash_one(*x),
            Value::Missing => return None,
        })
    }
}

/// The shared store's hash: XXH64 of the typed value (so that the number
/// 1 and the string "1" differ), a fixed function, so that instances built
/// apart, on any processor, keep the same hashes in one entity's state.
pub(crate) struct Portable;

impl ValueHash for Portable {
    fn value_hash(&self, v: &Value) -> Option<u64> {
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
}

#[inline]
fn count(w: &[u64], b: usize) -> u32 {
    (w[1 + b / 2] >> ((b & 1) * 32)) as u32
}

#[inline]
fn set_count(w: &mut [u64], b: usize, c: u32) {
    let shift = (b & 1) * 32;
    let word = &mut w[1 + b / 2];
    *word = (*word & !(0xffff_ffff << shift)) | (u64::from(c) << shift);
}

#[inline]
fn number(w: &[u64], kind: Kind, b: usize) -> f64 {
    f64::from_bits(w[kind.numbers() + b])
}

#[inline]
fn set_number(w: &mut [u64], kind: Kind, b: usize, x: f64) {
    w[kind.numbers() + b] = x.to_bits();
}

/// Moves a ring's head (`w[0]`) forward to `i`, clearing the buckets
/// passed over. False when `i` is older than the ring's whole span.
#[inline]
fn advance(w: &mut [u64], i: i64, mut clear: impl FnMut(&mut [u64], usize)) -> bool {
    let head = w[0] as i64;
    if head == i64::MIN {
        for b in 0..BUCKETS {
            clear(w, b);
        }
        w[0] = i as u64;
        return true;
    }
    if i > head {
        let n = (i - head).min(B);
        for k in 1..=n {
            clear(w, slot(head + k));
        }
        w[0] = i as u64;
        return true;
    }
    i > head - B
}

fn clear_ring(w: &mut [u64], kind: Kind, b: usize) {
    match kind {
        Kind::Count => set_count(w, b, 0),
        Kind::Sum => set_number(w, kind, b, 0.0),
        Kind::Avg => {
            set_count(w, b, 0);
            set_number(w, kind, b, 0.0);
        }
        _ => w[kind.numbers() + b] = NAN,
    }
}

/// Adds one value at bucket index `i`; false when too old for the ring.
#[inline]
fn ring_add(w: &mut [u64], kind: Kind, i: i64, x: f64) -> bool {
    if !advance(w, i, |w, b| clear_ring(w, kind, b)) {
        return false;
    }
    let b = slot(i);
    match kind {
        Kind::Count => {
            let c = count(w, b) + 1;
            set_count(w, b, c);
        }
        Kind::Sum => {
            let s = number(w, kind, b) + x;
            set_number(w, kind, b, s);
        }
        Kind::Avg => {
            let (c, s) = (count(w, b) + 1, number(w, kind, b) + x);
            set_count(w, b, c);
            set_number(w, kind, b, s);
        }
        _ => {
            let e = number(w, kind, b);
            if e.is_nan() || (kind == Kind::Min && x < e) || (kind == Kind::Max && x > e) {
                set_number(w, kind, b, x);
            }
        }
    }
    true
}

/// The aggregate `agg` over the window read at bucket index `i`.
#[inline]
fn ring_read(w: &[u64], kind: Kind, agg: Agg, i: i64) -> Value {
    let (mut n, mut sum, mut ext) = (0u64, 0.0, f64::NAN);
    let head = w[0] as i64;
    if head != i64::MIN {
        for k in 0..B {
            let j = head - k;
            if !in_window(j, i) {
                continue;
            }
            let b = slot(j);
            match kind {
                Kind::Count => n += u64::from(count(w, b)),
                Kind::Sum => sum += number(w, kind, b),
                Kind::Avg => {
                    n += u64::from(count(w, b));
                    sum += number(w, kind, b);
                }
                _ => {
                    let e = number(w, kind, b);
                    if !e.is_nan()
                        && (ext.is_nan()
                            || (kind == Kind::Min && e < ext)
                            || (kind == Kind::Max && e > ext))
                    {
                        ext = e;
                    }
                }
            }
        }
    }
    match agg {
        Agg::Count => Value::Number(n as f64),
        Agg::Sum => Value::Number(sum),
        Agg::Avg if n > 0 => Value::Number(sum / n as f64),
        Agg::Min | Agg::Max if !ext.is_nan() => Value::Number(ext),
        _ => Value::Missing,
    }
}

/// Entry `e` of a distinct count's exact list: (value hash, last seen).
#[inline]
fn pair(w: &[u64], spill: Option<&Spill>, e: usize) -> (u64, i64) {
    if e < INLINE_DISTINCT {
        (w[3 + 2 * e], w[4 + 2 * e] as i64)
    } else {
        spill
            .expect("a list longer than its inline room has spilled")
            .exact[e - INLINE_DISTINCT]
    }
}

fn set_pair(w: &mut [u64], spill: &mut Spill, e: usize, h: u64, t: i64) {
    if e < INLINE_DISTINCT {
        w[3 + 2 * e] = h;
        w[4 + 2 * e] = t as u64;
    } else {
        spill.exact[e - INLINE_DISTINCT] = (h, t);
    }
}

/// Sets the register of hash `h` in bucket index `i`'s row.
pub(crate) fn hll_add(regs: &mut Registers, i: i64, h: u64) {
    let (reg, rank) = hll_register(h);
    let r = &mut regs[slot(i)][reg];
    *r = (*r).max(rank);
}

/// The register of hash `h` and its rank: the low 6 bits pick the
/// register; the rank is the position of the first 1 in the other 58.
pub(crate) fn hll_register(h: u64) -> (usize, u8) {
    let reg = (h as usize) % HLL_REGISTERS;
    let rank = ((h >> 6).leading_zeros() - 6 + 1) as u8;
    (reg, rank)
}

/// The estimate of merged registers, never less than `exact`.
pub(crate) fn hll_estimate(merged: &[u8; HLL_REGISTERS], exact: f64) -> f64 {
    let m = HLL_REGISTERS as f64;
    let z: f64 = merged.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
    let estimate = 0.709 * m * m / z;
    let zeros = merged.iter().filter(|r| **r == 0).count();
    let e = if estimate <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        estimate
    };
    e.round().max(exact)
}

/// Adds hash `h` seen at `t` (bucket index `i`) to distinct count `d`;
/// returns the bytes allocated doing so.
#[allow(clippy::too_many_arguments)]
fn distinct_add(
    w: &mut [u64],
    spills: &mut Box<[Spill]>,
    distincts: usize,
    d: usize,
    t: i64,
    i: i64,
    window_ms: i64,
    h: u64,
) -> usize {
    let mut regs = spills.get_mut(d).and_then(|s| s.registers.as_deref_mut());
    if !advance(w, i, |_, b| {
        if let Some(regs) = regs.as_deref_mut() {
            regs[b] = [0; HLL_REGISTERS];
        }
    }) {
        return 0;
    }
    let mut grown = 0;
    let n = w[2] as usize;
    let spill = spills.get(d);
    if let Some(e) = (0..n).find(|&e| pair(w, spill, e).0 == h) {
        let seen = pair(w, spill, e).1;
        if t > seen {
            if e < INLINE_DISTINCT {
                w[4 + 2 * e] = t as u64;
            } else {
                set_pair(w, spill_mut(spills, distincts, d), e, h, t);
            }
        }
    } else if n < EXACT_DISTINCT {
        if n < INLINE_DISTINCT {
            w[3 + 2 * n] = h;
            w[4 + 2 * n] = t as u64;
        } else {
            let spill = spill_mut(spills, distincts, d);
            if spill.exact.capacity() == 0 {
                spill.exact.reserve_exact(EXACT_DISTINCT - INLINE_DISTINCT);
                grown += SPILL_BYTES;
            }
            spill.exact.push((h, t));
        }
        w[2] = n as u64 + 1;
    } else {
        let spill = spill_mut(spills, distincts, d);
        if spill.registers.is_none() {
            // First overflow: the sketch starts from every value the exact
            // list holds, in the bucket it was last seen in.
            let mut regs = Box::new([[0; HLL_REGISTERS]; BUCKETS]);
            let head = w[0] as i64;
            for e in 0..n {
                let (eh, et) = pair(w, Some(&*spill), e);
                let j = et.div_euclid(width(window_ms));
                if in_window(j, head) {
                    hll_add(&mut regs, j, eh);
                }
            }
            spill.registers = Some(regs);
            grown += SKETCH_BYTES;
        }
        // The oldest entry (the first of several as old) makes room.
        let mut oldest = 0;
        let mut oldest_t = i64::MAX;
        for e in 0..n {
            let et = pair(w, Some(&*spill), e).1;
            if et < oldest_t {
                oldest = e;
                oldest_t = et;
            }
        }
        if oldest_t > t - window_ms {
            w[1] = (w[1] as i64).max(oldest_t + window_ms) as u64;
        }
        set_pair(w, spill, oldest, h, t);
    }
    if let Some(regs) = spills.get_mut(d).and_then(|s| s.registers.as_deref_mut()) {
        hll_add(regs, i, h);
    }
    grown
}

/// The side part of distinct count `d`, made on first need.
fn spill_mut(spills: &mut Box<[Spill]>, distincts: usize, d: usize) -> &mut Spill {
    if spills.is_empty() {
        *spills = vec![Spill::default(); distincts].into();
    }
    &mut spills[d]
}

fn distinct_read(w: &[u64], spill: Option<&Spill>, t: i64, i: i64, window_ms: i64) -> f64 {
    let n = w[2] as usize;
    let exact = (0..n)
        .filter(|&e| pair(w, spill, e).1 > t - window_ms)
        .count() as f64;
    if t >= w[1] as i64 {
        return exact;
    }
    let mut merged = [0u8; HLL_REGISTERS];
    let head = w[0] as i64;
    if let Some(regs) = spill.and_then(|s| s.registers.as_deref())
        && head != i64::MIN
    {
        for k in 0..B {
            let j = head - k;
            if in_window(j, i) {
                for (m, r) in merged.iter_mut().zip(&regs[slot(j)]) {
                    *m = (*m).max(*r);
                }
            }
        }
    }
    hll_estimate(&merged, exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn distinct_layout() -> Layout {
        let words = Kind::Distinct(0).words();
        let mut initial = vec![0; words];
        initial[0] = NONE;
        initial[1] = NONE;
        Layout {
            places: vec![Place {
                kind: Kind::Distinct(0),
                off: 0,
                window_ms: HOUR,
                width: width(HOUR),
            }],
            initial: initial.into(),
            values: 0,
            distincts: 1,
        }
    }

    fn entity(layout: &Layout) -> Entity {
        let mut key = PackedKey::new();
        pack_key("u1", &mut key);
        Entity::new(layout, 7, &key, 0)
    }

    /// A sketch allocated at the first overflow and filled from the exact
    /// list answers as one kept from the first value on.
    #[test]
    fn a_late_sketch_reads_as_one_kept_from_the_start() {
        let layout = distinct_layout();
        let mut lazy = entity(&layout);
        let mut eager = entity(&layout);
        eager.spill = vec![Spill {
            exact: Vec::new(),
            registers: Some(Box::new([[0; HLL_REGISTERS]; BUCKETS])),
        }]
        .into();
        let hasher = RandomState::with_seeds(1, 2, 3, 4);
        for n in 0..400i64 {
            // One new value every 30 s: the window holds 120 of them.
            let t = n * 30_000;
            let v = Value::Number(n as f64);
            lazy.add(&layout, 0, t, &v, &hasher);
            eager.add(&layout, 0, t, &v, &hasher);
            if n == EXACT_DISTINCT as i64 - 1 {
                assert!(lazy.spill[0].registers.is_none(), "no sketch while exact");
            }
            for back in [0, 7 * 60_000, 40 * 60_000] {
                let r = t - back;
                assert_eq!(
                    lazy.read(&layout, 0, Agg::DistinctCount, r),
                    eager.read(&layout, 0, Agg::DistinctCount, r),
                    "after value {n}, read at {r}"
                );
            }
        }
        assert_eq!(lazy.heap_bytes(), SPILL_BYTES + SKETCH_BYTES);
        let Value::Number(estimate) = lazy.read(&layout, 0, Agg::DistinctCount, 399 * 30_000)
        else {
            panic!("a distinct count is a number")
        };
        // 120 values in the window, one bucket of 10 more at its edge; the
        // sketch's standard error is about 13%.
        assert!((80.0..=180.0).contains(&estimate), "estimate {estimate}");
        // The portable form carries the whole state back.
        let again = Entity::import(&layout, 7, "u1", 0, lazy.export(&layout)).unwrap();
        assert_eq!(again.export(&layout), lazy.export(&layout));
        // So does the shared store's byte form, to the last byte.
        let mut bytes = Vec::new();
        lazy.encode(&layout, &mut bytes);
        let shared = Entity::decode(&layout, &bytes).unwrap();
        assert_eq!(shared.export(&layout), lazy.export(&layout));
        let mut again = Vec::new();
        shared.encode(&layout, &mut again);
        assert_eq!(again, bytes);
        assert!(Entity::decode(&layout, &bytes[..bytes.len() - 1]).is_none());
    }

    /// A state whose times sit at the edge of the integers (no update
    /// leaves one; damaged bytes can) is refused, so that no read of it
    /// overflows; so is an exact list longer than its side part.
    #[test]
    fn states_no_update_could_leave_are_refused() {
        let layout = distinct_layout();
        let mut e = entity(&layout);
        let hasher = RandomState::with_seeds(1, 2, 3, 4);
        for n in 0..6i64 {
            e.add(&layout, 0, n * 1000, &Value::Number(n as f64), &hasher);
        }
        let mut bytes = Vec::new();
        e.encode(&layout, &mut bytes);
        assert!(Entity::decode(&layout, &bytes).is_some());
        // Words: the head at 8, the inexact time at 16, the length at 24.
        for (at, bad) in [(8, i64::MIN + 3), (16, i64::MAX - 1), (24, 7)] {
            let mut b = bytes.clone();
            b[at..at + 8].copy_from_slice(&bad.to_le_bytes());
            assert!(
                Entity::decode(&layout, &b).is_none(),
                "word at {at} = {bad}"
            );
        }
    }

    #[test]
    fn few_values_are_counted_exactly_without_a_side_part() {
        let layout = distinct_layout();
        let mut e = entity(&layout);
        let hasher = RandomState::with_seeds(1, 2, 3, 4);
        for n in 0..10i64 {
            e.add(
                &layout,
                0,
                n * 1000,
                &Value::Number((n % 4) as f64),
                &hasher,
            );
        }
        assert_eq!(
            e.read(&layout, 0, Agg::DistinctCount, 10_000),
            Value::Number(4.0)
        );
        assert!(e.spill.is_empty());
        assert_eq!(e.heap_bytes(), 0, "four values fit inline");
    }

    #[test]
    fn a_key_is_kept_whole_and_matched_exactly() {
        let layout = distinct_layout();
        for key in ["", "a", "12345678", "123456789", "u_000001", "ключ"] {
            let mut packed = PackedKey::new();
            pack_key(key, &mut packed);
            let e = Entity::new(&layout, 1, &packed, 0);
            assert_eq!(e.key(), key);
            assert!(e.is(1, &packed));
            let mut other = PackedKey::new();
            pack_key(&format!("{key}x"), &mut other);
            assert!(!e.is(1, &other));
            assert!(!e.is(2, &packed));
        }
    }
}
