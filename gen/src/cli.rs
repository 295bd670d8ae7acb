//! The `verdict gen` command line: traffic to a file or standard output,
//! or the profile table of the same population.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{GenConfig, Generator, LABELS, MALFORMED, Population, ScenarioMix};

/// Generate labelled synthetic traffic of a consumer-credit platform, one
/// JSON event per line, deterministically from a seed.
///
/// Each line carries its ground truth in a top-level `label` ("legit", a
/// fraud scenario, or "malformed") that the event schema does not declare.
/// Scenarios: device_burst, account_takeover, velocity, under_limit,
/// night_activity. Same seed and options give the same bytes. A summary
/// (counts per label, events/s) goes to standard error.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GenArgs {
    #[command(subcommand)]
    pub command: Option<GenCommand>,
    #[command(flatten)]
    pub population: PopulationArgs,
    /// Number of lines to write.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub count: u64,
    /// Output file (standard output when absent or `-`).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Share of lines that belong to a fraud scenario (0–1).
    #[arg(long, default_value_t = GenConfig::default().fraud_rate)]
    pub fraud_rate: f64,
    /// Share of lines that are malformed on purpose (0–1): truncated or
    /// invalid JSON, a missing field, a wrong type, a bad timestamp, a
    /// non-object.
    #[arg(long, default_value_t = GenConfig::default().malformed_rate)]
    pub malformed_rate: f64,
    /// Relative weights of the fraud scenarios, as shares of fraud events;
    /// scenarios left out get none (e.g. `velocity=1` for velocity only).
    #[arg(long, default_value_t = ScenarioMix::default())]
    pub mix: ScenarioMix,
    /// Event time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z", value_parser = parse_start)]
    pub start: i64,
    /// Mean events per second of event time (the synthetic clock, not the
    /// wall clock); traffic follows a daily curve around it.
    #[arg(long, default_value_t = GenConfig::default().events_per_sec)]
    pub rate: f64,
    /// The platform's local time zone in hours east of UTC; the daily curve
    /// and night_activity's 01:00–05:00 window are in local time.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub utc_offset: i32,
    /// Share of events whose timestamp is epoch milliseconds instead of
    /// RFC 3339.
    #[arg(long, default_value_t = GenConfig::default().epoch_ms_share)]
    pub epoch_ms_share: f64,
}

/// Who the users are: shared by traffic and profiles.
#[derive(Debug, Clone, clap::Args)]
pub struct PopulationArgs {
    /// Seed of every random choice.
    #[arg(long, default_value_t = GenConfig::default().seed)]
    pub seed: u64,
    /// Number of users in the population.
    #[arg(long, default_value_t = GenConfig::default().users)]
    pub users: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum GenCommand {
    /// Write the batch profile table of the population
    /// (`user_id,account_age_days,credit_limit,prior_defaults`), for the
    /// feature store's batch features. Use the same --seed and --users as
    /// the traffic.
    Profiles {
        #[command(flatten)]
        population: PopulationArgs,
        /// Output CSV file (standard output when absent or `-`).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

fn parse_start(s: &str) -> Result<i64, String> {
    verdict_core::time::parse_rfc3339_ms(s)
}

fn open(out: Option<&Path>) -> Result<Box<dyn Write>> {
    match out {
        None => Ok(Box::new(BufWriter::with_capacity(
            1 << 16,
            io::stdout().lock(),
        ))),
        Some(p) if p == Path::new("-") => Ok(Box::new(BufWriter::with_capacity(
            1 << 16,
            io::stdout().lock(),
        ))),
        Some(p) => {
            let file = File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
            Ok(Box::new(BufWriter::with_capacity(1 << 16, file)))
        }
    }
}

impl GenArgs {
    /// The generator configuration these options describe.
    pub fn config(&self) -> GenConfig {
        GenConfig {
            seed: self.population.seed,
            users: self.population.users,
            fraud_rate: self.fraud_rate,
            malformed_rate: self.malformed_rate,
            mix: self.mix,
            start_ms: self.start,
            events_per_sec: self.rate,
            utc_offset_hours: self.utc_offset,
            epoch_ms_share: self.epoch_ms_share,
        }
    }
}

pub fn run(args: GenArgs) -> Result<ExitCode> {
    if let Some(GenCommand::Profiles { population, out }) = &args.command {
        let config = GenConfig {
            seed: population.seed,
            users: population.users,
            ..GenConfig::default()
        };
        config.validate()?;
        let mut w = open(out.as_deref())?;
        Population::new(population.seed, population.users)
            .write_csv(&mut w)
            .and_then(|()| w.flush())
            .context("writing the profile table")?;
        eprintln!(
            "gen: wrote profiles of {} users (seed {})",
            population.users, population.seed
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut generator = Generator::try_new(args.config())?;
    let mut w = open(args.out.as_deref())?;
    let mut counts = [0u64; LABELS.len()];
    let mut line = Vec::with_capacity(512);
    let started = Instant::now();
    let mut last_progress = started;
    for i in 0..args.count {
        line.clear();
        let label = generator.write_next(&mut line);
        line.push(b'\n');
        w.write_all(&line).context("writing events")?;
        if let Some(k) = LABELS.iter().position(|&l| l == label) {
            counts[k] += 1;
        }
        if i & 0xffff == 0xffff && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let rate = (i + 1) as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "gen: {} of {} lines ({:.0}%), {rate:.0} events/s",
                i + 1,
                args.count,
                (i + 1) as f64 * 100.0 / args.count as f64
            );
        }
    }
    w.flush().context("writing events")?;
    let elapsed = started.elapsed().as_secs_f64();
    let total = args.count.max(1) as f64;
    let fraud: u64 = counts[1..LABELS.len() - 1].iter().sum();
    let per_label: Vec<String> = LABELS
        .iter()
        .zip(counts)
        .filter(|&(&l, _)| l != MALFORMED)
        .map(|(l, c)| format!("{l} {c}"))
        .collect();
    eprintln!(
        "gen: {} lines in {elapsed:.2}s ({:.0} events/s): {}; fraud {fraud} ({:.2}%), malformed {} ({:.2}%)",
        args.count,
        args.count as f64 / elapsed.max(1e-9),
        per_label.join(", "),
        fraud as f64 * 100.0 / total,
        counts[LABELS.len() - 1],
        counts[LABELS.len() - 1] as f64 * 100.0 / total,
    );
    Ok(ExitCode::SUCCESS)
}
