//! `verdict features`: tools around the feature store. `check` loads the
//! definitions (and runs the batch queries) and lists what rules and models
//! can read; `export` writes the point-in-time features of every event of a
//! file, with its label, as a Parquet training table.
//!
//! Export computes features with the engine's own [`Engine::prepare`], the
//! path every served event takes, so a model trains on exactly what it will
//! see when it scores.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use verdict_core::{Catalogue, Namespace, Position, Value, ValueType};

use crate::config::EngineOverrides;
use crate::engine::{Engine, StreamClock};

/// Check the feature definitions, or export training features.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    #[command(subcommand)]
    pub command: FeaturesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FeaturesCommand {
    /// Load the configured feature definitions (running the batch queries)
    /// and list every feature with its type and the memory one entity
    /// holds; exits 1 with the file, line and problem when they do not load.
    Check(CheckArgs),
    /// Compute the point-in-time features of every event in a JSON-lines
    /// file, in order, with the serving code, and write them with the
    /// event's label as a Parquet training table: columns event_id,
    /// event_type, timestamp (epoch ms), label, is_fraud, then one column per
    /// event field (`event.amount`) and per feature
    /// (`feature.user.txn_count_1h`), null where missing. Lines that are not
    /// valid events are counted and skipped.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub engine: EngineOverrides,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Events, one JSON object per line, in the order they happened (`-`
    /// for standard input).
    #[arg(long)]
    pub events: PathBuf,
    /// The Parquet file to write (replaced atomically when done).
    #[arg(long)]
    pub out: PathBuf,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 65_536)]
    pub row_group: usize,
    #[command(flatten)]
    pub engine: EngineOverrides,
}

pub fn run(args: FeaturesArgs) -> Result<ExitCode> {
    match args.command {
        FeaturesCommand::Check(a) => check(a),
        FeaturesCommand::Export(a) => export(a),
    }
}

/// An engine that computes features only: no rules, no model, no snapshot (every
/// export starts from an empty store and sees the file from its start).
fn feature_engine(overrides: &EngineOverrides) -> Result<Engine> {
    let mut config = overrides.load()?;
    if config.engine.features.is_none() {
        bail!(
            "{} names no feature definitions: set [engine] features, or pass --features",
            overrides.config.display()
        );
    }
    config.engine.rules = None;
    config.engine.rules_watch_ms = 0;
    config.model = None;
    config.features.snapshot = None;
    // A file is the whole stream: every kind is local, shared ones too.
    Engine::load_for_files_in_process(&config)
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let engine = feature_engine(&args.engine)?;
    let store = engine.feature_store().context("no feature store")?;
    println!("{}: ok", store.defs().path.display());
    for e in engine.catalogue().entries() {
        if e.slot.ns == Namespace::Feature {
            println!("  {:<40} {}", e.path, e.ty);
        }
    }
    for (entity, bytes) in store.bytes_per_entity() {
        println!("  {entity}: {bytes} bytes of window state per entity");
    }
    Ok(ExitCode::SUCCESS)
}

/// One output column: a catalogue entry and its builder.
enum Builder {
    Number(Float64Builder),
    String(StringBuilder),
    Bool(BooleanBuilder),
    Timestamp(Int64Builder),
}

impl Builder {
    fn new(ty: ValueType) -> Builder {
        match ty {
            ValueType::Number => Builder::Number(Float64Builder::new()),
            ValueType::String => Builder::String(StringBuilder::new()),
            ValueType::Bool => Builder::Bool(BooleanBuilder::new()),
            ValueType::Timestamp => Builder::Timestamp(Int64Builder::new()),
        }
    }

    fn data_type(ty: ValueType) -> DataType {
        match ty {
            ValueType::Number => DataType::Float64,
            ValueType::String => DataType::Utf8,
            ValueType::Bool => DataType::Boolean,
            ValueType::Timestamp => DataType::Int64,
        }
    }

