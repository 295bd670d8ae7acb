//! JSON-lines files as a source and a sink: every line of an input is
//! decided in order, its decision or dead letter written as one line to
//! the matching output. `verdict replay`, `verdict features export` and
//! backtests read files this way.
//!
//! Every input line ends up in exactly one output: a decision for a valid
//! event, a dead-letter record (with its file and line) for an invalid one.
//! The summary checks that invariant and says so.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use verdict_core::{Action, Position};

use crate::engine::{Engine, Output, StreamClock};
use crate::window::Window;

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
    let mut summary = ReplaySummary::default();
    let mut line = Vec::with_capacity(1024);
    let started = Instant::now();
    let mut last_progress = started;
    // The file is one stream, in line order.
    let mut clock = StreamClock::new();
    let mut window = Window::new(WINDOW);
    let mut json = Vec::with_capacity(1024);
    let mut write = |summary: &mut ReplaySummary, output: Output| -> Result<()> {
        match output {
            Output::Decision(decided) => {
                summary.decisions += 1;
                summary.by_outcome[outcome_index(decided.decision.decision)] += 1;
                json.clear();
                decided.decision.write_json(&mut json);
                json.push(b'\n');
                decisions.write_all(&json)?;
            }
            Output::DeadLetter(rejected) => {
                summary.dead_letters += 1;
                serde_json::to_writer(&mut *dead, &rejected.letter)?;
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
        window.push(
            (),
            engine
                .prepare(&mut clock, bytes, position, read_at)
                .map(|p| engine.finish(p)),
        );
        while window.is_full() {
            let ((), output) = window.next().await.expect("the window is not empty");
            write(&mut summary, output)?;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let rate = summary.lines as f64 / started.elapsed().as_secs_f64();
            eprintln!("replay: {} lines, {rate:.0} events/s", summary.lines);
        }
    }
    while let Some(((), output)) = window.next().await {
        write(&mut summary, output)?;
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
