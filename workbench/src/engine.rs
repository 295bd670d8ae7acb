//! What the workbench needs from the engine, and the checks it runs with
//! the rules crate itself.
//!
//! The service implements [`Engine`]; checking a draft and running its test
//! cases are done here with `verdict-rules` directly — the same checker,
//! diagnostics and test runner as `verdict rules check` and `verdict rules
//! test` — against the engine's catalogue and event parser, so the browser
//! never reimplements the language.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use verdict_core::{Catalogue, EventParser, Namespace};
use verdict_rules::{Diagnostics, RuleSet};

use crate::files::RuleFiles;

/// The engine, as the workbench sees it.
pub trait Engine: Send + Sync + 'static {
    /// Every name rules may use (event fields, features, model outputs):
    /// drafts are checked against it and the editor completes from it.
    fn catalogue(&self) -> Arc<Catalogue>;
    /// The parser of the service's events, for the test cases' events.
    fn event_parser(&self) -> Arc<EventParser>;
    /// The content hash of the rule set deciding events now, as decisions
    /// carry it.
    fn serving_version(&self) -> String;
    /// How often each serving rule fired over the last hour and day, from
    /// the service's own counters.
    fn rule_hits(&self) -> HitCounts;
    /// Backtests the candidate rule folder `candidate` (written by the
    /// workbench, checked) against the configured history; answers the
    /// report as JSON, or what went wrong. Runs on a blocking thread; the
    /// workbench bounds its time.
    fn backtest(&self, candidate: &Path) -> Result<serde_json::Value, String>;
}

/// Hit counts of the serving rules over two windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HitCounts {
    pub hour: Window,
    pub day: Window,
}

/// What one window saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Events decided.
    pub events: u64,
    /// Hits (shadow hits included) by rule name.
    pub hits: std::collections::BTreeMap<String, u64>,
}

/// One diagnostic as the editor shows it: `verdict rules check`'s message,
/// place and hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftDiagnostic {
    pub message: String,
    pub help: Option<String>,
    /// The file, relative to the rule set (`10-block.rules`); `None` for an
    /// error about the whole set.
    pub file: Option<String>,
    /// 1-based line and column (in characters), and how many characters the
    /// caret covers; 0 without a file.
    pub line: usize,
    pub column: usize,
    pub width: usize,
    pub line_text: String,
    /// The diagnostic as the command line prints it.
    pub rendered: String,
}

/// A draft's files written to a folder and checked.
pub struct Checked {
    pub rules: RuleSet,
    pub dir: tempfile::TempDir,
}

/// Checks a rule set's files exactly as `verdict rules check` checks a
/// folder. Blocking (it writes a temporary folder): call it on a blocking
/// thread.
pub fn check(files: &RuleFiles, catalogue: &Catalogue) -> Result<Checked, Vec<DraftDiagnostic>> {
    if let Err(e) = files.validate() {
        return Err(vec![general(e.to_string())]);
    }
    let dir = match tempfile::Builder::new().prefix("verdict-draft-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Err(vec![general(format!(
                "cannot make a folder for the draft: {e}"
            ))]);
        }
    };
    if let Err(e) = files.write_to(dir.path()) {
        return Err(vec![general(format!("cannot write the draft: {e}"))]);
    }
    match RuleSet::load_dir(dir.path(), catalogue) {
        Ok(rules) => Ok(Checked { rules, dir }),
        Err(diags) => Err(to_draft(&diags, dir.path())),
    }
}

fn general(message: String) -> DraftDiagnostic {
    DraftDiagnostic {
        rendered: format!("error: {message}\n"),
        message,
        help: None,
        file: None,
        line: 0,
        column: 0,
        width: 0,
        line_text: String::new(),
    }
}

