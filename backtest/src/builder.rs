//! Building the report from one event at a time.
//!
//! [`ReportBuilder::add`] only counts: integer counters per cell, rule and
//! outcome, fixed-point sums for money and scores, and a bounded sample per
//! changed cell. It allocates only when a sampled event is kept. Nothing
//! depends on the order events come in except which event was first and
//! last: sums are exact, and samples are the events with the smallest
//! seeded hash of their id, so that two passes over the same events give
//! the same report byte for byte.

use std::collections::BinaryHeap;
use std::hash::Hasher;

use twox_hash::XxHash64;
use verdict_core::Action;
use verdict_core::time::format_rfc3339_ms;

use crate::BacktestError;
use crate::input::{EventInput, RuleDesc, RuleHit, RuleId, RuleStatus, RuleTable, SideInput};
use crate::report::{
    Cell, CellSample, Count, LabelMetrics, LabelReport, Money, MoneyReport, NotCompared,
    REPORT_FORMAT, Report, RuleChanges, RuleReport, RuleSide, SampleEvent, SampleHit, Samples,
    ScoreReport, SideSummary, index,
};

/// The most sampled events per changed cell.
pub const MAX_SAMPLE_SIZE: usize = 1000;

/// One side of the comparison, as the report names it.
#[derive(Debug, Clone, Default)]
pub struct SideOptions {
    /// What this side is, in words (`recorded decisions`,
    /// `rules candidate/ + model fraud-gbt-2`).
    pub name: String,
    pub ruleset_version: Option<String>,
    pub model_version: Option<String>,
    /// Its rules, or `None` when not known (a recorded baseline whose rule
    /// set is not at hand).
    pub rules: Option<Vec<RuleDesc>>,
    /// The model outputs whose values [`SideInput::scores`] holds, in
    /// that order.
    pub score_names: Vec<String>,
}

/// What the report covers and how it samples.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The history read, as given.
    pub history: String,
    /// The time range asked for, ms since the epoch.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub baseline: SideOptions,
    pub candidate: SideOptions,
    /// The label source in words ([`crate::LabelField::describe`],
    /// [`crate::Chargebacks::describe`]); `None` for no label metrics.
    pub label: Option<String>,
    /// The amount field's name; `None` for no money figures.
    pub amount_field: Option<String>,
    /// Events sampled per changed cell, at most [`MAX_SAMPLE_SIZE`].
    pub sample_size: usize,
    pub seed: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            history: String::new(),
            from_ms: None,
            to_ms: None,
            baseline: SideOptions::default(),
            candidate: SideOptions::default(),
            label: None,
            amount_field: None,
            sample_size: 10,
            seed: 0,
        }
    }
}

/// How the pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Every event of the history was compared.
    Complete,
    /// The pass stopped early, for this reason; the report says so.
    Incomplete(String),
}

/// Handed to the progress hook every so many events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub events: u64,
}

/// The progress callback.
type ProgressHook = Box<dyn FnMut(Progress) + Send>;

/// Counts for one rule on one side.
#[derive(Debug, Clone, Copy, Default)]
struct RuleAcc {
    hits: u64,
    shadow_hits: u64,
    decided: u64,
    decided_alone: u64,
    /// Changed events it alone decided on this side.
    moved: u64,
}

#[derive(Debug, Clone, Default)]
struct ScoreAcc {
    events: u64,
    /// In units of 1e-9, so that the sum is exact whatever the order.
    sum: i128,
    histogram: [u64; 10],
}

#[derive(Debug, Clone, Default)]
struct SideAcc {
    outcomes: [u64; 3],
    degraded: u64,
    rules: Vec<RuleAcc>,
    /// [outcome][fraud as index]: legitimate at 0, fraud at 1.
    labels: [[u64; 2]; 3],
    scores: Vec<ScoreAcc>,
}

