//! Sliding event-time windows as bucketed ring buffers, and the other
//! per-entity aggregate states.
//!
//! A window of length `W` has [`BUCKETS`] buckets of width `W / BUCKETS`.
//! A read at time `t` covers the buckets from `t`'s back to `BUCKETS - 1`
//! before it: the events of the last `W`, to within one bucket width (a 1 h
//! window is precise to 5 minutes, 24 h to 2 hours, 30 d to 2.5 days).
//! Memory per window is fixed: it does not grow with traffic.
//!
//! `distinct_count` is exact while at most [`EXACT_DISTINCT`] distinct
//! values fall in the window; beyond that it answers from a HyperLogLog of
//! 64 registers per bucket, whose standard error is about 13% (allocated
//! when the exact list first overflows).

use verdict_core::Value;

use crate::defs::{Agg, BUCKETS};

/// Distinct values tracked exactly per entity and feature.
pub const EXACT_DISTINCT: usize = 32;
pub(crate) const HLL_REGISTERS: usize = 64;

/// Sums, counts and extremes per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    /// The bucket index (time / width) of the newest bucket; `i64::MIN`
    /// while empty.
    pub head: i64,
    pub count: [u32; BUCKETS],
    pub sum: [f64; BUCKETS],
    /// The minimum or the maximum, by aggregate.
    pub ext: [f64; BUCKETS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            head: i64::MIN,
            count: [0; BUCKETS],
            sum: [0.0; BUCKETS],
            ext: [f64::NAN; BUCKETS],
        }
    }
}

/// The bucket width of a window of `window_ms`.
pub(crate) fn width(window_ms: i64) -> i64 {
    (window_ms / BUCKETS as i64).max(1)
}

fn slot(i: i64) -> usize {
    i.rem_euclid(BUCKETS as i64) as usize
}

/// Moves a ring's head forward to `i`, clearing the buckets passed over.
/// False when `i` is older than the ring's whole span.
fn advance(head: &mut i64, i: i64, mut clear: impl FnMut(usize)) -> bool {
    if *head == i64::MIN {
        for b in 0..BUCKETS {
            clear(b);
        }
        *head = i;
        return true;
    }
    if i > *head {
        let n = (i - *head).min(BUCKETS as i64);
        for k in 1..=n {
            clear(slot(*head + k));
        }
        *head = i;
    }
    i > *head - BUCKETS as i64
}

/// Whether bucket index `j` (held by the ring) falls in the window read at
/// bucket index `i`.
fn in_window(j: i64, i: i64) -> bool {
    j <= i && j > i - BUCKETS as i64
}

impl Ring {
    /// Adds one value at bucket index `i`; false when too old for the ring.
    pub fn add(&mut self, i: i64, x: f64, agg: Agg) -> bool {
        let (count, sum, ext) = (&mut self.count, &mut self.sum, &mut self.ext);
        if !advance(&mut self.head, i, |b| {
            count[b] = 0;
            sum[b] = 0.0;
            ext[b] = f64::NAN;
        }) {
            return false;
        }
        let b = slot(i);
        self.count[b] += 1;
        self.sum[b] += x;
        let e = &mut self.ext[b];
        *e = match agg {
            Agg::Min if e.is_nan() || x < *e => x,
            Agg::Max if e.is_nan() || x > *e => x,
            _ => *e,
        };
        true
    }

    /// The aggregate over the window read at bucket index `i`.
    pub fn read(&self, i: i64, agg: Agg) -> Value {
        let (mut count, mut sum, mut ext) = (0u64, 0.0, f64::NAN);
        if self.head != i64::MIN {
            for k in 0..BUCKETS as i64 {
                let j = self.head - k;
                if !in_window(j, i) {
                    continue;
                }
                let b = slot(j);
                count += u64::from(self.count[b]);
                sum += self.sum[b];
                let e = self.ext[b];
                if !e.is_nan() {
                    ext = match agg {
                        Agg::Min if ext.is_nan() || e < ext => e,
                        Agg::Max if ext.is_nan() || e > ext => e,
                        _ => ext,
                    };
                }
            }
        }
        match agg {
            Agg::Count => Value::Number(count as f64),
            Agg::Sum => Value::Number(sum),
            Agg::Avg if count > 0 => Value::Number(sum / count as f64),
            Agg::Min | Agg::Max if !ext.is_nan() => Value::Number(ext),
            _ => Value::Missing,
        }
    }
}

