//! The analysts' test cases: an event, feature values and model scores, and
//! the decision and hits they expect.
//!
//! Cases live in `tests/*.toml` beside the rules:
//!
//! ```toml
//! [[case]]
//! name = "blocked IP is denied"
//! event = { event_type = "payment", user_id = "u_1", ip = "203.0.113.9", amount = 120.0 }
//! features = { "user.txn_count_1h" = 2 }
//! model = { fraud_score = 0.10 }
//! expect = { decision = "deny", hits = ["blocked_ip"], shadow_hits = [] }
//! ```
//!
//! `event_id` and `timestamp` may be left out (the case name and
//! 2026-11-24T12:00:00Z are used). `hits` lists every hit winner first;
//! `shadow_hits`, when given, is checked too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use verdict_core::{Catalogue, EventParser, Namespace, Record, Value, ValueType};

use crate::{Evaluation, RuleSet};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    event: toml::Table,
    #[serde(default)]
    features: BTreeMap<String, toml::Value>,
    #[serde(default)]
    model: BTreeMap<String, toml::Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: String,
    #[serde(default)]
    hits: Vec<String>,
    shadow_hits: Option<Vec<String>>,
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// `None` when it passed; what differed otherwise.
    pub failure: Option<String>,
}

/// Every case of a folder.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// The pass/fail report for a person.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            match &r.failure {
                None => {
                    let _ = writeln!(s, "PASS  {}  {}", r.file.display(), r.name);
                }
                Some(why) => {
                    let _ = writeln!(s, "FAIL  {}  {}", r.file.display(), r.name);
                    for line in why.lines() {
                        let _ = writeln!(s, "        {line}");
                    }
                }
            }
        }
        let _ = write!(
            s,
            "{} passed, {} failed, {} cases",
            self.passed(),
            self.failed(),
            self.results.len()
        );
        s
    }
}

/// Runs every `*.toml` case file in `dir/tests` against `rules`. A file
/// that cannot be read or parsed is one failed result.
pub fn run_dir(dir: &Path, rules: &RuleSet, parser: &EventParser, catalogue: &Catalogue) -> Report {
    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map(|e| {
            e.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut report = Report::default();
    if files.is_empty() {
        report.results.push(CaseResult {
            file: tests.clone(),
            name: "(no test files)".into(),
            failure: Some(format!("no *.toml test files in {}", tests.display())),
        });
    }
    for file in files {
        run_file(&file, rules, parser, catalogue, &mut report);
    }
    report
}

fn run_file(
    file: &Path,
    rules: &RuleSet,
    parser: &EventParser,
    catalogue: &Catalogue,
    report: &mut Report,
) {
    let parsed = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|t| {
            toml::from_str::<CaseFile>(&t).map_err(|e| format!("not a valid case file: {e}"))
        });
    let cases = match parsed {
        Ok(c) => c.case,
        Err(why) => {
            report.results.push(CaseResult {
                file: file.to_path_buf(),
                name: "(file)".into(),
                failure: Some(why),
            });
            return;
        }
    };
    let mut eval = Evaluation::default();
    for case in cases {
        let failure = run_case(&case, rules, parser, catalogue, &mut eval).err();
        report.results.push(CaseResult {
            file: file.to_path_buf(),
            name: case.name,
            failure,
        });
    }
}

fn to_value(v: &toml::Value, ty: ValueType, name: &str) -> Result<Value, String> {
    Ok(match (ty, v) {
        (ValueType::Number, toml::Value::Integer(i)) => Value::Number(*i as f64),
        (ValueType::Number, toml::Value::Float(f)) => Value::Number(*f),
        (ValueType::String, toml::Value::String(s)) => Value::String(s.as_str().into()),
        (ValueType::Bool, toml::Value::Boolean(b)) => Value::Bool(*b),
        (ValueType::Timestamp, toml::Value::String(s)) => {
            Value::Timestamp(verdict_core::time::parse_rfc3339_ms(s)?)
        }
        (ValueType::Timestamp, toml::Value::Integer(ms)) => Value::Timestamp(*ms),
        _ => return Err(format!("`{name}` is a {ty}, but the case gives {v}")),
    })
}

fn run_case(
    case: &Case,
    rules: &RuleSet,
    parser: &EventParser,
    catalogue: &Catalogue,
    eval: &mut Evaluation,
) -> Result<(), String> {
    let mut event = case.event.clone();
    event
        .entry("event_id")
        .or_insert_with(|| toml::Value::String(case.name.clone()));
    event
        .entry("timestamp")
        .or_insert_with(|| toml::Value::String("2026-11-24T12:00:00Z".into()));
    let json = serde_json::to_vec(&event).map_err(|e| format!("the event: {e}"))?;
    let event = parser
        .parse(&json)
        .map_err(|r| format!("the event is not valid: {r}"))?;
    let mut features = vec![Value::Missing; catalogue.len(Namespace::Feature)];
    let mut model = vec![Value::Missing; catalogue.len(Namespace::Model)];
    for (ns, given, values) in [
        ("feature", &case.features, &mut features),
        ("model", &case.model, &mut model),
    ] {
        for (name, v) in given {
            let path = format!("{ns}.{name}");
            let entry = catalogue.lookup(&path).ok_or_else(|| {
                let hint = catalogue
                    .suggest(&path)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                format!("unknown {ns} `{path}`{hint}")
            })?;
            values[entry.slot.index as usize] = to_value(v, entry.ty, &path)?;
        }
    }
    let record = Record {
        event: event.values(),
        features: &features,
        model: &model,
    };
    rules.evaluate(&record, eval);
    let mut diff = String::new();
    if eval.decision.as_str() != case.expect.decision {
        let _ = writeln!(
            diff,
            "decision: expected {}, got {}",
            case.expect.decision,
            eval.decision.as_str()
        );
    }
    let got: Vec<&str> = eval.hits.iter().map(|h| &*h.rule).collect();
    if got != case.expect.hits {
        let _ = writeln!(diff, "hits: expected {:?}, got {:?}", case.expect.hits, got);
    }
    if let Some(want) = &case.expect.shadow_hits {
        let got: Vec<&str> = eval.shadow_hits.iter().map(|h| &*h.rule).collect();
        if &got != want {
            let _ = writeln!(diff, "shadow hits: expected {want:?}, got {got:?}");
        }
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(diff.trim_end().to_owned())
    }
}