impl SideAcc {
    /// Counts one side of one event; returns the rule that alone decided
    /// it, if one did.
    fn add(&mut self, s: &SideInput<'_>) -> Option<RuleId> {
        self.outcomes[index(s.outcome)] += 1;
        self.degraded += u64::from(s.degraded);
        for h in s.hits {
            if let Some(r) = self.rules.get_mut(h.rule.index()) {
                r.hits += 1;
            }
        }
        for h in s.shadow_hits {
            if let Some(r) = self.rules.get_mut(h.rule.index()) {
                r.shadow_hits += 1;
            }
        }
        for (acc, v) in self.scores.iter_mut().zip(s.scores) {
            if v.is_finite() {
                acc.events += 1;
                acc.sum += (v * 1e9).round() as i128;
                acc.histogram[((v * 10.0).floor().clamp(0.0, 9.0)) as usize] += 1;
            }
        }
        let winner = s.hits.first().filter(|w| w.action == s.outcome)?;
        let r = self.rules.get_mut(winner.rule.index())?;
        r.decided += 1;
        let without = s.hits.get(1).map_or(Action::Approve, |h| h.action);
        if without != winner.action {
            r.decided_alone += 1;
            Some(winner.rule)
        } else {
            None
        }
    }
}

/// What a sample keeps of one event.
#[derive(Debug, Clone)]
struct Kept {
    hash: u64,
    event_id: Box<str>,
    timestamp_ms: i64,
    amount: Option<f64>,
    label: Option<bool>,
    baseline: Vec<(RuleHit, bool)>,
    candidate: Vec<(RuleHit, bool)>,
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        (self.hash, &self.event_id) == (other.hash, &other.event_id)
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.hash, &self.event_id).cmp(&(other.hash, &other.event_id))
    }
}

fn hits_of(s: &SideInput<'_>) -> Vec<(RuleHit, bool)> {
    s.hits
        .iter()
        .map(|h| (*h, false))
        .chain(s.shadow_hits.iter().map(|h| (*h, true)))
        .collect()
}

/// Builds a [`Report`] from one event at a time. See the module
/// documentation.
pub struct ReportBuilder {
    options: ReportOptions,
    table: RuleTable,
    base: SideAcc,
    cand: SideAcc,
    matrix: [u64; 9],
    amounts: [i128; 9],
    events: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    labelled: u64,
    unlabelled: u64,
    with_amount: u64,
    total_amount: i128,
    newly_denied: (u64, i128),
    newly_approved: (u64, i128),
    not_compared: Vec<(String, u64)>,
    /// Max-heaps of the smallest hashes seen, per cell.
    samples: [BinaryHeap<Kept>; 9],
    progress: Option<(u64, ProgressHook)>,
}

impl std::fmt::Debug for ReportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportBuilder")
            .field("events", &self.events)
            .finish()
    }
}

/// Amounts in units of 1e-4, so that sums are exact whatever the order.
fn amount_units(a: f64) -> Option<i128> {
    a.is_finite().then(|| (a * 1e4).round() as i128)
}

fn units_to_amount(u: i128) -> f64 {
    u as f64 / 1e4
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| round6(n as f64 / d as f64))
}

impl ReportBuilder {
    pub fn new(options: ReportOptions) -> Result<ReportBuilder, BacktestError> {
        if options.sample_size > MAX_SAMPLE_SIZE {
            return Err(BacktestError::Options(format!(
                "{} samples per cell is more than the {MAX_SAMPLE_SIZE} allowed",
                options.sample_size
            )));
        }
        if let (Some(f), Some(t)) = (options.from_ms, options.to_ms)
            && f >= t
        {
            return Err(BacktestError::Options(format!(
                "the time range starts at {} and ends at {}",
                format_rfc3339_ms(f),
                format_rfc3339_ms(t)
            )));
        }
        let table = RuleTable::new(
            options.baseline.rules.as_deref(),
            options.candidate.rules.as_deref(),
        )?;
        let side = |o: &SideOptions| SideAcc {
            scores: vec![ScoreAcc::default(); o.score_names.len()],
            ..SideAcc::default()
        };
        let mut b = ReportBuilder {
            base: side(&options.baseline),
            cand: side(&options.candidate),
            options,
            table,
            matrix: [0; 9],
            amounts: [0; 9],
            events: 0,
            first_ms: None,
            last_ms: None,
            labelled: 0,
            unlabelled: 0,
            with_amount: 0,
            total_amount: 0,
            newly_denied: (0, 0),
            newly_approved: (0, 0),
            not_compared: Vec::new(),
            samples: Default::default(),
            progress: None,
        };
        b.grow_rules();
        Ok(b)
    }