    fn push(&mut self, v: &Value) {
        match (self, v) {
            (Builder::Number(b), Value::Number(x)) => b.append_value(*x),
            (Builder::String(b), Value::String(s)) => b.append_value(&**s),
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (Builder::Timestamp(b), Value::Timestamp(x)) => b.append_value(*x),
            (Builder::Number(b), _) => b.append_null(),
            (Builder::String(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Number(b) => Arc::new(b.finish()),
            Builder::String(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// The training table being built, a row group at a time.
struct Table {
    schema: Arc<ArrowSchema>,
    /// (namespace, slot) of each value column, in column order.
    slots: Vec<(Namespace, usize)>,
    id: StringBuilder,
    event_type: StringBuilder,
    timestamp: Int64Builder,
    label: StringBuilder,
    is_fraud: BooleanBuilder,
    values: Vec<Builder>,
    rows: usize,
}

impl Table {
    fn new(catalogue: &Catalogue) -> Table {
        let mut fields = vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("label", DataType::Utf8, true),
            Field::new("is_fraud", DataType::Boolean, true),
        ];
        let mut slots = Vec::new();
        let mut values = Vec::new();
        for e in catalogue.entries() {
            if e.slot.ns == Namespace::Model {
                continue;
            }
            fields.push(Field::new(&e.path, Builder::data_type(e.ty), true));
            slots.push((e.slot.ns, e.slot.index as usize));
            values.push(Builder::new(e.ty));
        }
        Table {
            schema: Arc::new(ArrowSchema::new(fields)),
            slots,
            id: StringBuilder::new(),
            event_type: StringBuilder::new(),
            timestamp: Int64Builder::new(),
            label: StringBuilder::new(),
            is_fraud: BooleanBuilder::new(),
            values,
            rows: 0,
        }
    }

    fn push(&mut self, p: &crate::engine::Prepared, label: Option<&str>) {
        self.id.append_value(p.event.id());
        self.event_type.append_value(p.event.event_type());
        self.timestamp.append_value(p.event.timestamp_ms());
        self.label.append_option(label);
        self.is_fraud.append_option(label.map(|l| l != "legit"));
        for ((ns, slot), b) in self.slots.iter().zip(&mut self.values) {
            let v = match ns {
                Namespace::Event => p.event.get(*slot),
                _ => p.features.get(*slot).unwrap_or(&Value::Missing),
            };
            b.push(v);
        }
        self.rows += 1;
    }

    fn batch(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.is_fraud.finish()),
        ];
        columns.extend(self.values.iter_mut().map(Builder::finish));
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The generator's ground truth, a field the schema does not declare.
#[derive(serde::Deserialize)]
struct Label {
    label: Option<String>,
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let engine = feature_engine(&args.engine)?;
    let input: Box<dyn BufRead> = if args.events == Path::new("-") {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.events)
            .with_context(|| format!("cannot open the events {}", args.events.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut table = Table::new(engine.catalogue());
    let tmp = args.out.with_extension("parquet.tmp");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(args.row_group.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(file, table.schema.clone(), Some(props))?;
    let source = args.events.display().to_string();
    let (mut lines, mut rows, mut rejected, mut unlabelled) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut last_progress = started;
    // The file is one stream, in line order.
    let mut clock = StreamClock::new();
    let progress = io::stderr().is_terminal();
    for line in input.split(b'\n') {
        let line = line.with_context(|| format!("reading {source}"))?;
        lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            rejected += 1;
            continue;
        }
        let position = || Position::File {
            file: source.clone(),
            line: lines,
        };
        match engine.prepare(&mut clock, line, position, Instant::now()) {
            Ok(prepared) => {
                let label = serde_json::from_slice::<Label>(line)
                    .ok()
                    .and_then(|l| l.label);
                unlabelled += u64::from(label.is_none());
                table.push(&prepared, label.as_deref());
                rows += 1;
                if table.rows >= args.row_group {
                    writer.write(&table.batch()?)?;
                }
            }
            Err(_) => rejected += 1,
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\rexport: {lines} lines, {rows} rows, {rejected} rejected, {:.0} lines/s   ",
                lines as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!();
    }
    if table.rows > 0 {
        writer.write(&table.batch()?)?;
    }
    writer.close()?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    eprintln!(
        "export: {lines} lines: {rows} rows + {rejected} rejected (not valid events) in {:.1} s; {} columns written to {}",
        started.elapsed().as_secs_f64(),
        table.schema.fields().len(),
        args.out.display()
    );
    if unlabelled > 0 {
        eprintln!("export: {unlabelled} rows have no `label` field (label and is_fraud are null)");
    }
    Ok(ExitCode::SUCCESS)
}
