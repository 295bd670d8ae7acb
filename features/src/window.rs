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
//! 64 registers per bucket, whose standard error is about 13%.

use verdict_core::Value;

use crate::defs::{Agg, BUCKETS};

/// Distinct values tracked exactly per entity and feature.
pub const EXACT_DISTINCT: usize = 32;
const HLL_REGISTERS: usize = 64;

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

/// Distinct values over a window: exact while few, a sketch beyond.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinct {
    /// Value hash and when it was last seen.
    pub exact: Vec<(u64, i64)>,
    /// Until this time the exact list may have lost a value still in the
    /// window, so reads use the sketch.
    pub inexact_until: i64,
    pub head: i64,
    pub registers: Box<[[u8; HLL_REGISTERS]; BUCKETS]>,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct {
            exact: Vec::new(),
            inexact_until: i64::MIN,
            head: i64::MIN,
            registers: Box::new([[0; HLL_REGISTERS]; BUCKETS]),
        }
    }
}

impl Distinct {
    pub fn add(&mut self, t: i64, i: i64, window_ms: i64, h: u64) -> bool {
        let regs = &mut self.registers;
        if !advance(&mut self.head, i, |b| regs[b] = [0; HLL_REGISTERS]) {
            return false;
        }
        let reg = (h as usize) % HLL_REGISTERS;
        let rank = ((h >> 6).leading_zeros() + 1).min(58) as u8;
        let r = &mut self.registers[slot(i)][reg];
        *r = (*r).max(rank);
        if let Some(e) = self.exact.iter_mut().find(|e| e.0 == h) {
            e.1 = e.1.max(t);
        } else if self.exact.len() < EXACT_DISTINCT {
            self.exact.push((h, t));
        } else {
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
        true
    }

    pub fn read(&self, t: i64, i: i64, window_ms: i64) -> f64 {
        if t >= self.inexact_until {
            return self.exact.iter().filter(|e| e.1 > t - window_ms).count() as f64;
        }
        let mut merged = [0u8; HLL_REGISTERS];
        if self.head != i64::MIN {
            for k in 0..BUCKETS as i64 {
                let j = self.head - k;
                if in_window(j, i) {
                    for (m, r) in merged.iter_mut().zip(&self.registers[slot(j)]) {
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
    Distinct(Box<Distinct>),
    Last { value: Value, at: i64 },
    Since { at: i64 },
}

impl State {
    pub fn new(agg: Agg) -> State {
        match agg {
            Agg::DistinctCount => State::Distinct(Box::default()),
            Agg::Last => State::Last {
                value: Value::Missing,
                at: i64::MIN,
            },
            Agg::SecsSinceLast => State::Since { at: i64::MIN },
            _ => State::Ring(Ring::default()),
        }
    }

    /// Approximate bytes held, for the memory budget.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<State>()
            + match self {
                State::Ring(_) => 0,
                State::Distinct(d) => {
                    std::mem::size_of::<Distinct>()
                        + d.exact.capacity() * 16
                        + BUCKETS * HLL_REGISTERS
                }
                State::Last { value, .. } => match value {
                    Value::String(s) => s.len() + 16,
                    _ => 0,
                },
                State::Since { .. } => 0,
            }
    }
}