    /// The rules of both sides, to resolve names to ids once.
    pub fn rules(&self) -> &RuleTable {
        &self.table
    }

    /// The id of a rule met only in a recorded decision, added if new.
    pub fn intern_rule(&mut self, name: &str) -> RuleId {
        let id = self.table.intern(name);
        self.grow_rules();
        id
    }

    fn grow_rules(&mut self) {
        let n = self.table.len();
        if self.base.rules.len() < n {
            self.base.rules.resize(n, RuleAcc::default());
            self.cand.rules.resize(n, RuleAcc::default());
        }
    }

    /// Calls `hook` every `every` events (a progress bar).
    pub fn on_progress(&mut self, every: u64, hook: impl FnMut(Progress) + Send + 'static) {
        self.progress = Some((every.max(1), Box::new(hook)));
    }

    /// Events compared so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Counts `events` read but not compared, for `reason` (a dead letter's
    /// kind, a line that is not an event).
    pub fn not_compared(&mut self, reason: &str, events: u64) {
        match self.not_compared.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += events,
            None => self.not_compared.push((reason.to_owned(), events)),
        }
    }

    /// Counts one event.
    pub fn add(&mut self, ev: &EventInput<'_>) {
        let (b, c) = (index(ev.baseline.outcome), index(ev.candidate.outcome));
        let cell = b * 3 + c;
        self.events += 1;
        self.matrix[cell] += 1;
        self.first_ms = Some(
            self.first_ms
                .map_or(ev.timestamp_ms, |t| t.min(ev.timestamp_ms)),
        );
        self.last_ms = Some(
            self.last_ms
                .map_or(ev.timestamp_ms, |t| t.max(ev.timestamp_ms)),
        );
        let base_alone = self.base.add(&ev.baseline);
        let cand_alone = self.cand.add(&ev.candidate);
        match ev.label {
            Some(fraud) => {
                self.labelled += 1;
                self.base.labels[b][usize::from(fraud)] += 1;
                self.cand.labels[c][usize::from(fraud)] += 1;
            }
            None => self.unlabelled += 1,
        }
        let units = ev.amount.and_then(amount_units);
        if let Some(u) = units {
            self.with_amount += 1;
            self.total_amount += u;
            self.amounts[cell] += u;
        }
        if b != c {
            if let Some(r) = cand_alone {
                self.cand.rules[r.index()].moved += 1;
            }
            if let Some(r) = base_alone {
                self.base.rules[r.index()].moved += 1;
            }
            let u = units.unwrap_or(0);
            if ev.candidate.outcome == Action::Deny {
                self.newly_denied.0 += 1;
                self.newly_denied.1 += u;
            }
            if ev.candidate.outcome == Action::Approve {
                self.newly_approved.0 += 1;
                self.newly_approved.1 += u;
            }
            self.sample(cell, ev);
        }
        if let Some((every, hook)) = &mut self.progress
            && self.events.is_multiple_of(*every)
        {
            hook(Progress {
                events: self.events,
            });
        }
    }

    fn sample(&mut self, cell: usize, ev: &EventInput<'_>) {
        let k = self.options.sample_size;
        if k == 0 {
            return;
        }
        let mut h = XxHash64::with_seed(self.options.seed);
        h.write(ev.event_id.as_bytes());
        let hash = h.finish();
        let heap = &mut self.samples[cell];
        if heap.len() >= k {
            let top = heap.peek().expect("full");
            if (hash, ev.event_id) >= (top.hash, &*top.event_id) {
                return;
            }
            heap.pop();
        }
        heap.push(Kept {
            hash,
            event_id: ev.event_id.into(),
            timestamp_ms: ev.timestamp_ms,
            amount: ev.amount.filter(|a| a.is_finite()),
            label: ev.label,
            baseline: hits_of(&ev.baseline),
            candidate: hits_of(&ev.candidate),
        });
    }

    /// The report. An error when the options asked for labels and none of
    /// the events had one (a misspelt label field, most likely).
    pub fn finish(self, completion: Completion) -> Result<Report, BacktestError> {
        if let Some(source) = &self.options.label
            && self.events > 0
            && self.labelled == 0
        {
            return Err(BacktestError::Options(format!(
                "labels were asked for ({source}) but none of the {} events compared has one",
                self.events
            )));
        }
        let t = &self.table;
        let total = self.events;
        let share = |n: u64| {
            if total == 0 {
                0.0
            } else {
                round6(n as f64 / total as f64)
            }
        };
        let with_money = self.options.amount_field.is_some();
        let matrix = (0..9)
            .map(|i| Cell {
                baseline: Action::ALL[i / 3],
                candidate: Action::ALL[i % 3],
                events: self.matrix[i],
                share: share(self.matrix[i]),
                amount: with_money.then(|| units_to_amount(self.amounts[i])),
            })
            .collect();
        let changed: u64 = (0..9)
            .filter(|i| i / 3 != i % 3)
            .map(|i| self.matrix[i])
            .sum();

        let mut rules: Vec<RuleReport> = (0..t.len())
            .map(|i| {
                let id = RuleId(i as u32);
                let e = &t.entries[i];
                let side = |d: &Option<RuleDesc>, a: &RuleAcc| RuleSide {
                    action: d.as_ref().map(|d| d.action),
                    shadow: d.as_ref().map(|d| d.shadow),
                    hits: a.hits,
                    shadow_hits: a.shadow_hits,
                    decided: a.decided,
                    decided_alone: a.decided_alone,
                };
                RuleReport {
                    rule: e.name.to_string(),
                    status: t.status(id),
                    baseline: side(&e.baseline, &self.base.rules[i]),
                    candidate: side(&e.candidate, &self.cand.rules[i]),
                    moved_in: self.cand.rules[i].moved,
                    moved_out: self.base.rules[i].moved,
                }
            })
            .collect();
        rules.sort_by(|a, b| a.rule.cmp(&b.rule));
        let named = |s: RuleStatus| -> Vec<String> {
            rules
                .iter()
                .filter(|r| r.status == s)
                .map(|r| r.rule.clone())
                .collect()
        };
        let rule_changes = RuleChanges {
            added: named(RuleStatus::Added),
            removed: named(RuleStatus::Removed),
            changed: named(RuleStatus::Changed),
            unchanged: rules
                .iter()
                .filter(|r| r.status == RuleStatus::Unchanged)
                .count() as u64,
            unknown: !(t.baseline_known && t.candidate_known),
        };

        let labels = self.options.label.as_ref().map(|source| {
            let fraud: u64 = self.base.labels.iter().map(|l| l[1]).sum();
            let legit: u64 = self.base.labels.iter().map(|l| l[0]).sum();
            let metrics = |acc: &SideAcc| {
                let mut out: Vec<LabelMetrics> = Action::ALL
                    .iter()
                    .map(|a| {
                        let [l, f] = acc.labels[index(*a)];
                        metric(a.as_str(), f, l, fraud, legit)
                    })
                    .collect();
                let [lr, fr] = acc.labels[1];
                let [ld, fd] = acc.labels[2];
                out.push(metric("review_or_deny", fr + fd, lr + ld, fraud, legit));
                out
            };
            LabelReport {
                source: source.clone(),
                labelled: self.labelled,
                unlabelled: self.unlabelled,
                fraud,
                legit,
                baseline: metrics(&self.base),
                candidate: metrics(&self.cand),
            }
        });

        let money = self.options.amount_field.as_ref().map(|field| MoneyReport {
            field: field.clone(),
            events_with_amount: self.with_amount,
            total: units_to_amount(self.total_amount),
            newly_denied: Money {
                events: self.newly_denied.0,
                amount: units_to_amount(self.newly_denied.1),
            },
            newly_approved: Money {
                events: self.newly_approved.0,
                amount: units_to_amount(self.newly_approved.1),
            },
        });

        let mut scores = Vec::new();
        for (side, names, acc) in [
            ("baseline", &self.options.baseline.score_names, &self.base),
            ("candidate", &self.options.candidate.score_names, &self.cand),
        ] {
            for (name, s) in names.iter().zip(&acc.scores) {
                scores.push(ScoreReport {
                    side: side.into(),
                    name: name.clone(),
                    events: s.events,
                    mean: (s.events > 0).then(|| round6(s.sum as f64 / 1e9 / s.events as f64)),
                    histogram: s.histogram.to_vec(),
                });
            }
        }

        let mut cells = Vec::new();
        for (i, heap) in self.samples.iter().enumerate() {
            if self.matrix[i] == 0 || i / 3 == i % 3 {
                continue;
            }
            let mut kept: Vec<&Kept> = heap.iter().collect();
            kept.sort_by(|a, b| (a.timestamp_ms, &a.event_id).cmp(&(b.timestamp_ms, &b.event_id)));
            cells.push(CellSample {
                baseline: Action::ALL[i / 3],
                candidate: Action::ALL[i % 3],
                total: self.matrix[i],
                events: kept.iter().map(|k| sample_event(t, k)).collect(),
            });
        }

        let mut not_compared: Vec<NotCompared> = self
            .not_compared
            .iter()
            .map(|(reason, events)| NotCompared {
                reason: reason.clone(),
                events: *events,
            })
            .collect();
        not_compared.sort_by(|a, b| a.reason.cmp(&b.reason));

        let summary = |o: &SideOptions, a: &SideAcc| SideSummary {
            name: o.name.clone(),
            ruleset_version: o.ruleset_version.clone(),
            model_version: o.model_version.clone(),
            approve: a.outcomes[0],
            review: a.outcomes[1],
            deny: a.outcomes[2],
            degraded: a.degraded,
        };
        let (complete, incomplete) = match completion {
            Completion::Complete => (true, None),
            Completion::Incomplete(why) => (false, Some(why)),
        };
        Ok(Report {
            format: REPORT_FORMAT,
            complete,
            incomplete,
            history: self.options.history.clone(),
            from: self.options.from_ms.map(format_rfc3339_ms),
            to: self.options.to_ms.map(format_rfc3339_ms),
            events: total,
            first_event_at: self.first_ms.map(format_rfc3339_ms),
            last_event_at: self.last_ms.map(format_rfc3339_ms),
            not_compared,
            baseline: summary(&self.options.baseline, &self.base),
            candidate: summary(&self.options.candidate, &self.cand),
            matrix,
            changed: Count {
                events: changed,
                share: share(changed),
            },
            rule_changes,
            rules,
            labels,
            money,
            scores,
            samples: Samples {
                seed: self.options.seed,
                per_cell: self.options.sample_size,
                cells,
            },
        })
    }
}

