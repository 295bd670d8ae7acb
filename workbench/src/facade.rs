//! An [`Engine`] for tests and for trying the workbench without the
//! service: it serves what the version store serves, counts hits and
//! backtests on generated records.
//!
//! The records are drawn from the catalogue's names and types with a fixed
//! seed (amounts, counts, model scores in plausible ranges; a few values
//! missing), so its figures are the real rule sets' decisions on made-up
//! traffic — the shape of [`BacktestReport`] with none of the configured
//! history. The service's engine answers the same calls from its own
//! counters and the backtest of the decision log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use verdict_core::{Action, Catalogue, EventParser, Namespace, Record, Schema, Value, ValueType};
use verdict_rules::{Evaluation, RuleSet};

use crate::engine::{Engine, HitCounts, Window};
use crate::files::RuleFiles;
use crate::store::VersionStore;

/// Records decided for the day's counts; the hour's are the first 1/24.
const DAY_RECORDS: usize = 4800;
/// Records a backtest decides.
const BACKTEST_RECORDS: usize = 5000;
/// Sample events per changed cell.
const SAMPLES: usize = 5;

/// The engine of tests and trials.
pub struct FacadeEngine {
    catalogue: Arc<Catalogue>,
    parser: Arc<EventParser>,
    store: Arc<dyn VersionStore>,
}

impl FacadeEngine {
    pub fn new(
        catalogue: Arc<Catalogue>,
        parser: Arc<EventParser>,
        store: Arc<dyn VersionStore>,
    ) -> FacadeEngine {
        FacadeEngine {
            catalogue,
            parser,
            store,
        }
    }
}

/// The catalogue of a configuration's files as the service builds it, for
/// the names only: the event schema, the names of `[[feature]]` entries and
/// the columns of `[[batch]]` queries of a features file, and a declared
/// names file (`[features]`, `[model]`).
pub fn catalogue_from(
    schema: &Path,
    features: Option<&Path>,
    declared: Option<&Path>,
) -> Result<(Arc<Catalogue>, Arc<EventParser>), String> {
    let schema = Arc::new(Schema::load(schema).map_err(|e| e.to_string())?);
    let mut c = Catalogue::from_schema(&schema);
    let read = |p: &Path| -> Result<toml::Table, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    if let Some(p) = features {
        let t = read(p)?;
        for f in t
            .get("feature")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let (Some(entity), Some(name)) = (
                f.get("entity").and_then(|v| v.as_str()),
                f.get("name").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            let ty = match (
                f.get("agg").and_then(|v| v.as_str()),
                f.get("field").and_then(|v| v.as_str()),
            ) {
                (Some("last"), Some(field)) => schema
                    .slot(field)
                    .map_or(ValueType::String, |s| schema.fields()[s].ty),
                _ => ValueType::Number,
            };
            c.add_feature(entity, name, ty);
        }
        for b in t
            .get("batch")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let (Some(entity), Some(sql), key) = (
                b.get("entity").and_then(|v| v.as_str()),
                b.get("sql").and_then(|v| v.as_str()),
                b.get("key").and_then(|v| v.as_str()).unwrap_or(""),
            ) else {
                continue;
            };
            let upper = sql.to_uppercase();
            let (Some(s), Some(f)) = (upper.find("SELECT"), upper.find(" FROM ")) else {
                continue;
            };
            for col in sql[s + 6..f]
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != key)
            {
                c.add_feature(entity, col, ValueType::Number);
            }
        }
    }
    if let Some(p) = declared {
        let t = read(p)?;
        let ty = |v: &toml::Value| {
            v.as_str()
                .and_then(ValueType::parse)
                .unwrap_or(ValueType::Number)
        };
        for (name, v) in t
            .get("features")
            .and_then(|v| v.as_table())
            .into_iter()
            .flatten()
        {
            if let Some((e, n)) = name.split_once('.') {
                c.add_feature(e, n, ty(v));
            }
        }
        for (name, v) in t
            .get("model")
            .and_then(|v| v.as_table())
            .into_iter()
            .flatten()
        {
            c.add_model_output(name, ty(v));
        }
    }
    Ok((Arc::new(c), Arc::new(EventParser::new(schema))))
}

/// Generated records: the event, feature and model arrays of each.
struct Traffic {
    records: Vec<[Vec<Value>; 3]>,
    ids: Vec<String>,
    labels: Vec<bool>,
    amounts: Vec<Option<f64>>,
}

