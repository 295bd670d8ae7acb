//! The store's memory of recent event ids, so that a redelivered event is
//! read but not counted again.
//!
//! Sharded by the id's hash: each shard is a ring of the hashes it has
//! seen, oldest overwritten first, and an index from hash to ring position.
//! Lanes deciding different partitions lock different shards, so they
//! rarely wait for one another; a shard's lock is held for one insert,
//! never across an await.
//!
//! A fresh id's ring position is its [`DedupSlot`]: stable until the id is
//! forgotten (when its shard's ring comes round to it again), so the owner
//! of the store can keep a parallel array of whatever it wants to recall
//! for a redelivery (the engine keeps each event's first decision), indexed
//! by slot and as large as [`FeatureStore::dedup_slots`](crate::FeatureStore::dedup_slots).
//!
//! It is not a durable record: what a restart forgets is caught by the
//! offsets committed after decisions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// Fewest ids a shard holds: a small capacity is one shard, so that it
/// forgets strictly oldest first.
const MIN_PER_SHARD: usize = 4_096;
/// Most shards: enough that a few dozen lanes rarely meet on one.
const MAX_SHARDS: usize = 64;

/// Where the dedup remembers one event id: an index below
/// [`FeatureStore::dedup_slots`](crate::FeatureStore::dedup_slots), held by
/// that id until it is forgotten, then given to a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupSlot(u32);

impl DedupSlot {
    /// The slot at `index`: for tests of tables kept parallel to the
    /// dedup; the store hands out the slots it uses.
    pub const fn at(index: u32) -> DedupSlot {
        DedupSlot(index)
    }

    /// The slot as an array index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the dedup knew of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen recently: now remembered at this slot (none when the dedup
    /// remembers nothing).
    Fresh(Option<DedupSlot>),
    /// Seen recently, at this slot.
    Again(DedupSlot),
}

/// The ids are hashes already: the index uses them as they are.
#[derive(Default)]
struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

#[derive(Default)]
struct Shard {
    /// The hashes in the order seen; `ring[next]` is overwritten next once
    /// the ring is full.
    ring: Vec<u64>,
    next: u32,
    /// Hash → its position in `ring`.
    index: HashMap<u64, u32, BuildHasherDefault<IdHash>>,
}

/// Recently seen event ids (their hashes), bounded.
pub(crate) struct Dedup {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl Dedup {
    /// Remembers about `capacity` ids (at least that many; none when 0).
    pub(crate) fn new(capacity: usize) -> Dedup {
        // A power of two no larger than MAX_SHARDS (itself one).
        let shards = (capacity / MIN_PER_SHARD)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two();
        let per_shard = capacity.div_ceil(shards);
        Dedup {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard,
        }
    }

    /// How many slots there are: every [`DedupSlot`] is below this.
    pub(crate) fn slots(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Records hash `h` of an event id.
    pub(crate) fn insert(&self, h: u64) -> Seen {
        if self.per_shard == 0 {
            return Seen::Fresh(None);
        }
        // The shard from bits the index's own table does not start from.
        let s = (h >> 32) as usize & (self.shards.len() - 1);
        let base = (s * self.per_shard) as u32;
        let mut shard = self.shards[s].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&at) = shard.index.get(&h) {
            return Seen::Again(DedupSlot(base + at));
        }
        let at = if shard.ring.len() < self.per_shard {
            shard.ring.push(h);
            shard.ring.len() as u32 - 1
        } else {
            let at = shard.next;
            let old = std::mem::replace(&mut shard.ring[at as usize], h);
            shard.index.remove(&old);
            shard.next = (at + 1) % self.per_shard as u32;
            at
        };
        shard.index.insert(h, at);
        Seen::Fresh(Some(DedupSlot(base + at)))
    }

    /// Bytes held, for the memory figures.
    pub(crate) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.ring.capacity() * 8 + s.index.capacity() * 13
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(seen: Seen) -> DedupSlot {
        match seen {
            Seen::Fresh(Some(slot)) => slot,
            other => panic!("expected a fresh id with a slot, got {other:?}"),
        }
    }

    #[test]
    fn a_redelivery_finds_the_slot_of_its_first_delivery() {
        let d = Dedup::new(1_000);
        let a = fresh(d.insert(11));
        let b = fresh(d.insert(12));
        assert_ne!(a, b);
        assert_eq!(d.insert(11), Seen::Again(a));
        assert_eq!(d.insert(12), Seen::Again(b));
        assert!(a.index() < d.slots() && b.index() < d.slots());
    }

    #[test]
    fn a_small_capacity_forgets_strictly_oldest_first_and_reuses_its_slot() {
        let d = Dedup::new(4);
        assert_eq!(d.slots(), 4);
        let slots: Vec<DedupSlot> = (1..=4).map(|h| fresh(d.insert(h))).collect();
        // A fifth id takes the oldest one's slot; the oldest is forgotten.
        let fifth = fresh(d.insert(5));
        assert_eq!(fifth, slots[0]);
        assert_eq!(d.insert(2), Seen::Again(slots[1]));
        // The first id comes back as new, in the next slot of the ring.
        assert_eq!(fresh(d.insert(1)), slots[1]);
        assert_eq!(d.insert(5), Seen::Again(fifth));
    }

    #[test]
    fn slots_of_every_shard_are_distinct_and_in_range() {
        let d = Dedup::new(1 << 20);
        assert!(d.shards.len() > 1, "a large capacity is sharded");
        assert!(d.slots() >= 1 << 20);
        let mut seen = std::collections::HashSet::new();
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        for n in 0..50_000u64 {
            let slot = fresh(d.insert(hasher.hash_one(n)));
            assert!(slot.index() < d.slots());
            assert!(seen.insert(slot), "slot {slot:?} given twice");
        }
    }

    #[test]
    fn a_shard_full_ring_keeps_its_newest_ids() {
        let d = Dedup::new(8);
        for h in 0..100u64 {
            fresh(d.insert(h));
        }
        for h in 92..100u64 {
            assert!(
                matches!(d.insert(h), Seen::Again(_)),
                "id {h} is remembered"
            );
        }
        for h in 0..92u64 {
            assert!(
                matches!(d.insert(h), Seen::Fresh(_)),
                "id {h} was forgotten"
            );
        }
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let d = Dedup::new(0);
        assert_eq!(d.insert(1), Seen::Fresh(None));
        assert_eq!(d.insert(1), Seen::Fresh(None));
        assert_eq!(d.slots(), 0);
    }
}
