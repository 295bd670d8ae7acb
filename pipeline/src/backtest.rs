//! The engine pass of a backtest: every event of a history, in time
//! order, through the engine once — parsed, its point-in-time features
//! read and added, its model scores computed — and then decided by each
//! side on that very record, both decisions handed to the report.
//!
//! The baseline is either a rule set (`--baseline-rules`) or the decision
//! the log recorded for the event; the candidate is a rule set. Because
//! both sides see the same features and scores, the report compares rules
//! and nothing else, for the price of one feature pass. The engine must be
//! loaded for files ([`Engine::load_for_files`]): no wall-clock deadline,
//! so the same history gives the same report on every run.
//!
//! What it is not: the report's arithmetic and rendering are
//! `verdict-backtest`'s, reading the log is `verdict-history`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use verdict_backtest::{
    BacktestError, Chargebacks, Completion, EventInput, LabelField, ReportBuilder, RuleDesc,
    RuleHit, RuleId, SideBuffer,
};
use verdict_core::{Hit, Namespace, Position, Value};
use verdict_history::{HistoryError, HistoryReader};
use verdict_rules::{Evaluation, RuleSet};

use crate::engine::Engine;

/// Where the ground truth comes from.
pub enum Labels {
    None,
    /// A field of each event.
    Field(LabelField),
    /// Chargebacks by `event_id`: listed is fraud, anything else is not.
    Chargebacks(Chargebacks),
}

/// What a pass compares.
pub struct Sides {
    /// The baseline's rules; `None`: the decisions the log recorded.
    pub baseline: Option<Arc<RuleSet>>,
    pub candidate: Arc<RuleSet>,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Report(#[from] BacktestError),
}

/// The report's view of a rule set's rules.
pub fn describe(set: &RuleSet) -> Vec<RuleDesc> {
    set.rules()
        .map(|r| RuleDesc {
            name: r.name.to_string(),
            action: r.action,
            shadow: r.shadow,
            hash: r.fingerprint,
        })
        .collect()
}

/// The engine's event slot of `field` (`amount`), if the schema has one.
pub fn event_slot(engine: &Engine, field: &str) -> Option<usize> {
    engine
        .catalogue()
        .lookup(&format!("event.{field}"))
        .filter(|e| e.slot.ns == Namespace::Event)
        .map(|e| e.slot.index as usize)
}

/// A rule set's hits as report ids, resolved once per rule: keyed by the
/// address of the rule name a hit shares with its rule.
struct Ids(HashMap<usize, RuleId>);

impl Ids {
    fn of(set: &RuleSet, builder: &mut ReportBuilder) -> Ids {
        Ids(set
            .rules()
            .map(|r| (key(&r.name), builder.intern_rule(&r.name)))
            .collect())
    }

    fn push(&self, hits: &[Hit], builder: &mut ReportBuilder, out: &mut Vec<RuleHit>) {
        for h in hits {
            let rule = match self.0.get(&key(&h.rule)) {
                Some(id) => *id,
                None => builder.intern_rule(&h.rule),
            };
            out.push(RuleHit {
                rule,
                action: h.action,
            });
        }
    }
}

fn key(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}

fn fill(
    side: &mut SideBuffer,
    eval: &Evaluation,
    ids: &Ids,
    scores: &[f64],
    degraded: bool,
    builder: &mut ReportBuilder,
) {
    side.clear();
    side.outcome = eval.decision;
    ids.push(&eval.hits, builder, &mut side.hits);
    ids.push(&eval.shadow_hits, builder, &mut side.shadow_hits);
    side.scores.extend_from_slice(scores);
    side.degraded = degraded;
}

/// Runs the pass over every event `reader` yields, into `builder`. The
/// score names of both sides' options must be the model's outputs, in
/// order (`model_outputs`).
pub async fn run(
    engine: &Engine,
    reader: &mut HistoryReader,
    sides: &Sides,
    labels: &mut Labels,
    amount_slot: Option<usize>,
    builder: &mut ReportBuilder,
) -> Result<Completion, PassError> {
    let base_ids = sides.baseline.as_ref().map(|b| Ids::of(b, builder));
    let cand_ids = Ids::of(&sides.candidate, builder);
    let sets: Vec<&RuleSet> = sides
        .baseline
        .iter()
        .map(|b| &**b)
        .chain([&*sides.candidate])
        .collect();
    let mut evals = vec![Evaluation::default(); sets.len()];
    let (mut base, mut cand) = (SideBuffer::default(), SideBuffer::default());
    let mut scores: Vec<f64> = Vec::new();
    while let Some(ev) = reader.next()? {
        let position = || Position::File {
            file: ev.file.to_owned(),
            line: match ev.origin {
                verdict_history::Origin::Line(n) => n,
                verdict_history::Origin::Row(n) => n + 1,
            },
        };
        let prepared = match engine.prepare(ev.event, position, Instant::now()) {
            Ok(p) => p,
            Err(rejected) => {
                builder.not_compared(rejected.kind.as_str(), 1);
                continue;
            }
        };
        if sides.baseline.is_none() && ev.recorded.is_none() {
            builder.not_compared("no recorded decision", 1);
            continue;
        }
        let outcome = engine.evaluate_sides(&prepared, &sets, &mut evals).await;
        scores.clear();
        let degraded = match &outcome {
            Some(o) => {
                if let Some(s) = &o.champion {
                    scores.extend(s.iter().map(|(_, _, v)| v));
                }
                o.degraded
            }
            None => false,
        };
        let cand_eval = evals.last().expect("the candidate is evaluated");
        fill(&mut cand, cand_eval, &cand_ids, &scores, degraded, builder);
        match (&base_ids, &ev.recorded) {
            (Some(ids), _) => fill(&mut base, &evals[0], ids, &scores, degraded, builder),
            (None, Some(rec)) => {
                base.clear();
                base.outcome = rec.decision;
                for (hits, out) in [
                    (rec.hits(), &mut base.hits),
                    (rec.shadow_hits(), &mut base.shadow_hits),
                ] {
                    for h in hits.iter() {
                        out.push(RuleHit {
                            rule: builder.intern_rule(h.rule),
                            action: h.action,
                        });
                    }
                }
                base.scores.extend(rec.scores().map(|(_, v)| v));
                base.degraded = rec.degraded();
            }
            (None, None) => unreachable!("events without a recorded decision are passed over"),
        }
        let label = match labels {
            Labels::None => None,
            Labels::Field(f) => f.classify(ev.event_id, ev.event)?,
            Labels::Chargebacks(c) => c.label(ev.event_id),
        };
        let amount = amount_slot.and_then(|slot| match prepared.event.get(slot) {
            Value::Number(n) => Some(*n),
            _ => None,
        });
        builder.add(&EventInput {
            event_id: ev.event_id,
            timestamp_ms: ev.timestamp_ms,
            label,
            amount,
            baseline: base.input(),
            candidate: cand.input(),
        });
    }
    if let Labels::Field(f) = labels {
        f.check()?;
    }
    Ok(Completion::Complete)
}
