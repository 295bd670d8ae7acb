//! `verdict model check`: a data scientist's check before shipping a model,
//! run the way the service vets every model file (see
//! [`crate::engine::vetting`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::engine::vetting::{RUNTIME_MISSING, VET_TIMEOUT, Vetting, check_here, vet};

/// `verdict model`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Check a model before shipping it: load the ONNX file its manifest
    /// names, check its tensors against the manifest, and score a probe row
    /// (every input missing). Runs the load in a child process, so a file
    /// that crashes ONNX Runtime is reported, not fatal. Exit 0 when the
    /// model would be served, 1 when not, 3 when ONNX Runtime is missing.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The model's manifest (`*.manifest.toml`).
    pub manifest: PathBuf,
    /// ONNX Runtime's library (else ORT_DYLIB_PATH, else .verdict/venv).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Load in this process (what the vetting child runs).
    #[arg(long, hide = true)]
    pub in_process: bool,
}

/// `verdict model ...`.
pub fn run(args: ModelArgs) -> Result<ExitCode> {
    let ModelCommand::Check(args) = args.command;
    if args.in_process {
        return Ok(check_here(&args.manifest, args.ort_library.as_deref()));
    }
    let exe = std::env::current_exe()?;
    match vet(
        &exe,
        &args.manifest,
        args.ort_library.as_deref(),
        VET_TIMEOUT,
    ) {
        Vetting::Passed { version, parity } => {
            println!("{}: ok, version {version}", args.manifest.display());
            if let Some(parity) = parity {
                println!("native evaluator against ONNX Runtime: {parity}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Vetting::Refused(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::FAILURE)
        }
        Vetting::RuntimeMissing => {
            eprintln!("error: ONNX Runtime could not be loaded; see scripts/ensure-python.sh");
            Ok(ExitCode::from(RUNTIME_MISSING as u8))
        }
    }
}