fn traffic(catalogue: &Catalogue, n: usize, seed: u64) -> Traffic {
    let mut rng = StdRng::seed_from_u64(seed);
    let lens = [Namespace::Event, Namespace::Feature, Namespace::Model].map(|ns| catalogue.len(ns));
    let amount = catalogue
        .lookup("event.amount")
        .map(|e| e.slot.index as usize);
    let score = catalogue
        .entries()
        .iter()
        .find(|e| e.slot.ns == Namespace::Model && e.ty == ValueType::Number)
        .map(|e| e.slot.index as usize);
    let mut t = Traffic {
        records: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
        amounts: Vec::with_capacity(n),
    };
    for i in 0..n {
        let mut arrays = lens.map(|len| vec![Value::Missing; len]);
        for e in catalogue.entries() {
            let k = match e.slot.ns {
                Namespace::Event => 0,
                Namespace::Feature => 1,
                Namespace::Model => 2,
            };
            let path = e.path.as_str();
            let builtin = matches!(
                path,
                "event.event_id" | "event.event_type" | "event.timestamp"
            );
            if !builtin && rng.random_bool(0.05) {
                continue;
            }
            arrays[k][e.slot.index as usize] = value(&mut rng, path, e.ty, i);
        }
        let s = score.and_then(|s| match arrays[2][s] {
            Value::Number(x) => Some(x),
            _ => None,
        });
        t.labels.push(match s {
            Some(s) => rng.random_bool((s * s).clamp(0.0, 1.0) * 0.9),
            None => rng.random_bool(0.02),
        });
        t.amounts.push(amount.and_then(|a| match arrays[0][a] {
            Value::Number(x) => Some(x),
            _ => None,
        }));
        t.ids.push(format!("evt_{i:06}"));
        t.records.push(arrays);
    }
    t
}

fn value(rng: &mut StdRng, path: &str, ty: ValueType, i: usize) -> Value {
    let name = path.rsplit('.').next().unwrap_or(path);
    match ty {
        ValueType::Bool => Value::Bool(rng.random_bool(0.2)),
        ValueType::Timestamp => {
            Value::Timestamp(1_795_996_800_000 + rng.random_range(0..86_400_000))
        }
        ValueType::String => Value::String(
            match path {
                "event.event_id" => format!("evt_{i:06}"),
                "event.event_type" => ["payment", "payment", "loan_application", "login"]
                    [rng.random_range(0..4)]
                .to_owned(),
                "event.ip" => {
                    let hosting = ["45.32", "185.220", "103.152"];
                    if rng.random_bool(0.05) {
                        format!(
                            "{}.{}.{}",
                            hosting[rng.random_range(0..3)],
                            rng.random_range(0..256),
                            rng.random_range(0..256)
                        )
                    } else {
                        format!(
                            "{}.{}.{}.{}",
                            rng.random_range(1..224),
                            rng.random_range(0..256),
                            rng.random_range(0..256),
                            rng.random_range(0..256)
                        )
                    }
                }
                _ if name.ends_with("user_id") => format!("u_{:06}", rng.random_range(0..10_000)),
                _ => format!("{name}_{:03}", rng.random_range(0..40)),
            }
            .into(),
        ),
        ValueType::Number => Value::Number(match () {
            _ if path.starts_with("model.") => rng.random::<f64>().powi(3),
            _ if name.contains("amount") || name.contains("limit") => {
                (rng.random::<f64>() * 9.0).exp().round()
            }
            _ if name.contains("count") => {
                f64::from(rng.random_range(0..8u32)) * f64::from(u32::from(rng.random_bool(0.3)))
                    + f64::from(rng.random_range(0..3u32))
            }
            _ if name.contains("secs") => f64::from(rng.random_range(0..7200u32)),
            _ if name.contains("days") => f64::from(rng.random_range(0..2000u32)),
            _ if name.contains("months") => f64::from([6u32, 12, 24, 36][rng.random_range(0..4)]),
            _ => f64::from(rng.random_range(0..100u32)),
        }),
    }
}

fn decide(rules: &RuleSet, r: &[Vec<Value>; 3], eval: &mut Evaluation) {
    rules.evaluate(
        &Record {
            event: &r[0],
            features: &r[1],
            model: &r[2],
        },
        eval,
    );
}

