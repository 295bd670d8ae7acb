//! `verdict replay`: decide a JSON-lines file of events, in order (see
//! [`crate::file`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::EngineOverrides;
use crate::engine::Engine;
use crate::file::replay;

/// Decide every event of a JSON-lines file and write decisions and dead
/// letters, one JSON object per line each.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Events, one JSON object per line (`-` for standard input).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Where decisions go (`-` for standard output).
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// Where rejected events go, with their line number and the reason.
    #[arg(long)]
    pub dead_letter: PathBuf,
    #[command(flatten)]
    pub engine: EngineOverrides,
}

fn open_output(path: &Path) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::new(io::stdout().lock())));
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(BufWriter::with_capacity(1 << 16, file)))
}

pub fn run(args: ReplayArgs) -> Result<std::process::ExitCode> {
    let config = args.engine.load()?;
    let engine = Engine::load_for_files(&config, &std::env::current_exe()?)?;
    let input: Box<dyn BufRead> = if args.input == Path::new("-") {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open events file {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut decisions = open_output(&args.output)?;
    let mut dead = open_output(&args.dead_letter)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(replay(
        &engine,
        input,
        &args.input.display().to_string(),
        &mut decisions,
        &mut dead,
    ))?;
    decisions.flush()?;
    dead.flush()?;
    eprintln!("replay: {summary}");
    if !summary.nothing_lost() {
        bail!("replay lost events: {summary}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