/// HyperLogLog registers, one row per bucket.
pub type Registers = [[u8; HLL_REGISTERS]; BUCKETS];

/// Distinct values over a window: exact while few, a sketch beyond.
///
/// The sketch's registers are allocated only when the exact list first
/// overflows, and filled then from it: until then (most entities, most of
/// the time) the state holds no pointer to chase and no sketch to update.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinct {
    /// Value hash and when it was last seen; the first few inline.
    pub exact: smallvec::SmallVec<[(u64, i64); 4]>,
    /// Until this time the exact list may have lost a value still in the
    /// window, so reads use the sketch.
    pub inexact_until: i64,
    pub head: i64,
    pub registers: Option<Box<Registers>>,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct {
            exact: smallvec::SmallVec::new(),
            inexact_until: i64::MIN,
            head: i64::MIN,
            registers: None,
        }
    }
}

/// Sets the register of hash `h` in bucket index `i`'s row.
fn hll_add(regs: &mut Registers, i: i64, h: u64) {
    // The low 6 bits pick the register; the rank is the position of the
    // first 1 in the other 58.
    let reg = (h as usize) % HLL_REGISTERS;
    let rank = ((h >> 6).leading_zeros() - 6 + 1) as u8;
    let r = &mut regs[slot(i)][reg];
    *r = (*r).max(rank);
}

impl Distinct {
    /// Bytes held outside the state itself: the exact list once it
    /// outgrows its inline room (counted at its largest), and the sketch.
    pub fn heap_bytes(&self) -> usize {
        let exact = if self.exact.spilled() {
            EXACT_DISTINCT * 16
        } else {
            0
        };
        exact
            + self
                .registers
                .as_ref()
                .map_or(0, |_| BUCKETS * HLL_REGISTERS)
    }

    /// Adds hash `h` seen at `t` (bucket index `i`); false when `i` is older
    /// than the ring's span.
    pub fn add(&mut self, t: i64, i: i64, window_ms: i64, h: u64) -> bool {
        let registers = &mut self.registers;
        if !advance(&mut self.head, i, |b| {
            if let Some(regs) = registers {
                regs[b] = [0; HLL_REGISTERS];
            }
        }) {
            return false;
        }
        if let Some(e) = self.exact.iter_mut().find(|e| e.0 == h) {
            e.1 = e.1.max(t);
        } else if self.exact.len() < EXACT_DISTINCT {
            self.exact.push((h, t));
        } else {
            if self.registers.is_none() {
                // First overflow: the sketch starts from every value the
                // exact list holds, in the bucket it was last seen in.
                let mut regs = Box::new([[0; HLL_REGISTERS]; BUCKETS]);
                for &(eh, et) in &self.exact {
                    let j = et.div_euclid(width(window_ms));
                    if in_window(j, self.head) {
                        hll_add(&mut regs, j, eh);
                    }
                }
                self.registers = Some(regs);
            }
            let (oldest, _) = self
                .exact
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.1)
                .expect("the exact list is full, so not empty");
            let evicted = self.exact[oldest].1;
            if evicted > t - window_ms {
                self.inexact_until = self.inexact_until.max(evicted + window_ms);
            }
            self.exact[oldest] = (h, t);
        }
        if let Some(regs) = &mut self.registers {
            hll_add(regs, i, h);
        }
        true
    }

    pub fn read(&self, t: i64, i: i64, window_ms: i64) -> f64 {
        if t >= self.inexact_until {
            return self.exact.iter().filter(|e| e.1 > t - window_ms).count() as f64;
        }
        let mut merged = [0u8; HLL_REGISTERS];
        if let Some(regs) = &self.registers
            && self.head != i64::MIN
        {
            for k in 0..BUCKETS as i64 {
                let j = self.head - k;
                if in_window(j, i) {
                    for (m, r) in merged.iter_mut().zip(&regs[slot(j)]) {
                        *m = (*m).max(*r);
                    }
                }
            }
        }
        let m = HLL_REGISTERS as f64;
        let z: f64 = merged.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let estimate = 0.709 * m * m / z;
        let zeros = merged.iter().filter(|r| **r == 0).count();
        let e = if estimate <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            estimate
        };
        // Never less than what the exact list still sees.
        e.round()
            .max(self.exact.iter().filter(|x| x.1 > t - window_ms).count() as f64)
    }
}

