//! The backtest report: plain data, serialised as the JSON that the CLI's
//! `--json` and `POST /v1/backtest` answer (its shape is in
//! `docs/contracts.md`, "A backtest report").
//!
//! Every number is computed from integer counts or fixed-point sums, and
//! every list has a fixed order, so that the same input gives the same
//! bytes.

use serde::{Deserialize, Serialize};
use verdict_core::Action;

use crate::input::RuleStatus;

/// The version of the report's shape, in the `format` field.
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// False when the pass stopped before the end of the history (a time
    /// limit, an interruption); `incomplete` then says why, and every
    /// figure covers only the `events` compared.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// What was read, as given (`--history`).
    pub history: String,
    /// The time range asked for (RFC 3339), if any.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Events compared.
    pub events: u64,
    pub first_event_at: Option<String>,
    pub last_event_at: Option<String>,
    /// Events read but not compared, by reason (dead letters, lines that
    /// are not events), sorted by reason.
    pub not_compared: Vec<NotCompared>,
    pub baseline: SideSummary,
    pub candidate: SideSummary,
    /// The nine cells baseline → candidate, baseline-major:
    /// approve→approve, approve→review, … deny→deny.
    pub matrix: Vec<Cell>,
    /// Events whose outcome differs.
    pub changed: Count,
    pub rule_changes: RuleChanges,
    /// Every rule of either side (and every rule met in a recorded hit),
    /// sorted by name.
    pub rules: Vec<RuleReport>,
    pub labels: Option<LabelReport>,
    pub money: Option<MoneyReport>,
    /// Per side and model output, in that order.
    pub scores: Vec<ScoreReport>,
    pub samples: Samples,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotCompared {
    pub reason: String,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub events: u64,
    /// Of all events compared, rounded to 6 decimals.
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideSummary {
    /// What this side is (`recorded decisions`, `rules candidate/`).
    pub name: String,
    pub ruleset_version: Option<String>,
    pub model_version: Option<String>,
    pub approve: u64,
    pub review: u64,
    pub deny: u64,
    pub degraded: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub baseline: Action,
    pub candidate: Action,
    pub events: u64,
    pub share: f64,
    /// The sum of the amounts of its events, with an amount field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: u64,
    /// True when one side's rule set was not given (a recorded baseline):
    /// nothing is said about added, removed or changed rules.
    pub unknown: bool,
}

/// One rule on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSide {
    /// Its action and shadow flag in this side's rule set; `null` when the
    /// side has no such rule (or its rule set is not known).
    pub action: Option<Action>,
    pub shadow: Option<bool>,
    /// Events where it fired (not as a shadow rule) …
    pub hits: u64,
    /// … and as a shadow rule.
    pub shadow_hits: u64,
    /// Events whose outcome it gave (the winning hit).
    pub decided: u64,
    /// Events whose outcome it alone gave: without it, the outcome would
    /// be another (the next hit's action, or approve).
    pub decided_alone: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleReport {
    pub rule: String,
    pub status: RuleStatus,
    pub baseline: RuleSide,
    pub candidate: RuleSide,
    /// Its unique contribution to the change: events whose outcome changed
    /// and that it alone decided in the candidate (it moved them) …
    pub moved_in: u64,
    /// … and in the baseline (they moved because of what became of it).
    pub moved_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelReport {
    /// Where the labels come from, in words.
    pub source: String,
    pub labelled: u64,
    pub unlabelled: u64,
    pub fraud: u64,
    pub legit: u64,
    /// `approve`, `review`, `deny`, `review_or_deny`, in that order.
    pub baseline: Vec<LabelMetrics>,
    pub candidate: Vec<LabelMetrics>,
}

/// How one outcome (or `review_or_deny`) of one side fares against the
/// labels. Rates are `null` when their denominator is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelMetrics {
    pub outcome: String,
    /// Labelled events with this outcome, fraud among them, legitimate.
    pub events: u64,
    pub fraud: u64,
    pub legit: u64,
    /// fraud with this outcome / all fraud.
    pub catch_rate: Option<f64>,
    /// legitimate with this outcome / all legitimate.
    pub false_positive_rate: Option<f64>,
    /// fraud with this outcome / labelled events with this outcome.
    pub precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyReport {
    pub field: String,
    pub events_with_amount: u64,
    pub total: f64,
    /// Events the candidate denies and the baseline did not.
    pub newly_denied: Money,
    /// Events the candidate approves and the baseline did not.
    pub newly_approved: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub events: u64,
    pub amount: f64,
}

/// One model output of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreReport {
    /// `baseline` or `candidate`.
    pub side: String,
    pub name: String,
    /// Events with this score (not missing).
    pub events: u64,
    pub mean: Option<f64>,
    /// Counts over ten equal bins of [0, 1]; scores outside fall in the
    /// first or last.
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    pub seed: u64,
    /// At most this many events per changed cell.
    pub per_cell: usize,
    /// One entry per changed cell with events, baseline-major.
    pub cells: Vec<CellSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSample {
    pub baseline: Action,
    pub candidate: Action,
    /// Events in the cell (of which `events` lists a sample).
    pub total: u64,
    /// Chosen by a seeded hash of the event id, so the same seed picks the
    /// same events whatever the order they came in; listed in time order.
    pub events: Vec<SampleEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleEvent {
    pub event_id: String,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<bool>,
    /// The winning rule of each side, `null` when nothing fired.
    pub baseline_rule: Option<String>,
    pub candidate_rule: Option<String>,
    /// Hits of the baseline that the candidate does not have, and the
    /// other way round.
    pub only_baseline: Vec<SampleHit>,
    pub only_candidate: Vec<SampleHit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleHit {
    pub rule: String,
    pub action: Action,
    pub shadow: bool,
}

impl Report {
    /// The report as pretty JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a report always serialises");
        s.push('\n');
        s
    }

    /// The cell baseline → candidate.
    pub fn cell(&self, baseline: Action, candidate: Action) -> &Cell {
        &self.matrix[index(baseline) * 3 + index(candidate)]
    }
}

pub(crate) fn index(a: Action) -> usize {
    match a {
        Action::Approve => 0,
        Action::Review => 1,
        Action::Deny => 2,
    }
}
