//! What the engine pass hands the report for each event, and the rule
//! table that turns rule names into indices once.
//!
//! The engine decides every event twice (baseline and candidate) over the
//! same features and fills one [`EventInput`] per event: rules by
//! [`RuleId`], so that no string is built or looked up per event for rules
//! it resolved at load time. [`SideBuffer`] is a reusable holder for one
//! side's hits and scores.

use std::collections::HashMap;
use std::sync::Arc;

use verdict_core::Action;

use crate::BacktestError;

/// A rule's index in the [`RuleTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub(crate) u32);

impl RuleId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One rule of a rule set, as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDesc {
    pub name: String,
    pub action: Action,
    pub shadow: bool,
    /// A hash of the rule's content (its condition, action, priority,
    /// shadow flag and reason): two rules of one name with different hashes
    /// are reported as changed. Any stable hash will do.
    pub hash: u64,
}

/// How a rule differs between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleStatus {
    /// In both rule sets with the same content.
    Unchanged,
    /// In both with different content.
    Changed,
    /// Only in the candidate.
    Added,
    /// Only in the baseline.
    Removed,
    /// A side's rule set is not known (a recorded baseline without its
    /// rules), so nothing can be said.
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct RuleEntry {
    pub name: Arc<str>,
    pub baseline: Option<RuleDesc>,
    pub candidate: Option<RuleDesc>,
}

/// Every rule of both sides, by name; rules met only in recorded hits are
/// added as they come ([`RuleTable::intern`]).
#[derive(Debug, Clone)]
pub struct RuleTable {
    pub(crate) entries: Vec<RuleEntry>,
    by_name: HashMap<Arc<str>, RuleId, ahash::RandomState>,
    pub(crate) baseline_known: bool,
    pub(crate) candidate_known: bool,
}

impl RuleTable {
    /// The table of two rule sets; `None` for a side whose rule set is not
    /// known. A name twice in one list is an error.
    pub fn new(
        baseline: Option<&[RuleDesc]>,
        candidate: Option<&[RuleDesc]>,
    ) -> Result<RuleTable, BacktestError> {
        let mut t = RuleTable {
            entries: Vec::new(),
            by_name: HashMap::default(),
            baseline_known: baseline.is_some(),
            candidate_known: candidate.is_some(),
        };
        for (side, list) in [("baseline", baseline), ("candidate", candidate)] {
            for r in list.unwrap_or_default() {
                let id = t.intern(&r.name);
                let e = &mut t.entries[id.index()];
                let slot = if side == "baseline" {
                    &mut e.baseline
                } else {
                    &mut e.candidate
                };
                if slot.is_some() {
                    return Err(BacktestError::Options(format!(
                        "rule `{}` is twice in the {side} rule set",
                        r.name
                    )));
                }
                *slot = Some(r.clone());
            }
        }
        Ok(t)
    }

    /// The id of `name`, if either side has it or it was met before.
    pub fn id(&self, name: &str) -> Option<RuleId> {
        self.by_name.get(name).copied()
    }

    /// The id of `name`, added when new (a rule met only in a recorded
    /// decision). Allocates only for a new name.
    pub fn intern(&mut self, name: &str) -> RuleId {
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        let id = RuleId(self.entries.len() as u32);
        let name: Arc<str> = Arc::from(name);
        self.entries.push(RuleEntry {
            name: name.clone(),
            baseline: None,
            candidate: None,
        });
        self.by_name.insert(name, id);
        id
    }

    pub fn name(&self, id: RuleId) -> &str {
        &self.entries[id.index()].name
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How the rule differs between the sides.
    pub fn status(&self, id: RuleId) -> RuleStatus {
        let e = &self.entries[id.index()];
        if !self.baseline_known || !self.candidate_known {
            return RuleStatus::Unknown;
        }
        match (&e.baseline, &e.candidate) {
            (Some(b), Some(c)) if b.hash == c.hash => RuleStatus::Unchanged,
            (Some(_), Some(_)) => RuleStatus::Changed,
            (None, Some(_)) => RuleStatus::Added,
            (Some(_), None) => RuleStatus::Removed,
            (None, None) => RuleStatus::Unknown,
        }
    }
}

/// One hit: which rule, and the action it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: RuleId,
    pub action: Action,
}

