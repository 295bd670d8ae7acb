//! `verdict backtest`: what a candidate rule set would have decided on
//! past traffic, beside what was decided (see [`crate::backtest`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use verdict_backtest::{
    Chargebacks, LabelField, LabelRule, ReportBuilder, ReportOptions, SideOptions, render,
};
use verdict_history::{HistoryReader, OnInvalid, ReaderOptions};
use verdict_rules::RuleSet;

use crate::backtest::{self, Labels, Sides};
use crate::config::EngineOverrides;
use crate::engine::Engine;

/// Compare a candidate rule set with a baseline over past events: the
/// outcome matrix, each rule's hits and unique contribution, catch and
/// false-positive rates with a label, money moved, and samples of every
/// changed cell.
///
/// The history is the decision log `verdict run` archives (Parquet), or
/// JSON-lines files of events (`verdict gen`'s, say). Every event goes
/// through the engine once, in time order: its features and model scores
/// are computed once and both sides decide on them, so the comparison is
/// exact. The baseline is `--baseline-rules`, else the decisions the log
/// recorded, else (events without a recorded decision) the configured
/// rules. No wall-clock deadline applies: the same history and candidate
/// give the same report on every run.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BacktestArgs {
    /// The history: a file, a folder, a glob, or an object-store URL
    /// (`s3://bucket/decisions/`) of Parquet decision logs or JSON-lines
    /// event files.
    #[arg(long)]
    pub history: String,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// The candidate rule folder.
    #[arg(long)]
    pub candidate_rules: PathBuf,
    /// The baseline rule folder (default: the recorded decisions; for
    /// events without one, the configured rules).
    #[arg(long)]
    pub baseline_rules: Option<PathBuf>,
    /// The event field that holds the ground truth (`label`).
    #[arg(long)]
    pub label: Option<String>,
    /// Values of the label field that mark a legitimate event; any other
    /// value is fraud (the generator's `label` is `legit` or a scenario).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "legit",
        conflicts_with = "fraud_values"
    )]
    pub legit_values: Vec<String>,
    /// Values of the label field that mark fraud instead; any other value
    /// is legitimate.
    #[arg(long, value_delimiter = ',')]
    pub fraud_values: Option<Vec<String>>,
    /// Chargebacks: a CSV or Parquet file of `event_id`s, each fraud, every
    /// other event legitimate (instead of `--label`).
    #[arg(long, conflicts_with = "label")]
    pub chargebacks: Option<PathBuf>,
    /// The event field of the amount, for money newly denied and approved
    /// (default: `amount` when the schema has it; `none` for no money).
    #[arg(long)]
    pub amount: Option<String>,
    /// Sample events kept per changed cell.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// The samples' seed: the same seed, the same samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report as JSON here (`-` for standard output, instead of
    /// the table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Pass over lines of JSON-lines files that are not events (counted),
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub engine: EngineOverrides,
}

fn time(flag: &str, value: &Option<String>) -> Result<Option<i64>> {
    value
        .as_deref()
        .map(|s| {
            verdict_core::time::parse_rfc3339_ms(s).map_err(|e| {
                anyhow::anyhow!("--{flag} {s}: {e} (use RFC 3339: 2026-11-24T08:00:00Z)")
            })
        })
        .transpose()
}

