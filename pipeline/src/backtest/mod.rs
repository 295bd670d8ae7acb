//! The engine pass of a backtest: every event of a history, in time
//! order, through the engine once — parsed, its point-in-time features
//! read and added, its model scores computed — and then decided by each
//! side on that very record, both decisions handed to the report.
//!
//! A side is a rule set and a model (the configured one, or another
//! manifest's: `--candidate-model`, `--baseline-model`); the baseline may
//! instead be the decision the log recorded for the event. Both sides see
//! the same event and point-in-time features, so the report compares
//! rules and models and nothing else, for the price of one feature pass;
//! a model both sides use is scored once. The engine must be
//! loaded for files ([`Engine::load_for_files`]): no wall-clock deadline,
//! so the same history gives the same report on every run.
//!
//! [`Job`] is a whole backtest as `verdict backtest` and `POST
//! /v1/backtest` ask for it: the sides loaded, the history opened, the
//! pass run (within a time limit, if given), the report finished.
//!
//! What it is not: the report's arithmetic and rendering are
//! `verdict-backtest`'s, reading the log is `verdict-history`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use verdict_backtest::{
    BacktestError, Chargebacks, Completion, EventInput, LabelField, LabelRule, Progress, Report,
    ReportBuilder, ReportOptions, RuleDesc, RuleHit, RuleId, SideBuffer, SideOptions,
};
use verdict_core::{Hit, Namespace, Value};
use verdict_history::{HistoryError, HistoryReader};
use verdict_history::{OnInvalid, ReaderOptions, ReaderStats};
use verdict_models::ModelOutcome;
use verdict_rules::{Evaluation, RuleSet};

use crate::engine::{Engine, Side, SideModel, StreamClock};

mod ahead;

use ahead::ReadAhead;

/// Where the ground truth comes from.
pub enum Labels {
    None,
    /// A field of each event.
    Field(LabelField),
    /// Chargebacks by `event_id`: listed is fraud, anything else is not.
    Chargebacks(Chargebacks),
}

/// What one side decides with.
pub struct SideSpec {
    pub rules: Arc<RuleSet>,
    /// `None`: the configured model.
    pub model: Option<Arc<SideModel>>,
}

impl SideSpec {
    fn side(&self) -> Side<'_> {
        Side {
            rules: &self.rules,
            model: self.model.as_deref(),
        }
    }
}

