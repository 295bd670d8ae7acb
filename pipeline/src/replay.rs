//! `verdict replay`: decide a JSON-lines file of events, in order.
//!
//! Every input line ends up in exactly one output: a decision for a valid
//! event, a dead-letter record (with its file and line) for an invalid one.
//! The summary checks that invariant and says so.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use verdict_core::{Action, Position};

use crate::config::EngineOverrides;
use crate::engine::Engine;

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

/// What a replay did; printed at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub decisions: u64,
    pub by_outcome: [u64; 3],
    pub dead_letters: u64,
}

impl ReplaySummary {
    /// True when every input line produced exactly one output record.
    pub fn nothing_lost(&self) -> bool {
        self.decisions + self.dead_letters == self.lines
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [approve, review, deny] = self.by_outcome;
        write!(
            f,
            "{} lines: {} decisions (approve {approve}, review {review}, deny {deny}) + {} dead letters = {} {}",
            self.lines,
            self.decisions,
            self.dead_letters,
            self.decisions + self.dead_letters,
            if self.nothing_lost() {
                "(nothing lost)"
            } else {
                "(MISMATCH: some input produced no output)"
            }
        )
    }
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

/// Events decided concurrently while later lines are read: enough for the
/// model to score full batches; outputs are still written in input order.
const WINDOW: usize = 256;

/// Decides every line of `input`, writing to `decisions` and `dead` in
/// input order. Lines are parsed and see their features in order; scoring
/// and rules run for up to [`WINDOW`] events at once.
pub async fn replay(
    engine: &Engine,
    mut input: impl BufRead,
    file_name: &str,
    decisions: &mut dyn Write,
    dead: &mut dyn Write,
) -> Result<ReplaySummary> {
    use futures::StreamExt;
    use futures::future::Either;
    use futures::stream::FuturesOrdered;

    let mut summary = ReplaySummary::default();
    let mut line = Vec::with_capacity(1024);
    let started = Instant::now();
    let mut last_progress = started;
    let mut window = FuturesOrdered::new();
    let mut write = |summary: &mut ReplaySummary, out| -> Result<()> {
        match out {
            Ok(decided) => {
                let decided: crate::engine::Decided = decided;
                summary.decisions += 1;
                summary.by_outcome[outcome_index(decided.decision.decision)] += 1;
                serde_json::to_writer(&mut *decisions, &decided.decision)?;
                decisions.write_all(b"\n")?;
            }
            Err(letter) => {
                summary.dead_letters += 1;
                serde_json::to_writer(&mut *dead, &letter)?;
                dead.write_all(b"\n")?;
            }
        }
        Ok(())
    };
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {file_name}"))?;
        if n == 0 {
            break;
        }
        summary.lines += 1;
        let read_at = Instant::now();
        let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line_no = summary.lines;
        let position = || Position::File {
            file: file_name.to_owned(),
            line: line_no,
        };
        window.push_back(match engine.prepare(bytes, position, read_at) {
            Ok(prepared) => Either::Left(async move { Ok(engine.finish(prepared).await) }),
            Err(letter) => Either::Right(std::future::ready(Err(letter))),
        });
        while window.len() >= WINDOW {
            let out = window.next().await.expect("the window is not empty");
            write(&mut summary, out)?;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let rate = summary.lines as f64 / started.elapsed().as_secs_f64();
            eprintln!("replay: {} lines, {rate:.0} events/s", summary.lines);
        }
    }
    while let Some(out) = window.next().await {
        write(&mut summary, out)?;
    }
    Ok(summary)
}

fn outcome_index(action: Action) -> usize {
    match action {
        Action::Approve => 0,
        Action::Review => 1,
        Action::Deny => 2,
    }
}