pub fn run(args: BacktestArgs) -> Result<std::process::ExitCode> {
    let config = args.engine.load()?;
    let engine = Engine::load_for_files(&config, &std::env::current_exe()?)?;
    let load_rules = |dir: &PathBuf, what: &str| -> Result<Arc<RuleSet>> {
        RuleSet::load_dir(dir, engine.catalogue())
            .map(Arc::new)
            .map_err(|errors| {
                anyhow::anyhow!(
                    "the {what} rules in {} do not check:\n{errors}",
                    dir.display()
                )
            })
    };
    let candidate = load_rules(&args.candidate_rules, "candidate")?;
    let baseline = match &args.baseline_rules {
        Some(dir) => Some(load_rules(dir, "baseline")?),
        None => None,
    };
    let options = ReaderOptions {
        from_ms: time("from", &args.from)?,
        to_ms: time("to", &args.to)?,
        on_invalid: if args.skip_invalid {
            OnInvalid::Skip
        } else {
            OnInvalid::Fail
        },
        ..ReaderOptions::default()
    };
    let mut reader = HistoryReader::open(&args.history, &options)
        .with_context(|| format!("cannot read the history {}", args.history))?;
    // A recorded baseline falls back to the configured rules for events
    // the log did not decide (plain event files).
    let first_has_record = reader.files().any(|f| f.ends_with(".parquet"));
    let baseline = match baseline {
        Some(b) => Some(b),
        None if !first_has_record => Some(engine.serving_rules().context(
            "the history has no recorded decisions: give --baseline-rules, or configure rules",
        )?),
        None => None,
    };
    let mut labels = match (&args.label, &args.chargebacks) {
        (Some(field), _) => {
            let rule = match &args.fraud_values {
                Some(v) => LabelRule::FraudValues(v.clone()),
                None => LabelRule::LegitValues(args.legit_values.clone()),
            };
            Labels::Field(LabelField::new(field, rule)?)
        }
        (None, Some(path)) => Labels::Chargebacks(Chargebacks::load(path)?),
        (None, None) => Labels::None,
    };
    let amount_field = match args.amount.as_deref() {
        Some("none") => None,
        Some(f) => match backtest::event_slot(&engine, f) {
            Some(_) => Some(f.to_owned()),
            None => bail!("--amount {f}: the event schema has no field `{f}`"),
        },
        None => backtest::event_slot(&engine, "amount").map(|_| "amount".to_owned()),
    };
    let amount_slot = amount_field
        .as_deref()
        .and_then(|f| backtest::event_slot(&engine, f));
    let score_names: Vec<String> = engine
        .model_outputs()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let side = |name: String, set: Option<&Arc<RuleSet>>| SideOptions {
        name,
        ruleset_version: set.map(|s| s.version().to_string()),
        model_version: engine.model_version().map(|v| v.to_string()),
        rules: set.map(|s| backtest::describe(s)),
        score_names: score_names.clone(),
    };
    let report_options = ReportOptions {
        history: args.history.clone(),
        from_ms: options.from_ms,
        to_ms: options.to_ms,
        baseline: match (&baseline, &args.baseline_rules) {
            (Some(set), Some(dir)) => side(format!("rules {}", dir.display()), Some(set)),
            (Some(set), None) => side("the configured rules".into(), Some(set)),
            (None, _) => SideOptions {
                name: "recorded decisions".into(),
                score_names: score_names.clone(),
                ..SideOptions::default()
            },
        },
        candidate: side(
            format!("rules {}", args.candidate_rules.display()),
            Some(&candidate),
        ),
        label: match &labels {
            Labels::None => None,
            Labels::Field(f) => Some(f.describe()),
            Labels::Chargebacks(c) => Some(c.describe()),
        },
        amount_field,
        sample_size: args.samples,
        seed: args.seed,
    };
    let mut builder = ReportBuilder::new(report_options)?;
    let total = reader.rows_hint();
    let started = Instant::now();
    builder.on_progress(100_000, move |p| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let rate = p.events as f64 / secs;
        if total > 0 {
            eprintln!(
                "backtest: {} of about {total} events ({:.0}%), {rate:.0} events/s",
                p.events,
                100.0 * p.events as f64 / total as f64
            );
        } else {
            eprintln!("backtest: {} events, {rate:.0} events/s", p.events);
        }
    });
    let sides = Sides {
        baseline,
        candidate,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let completion = runtime.block_on(backtest::run(
        &engine,
        &mut reader,
        &sides,
        &mut labels,
        amount_slot,
        &mut builder,
    ))?;
    let events = builder.events();
    let report = builder.finish(completion)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "backtest: {events} events compared in {secs:.1} s ({:.0} events/s)",
        events as f64 / secs.max(1e-9)
    );
    if let Some(first) = &reader.stats().first_skipped {
        eprintln!(
            "backtest: {} lines passed over, the first at {first}",
            reader.stats().skipped
        );
    }
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = args.json.as_ref().filter(|_| !json_to_stdout) {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, render::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("backtest: the report is in {}", path.display());
    }
    let mut out = std::io::stdout().lock();
    if json_to_stdout {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", render::text::render(&report))?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
