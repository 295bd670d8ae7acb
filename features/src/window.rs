//! The portable form of an entity's states: what a snapshot row encodes,
//! one value per feature, independent of how the store lays them out in
//! memory (`entity.rs`).
//!
//! A ring carries all three arrays; an aggregate keeps only those it reads
//! (a count its counts, a sum its sums, an average both, a minimum or
//! maximum its extremes) and the others are written as an empty bucket
//! reads: counts 0, sums 0, extremes NaN.

use crate::defs::BUCKETS;

pub use crate::entity::EXACT_DISTINCT;

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

/// HyperLogLog registers, one row per bucket.
pub type Registers = [[u8; crate::entity::HLL_REGISTERS]; BUCKETS];

/// Distinct values over a window: exact while few, a sketch beyond.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinct {
    /// Value hash and when it was last seen, in the order first seen.
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

/// One feature's state for one entity.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Ring(Ring),
    Distinct(Distinct),
    Last { value: verdict_core::Value, at: i64 },
    Since { at: i64 },
}