/// Diagnostics with the temporary folder's name replaced by paths relative
/// to the rule set, so the analyst sees `10-block.rules:3:7`.
fn to_draft(diags: &Diagnostics, dir: &Path) -> Vec<DraftDiagnostic> {
    let prefix = format!("{}/", dir.display());
    let bare = dir.display().to_string();
    let clean = |s: &str| s.replace(&prefix, "").replace(&bare, "the draft");
    diags
        .iter()
        .map(|d| {
            let rel = d.at.as_ref().map(|at| {
                at.file
                    .strip_prefix(dir)
                    .unwrap_or(&at.file)
                    .to_string_lossy()
                    .into_owned()
            });
            DraftDiagnostic {
                message: clean(&d.message),
                help: d.help.as_deref().map(clean),
                line: d.at.as_ref().map_or(0, |a| a.line),
                column: d.at.as_ref().map_or(0, |a| a.column),
                width: d.at.as_ref().map_or(0, |a| a.width),
                line_text: d
                    .at
                    .as_ref()
                    .map(|a| a.line_text.clone())
                    .unwrap_or_default(),
                rendered: clean(&d.to_string()),
                file: rel,
            }
        })
        .collect()
}

/// One test case's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseOutcome {
    /// The case file, relative to the rule set (`tests/blocks.toml`).
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// What differed, when it failed.
    pub failure: Option<String>,
}

/// Runs the checked draft's test cases (`tests/*.toml`) as `verdict rules
/// test` does. Blocking.
pub fn run_tests(
    checked: &Checked,
    parser: &EventParser,
    catalogue: &Catalogue,
) -> Vec<CaseOutcome> {
    let report =
        verdict_rules::testing::run_dir(checked.dir.path(), &checked.rules, parser, catalogue);
    let dir = checked.dir.path();
    report
        .results
        .into_iter()
        .map(|r| CaseOutcome {
            file: r
                .file
                .strip_prefix(dir)
                .unwrap_or(&r.file)
                .to_string_lossy()
                .into_owned(),
            name: r.name,
            passed: r.failure.is_none(),
            failure: r.failure.map(|f| {
                f.replace(&format!("{}/", dir.display()), "")
                    .replace(&dir.display().to_string(), "the draft")
            }),
        })
        .collect()
}

/// What the editor completes: names by namespace, with their types, plus
/// the functions of the language and the keywords.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogueView {
    pub names: Vec<NameView>,
    pub functions: Vec<&'static str>,
    pub keywords: Vec<&'static str>,
}

/// One name of the catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct NameView {
    /// `event.amount`, `feature.user.txn_count_1h`, `model.fraud_score`.
    pub path: String,
    /// `event`, `feature` or `model`.
    pub namespace: &'static str,
    /// `number`, `string`, `bool` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// The functions of the rules language (docs/rules-dsl.md), with their
/// arities as the checker accepts them.
pub const FUNCTIONS: [&str; 11] = [
    "is_missing",
    "coalesce",
    "abs",
    "min",
    "max",
    "lower",
    "starts_with",
    "contains",
    "matches",
    "hour_of_day",
    "days_between",
];

/// The keywords of the rules language.
pub const KEYWORDS: [&str; 17] = [
    "rule", "list", "from", "priority", "shadow", "approve", "review", "deny", "if", "reason",
    "and", "or", "not", "in", "true", "false", "event",
];

impl CatalogueView {
    pub fn of(catalogue: &Catalogue) -> CatalogueView {
        let names = catalogue
            .entries()
            .iter()
            .map(|e| NameView {
                path: e.path.clone(),
                namespace: match e.slot.ns {
                    Namespace::Event => "event",
                    Namespace::Feature => "feature",
                    Namespace::Model => "model",
                },
                ty: e.ty.to_string(),
            })
            .chain(
                // The fields every event has need no declaration.
                [
                    ("event.event_id", "string"),
                    ("event.event_type", "string"),
                    ("event.timestamp", "timestamp"),
                ]
                .into_iter()
                .filter(|(p, _)| catalogue.lookup(p).is_none())
                .map(|(p, t)| NameView {
                    path: p.into(),
                    namespace: "event",
                    ty: t.into(),
                }),
            )
            .collect();
        CatalogueView {
            names,
            functions: FUNCTIONS.to_vec(),
            keywords: KEYWORDS.to_vec(),
        }
    }
}
