//! The decisions of recent events by `event_id`, so that a redelivered
//! event gets the decision it got the first time (the contract's promise)
//! rather than one made from features that now include itself.
//!
//! Bounded: sixteen shards, each forgetting its oldest entry beyond its
//! share of the capacity. A shard's lock is held for one map operation,
//! never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ahash::RandomState;

use verdict_core::Decision;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    decisions: HashMap<Arc<str>, Decision, RandomState>,
    order: VecDeque<Arc<str>>,
}

/// Recent decisions, bounded.
pub struct RecentDecisions {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hash: RandomState,
}

impl RecentDecisions {
    /// Remembers about `capacity` decisions (none when 0).
    pub fn new(capacity: usize) -> RecentDecisions {
        RecentDecisions {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hash: Default::default(),
        }
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        &self.shards[self.hash.hash_one(id) as usize % SHARDS]
    }

    /// Remembers `decision` under its event id.
    pub fn insert(&self, decision: &Decision) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self
            .shard(&decision.event_id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let id = decision.event_id.clone();
        if shard
            .decisions
            .insert(id.clone(), decision.clone())
            .is_none()
        {
            shard.order.push_back(id);
        }
        while shard.order.len() > self.per_shard {
            if let Some(old) = shard.order.pop_front() {
                shard.decisions.remove(&old);
            }
        }
    }

    /// The decision made for `event_id`, if it is still remembered.
    pub fn get(&self, event_id: &str) -> Option<Decision> {
        self.shard(event_id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decisions
            .get(event_id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_core::{Action, Scores};

    fn decision(id: &str) -> Decision {
        Decision {
            event_id: id.into(),
            decision: Action::Review,
            hits: Vec::new(),
            shadow_hits: Vec::new(),
            scores: Scores::default(),
            ruleset_version: "rs-1".into(),
            model_version: None,
            degraded: false,
            latency_us: 1,
            decided_at: 0,
        }
    }

    #[test]
    fn remembers_recent_and_forgets_the_oldest() {
        let recent = RecentDecisions::new(SHARDS * 4);
        for i in 0..10_000 {
            recent.insert(&decision(&format!("e{i}")));
        }
        assert!(recent.get("e9999").is_some());
        assert!(recent.get("e0").is_none());
        let kept = (0..10_000)
            .filter(|i| recent.get(&format!("e{i}")).is_some())
            .count();
        assert!(kept <= SHARDS * 4, "{kept}");
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let recent = RecentDecisions::new(0);
        recent.insert(&decision("e"));
        assert!(recent.get("e").is_none());
    }
}