/// What a pass compares.
pub struct Sides {
    /// `None`: the decisions the log recorded.
    pub baseline: Option<SideSpec>,
    pub candidate: SideSpec,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Report(#[from] BacktestError),
    #[error("cannot start the thread that reads the history: {0}")]
    Thread(std::io::Error),
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

/// A side's scores (the champion's outputs, in order) into `scores`;
/// returns whether the side decided degraded.
fn side_scores(outcome: &Option<ModelOutcome>, scores: &mut Vec<f64>) -> bool {
    scores.clear();
    match outcome {
        Some(o) => {
            if let Some(s) = &o.champion {
                scores.extend(s.iter().map(|(_, _, v)| v));
            }
            o.degraded
        }
        None => false,
    }
}

/// Runs the pass over every event `reader` yields, into `builder`. The
/// score names of both sides' options must be the model's outputs, in
/// order (`model_outputs`). The history is read, parsed and labelled on a
/// thread of its own ([`ahead`]) while this one decides.
///
/// With `deadline`, the pass stops once it is reached (looked at every
/// 1,024 events) and says so: `Completion::Incomplete`.
pub async fn run(
    engine: &Engine,
    reader: HistoryReader,
    sides: &Sides,
    labels: Labels,
    amount_slot: Option<usize>,
    builder: &mut ReportBuilder,
    deadline: Option<(Instant, Duration)>,
) -> Result<Passed, PassError> {
    let reading = ahead::Reading {
        parser: engine.parser().clone(),
        records: sides.baseline.is_none(),
    };
    let mut ahead = ReadAhead::start(reader, reading, labels).map_err(PassError::Thread)?;
    let decided = decide(engine, &mut ahead, sides, amount_slot, builder, deadline).await;
    let finished = ahead.finish();
    let completion = decided?;
    if let (Completion::Complete, Labels::Field(f)) = (&completion, &finished.labels) {
        f.check()?;
    }
    Ok(Passed {
        completion,
        read: finished.stats,
    })
}

/// A pass that ran to its end or its time limit.
pub struct Passed {
    pub completion: Completion,
    /// What reading the history met.
    pub read: ReaderStats,
}

async fn decide(
    engine: &Engine,
    ahead: &mut ReadAhead,
    sides: &Sides,
    amount_slot: Option<usize>,
    builder: &mut ReportBuilder,
    deadline: Option<(Instant, Duration)>,
) -> Result<Completion, PassError> {
    let base_ids = sides.baseline.as_ref().map(|b| Ids::of(&b.rules, builder));
    let cand_ids = Ids::of(&sides.candidate.rules, builder);
    let specs: Vec<Side<'_>> = sides
        .baseline
        .iter()
        .chain([&sides.candidate])
        .map(SideSpec::side)
        .collect();
    let mut evals = vec![Evaluation::default(); specs.len()];
    let mut outcomes = vec![None; specs.len()];
    let (mut base, mut cand) = (SideBuffer::default(), SideBuffer::default());
    let mut scores: Vec<f64> = Vec::new();
    let mut read = 0u64;
    // The log is read as one stream, in its order.
    let mut clock = StreamClock::new();
    while let Some(batch) = ahead.next().await {
        let mut batch = batch?;
        let mut items = std::mem::take(&mut batch.items);
        for item in items.drain(..) {
            read += 1;
            if let Some((at, limit)) = deadline
                && read.is_multiple_of(1024)
                && Instant::now() >= at
            {
                return Ok(Completion::Incomplete(format!(
                    "stopped at the time limit of {} s, after {} events",
                    limit.as_secs(),
                    builder.events()
                )));
            }
            let event_id = batch.event_id(&item);
            let event = match item.parsed {
                Ok(event) => event,
                Err(kind) => {
                    builder.not_compared(kind.as_str(), 1);
                    continue;
                }
            };
            if sides.baseline.is_none() && item.recorded.is_none() {
                builder.not_compared("no recorded decision", 1);
                continue;
            }
            let prepared = engine.enrich(&mut clock, event, Instant::now(), Duration::ZERO);
            engine
                .evaluate_sides(&prepared, &specs, &mut evals, &mut outcomes)
                .await;
            let last = specs.len() - 1;
            let degraded = side_scores(&outcomes[last], &mut scores);
            fill(
                &mut cand,
                &evals[last],
                &cand_ids,
                &scores,
                degraded,
                builder,
            );
            match (&base_ids, &item.recorded) {
                (Some(ids), _) => {
                    let degraded = side_scores(&outcomes[0], &mut scores);
                    fill(&mut base, &evals[0], ids, &scores, degraded, builder)
                }
                (None, Some(rec)) => {
                    base.clear();
                    base.outcome = rec.decision;
                    for (rule, action) in batch.hits(rec) {
                        base.hits.push(RuleHit {
                            rule: builder.intern_rule(rule),
                            action,
                        });
                    }
                    for (rule, action) in batch.shadow_hits(rec) {
                        base.shadow_hits.push(RuleHit {
                            rule: builder.intern_rule(rule),
                            action,
                        });
                    }
                    base.scores.extend_from_slice(batch.scores(rec));
                    base.degraded = rec.degraded;
                }
                (None, None) => unreachable!("events without a recorded decision are passed over"),
            }
            let amount = amount_slot.and_then(|slot| match prepared.event.get(slot) {
                Value::Number(n) => Some(*n),
                _ => None,
            });
            builder.add(&EventInput {
                event_id,
                timestamp_ms: item.timestamp_ms,
                label: item.label,
                amount,
                baseline: base.input(),
                candidate: cand.input(),
            });
        }
        batch.items = items;
        ahead.recycle(batch);
    }
    Ok(Completion::Complete)
}

/// Where a backtest's ground truth comes from.
#[derive(Debug, Clone, Default)]
pub enum LabelSource {
    #[default]
    None,
    /// A field of each event, and which values are fraud.
    Field { field: String, rule: LabelRule },
    /// A CSV or Parquet file of the `event_id`s of fraud.
    Chargebacks(PathBuf),
}

/// A whole backtest: the history, the sides, the label, the report's
/// options. Every path is as given (resolve it before).
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// A file, a folder, a glob or an object-store URL.
    pub history: String,
    /// Object-store options of the history.
    pub store_options: BTreeMap<String, String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// The candidate's rule folder (default: the configured rules) …
    pub candidate_rules: Option<PathBuf>,
    /// … and how the report names it (default: `rules <folder>`).
    pub candidate_name: Option<String>,
    /// The candidate's model manifest (default: the configured model).
    pub candidate_model: Option<PathBuf>,
    /// The baseline's rules and model; neither: the recorded decisions.
    pub baseline_rules: Option<PathBuf>,
    pub baseline_model: Option<PathBuf>,
    pub label: LabelSource,
    /// The amount field: `None` for `amount` when the schema has it,
    /// `Some("none")` for no money.
    pub amount: Option<String>,
    pub samples: usize,
    pub seed: u64,
    /// Pass over JSON-lines lines that are not events, counting them.
    pub skip_invalid: bool,
    /// Stop (and say the report is incomplete) after this long.
    pub time_limit: Option<Duration>,
}

/// The decision log's location as a backtest reads it: an object-store
/// URL as written, a folder resolved against the configuration's folder.
pub fn history_location(config: &crate::config::Config, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else {
        config
            .resolve(Path::new(location))
            .to_string_lossy()
            .into_owned()
    }
}

/// A finished backtest: the report and what reading the history met.
pub struct Outcome {
    pub report: Report,
    pub read: ReaderStats,
    pub elapsed: Duration,
}

impl Job {
    /// Runs the backtest on `engine`, which must be loaded for files
    /// ([`Engine::load_for_files`]) and used for nothing else: the pass
    /// adds every event to its feature store. `progress` is called every
    /// 100,000 events with the events done and the history's row count
    /// (0 when unknown). Errors (a candidate that does not check, a
    /// history that cannot be read, an unknown label field) name what was
    /// wrong; no report is given then.
    pub async fn run(
        &self,
        engine: &Engine,
        progress: impl FnMut(Progress, u64) + Send + 'static,
    ) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let load_rules = |dir: &Path, what: &str| -> anyhow::Result<Arc<RuleSet>> {
            RuleSet::load_dir(dir, engine.catalogue())
                .map(Arc::new)
                .map_err(|errors| {
                    anyhow::anyhow!(
                        "the {what} rules in {} do not check:\n{errors}",
                        dir.display()
                    )
                })
        };
        let load_model = |path: &PathBuf| -> anyhow::Result<Arc<SideModel>> {
            engine.load_side_model(path).map(Arc::new)
        };
        let configured_rules = || {
            engine.serving_rules().context(
                "no rule folder is configured: give the side's rules (--candidate-rules, --baseline-rules)",
            )
        };
        let candidate = SideSpec {
            rules: match &self.candidate_rules {
                Some(dir) => load_rules(dir, "candidate")?,
                None => configured_rules()?,
            },
            model: self.candidate_model.as_ref().map(load_model).transpose()?,
        };
        let baseline = match (&self.baseline_rules, &self.baseline_model) {
            (None, None) => None,
            (rules, model) => Some(SideSpec {
                rules: match rules {
                    Some(dir) => load_rules(dir, "baseline")?,
                    None => configured_rules()?,
                },
                model: model.as_ref().map(load_model).transpose()?,
            }),
        };
        let options = ReaderOptions {
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            options: self.store_options.clone(),
            on_invalid: if self.skip_invalid {
                OnInvalid::Skip
            } else {
                OnInvalid::Fail
            },
            ..ReaderOptions::default()
        };
        let reader = HistoryReader::open(&self.history, &options)
            .with_context(|| format!("cannot read the history {}", self.history))?;
        // A recorded baseline falls back to the configured rules for
        // events the log did not decide (plain event files).
        let has_records = reader.files().any(|f| f.ends_with(".parquet"));
        let baseline = match baseline {
            Some(b) => Some(b),
            None if !has_records => Some(SideSpec {
                rules: engine.serving_rules().context(
                    "the history has no recorded decisions: give --baseline-rules, or configure rules",
                )?,
                model: None,
            }),
            None => None,
        };
        let labels = match &self.label {
            LabelSource::None => Labels::None,
            LabelSource::Field { field, rule } => {
                Labels::Field(LabelField::new(field, rule.clone())?)
            }
            LabelSource::Chargebacks(path) => Labels::Chargebacks(Chargebacks::load(path)?),
        };
        let amount_field = match self.amount.as_deref() {
            Some("none") => None,
            Some(f) => match event_slot(engine, f) {
                Some(_) => Some(f.to_owned()),
                None => bail!(
                    "the amount field `{f}` is not in the event schema: name one of its number fields, or `none` for no money"
                ),
            },
            None => event_slot(engine, "amount").map(|_| "amount".to_owned()),
        };
        let amount_slot = amount_field.as_deref().and_then(|f| event_slot(engine, f));
        let score_names: Vec<String> = engine
            .model_outputs()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let side = |spec: &SideSpec, name: String| SideOptions {
            name,
            ruleset_version: Some(spec.rules.version().to_string()),
            model_version: match &spec.model {
                Some(m) => Some(m.version().to_string()),
                None => engine.model_version().map(|v| v.to_string()),
            },
            rules: Some(describe(&spec.rules)),
            score_names: score_names.clone(),
        };
        let report_options = ReportOptions {
            history: self.history.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            baseline: match &baseline {
                Some(spec) => side(
                    spec,
                    side_name(
                        None,
                        self.baseline_rules.as_deref(),
                        self.baseline_model.as_deref(),
                    ),
                ),
                None => SideOptions {
                    name: "recorded decisions".into(),
                    score_names: score_names.clone(),
                    ..SideOptions::default()
                },
            },
            candidate: side(
                &candidate,
                side_name(
                    self.candidate_name.as_deref(),
                    self.candidate_rules.as_deref(),
                    self.candidate_model.as_deref(),
                ),
            ),
            label: match &labels {
                Labels::None => None,
                Labels::Field(f) => Some(f.describe()),
                Labels::Chargebacks(c) => Some(c.describe()),
            },
            amount_field,
            sample_size: self.samples,
            seed: self.seed,
        };
        let mut builder = ReportBuilder::new(report_options)?;
        let total = reader.rows_hint();
        let mut progress = progress;
        builder.on_progress(100_000, move |p| progress(p, total));
        let sides = Sides {
            baseline,
            candidate,
        };
        let deadline = self.time_limit.map(|d| (started + d, d));
        let passed = run(
            engine,
            reader,
            &sides,
            labels,
            amount_slot,
            &mut builder,
            deadline,
        )
        .await?;
        let report = builder.finish(passed.completion)?;
        Ok(Outcome {
            report,
            read: passed.read,
            elapsed: started.elapsed(),
        })
    }
}

/// How the report names a side.
fn side_name(name: Option<&str>, rules: Option<&Path>, model: Option<&Path>) -> String {
    let rules = name
        .map(str::to_owned)
        .or_else(|| rules.map(|r| format!("rules {}", r.display())));
    match (rules, model) {
        (Some(r), Some(m)) => format!("{r}, model {}", m.display()),
        (Some(r), None) => r,
        (None, Some(m)) => format!("model {}", m.display()),
        (None, None) => "the configured rules".into(),
    }
}