fn metric(outcome: &str, fraud_here: u64, legit_here: u64, fraud: u64, legit: u64) -> LabelMetrics {
    LabelMetrics {
        outcome: outcome.to_owned(),
        events: fraud_here + legit_here,
        fraud: fraud_here,
        legit: legit_here,
        catch_rate: ratio(fraud_here, fraud),
        false_positive_rate: ratio(legit_here, legit),
        precision: ratio(fraud_here, fraud_here + legit_here),
    }
}

fn sample_event(t: &RuleTable, k: &Kept) -> SampleEvent {
    let winner = |hits: &[(RuleHit, bool)]| {
        hits.iter()
            .find(|(_, shadow)| !shadow)
            .map(|(h, _)| t.name(h.rule).to_owned())
    };
    let only = |a: &[(RuleHit, bool)], b: &[(RuleHit, bool)]| -> Vec<SampleHit> {
        a.iter()
            .filter(|x| !b.contains(x))
            .map(|(h, shadow)| SampleHit {
                rule: t.name(h.rule).to_owned(),
                action: h.action,
                shadow: *shadow,
            })
            .collect()
    };
    SampleEvent {
        event_id: k.event_id.to_string(),
        timestamp: format_rfc3339_ms(k.timestamp_ms),
        amount: k.amount,
        fraud: k.label,
        baseline_rule: winner(&k.baseline),
        candidate_rule: winner(&k.candidate),
        only_baseline: only(&k.baseline, &k.candidate),
        only_candidate: only(&k.candidate, &k.baseline),
    }
}