/// One side's decision of one event.
#[derive(Debug, Clone, Copy)]
pub struct SideInput<'a> {
    pub outcome: Action,
    /// Every non-shadow hit in winning order, the winner first (as the
    /// rule set reports them).
    pub hits: &'a [RuleHit],
    pub shadow_hits: &'a [RuleHit],
    /// Model scores in the order of the side's `score_names`; NaN when a
    /// score is missing (a degraded decision).
    pub scores: &'a [f64],
    pub degraded: bool,
}

/// One event as both sides decided it.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub event_id: &'a str,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Ground truth: `Some(true)` fraud, `Some(false)` legitimate, `None`
    /// unlabelled (see [`crate::LabelField`] and [`crate::Chargebacks`]).
    pub label: Option<bool>,
    /// The event's amount, when an amount field is configured and the
    /// event has one.
    pub amount: Option<f64>,
    pub baseline: SideInput<'a>,
    pub candidate: SideInput<'a>,
}

/// A reusable holder for one side's decision: clear, push, then
/// [`SideBuffer::input`]. Allocates only while it grows.
#[derive(Debug, Clone)]
pub struct SideBuffer {
    pub outcome: Action,
    pub hits: Vec<RuleHit>,
    pub shadow_hits: Vec<RuleHit>,
    pub scores: Vec<f64>,
    pub degraded: bool,
}

impl Default for SideBuffer {
    fn default() -> Self {
        SideBuffer {
            outcome: Action::Approve,
            hits: Vec::with_capacity(8),
            shadow_hits: Vec::with_capacity(8),
            scores: Vec::with_capacity(4),
            degraded: false,
        }
    }
}

impl SideBuffer {
    pub fn clear(&mut self) {
        self.outcome = Action::Approve;
        self.hits.clear();
        self.shadow_hits.clear();
        self.scores.clear();
        self.degraded = false;
    }

    pub fn input(&self) -> SideInput<'_> {
        SideInput {
            outcome: self.outcome,
            hits: &self.hits,
            shadow_hits: &self.shadow_hits,
            scores: &self.scores,
            degraded: self.degraded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, hash: u64) -> RuleDesc {
        RuleDesc {
            name: name.into(),
            action: Action::Deny,
            shadow: false,
            hash,
        }
    }

    #[test]
    fn statuses_follow_names_and_hashes() {
        let b = [desc("same", 1), desc("edited", 2), desc("gone", 3)];
        let c = [desc("same", 1), desc("edited", 9), desc("new", 4)];
        let mut t = RuleTable::new(Some(&b), Some(&c)).unwrap();
        let st = |t: &RuleTable, n: &str| t.status(t.id(n).unwrap());
        assert_eq!(st(&t, "same"), RuleStatus::Unchanged);
        assert_eq!(st(&t, "edited"), RuleStatus::Changed);
        assert_eq!(st(&t, "gone"), RuleStatus::Removed);
        assert_eq!(st(&t, "new"), RuleStatus::Added);
        let ghost = t.intern("ghost");
        assert_eq!(t.status(ghost), RuleStatus::Unknown);
        assert_eq!(t.intern("same"), t.id("same").unwrap());
        let t = RuleTable::new(None, Some(&c)).unwrap();
        assert_eq!(st(&t, "same"), RuleStatus::Unknown);
    }

    #[test]
    fn a_name_twice_in_one_rule_set_is_refused() {
        let e = RuleTable::new(Some(&[desc("a", 1), desc("a", 2)]), None).unwrap_err();
        assert!(
            e.to_string().contains("`a` is twice in the baseline"),
            "{e}"
        );
    }
}
