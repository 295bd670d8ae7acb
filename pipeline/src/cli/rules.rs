//! `verdict rules`: the analysts' tools. `check` type-checks a rule folder
//! against the configured schema and names; `test` runs the test cases kept
//! beside the rules.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use verdict_core::{EventParser, Schema};
use verdict_rules::RuleSet;

/// Check or test a rule folder.
#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Parse and type-check every `*.rules` file of DIR against the event
    /// schema, the features and the model outputs of the configuration.
    /// Prints every error with its file, line, column and a hint; exits 1
    /// when there is one.
    Check(DirArgs),
    /// Run the test cases in DIR/tests/*.toml (an event, feature values and
    /// model scores, and the decision and hits they expect) and report each
    /// as PASS or FAIL; exits 1 when one fails.
    Test(DirArgs),
}

#[derive(Debug, clap::Args)]
pub struct DirArgs {
    /// The rule folder.
    pub dir: PathBuf,
    #[command(flatten)]
    pub engine: crate::config::EngineOverrides,
}

/// `verdict rules …`.
pub fn run(args: RulesArgs) -> Result<ExitCode> {
    let (RulesCommand::Check(a) | RulesCommand::Test(a)) = &args.command;
    let config = a.engine.load()?;
    let schema = Arc::new(
        Schema::load(&config.resolve(&config.engine.schema)).context("loading the event schema")?,
    );
    let catalogue = crate::engine::catalogue(&config, &schema)?;
    let set = match RuleSet::load_dir(&a.dir, &catalogue) {
        Ok(set) => set,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: the rule set does not check", a.dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    match &args.command {
        RulesCommand::Check(_) => {
            println!(
                "{}: {} rules in {} files check; version {}",
                a.dir.display(),
                set.rules().count(),
                set.files().len(),
                set.version()
            );
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test(_) => {
            let parser = EventParser::new(schema);
            let report = verdict_rules::testing::run_dir(&a.dir, &set, &parser, &catalogue);
            println!("{}", report.render());
            Ok(if report.failed() == 0 && !report.results.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
