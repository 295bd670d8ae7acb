//! The `verdict` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use verdict::cli;
use verdict::logging::{self, LogFormat};
use verdict_gen::cli as gen_cli;

/// Verdict: a real-time risk-decision engine. It decides approve, review or
/// deny for each event (loan application, payment, login) from its
/// features, a model score and the analysts' rules.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decide a JSON-lines file of events, in order, writing decisions and
    /// dead letters.
    Replay(cli::replay::ReplayArgs),
    /// Compare a candidate rule set with a baseline over past traffic (a
    /// decision log or event files): outcome matrix, rules, labels, money.
    Backtest(Box<cli::backtest::BacktestArgs>),
    /// Generate labelled synthetic traffic (or its profile table).
    Gen(gen_cli::GenArgs),
    /// Consume events from Kafka, decide them and produce decisions and dead
    /// letters; offsets are committed only after their outputs are acknowledged.
    Run(cli::run::RunArgs),
    /// Check a rule folder, or run its test cases.
    Rules(cli::rules::RulesArgs),
    /// Check the feature definitions, or export point-in-time features of
    /// an event file as a training table.
    Features(cli::features::FeaturesArgs),
    /// Check a model (its manifest and ONNX file) before shipping it.
    Model(cli::model::ModelArgs),
    /// Run the whole pipeline on an embedded broker with generated traffic,
    /// with a live progress line and a summary.
    Demo(cli::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Replay(args) => cli::replay::run(args),
        Command::Backtest(args) => cli::backtest::run(*args),
        Command::Gen(args) => gen_cli::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Rules(args) => cli::rules::run(args),
        Command::Features(args) => cli::features::run(args),
        Command::Model(args) => cli::model::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