impl Engine for FacadeEngine {
    fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue.clone()
    }

    fn event_parser(&self) -> Arc<EventParser> {
        self.parser.clone()
    }

    fn serving_version(&self) -> String {
        self.store
            .follower()
            .current()
            .map(|s| s.rules.version().to_string())
            .unwrap_or_default()
    }

    fn rule_hits(&self) -> HitCounts {
        let Some(served) = self.store.follower().current() else {
            return HitCounts::default();
        };
        let t = traffic(&self.catalogue, DAY_RECORDS, served.version.number);
        let mut counts = HitCounts::default();
        let mut eval = Evaluation::default();
        for (i, r) in t.records.iter().enumerate() {
            decide(&served.rules, r, &mut eval);
            let windows: &mut [&mut Window] = if i < DAY_RECORDS / 24 {
                &mut [&mut counts.hour, &mut counts.day]
            } else {
                &mut [&mut counts.day]
            };
            for w in windows.iter_mut() {
                w.events += 1;
                for h in eval.hits.iter().chain(&eval.shadow_hits) {
                    *w.hits.entry(h.rule.to_string()).or_default() += 1;
                }
            }
        }
        counts
    }

    fn backtest(&self, candidate: &Path) -> Result<serde_json::Value, String> {
        let cand = RuleSet::load_dir(candidate, &self.catalogue).map_err(|d| d.to_string())?;
        let cand_files = RuleFiles::read_dir(candidate).map_err(|e| e.to_string())?;
        let served = self.store.follower().current();
        let (base, base_files) = match &served {
            Some(s) => (s.rules.clone(), s.version.files.clone()),
            None => (
                Arc::new(cand_clone(candidate, &self.catalogue)?),
                cand_files.clone(),
            ),
        };
        let report = backtest(&self.catalogue, &base, &base_files, &cand, &cand_files, 42);
        serde_json::to_value(report).map_err(|e| e.to_string())
    }
}

fn cand_clone(dir: &Path, catalogue: &Catalogue) -> Result<RuleSet, String> {
    RuleSet::load_dir(dir, catalogue).map_err(|d| d.to_string())
}

/// The report a backtest answers (`POST /api/backtest` → `report`); the
/// browser reads it through the `BacktestReport` interface of
/// `webui/src/api.ts`.
#[derive(Debug, Serialize)]
pub struct BacktestReport {
    /// What was replayed, for people.
    pub history: String,
    pub events: u64,
    pub seed: u64,
    pub baseline_version: String,
    pub candidate_version: String,
    /// The nine cells baseline → candidate.
    pub matrix: Vec<Cell>,
    pub rules: Vec<RuleDelta>,
    pub labels: Option<Labels>,
    pub money: Option<Money>,
    /// For each changed cell, a few events.
    pub samples: Vec<Samples>,
}

