//! The first decision of each event the feature store's dedup remembers,
//! so that a redelivered event gets the decision it got the first time
//! (the contract's promise) rather than one made from features that now
//! include itself.
//!
//! Not a second map of event ids: a table parallel to the dedup's ring,
//! indexed by the [`DedupSlot`] the store hands out with each update, so it
//! remembers exactly as many events as the dedup and forgets them when the
//! dedup does. Each entry keeps the id's hash beside the decision: a slot
//! changes hands when its id is forgotten (or through a replay, which
//! records nothing here), and an entry is only trusted when the hash and
//! the event id both match.
//!
//! Storing a decision copies it into the entry's own buffers
//! (`Vec::clone_from`), so once the table is warm a fresh event allocates
//! nothing here. The table grows with traffic up to the dedup's capacity,
//! in shards whose lock is held for one copy, never across an await.

use std::sync::Mutex;

use verdict_core::Decision;
use verdict_features::DedupSlot;

/// Shards of the table: slot `s` lives in shard `s % SHARDS` at `s / SHARDS`.
const SHARDS: usize = 64;

struct Entry {
    id_hash: u64,
    decision: Option<Decision>,
}

/// First decisions by dedup slot.
pub struct FirstDecisions {
    shards: Box<[Mutex<Vec<Entry>>]>,
    /// Slots the dedup hands out: `0..slots`.
    slots: usize,
}

impl FirstDecisions {
    /// A table for a dedup of `slots` slots (none remembered when 0).
    pub fn new(slots: usize) -> FirstDecisions {
        FirstDecisions {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            slots,
        }
    }

    fn locate(&self, slot: DedupSlot) -> Option<(&Mutex<Vec<Entry>>, usize)> {
        let s = slot.index();
        (s < self.slots).then(|| (&self.shards[s % SHARDS], s / SHARDS))
    }

    /// Remembers `decision` as the first one of the event the dedup keeps
    /// at `slot` with `id_hash`.
    pub fn record(&self, slot: DedupSlot, id_hash: u64, decision: &Decision) {
        let Some((shard, at)) = self.locate(slot) else {
            return;
        };
        let mut entries = shard.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() <= at {
            entries.resize_with(at + 1, || Entry {
                id_hash: 0,
                decision: None,
            });
        }
        let entry = &mut entries[at];
        entry.id_hash = id_hash;
        match &mut entry.decision {
            Some(kept) => copy_into(kept, decision),
            none => *none = Some(decision.clone()),
        }
    }

    /// The first decision of `event_id`, if the entry at `slot` is still
    /// its own.
    pub fn get(&self, slot: DedupSlot, id_hash: u64, event_id: &str) -> Option<Decision> {
        let (shard, at) = self.locate(slot)?;
        let entries = shard.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(at)?;
        if entry.id_hash != id_hash {
            return None;
        }
        entry
            .decision
            .as_ref()
            .filter(|d| &*d.event_id == event_id)
            .cloned()
    }
}

/// `*kept = from.clone()`, reusing `kept`'s buffers.
fn copy_into(kept: &mut Decision, from: &Decision) {
    kept.event_id.clone_from(&from.event_id);
    kept.decision = from.decision;
    kept.hits.clone_from(&from.hits);
    kept.shadow_hits.clone_from(&from.shadow_hits);
    kept.scores.0.clone_from(&from.scores.0);
    kept.explanation.clone_from(&from.explanation);
    kept.ruleset_version.clone_from(&from.ruleset_version);
    kept.model_version.clone_from(&from.model_version);
    kept.degraded = from.degraded;
    kept.latency_us = from.latency_us;
    kept.decided_at = from.decided_at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_core::{Action, Hit, Scores};

    fn decision(id: &str, action: Action) -> Decision {
        Decision {
            event_id: id.into(),
            decision: action,
            hits: vec![Hit {
                rule: "r".into(),
                action,
                reason: "because".into(),
            }],
            shadow_hits: Vec::new(),
            scores: Scores::from([("p".into(), 0.5)]),
            explanation: Vec::new(),
            ruleset_version: "rs-1".into(),
            model_version: None,
            degraded: false,
            latency_us: 1,
            decided_at: 0,
        }
    }

    #[test]
    fn gives_back_what_was_recorded_at_the_slot() {
        let table = FirstDecisions::new(1_000);
        let slot = slot_of(7);
        table.record(slot, 42, &decision("e7", Action::Review));
        assert_eq!(
            table.get(slot, 42, "e7").map(|d| d.decision),
            Some(Action::Review)
        );
    }

    #[test]
    fn a_slot_handed_to_another_id_is_not_trusted() {
        let table = FirstDecisions::new(1_000);
        let slot = slot_of(7);
        table.record(slot, 42, &decision("e7", Action::Review));
        // Another hash: the slot changed hands.
        assert!(table.get(slot, 43, "e7").is_none());
        // The same hash but another id (a hash collision): not trusted either.
        assert!(table.get(slot, 42, "e8").is_none());
        // Overwritten in place by the slot's new owner.
        table.record(slot, 43, &decision("e9", Action::Deny));
        assert!(table.get(slot, 42, "e7").is_none());
        let again = table.get(slot, 43, "e9").unwrap();
        assert_eq!(again, decision("e9", Action::Deny));
    }

    #[test]
    fn slots_outside_the_table_and_empty_tables_remember_nothing() {
        let table = FirstDecisions::new(0);
        table.record(slot_of(0), 1, &decision("e", Action::Deny));
        assert!(table.get(slot_of(0), 1, "e").is_none());
        let table = FirstDecisions::new(10);
        table.record(slot_of(10), 1, &decision("e", Action::Deny));
        assert!(table.get(slot_of(10), 1, "e").is_none());
    }

    fn slot_of(n: u32) -> DedupSlot {
        DedupSlot::at(n)
    }
}
