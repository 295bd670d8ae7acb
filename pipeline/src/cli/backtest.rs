//! `verdict backtest`: what a candidate rule set or model would have
//! decided on past traffic, beside what was decided (see [`crate::backtest`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use verdict_backtest::{LabelRule, Progress, render};

use crate::backtest::{Job, LabelSource, Outcome};
use crate::config::EngineOverrides;
use crate::engine::Engine;

/// Compare a candidate rule set or model with a baseline over past events: the
/// outcome matrix, each rule's hits and unique contribution, catch and
/// false-positive rates with a label, money moved, and samples of every
/// changed cell.
///
/// The history is the decision log `verdict run` archives (Parquet), or
/// JSON-lines files of events (`verdict gen`'s, say). Every event goes
/// through the engine once, in time order: its features and model scores
/// are computed once and both sides decide on them, so the comparison is
/// exact. A side is a rule set and a model: the candidate's are
/// `--candidate-rules` and `--candidate-model`, each defaulting to the
/// configured one (give at least one). The baseline is `--baseline-rules`
/// and/or `--baseline-model` (the configured ones for what is not given),
/// else the decisions the log recorded, else (events without a recorded
/// decision) the configured rules and model. A side model must give the
/// configured model's outputs (`fraud_score`): rules read them by name.
/// No wall-clock deadline applies: the same history and candidate give the
/// same report on every run.
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
    /// The candidate rule folder (default: the configured rules).
    #[arg(long, required_unless_present = "candidate_model")]
    pub candidate_rules: Option<PathBuf>,
    /// The candidate model's manifest (default: the configured model).
    #[arg(long)]
    pub candidate_model: Option<PathBuf>,
    /// The baseline rule folder (default: the recorded decisions; for
    /// events without one, the configured rules).
    #[arg(long)]
    pub baseline_rules: Option<PathBuf>,
    /// The baseline model's manifest (default: the recorded decisions, or
    /// the configured model with --baseline-rules).
    #[arg(long)]
    pub baseline_model: Option<PathBuf>,
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
    let job = Job {
        history: args.history.clone(),
        store_options: config
            .history
            .as_ref()
            .map(|h| h.options.clone())
            .unwrap_or_default(),
        from_ms: time("from", &args.from)?,
        to_ms: time("to", &args.to)?,
        candidate_rules: args.candidate_rules.clone(),
        candidate_name: None,
        candidate_model: args.candidate_model.clone(),
        baseline_rules: args.baseline_rules.clone(),
        baseline_model: args.baseline_model.clone(),
        label: match (&args.label, &args.chargebacks) {
            (Some(field), _) => LabelSource::Field {
                field: field.clone(),
                rule: match &args.fraud_values {
                    Some(v) => LabelRule::FraudValues(v.clone()),
                    None => LabelRule::LegitValues(args.legit_values.clone()),
                },
            },
            (None, Some(path)) => LabelSource::Chargebacks(path.clone()),
            (None, None) => LabelSource::None,
        },
        amount: args.amount.clone(),
        samples: args.samples,
        seed: args.seed,
        skip_invalid: args.skip_invalid,
        time_limit: None,
    };
    let started = Instant::now();
    let progress = move |p: Progress, total: u64| {
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
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Outcome {
        report,
        read,
        elapsed,
    } = runtime.block_on(job.run(&engine, progress))?;
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "backtest: {} events compared in {secs:.1} s ({:.0} events/s)",
        report.events,
        report.events as f64 / secs.max(1e-9)
    );
    if let Some(first) = &read.first_skipped {
        eprintln!(
            "backtest: {} lines passed over, the first at {first}",
            read.skipped
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