/// One feature's state for one entity.
///
/// A ring is held inline, so an entity's states are one contiguous
/// allocation that a read+update walks front to back (one pointer to chase
/// per entity, not one per feature); the rarer distinct-count state, which
/// is much larger, stays boxed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum State {
    Ring(Ring),
    Distinct(Distinct),
    Last { value: Value, at: i64 },
    Since { at: i64 },
}

impl State {
    pub fn new(agg: Agg) -> State {
        match agg {
            Agg::DistinctCount => State::Distinct(Distinct::default()),
            Agg::Last => State::Last {
                value: Value::Missing,
                at: i64::MIN,
            },
            Agg::SecsSinceLast => State::Since { at: i64::MIN },
            _ => State::Ring(Ring::default()),
        }
    }

    /// Bytes of the state with no history, for the memory budget (what a
    /// distinct count allocates as it grows is counted as it happens, see
    /// [`State::heap_bytes`]).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<State>()
    }

    /// Bytes held outside the state itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            State::Distinct(d) => d.heap_bytes(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    /// A sketch allocated at the first overflow and filled from the exact
    /// list answers as one kept from the first value on.
    #[test]
    fn a_late_sketch_reads_as_one_kept_from_the_start() {
        let w = width(HOUR);
        let mut lazy = Distinct::default();
        let mut eager = Distinct {
            registers: Some(Box::new([[0; HLL_REGISTERS]; BUCKETS])),
            ..Distinct::default()
        };
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        for n in 0..400i64 {
            // One new value every 30 s: the window holds 120 of them.
            let t = n * 30_000;
            let h = hasher.hash_one(n);
            assert_eq!(lazy.add(t, t / w, HOUR, h), eager.add(t, t / w, HOUR, h));
            if n == EXACT_DISTINCT as i64 - 1 {
                assert!(lazy.registers.is_none(), "no sketch while exact");
                assert_eq!(lazy.heap_bytes(), EXACT_DISTINCT * 16);
            }
            for back in [0, 7 * 60_000, 40 * 60_000] {
                let r = t - back;
                assert_eq!(
                    lazy.read(r, r.div_euclid(w), HOUR),
                    eager.read(r, r.div_euclid(w), HOUR),
                    "after value {n}, read at {r}"
                );
            }
        }
        assert_eq!(
            lazy.heap_bytes(),
            EXACT_DISTINCT * 16 + BUCKETS * HLL_REGISTERS
        );
        let estimate = lazy.read(399 * 30_000, (399 * 30_000) / w, HOUR);
        // 120 values in the window, one bucket of 10 more at its edge; the
        // sketch's standard error is about 13%.
        assert!((80.0..=180.0).contains(&estimate), "estimate {estimate}");
    }

    #[test]
    fn few_values_are_counted_exactly_without_a_sketch() {
        let w = width(HOUR);
        let mut d = Distinct::default();
        for n in 0..10i64 {
            d.add(n * 1000, n * 1000 / w, HOUR, (n % 4) as u64);
        }
        assert_eq!(d.read(10_000, 10_000 / w, HOUR), 4.0);
        assert!(d.registers.is_none());
        assert_eq!(d.heap_bytes(), 0, "four values fit inline");
    }
}