#[derive(Debug, Serialize)]
pub struct Cell {
    pub baseline: Action,
    pub candidate: Action,
    pub count: u64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct RuleDelta {
    pub rule: String,
    /// `added`, `removed`, `changed` or `same`.
    pub status: &'static str,
    pub baseline_hits: u64,
    pub candidate_hits: u64,
    /// Events whose decision moved because of this rule alone.
    pub unique_contribution: u64,
}

#[derive(Debug, Serialize)]
pub struct Labels {
    pub field: String,
    pub positives: u64,
    pub outcomes: Vec<OutcomeMetrics>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeMetrics {
    pub outcome: Action,
    pub baseline: Metrics,
    pub candidate: Metrics,
}

#[derive(Debug, Serialize)]
pub struct Metrics {
    pub catch_rate: f64,
    pub false_positive_rate: f64,
    pub precision: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Money {
    pub field: String,
    pub newly_denied: f64,
    pub newly_approved: f64,
}

#[derive(Debug, Serialize)]
pub struct Samples {
    pub baseline: Action,
    pub candidate: Action,
    pub events: Vec<SampleEvent>,
}

#[derive(Debug, Serialize)]
pub struct SampleEvent {
    pub event_id: String,
    pub baseline_hits: Vec<String>,
    pub candidate_hits: Vec<String>,
}

fn idx(a: Action) -> usize {
    match a {
        Action::Approve => 0,
        Action::Review => 1,
        Action::Deny => 2,
    }
}

/// Decides generated records with both rule sets and compares.
pub fn backtest(
    catalogue: &Catalogue,
    base: &RuleSet,
    base_files: &RuleFiles,
    cand: &RuleSet,
    cand_files: &RuleFiles,
    seed: u64,
) -> BacktestReport {
    let t = traffic(catalogue, BACKTEST_RECORDS, seed);
    let mut cells = [[0u64; 3]; 3];
    let mut hits: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut samples: BTreeMap<(usize, usize), Vec<SampleEvent>> = BTreeMap::new();
    let mut conf = [[[0u64; 2]; 3]; 2]; // [set][outcome][label]
    let (mut denied, mut approved) = (0.0, 0.0);
    let (mut eb, mut ec) = (Evaluation::default(), Evaluation::default());
    for (i, r) in t.records.iter().enumerate() {
        decide(base, r, &mut eb);
        decide(cand, r, &mut ec);
        let (b, c) = (idx(eb.decision), idx(ec.decision));
        cells[b][c] += 1;
        let hb: BTreeSet<String> = eb
            .hits
            .iter()
            .chain(&eb.shadow_hits)
            .map(|h| h.rule.to_string())
            .collect();
        let hc: BTreeSet<String> = ec
            .hits
            .iter()
            .chain(&ec.shadow_hits)
            .map(|h| h.rule.to_string())
            .collect();
        for h in &hb {
            hits.entry(h.clone()).or_default().0 += 1;
        }
        for h in &hc {
            hits.entry(h.clone()).or_default().1 += 1;
        }
        let label = usize::from(t.labels[i]);
        conf[0][b][label] += 1;
        conf[1][c][label] += 1;
        if b != c {
            let only: Vec<&String> = hb.symmetric_difference(&hc).collect();
            if let [one] = only.as_slice() {
                hits.entry((*one).clone()).or_default().2 += 1;
            }
            if let Some(a) = t.amounts[i] {
                if c == 2 {
                    denied += a;
                }
                if c == 0 {
                    approved += a;
                }
            }
            let s = samples.entry((b, c)).or_default();
            if s.len() < SAMPLES {
                s.push(SampleEvent {
                    event_id: t.ids[i].clone(),
                    baseline_hits: eb.hits.iter().map(|h| h.rule.to_string()).collect(),
                    candidate_hits: ec.hits.iter().map(|h| h.rule.to_string()).collect(),
                });
            }
        }
    }
    let n = t.records.len() as u64;
    let text = |files: &RuleFiles| -> BTreeMap<String, String> {
        crate::summary::summarise(files)
            .0
            .into_iter()
            .map(|r| (r.name, r.text))
            .collect()
    };
    let (tb, tc) = (text(base_files), text(cand_files));
    for name in tb.keys().chain(tc.keys()) {
        hits.entry(name.clone()).or_default();
    }
    let rules = hits
        .into_iter()
        .map(|(rule, (b, c, u))| RuleDelta {
            status: match (tb.get(&rule), tc.get(&rule)) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(x), Some(y)) if x != y => "changed",
                _ => "same",
            },
            rule,
            baseline_hits: b,
            candidate_hits: c,
            unique_contribution: u,
        })
        .collect();
    let positives: u64 = conf[0].iter().map(|o| o[1]).sum();
    let negatives = n - positives;
    let metrics = |set: usize, o: usize| Metrics {
        catch_rate: ratio(conf[set][o][1], positives),
        false_positive_rate: ratio(conf[set][o][0], negatives),
        precision: (conf[set][o][0] + conf[set][o][1] > 0)
            .then(|| ratio(conf[set][o][1], conf[set][o][0] + conf[set][o][1])),
    };
    let actions = Action::ALL;
    BacktestReport {
        history: format!(
            "{n} generated events (seed {seed}); the service backtests its decision log"
        ),
        events: n,
        seed,
        baseline_version: base.version().to_string(),
        candidate_version: cand.version().to_string(),
        matrix: actions
            .iter()
            .flat_map(|&b| actions.iter().map(move |&c| (b, c)))
            .map(|(b, c)| Cell {
                baseline: b,
                candidate: c,
                count: cells[idx(b)][idx(c)],
                share: ratio(cells[idx(b)][idx(c)], n),
            })
            .collect(),
        rules,
        labels: Some(Labels {
            field: "label".into(),
            positives,
            outcomes: [Action::Review, Action::Deny]
                .into_iter()
                .map(|o| OutcomeMetrics {
                    outcome: o,
                    baseline: metrics(0, idx(o)),
                    candidate: metrics(1, idx(o)),
                })
                .collect(),
        }),
        money: t.amounts.iter().any(Option::is_some).then_some(Money {
            field: "amount".into(),
            newly_denied: denied,
            newly_approved: approved,
        }),
        samples: samples
            .into_iter()
            .map(|((b, c), events)| Samples {
                baseline: actions[b],
                candidate: actions[c],
                events,
            })
            .collect(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
