//! Reading a history back: decision-log Parquet files and JSON-lines
//! files, from a file, a folder, a glob or an object-store prefix, merged
//! into one stream in event-time order.
//!
//! Every file is cut into *runs* that are each sorted by event time: a
//! Parquet row group (the writer sorts each one; a row group from
//! elsewhere is sorted when read), or a whole JSON-lines file. The runs
//! are merged with a heap. A Parquet run is opened only when the merge
//! reaches the smallest event time its statistics give, so only the runs
//! that overlap in time are held in memory at once; one background thread
//! decodes runs ahead in the order they will be opened. JSON-lines files
//! carry no statistics: each is read whole at the start.
//!
//! Ties in event time are broken by file name, then row group, then the
//! order of the rows in the file, so that the same files always give the
//! same order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, StructArray, TimestampMillisecondArray, new_null_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use verdict_core::{Action, Decision, Hit, Scores};

use crate::HistoryError;
use crate::location::{Location, LocationKind};
use crate::schema::{self, PositionRef, col, sort_by_time};

/// What to do with a JSON-lines line that is neither an event nor a
/// decision-log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnInvalid {
    /// Stop with an error naming the file and line.
    #[default]
    Fail,
    /// Pass over it, counted in [`ReaderStats::skipped`] with the first
    /// one's file, line and reason, for the caller to report.
    Skip,
}

/// How a history is read.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Only events at or after this time (ms since the epoch) …
    pub from_ms: Option<i64>,
    /// … and before this one.
    pub to_ms: Option<i64>,
    /// Object-store options, as for the writer.
    pub options: BTreeMap<String, String>,
    pub on_invalid: OnInvalid,
    /// A JSON-lines file is read whole; larger ones are refused.
    pub max_jsonl_bytes: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            from_ms: None,
            to_ms: None,
            options: BTreeMap::new(),
            on_invalid: OnInvalid::Fail,
            max_jsonl_bytes: 4 << 30,
        }
    }
}

/// What the reader has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Events handed out by [`HistoryReader::next`].
    pub events: u64,
    /// JSON-lines lines passed over under [`OnInvalid::Skip`].
    pub skipped: u64,
    /// The first of them: `file:line: reason`.
    pub first_skipped: Option<String>,
}

/// Where a row is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A JSON-lines line, counted from 1.
    Line(u64),
    /// A Parquet row, counted from 0 across the file's row groups.
    Row(u64),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// One event of the history, borrowed from the reader until the next call
/// to [`HistoryReader::next`].
#[derive(Debug, Clone, Copy)]
pub struct HistoryEvent<'a> {
    pub event_id: &'a str,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// The event's original bytes (a JSON object).
    pub event: &'a [u8],
    /// The file it came from, as listed.
    pub file: &'a str,
    pub origin: Origin,
    /// The decision the log recorded; `None` for a plain event file.
    pub recorded: Option<Recorded<'a>>,
}

/// A recorded decision, read in place.
#[derive(Clone, Copy)]
pub struct Recorded<'a> {
    cols: &'a Columns,
    row: usize,
    pub decision: Action,
}

impl fmt::Debug for Recorded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("decision", &self.decision)
            .field(
                "hits",
                &self.hits().iter().map(|h| h.rule).collect::<Vec<_>>(),
            )
            .field("ruleset_version", &self.ruleset_version())
            .finish()
    }
}

/// One recorded hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitRef<'a> {
    pub rule: &'a str,
    pub action: Action,
    pub reason: &'a str,
}

/// The hits of one recorded decision, winner first.
#[derive(Clone, Copy)]
pub struct Hits<'a> {
    cols: &'a HitCols,
    start: usize,
    end: usize,
}

impl<'a> Hits<'a> {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn get(&self, i: usize) -> Option<HitRef<'a>> {
        let j = self.start + i;
        (j < self.end).then(|| HitRef {
            rule: self.cols.rule.value(j),
            action: self.cols.action[j],
            reason: self.cols.reason.value(j),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = HitRef<'a>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<'a> Recorded<'a> {
    /// Every non-shadow hit, winner first.
    pub fn hits(&self) -> Hits<'a> {
        self.cols.hits.at(self.row)
    }

    pub fn shadow_hits(&self) -> Hits<'a> {
        self.cols.shadow_hits.at(self.row)
    }

    /// Model scores by output name, in the model's order.
    pub fn scores(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        let c = self.cols;
        let o = c.score_offsets.as_ref();
        let (s, e) = (o[self.row] as usize, o[self.row + 1] as usize);
        (s..e).map(move |j| (c.score_names.value(j), c.score_values.value(j)))
    }

    pub fn ruleset_version(&self) -> &'a str {
        str_or_empty(&self.cols.ruleset_version, self.row)
    }

    pub fn model_version(&self) -> Option<&'a str> {
        let a = &self.cols.model_version;
        a.is_valid(self.row).then(|| a.value(self.row))
    }

    pub fn degraded(&self) -> bool {
        let a = &self.cols.degraded;
        a.is_valid(self.row) && a.value(self.row)
    }

    pub fn latency_us(&self) -> u64 {
        let a = &self.cols.latency_us;
        if a.is_valid(self.row) {
            u64::try_from(a.value(self.row)).unwrap_or(0)
        } else {
            0
        }
    }

    pub fn decided_at_ms(&self) -> i64 {
        let a = &self.cols.decided_at;
        if a.is_valid(self.row) {
            a.value(self.row)
        } else {
            0
        }
    }

    /// The instance that decided it (empty when unknown).
    pub fn instance(&self) -> &'a str {
        str_or_empty(&self.cols.instance, self.row)
    }

    /// Where the event was read when it was decided.
    pub fn position(&self) -> PositionRef<'a> {
        let c = self.cols;
        let r = self.row;
        if c.source_topic.is_valid(r) {
            PositionRef::Kafka {
                topic: c.source_topic.value(r),
                partition: if c.source_partition.is_valid(r) {
                    c.source_partition.value(r)
                } else {
                    0
                },
                offset: if c.source_offset.is_valid(r) {
                    c.source_offset.value(r)
                } else {
                    0
                },
            }
        } else if c.source_file.is_valid(r) {
            PositionRef::File {
                file: c.source_file.value(r),
                line: if c.source_line.is_valid(r) {
                    u64::try_from(c.source_line.value(r)).unwrap_or(0)
                } else {
                    0
                },
            }
        } else if c.source_http.is_valid(r) {
            PositionRef::Http {
                http: c.source_http.value(r),
            }
        } else {
            PositionRef::None
        }
    }

    /// The decision as an owned [`Decision`] (allocates; for tools and
    /// tests, not for a pass over many events).
    pub fn to_decision(&self, event_id: &str) -> Decision {
        let hits = |h: Hits<'_>| {
            h.iter()
                .map(|h| Hit {
                    rule: h.rule.into(),
                    action: h.action,
                    reason: h.reason.into(),
                })
                .collect()
        };
        Decision {
            event_id: event_id.into(),
            decision: self.decision,
            hits: hits(self.hits()),
            shadow_hits: hits(self.shadow_hits()),
            scores: Scores(self.scores().map(|(n, v)| (n.into(), v)).collect()),
            // The log keeps outcomes, hits and scores, not explanations: a
            // backtest compares decisions, and an explanation is computed
            // again from the event when wanted (`POST /v1/explain`).
            explanation: Vec::new(),
            ruleset_version: self.ruleset_version().into(),
            model_version: self.model_version().map(Into::into),
            degraded: self.degraded(),
            latency_us: self.latency_us(),
            decided_at: self.decided_at_ms(),
        }
    }
}

fn str_or_empty(a: &StringArray, row: usize) -> &str {
    if a.is_valid(row) { a.value(row) } else { "" }
}

/// The columns of one decoded run, typed once so that reading a row is
/// plain indexing.
struct Columns {
    event_id: StringArray,
    timestamp: TimestampMillisecondArray,
    event: BinaryArray,
    /// The recorded decision per row, `None` for a plain event.
    decision: Vec<Option<Action>>,
    hits: HitLists,
    shadow_hits: HitLists,
    score_offsets: OffsetBuffer<i32>,
    score_names: StringArray,
    score_values: Float64Array,
    ruleset_version: StringArray,
    model_version: StringArray,
    degraded: BooleanArray,
    latency_us: Int64Array,
    decided_at: TimestampMillisecondArray,
    instance: StringArray,
    source_topic: StringArray,
    source_partition: Int32Array,
    source_offset: Int64Array,
    source_file: StringArray,
    source_line: Int64Array,
    source_http: StringArray,
}

struct HitCols {
    rule: StringArray,
    action: Vec<Action>,
    reason: StringArray,
}

struct HitLists {
    offsets: OffsetBuffer<i32>,
    cols: HitCols,
}

impl HitLists {
    fn at(&self, row: usize) -> Hits<'_> {
        let o = self.offsets.as_ref();
        Hits {
            cols: &self.cols,
            start: o[row] as usize,
            end: o[row + 1] as usize,
        }
    }
}

fn parse_action(s: &str) -> Option<Action> {
    match s {
        "approve" => Some(Action::Approve),
        "review" => Some(Action::Review),
        "deny" => Some(Action::Deny),
        _ => None,
    }
}

/// Where each row of a run is in its file.
enum Origins {
    /// Parquet rows `first..` in order.
    Contiguous(u64),
    /// Parquet rows, one per row, after filtering or sorting.
    Rows(Vec<u64>),
    /// JSON-lines line numbers, one per row.
    Lines(Vec<u64>),
}

impl Origins {
    fn at(&self, i: usize) -> Origin {
        match self {
            Origins::Contiguous(first) => Origin::Row(first + i as u64),
            Origins::Rows(v) => Origin::Row(v[i]),
            Origins::Lines(v) => Origin::Line(v[i]),
        }
    }
}

/// A run decoded, filtered to the time range, sorted and typed.
struct DecodedRun {
    file: usize,
    group: u32,
    len: usize,
    cols: Columns,
    origins: Origins,
    skipped: u64,
    first_skipped: Option<(u64, String)>,
}

fn list_cols(
    file: &str,
    origins: &Origins,
    array: &ArrayRef,
    what: &str,
) -> Result<HitLists, HistoryError> {
    let list = array
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("conformed to the log's schema");
    let values = list
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .expect("conformed to the log's schema");
    let rule = values
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8")
        .clone();
    let action_s = values
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let reason = values
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8")
        .clone();
    let mut action = Vec::with_capacity(action_s.len());
    for j in 0..action_s.len() {
        match action_s
            .is_valid(j)
            .then(|| parse_action(action_s.value(j)))
            .flatten()
        {
            Some(a) => action.push(a),
            None => {
                // Find the row that holds hit `j`, for the message.
                let o = list.offsets();
                let row = o
                    .windows(2)
                    .position(|w| (w[0] as usize..w[1] as usize).contains(&j))
                    .unwrap_or(0);
                return Err(HistoryError::BadRow {
                    file: file.to_owned(),
                    row: match origins.at(row) {
                        Origin::Row(n) | Origin::Line(n) => n,
                    },
                    reason: format!(
                        "a hit in `{what}` has action `{}`, not approve, review or deny",
                        if action_s.is_valid(j) {
                            action_s.value(j)
                        } else {
                            "null"
                        }
                    ),
                });
            }
        }
    }
    if rule.null_count() > 0 || reason.null_count() > 0 {
        return Err(HistoryError::Schema {
            file: file.to_owned(),
            reason: format!("`{what}` holds a hit without a rule or reason"),
        });
    }
    Ok(HitLists {
        offsets: list.offsets().clone(),
        cols: HitCols {
            rule,
            action,
            reason,
        },
    })
}

fn typed<T: Array + Clone + 'static>(batch: &RecordBatch, i: usize) -> T {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .expect("conformed to the log's schema")
        .clone()
}

impl Columns {
    fn new(file: &str, batch: &RecordBatch, origins: &Origins) -> Result<Columns, HistoryError> {
        let row_no = |i: usize| match origins.at(i) {
            Origin::Row(n) | Origin::Line(n) => n,
        };
        for (c, name) in [
            (col::EVENT_ID, "event_id"),
            (col::TIMESTAMP, "timestamp"),
            (col::EVENT, "event"),
        ] {
            let a = batch.column(c);
            if a.null_count() > 0 {
                let i = (0..a.len()).find(|i| a.is_null(*i)).unwrap_or(0);
                return Err(HistoryError::BadRow {
                    file: file.to_owned(),
                    row: row_no(i),
                    reason: format!("`{name}` is null"),
                });
            }
        }
        let dec: StringArray = typed(batch, col::DECISION);
        let mut decision = Vec::with_capacity(dec.len());
        for i in 0..dec.len() {
            if dec.is_null(i) {
                decision.push(None);
                continue;
            }
            match parse_action(dec.value(i)) {
                Some(a) => decision.push(Some(a)),
                None => {
                    return Err(HistoryError::BadRow {
                        file: file.to_owned(),
                        row: row_no(i),
                        reason: format!(
                            "decision `{}` is not approve, review or deny",
                            dec.value(i)
                        ),
                    });
                }
            }
        }
        let scores = batch
            .column(col::SCORES)
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("conformed to the log's schema");
        let score_struct = scores
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .expect("conformed to the log's schema");
        Ok(Columns {
            event_id: typed(batch, col::EVENT_ID),
            timestamp: typed(batch, col::TIMESTAMP),
            event: typed(batch, col::EVENT),
            decision,
            hits: list_cols(file, origins, batch.column(col::HITS), "hits")?,
            shadow_hits: list_cols(file, origins, batch.column(col::SHADOW_HITS), "shadow_hits")?,
            score_offsets: scores.offsets().clone(),
            score_names: score_struct
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8")
                .clone(),
            score_values: score_struct
                .column(1)
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("f64")
                .clone(),
            ruleset_version: typed(batch, col::RULESET_VERSION),
            model_version: typed(batch, col::MODEL_VERSION),
            degraded: typed(batch, col::DEGRADED),
            latency_us: typed(batch, col::LATENCY_US),
            decided_at: typed(batch, col::DECIDED_AT),
            instance: typed(batch, col::INSTANCE),
            source_topic: typed(batch, col::SOURCE_TOPIC),
            source_partition: typed(batch, col::SOURCE_PARTITION),
            source_offset: typed(batch, col::SOURCE_OFFSET),
            source_file: typed(batch, col::SOURCE_FILE),
            source_line: typed(batch, col::SOURCE_LINE),
            source_http: typed(batch, col::SOURCE_HTTP),
        })
    }
}

/// How a file is reached.
#[derive(Clone)]
enum Access {
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Parquet,
    Jsonl,
}

struct SourceFile {
    name: String,
    access: Access,
    format: Format,
    size: u64,
    /// Parquet only.
    meta: Option<ArrowReaderMetadata>,
}

/// A run to open, in opening order.
#[derive(Debug, Clone, Copy)]
struct RunSpec {
    file: usize,
    /// Row group (0 for a JSON-lines file).
    group: u32,
    /// The smallest event time the run may hold; `i64::MIN` when unknown.
    min_ts: i64,
    /// Rows before this row group in its file.
    first_row: u64,
    rows: u64,
}

/// A byte range of a Parquet file fetched from an object store, readable
/// as the file at its offsets.
struct RangeChunk {
    start: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Length for RangeChunk {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for RangeChunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self
            .get_bytes(
                start,
                (self.start + self.bytes.len() as u64).saturating_sub(start) as usize,
            )?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = self.start + self.bytes.len() as u64;
        if start < self.start || start + length as u64 > end {
            return Err(parquet::errors::ParquetError::General(format!(
                "bytes {start}..{} are outside the fetched row group {}..{end}",
                start + length as u64,
                self.start
            )));
        }
        let off = (start - self.start) as usize;
        Ok(self.bytes.slice(off..off + length))
    }
}

/// Reads a history in event-time order. See the module documentation.
pub struct HistoryReader {
    files: Arc<Vec<SourceFile>>,
    runs: Vec<RunSpec>,
    next_run: usize,
    decoded: Receiver<Result<DecodedRun, HistoryError>>,
    open: Vec<Option<DecodedRun>>,
    free_slots: Vec<usize>,
    heap: BinaryHeap<Reverse<MergeKey>>,
    /// A run whose last row was handed out; dropped on the next call.
    spent: Option<usize>,
    failed: bool,
    stats: ReaderStats,
    rows_hint: u64,
    /// Kept alive for the decoding thread's object-store requests.
    _runtime: Option<Arc<tokio::runtime::Runtime>>,
}

impl fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryReader")
            .field("files", &self.files.len())
            .field("runs", &self.runs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// A row's place in the merge: event time, file rank, row group, row in
/// the run, then the slot of its run (not part of the order: keys never
/// tie before it).
type MergeKey = (i64, u32, u32, u32, u32);

/// How many decoded runs may wait ahead of the merge.
const PREFETCH: usize = 2;

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn format_of(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") {
        Some(Format::Parquet)
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || lower.ends_with(".json") {
        Some(Format::Jsonl)
    } else {
        None
    }
}

/// True for a name the writer uses while a file is in progress, or that a
/// listing should not show: hidden files and object_store's staging files.
fn hidden(name: &str) -> bool {
    name.split('/').any(|part| part.starts_with('.')) || name.contains('#')
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), HistoryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| HistoryError::io(dir.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| HistoryError::io(dir.display(), e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry
            .file_type()
            .map_err(|e| HistoryError::io(path.display(), e))?;
        if ty.is_dir() {
            walk(&path, out)?;
        } else if format_of(&name.to_string_lossy()).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

fn sniff_local(path: &Path) -> Result<Format, HistoryError> {
    if let Some(f) = format_of(&path.to_string_lossy()) {
        return Ok(f);
    }
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(|e| HistoryError::io(path.display(), e))?;
    let n = f
        .read(&mut magic)
        .map_err(|e| HistoryError::io(path.display(), e))?;
    Ok(if n == 4 && &magic == b"PAR1" {
        Format::Parquet
    } else {
        Format::Jsonl
    })
}

fn local_files(spec: &str) -> Result<Vec<SourceFile>, HistoryError> {
    let mut paths = Vec::new();
    let mut explicit = false;
    if has_glob(spec) {
        let matches = glob::glob(spec).map_err(|e| HistoryError::BadGlob {
            spec: spec.to_owned(),
            reason: e.to_string(),
        })?;
        // Hidden names are looked for below the pattern's fixed folder
        // only: the folder itself may well be hidden (`/tmp/.tmpXYZ`).
        let fixed = spec[..spec.find(['*', '?', '[']).unwrap_or(0)]
            .rfind('/')
            .map_or(0, |j| j + 1);
        for m in matches {
            let p = m.map_err(|e| {
                HistoryError::io(e.path().display(), std::io::Error::other(e.to_string()))
            })?;
            let name = p.to_string_lossy();
            let below = name.get(fixed..).unwrap_or(&name);
            if p.is_file() && !hidden(below) && format_of(&name).is_some() {
                paths.push(p);
            }
        }
    } else {
        let p = PathBuf::from(spec);
        let meta = std::fs::metadata(&p).map_err(|e| HistoryError::io(spec, e))?;
        if meta.is_dir() {
            walk(&p, &mut paths)?;
        } else {
            explicit = true;
            paths.push(p);
        }
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let size = std::fs::metadata(&p)
            .map_err(|e| HistoryError::io(p.display(), e))?
            .len();
        let format = if explicit {
            sniff_local(&p)?
        } else {
            format_of(&p.to_string_lossy()).expect("filtered")
        };
        out.push(SourceFile {
            name: p.display().to_string(),
            access: Access::Local(p),
            format,
            size,
            meta: None,
        });
    }
    Ok(out)
}

fn split_glob(spec: &str) -> (&str, Option<&str>) {
    // `s3://bucket/log/date=2026-11-0*/**/*.parquet`: the part before the
    // first glob character's folder is the prefix listed, the rest a
    // pattern on the names below it.
    match spec.find(['*', '?', '[']) {
        Some(i) => {
            let cut = spec[..i].rfind('/').map_or(0, |j| j + 1);
            (&spec[..cut], Some(&spec[cut..]))
        }
        None => (spec, None),
    }
}

fn store_files(
    store: &Arc<dyn ObjectStore>,
    prefix: &StorePath,
    display: &str,
    pattern: Option<&str>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<SourceFile>, HistoryError> {
    let spec = match pattern {
        Some(p) => format!("{}/{p}", display.trim_end_matches('/')),
        None => display.to_owned(),
    };
    let prefix = prefix.clone();
    let base = display;
    let pattern =
        pattern
            .map(glob::Pattern::new)
            .transpose()
            .map_err(|e| HistoryError::BadGlob {
                spec: spec.clone(),
                reason: e.to_string(),
            })?;
    let display_root = base.trim_end_matches('/');
    let listed: Vec<object_store::ObjectMeta> = runtime
        .block_on(async {
            // A URL that names one object is that object.
            if pattern.is_none()
                && let Ok(meta) = store.head(&prefix).await
            {
                return Ok(vec![meta]);
            }
            store.list(Some(&prefix)).try_collect().await
        })
        .map_err(|e| HistoryError::store(&spec, e))?;
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let single = listed.len() == 1 && listed[0].location == prefix;
    let mut out = Vec::new();
    for meta in listed {
        let rel: String = if meta.location == prefix {
            meta.location.filename().unwrap_or_default().to_owned()
        } else {
            match meta.location.prefix_match(&prefix) {
                Some(parts) => parts
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                None => continue,
            }
        };
        if hidden(&rel) {
            continue;
        }
        if let Some(p) = &pattern
            && !p.matches_with(&rel, opts)
        {
            continue;
        }
        let format = match format_of(&rel) {
            Some(f) => f,
            None if single => Format::Jsonl,
            None => continue,
        };
        let name = if single {
            display_root.to_owned()
        } else {
            format!("{display_root}/{rel}")
        };
        out.push(SourceFile {
            name,
            access: Access::Store {
                store: store.clone(),
                path: meta.location.clone(),
            },
            format,
            size: meta.size,
            meta: None,
        });
    }
    Ok(out)
}

/// The index of `name` in the file's Arrow schema.
fn field_index(meta: &ArrowReaderMetadata, name: &str) -> Option<usize> {
    meta.schema().fields().iter().position(|f| f.name() == name)
}

/// The smallest and largest event time of a row group, when its
/// statistics can be trusted as milliseconds.
fn group_range(meta: &ArrowReaderMetadata, group: usize) -> Option<(i64, i64)> {
    let i = field_index(meta, schema::C_TIMESTAMP)?;
    let ms = matches!(
        meta.schema().field(i).data_type(),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64
    );
    if !ms {
        return None;
    }
    // A top-level primitive column is the leaf of the same position among
    // the leaves only if no nested column comes before it; find the leaf
    // by its path instead.
    let leaf = meta
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [schema::C_TIMESTAMP])?;
    match meta.metadata().row_group(group).column(leaf).statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

enum FooterError {
    Store(object_store::Error),
    NotParquet(String),
}

/// The end of a Parquet object holding its footer: one request for the
/// last 64 KiB, a second one only when the footer is larger.
async fn fetch_footer(
    store: &Arc<dyn ObjectStore>,
    path: &StorePath,
    size: u64,
) -> Result<RangeChunk, FooterError> {
    if size < 12 {
        return Err(FooterError::NotParquet(format!(
            "{size} bytes is too short for a Parquet file"
        )));
    }
    let tail = size.min(64 << 10);
    let mut bytes = store
        .get_range(path, size - tail..size)
        .await
        .map_err(FooterError::Store)?;
    let n = bytes.len();
    if n < 8 || &bytes[n - 4..] != b"PAR1" {
        return Err(FooterError::NotParquet(
            "no Parquet magic at the end".into(),
        ));
    }
    let footer = u64::from(u32::from_le_bytes(
        bytes[n - 8..n - 4].try_into().expect("4 bytes"),
    )) + 8;
    if footer > size {
        return Err(FooterError::NotParquet(format!(
            "the footer claims {footer} bytes of a {size}-byte file"
        )));
    }
    if footer > tail {
        bytes = store
            .get_range(path, size - footer..size)
            .await
            .map_err(FooterError::Store)?;
    }
    Ok(RangeChunk {
        start: size - bytes.len() as u64,
        bytes,
        file_len: size,
    })
}

fn load_footer(
    file: &SourceFile,
    runtime: Option<&tokio::runtime::Runtime>,
) -> Result<ArrowReaderMetadata, HistoryError> {
    let bad = |e: parquet::errors::ParquetError| HistoryError::Parquet {
        file: file.name.clone(),
        reason: e.to_string(),
    };
    let meta = match &file.access {
        Access::Local(p) => {
            let f = File::open(p).map_err(|e| HistoryError::io(p.display(), e))?;
            ArrowReaderMetadata::load(&f, ArrowReaderOptions::new()).map_err(bad)?
        }
        Access::Store { store, path } => {
            let rt = runtime.expect("a runtime exists when a file is in a store");
            let chunk = rt
                .block_on(fetch_footer(store, path, file.size))
                .map_err(|e| match e {
                    FooterError::Store(e) => HistoryError::store(&file.name, e),
                    FooterError::NotParquet(reason) => HistoryError::Parquet {
                        file: file.name.clone(),
                        reason,
                    },
                })?;
            ArrowReaderMetadata::load(&chunk, ArrowReaderOptions::new()).map_err(bad)?
        }
    };
    for required in [schema::C_EVENT_ID, schema::C_TIMESTAMP, schema::C_EVENT] {
        if field_index(&meta, required).is_none() {
            return Err(HistoryError::Schema {
                file: file.name.clone(),
                reason: format!("no `{required}` column"),
            });
        }
    }
    Ok(meta)
}

impl HistoryReader {
    /// Opens a history: a file, a folder (every `*.parquet`, `*.jsonl`,
    /// `*.ndjson` and `*.json` file below it, hidden ones left out), a
    /// glob, or an object-store URL (a prefix, one object, or a glob).
    /// Every Parquet footer is read and checked here, so a file that is not
    /// a decision log fails now, before any event is handed out.
    pub fn open(spec: &str, options: &ReaderOptions) -> Result<HistoryReader, HistoryError> {
        if spec.contains("://") {
            let (base, pattern) = split_glob(spec);
            let location = Location::parse(base, &options.options)?;
            if let LocationKind::Local(dir) = &location.kind {
                let local = match pattern {
                    Some(p) => format!("{}/{p}", dir.display()),
                    None => dir.display().to_string(),
                };
                return HistoryReader::open_at(&Location::local(local), None, options);
            }
            return HistoryReader::open_at(&location, pattern, options);
        }
        HistoryReader::open_at(&Location::local(spec), None, options)
    }

    /// Opens a history at a location built by the caller, with an optional
    /// glob on the names below it (`date=2026-11-2*/**/*.parquet`). A local
    /// location is a file, a folder or a glob itself.
    pub fn open_at(
        location: &Location,
        pattern: Option<&str>,
        options: &ReaderOptions,
    ) -> Result<HistoryReader, HistoryError> {
        if let (Some(from), Some(to)) = (options.from_ms, options.to_ms)
            && from >= to
        {
            return Err(HistoryError::BadRange {
                from: verdict_core::time::format_rfc3339_ms(from),
                to: verdict_core::time::format_rfc3339_ms(to),
            });
        }
        let (mut files, runtime, spec) = match &location.kind {
            LocationKind::Local(path) => {
                let spec = match pattern {
                    Some(p) => format!("{}/{p}", path.display()),
                    None => path.display().to_string(),
                };
                (local_files(&spec)?, None, spec)
            }
            LocationKind::Store { store, prefix } => {
                let rt = Arc::new(
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("history-read")
                        .enable_all()
                        .build()
                        .map_err(|e| {
                            HistoryError::Internal(format!("cannot start the read runtime: {e}"))
                        })?,
                );
                let display = location.to_string();
                let files = store_files(store, prefix, &display, pattern, &rt)?;
                let spec = match pattern {
                    Some(p) => format!("{display}/{p}"),
                    None => display,
                };
                (files, Some(rt), spec)
            }
        };
        if files.is_empty() {
            return Err(HistoryError::NoFiles { spec });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut runs = Vec::new();
        let mut rows_hint = 0u64;
        for (i, f) in files.iter_mut().enumerate() {
            match f.format {
                Format::Jsonl => {
                    if f.size > options.max_jsonl_bytes {
                        return Err(HistoryError::TooLarge {
                            file: f.name.clone(),
                            bytes: f.size,
                            limit: options.max_jsonl_bytes,
                        });
                    }
                    // An estimate for progress: a few hundred bytes a line.
                    rows_hint += f.size / 256;
                    runs.push(RunSpec {
                        file: i,
                        group: 0,
                        min_ts: i64::MIN,
                        first_row: 0,
                        rows: 0,
                    });
                }
                Format::Parquet => {
                    let meta = load_footer(f, runtime.as_deref())?;
                    let mut first_row = 0u64;
                    for g in 0..meta.metadata().num_row_groups() {
                        let rows = meta.metadata().row_group(g).num_rows().max(0) as u64;
                        let range = group_range(&meta, g);
                        let outside = range.is_some_and(|(min, max)| {
                            options.from_ms.is_some_and(|from| max < from)
                                || options.to_ms.is_some_and(|to| min >= to)
                        });
                        if !outside && rows > 0 {
                            rows_hint += rows;
                            runs.push(RunSpec {
                                file: i,
                                group: g as u32,
                                min_ts: range.map_or(i64::MIN, |r| r.0),
                                first_row,
                                rows,
                            });
                        }
                        first_row += rows;
                    }
                    f.meta = Some(meta);
                }
            }
        }
        runs.sort_by_key(|r| (r.min_ts, r.file, r.group));
        let files = Arc::new(files);
        let (tx, rx) = sync_channel(PREFETCH);
        {
            let files = files.clone();
            let runs = runs.clone();
            let runtime = runtime.clone();
            let options = options.clone();
            std::thread::Builder::new()
                .name("history-decode".into())
                .spawn(move || decode_all(&files, &runs, runtime.as_deref(), &options, tx))
                .map_err(|e| {
                    HistoryError::Internal(format!("cannot start the decoding thread: {e}"))
                })?;
        }
        Ok(HistoryReader {
            files,
            runs,
            next_run: 0,
            decoded: rx,
            open: Vec::new(),
            free_slots: Vec::new(),
            heap: BinaryHeap::new(),
            spent: None,
            failed: false,
            stats: ReaderStats::default(),
            rows_hint,
            _runtime: runtime,
        })
    }

    /// The files read, in the order that breaks ties.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.name.as_str())
    }

    /// About how many events the history holds (exact for Parquet before
    /// the time filter; estimated from the size for JSON-lines), for a
    /// progress bar.
    pub fn rows_hint(&self) -> u64 {
        self.rows_hint
    }

    /// What has been read so far.
    pub fn stats(&self) -> &ReaderStats {
        &self.stats
    }

    /// The next event in time order, `None` at the end. An error (a file
    /// that does not parse, a store that fails) ends the reading: the
    /// history is never silently shorter.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<HistoryEvent<'_>>, HistoryError> {
        if self.failed {
            return Err(HistoryError::Internal(
                "reading went on after an error".into(),
            ));
        }
        if let Some(slot) = self.spent.take() {
            self.open[slot] = None;
            self.free_slots.push(slot);
        }
        while self.next_run < self.runs.len() {
            let due = match self.heap.peek() {
                None => true,
                Some(Reverse(top)) => self.runs[self.next_run].min_ts <= top.0,
            };
            if !due {
                break;
            }
            if let Err(e) = self.open_next() {
                self.failed = true;
                return Err(e);
            }
        }
        let Some(Reverse((_, rank, group, pos, slot))) = self.heap.pop() else {
            return Ok(None);
        };
        let (slot, pos) = (slot as usize, pos as usize);
        let run = self.open[slot]
            .as_ref()
            .expect("a queued row's run is open");
        if pos + 1 < run.len {
            let ts = run.cols.timestamp.value(pos + 1);
            self.heap
                .push(Reverse((ts, rank, group, pos as u32 + 1, slot as u32)));
        } else {
            self.spent = Some(slot);
        }
        self.stats.events += 1;
        let c = &run.cols;
        Ok(Some(HistoryEvent {
            event_id: c.event_id.value(pos),
            timestamp_ms: c.timestamp.value(pos),
            event: c.event.value(pos),
            file: &self.files[run.file].name,
            origin: run.origins.at(pos),
            recorded: c.decision[pos].map(|decision| Recorded {
                cols: c,
                row: pos,
                decision,
            }),
        }))
    }

    fn open_next(&mut self) -> Result<(), HistoryError> {
        let run = self
            .decoded
            .recv()
            .map_err(|_| HistoryError::Internal("the decoding thread stopped".into()))??;
        self.next_run += 1;
        if run.skipped > 0 {
            self.stats.skipped += run.skipped;
            if self.stats.first_skipped.is_none()
                && let Some((line, reason)) = &run.first_skipped
            {
                self.stats.first_skipped =
                    Some(format!("{}:{line}: {reason}", self.files[run.file].name));
            }
        }
        if run.len == 0 {
            return Ok(());
        }
        let key = (
            run.cols.timestamp.value(0),
            run.file as u32,
            run.group,
            0u32,
        );
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.open[s] = Some(run);
                s
            }
            None => {
                self.open.push(Some(run));
                self.open.len() - 1
            }
        };
        self.heap
            .push(Reverse((key.0, key.1, key.2, key.3, slot as u32)));
        Ok(())
    }
}

/// The decoding thread: every run in opening order, until the reader
/// hangs up.
fn decode_all(
    files: &[SourceFile],
    runs: &[RunSpec],
    runtime: Option<&tokio::runtime::Runtime>,
    options: &ReaderOptions,
    tx: SyncSender<Result<DecodedRun, HistoryError>>,
) {
    for run in runs {
        let result = decode(files, run, runtime, options);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
    }
}

fn decode(
    files: &[SourceFile],
    run: &RunSpec,
    runtime: Option<&tokio::runtime::Runtime>,
    options: &ReaderOptions,
) -> Result<DecodedRun, HistoryError> {
    let file = &files[run.file];
    match file.format {
        Format::Jsonl => decode_jsonl(file, run, runtime, options),
        Format::Parquet => decode_parquet(file, run, runtime, options),
    }
}

fn read_whole(
    file: &SourceFile,
    runtime: Option<&tokio::runtime::Runtime>,
    limit: u64,
) -> Result<Bytes, HistoryError> {
    match &file.access {
        Access::Local(p) => {
            let f = File::open(p).map_err(|e| HistoryError::io(p.display(), e))?;
            let mut buf = Vec::with_capacity(file.size as usize);
            f.take(limit + 1)
                .read_to_end(&mut buf)
                .map_err(|e| HistoryError::io(p.display(), e))?;
            if buf.len() as u64 > limit {
                return Err(HistoryError::TooLarge {
                    file: file.name.clone(),
                    bytes: buf.len() as u64,
                    limit,
                });
            }
            Ok(buf.into())
        }
        Access::Store { store, path } => {
            let rt = runtime.expect("a runtime exists when a file is in a store");
            rt.block_on(async { store.get(path).await?.bytes().await })
                .map_err(|e| HistoryError::store(&file.name, e))
        }
    }
}

fn in_range(ts: i64, options: &ReaderOptions) -> bool {
    options.from_ms.is_none_or(|f| ts >= f) && options.to_ms.is_none_or(|t| ts < t)
}

/// Keeps the rows in the time range; `origins` follows.
fn filter_range(
    batch: RecordBatch,
    origins: &mut Vec<u64>,
    options: &ReaderOptions,
) -> RecordBatch {
    if options.from_ms.is_none() && options.to_ms.is_none() {
        return batch;
    }
    let ts = batch
        .column(col::TIMESTAMP)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("conformed to the log's schema");
    let keep: Vec<bool> = ts.values().iter().map(|t| in_range(*t, options)).collect();
    if keep.iter().all(|k| *k) {
        return batch;
    }
    let mut i = 0;
    origins.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mask = BooleanArray::from(keep);
    arrow::compute::filter_record_batch(&batch, &mask).expect("a mask as long as the batch")
}

fn finish_run(
    file: &SourceFile,
    run: &RunSpec,
    batch: RecordBatch,
    mut origins: Vec<u64>,
    lines: bool,
    options: &ReaderOptions,
) -> Result<DecodedRun, HistoryError> {
    let batch = filter_range(batch, &mut origins, options);
    let (batch, order) = sort_by_time(batch);
    if let Some(order) = order {
        origins = order.iter().map(|&i| origins[i as usize]).collect();
    }
    let contiguous = !lines
        && origins.first().is_none_or(|first| {
            origins
                .iter()
                .enumerate()
                .all(|(i, o)| *o == first + i as u64)
        });
    let origins = if lines {
        Origins::Lines(origins)
    } else if contiguous {
        Origins::Contiguous(origins.first().copied().unwrap_or(run.first_row))
    } else {
        Origins::Rows(origins)
    };
    let cols = Columns::new(&file.name, &batch, &origins)?;
    Ok(DecodedRun {
        file: run.file,
        group: run.group,
        len: batch.num_rows(),
        cols,
        origins,
        skipped: 0,
        first_skipped: None,
    })
}

fn decode_jsonl(
    file: &SourceFile,
    run: &RunSpec,
    runtime: Option<&tokio::runtime::Runtime>,
    options: &ReaderOptions,
) -> Result<DecodedRun, HistoryError> {
    let bytes = read_whole(file, runtime, options.max_jsonl_bytes)?;
    let (batch, lines, skipped) = crate::jsonl::load(&bytes, options.on_invalid == OnInvalid::Skip)
        .map_err(|(line, reason)| HistoryError::BadLine {
            file: file.name.clone(),
            line,
            reason,
        })?;
    let mut decoded = finish_run(file, run, batch, lines, true, options)?;
    decoded.skipped = skipped.count;
    decoded.first_skipped = skipped.first;
    Ok(decoded)
}

fn decode_parquet(
    file: &SourceFile,
    run: &RunSpec,
    runtime: Option<&tokio::runtime::Runtime>,
    options: &ReaderOptions,
) -> Result<DecodedRun, HistoryError> {
    let meta = file.meta.clone().expect("footers are read at open");
    let bad = |e: parquet::errors::ParquetError| HistoryError::Parquet {
        file: file.name.clone(),
        reason: e.to_string(),
    };
    let group = run.group as usize;
    let batches: Vec<RecordBatch> = match &file.access {
        Access::Local(p) => {
            let f = File::open(p).map_err(|e| HistoryError::io(p.display(), e))?;
            read_group(f, meta.clone(), group, run.rows).map_err(bad)?
        }
        Access::Store { store, path } => {
            let rg = meta.metadata().row_group(group);
            let (start, end) = rg.columns().iter().fold((u64::MAX, 0u64), |(s, e), c| {
                let (off, len) = c.byte_range();
                (s.min(off), e.max(off + len))
            });
            let rt = runtime.expect("a runtime exists when a file is in a store");
            let bytes = rt
                .block_on(store.get_range(path, start..end))
                .map_err(|e| HistoryError::store(&file.name, e))?;
            let chunk = RangeChunk {
                start,
                bytes,
                file_len: file.size,
            };
            read_group(chunk, meta.clone(), group, run.rows).map_err(bad)?
        }
    };
    let conformed: Vec<RecordBatch> = batches
        .iter()
        .map(|b| conform(&file.name, b))
        .collect::<Result<_, _>>()?;
    let batch = arrow::compute::concat_batches(&schema::schema(), &conformed).map_err(|e| {
        HistoryError::Parquet {
            file: file.name.clone(),
            reason: e.to_string(),
        }
    })?;
    let origins: Vec<u64> = (run.first_row..run.first_row + batch.num_rows() as u64).collect();
    finish_run(file, run, batch, origins, false, options)
}

fn read_group<T: ChunkReader + 'static>(
    input: T,
    meta: ArrowReaderMetadata,
    group: usize,
    rows: u64,
) -> parquet::errors::Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta)
        .with_row_groups(vec![group])
        .with_batch_size(rows.clamp(1, 1 << 20) as usize)
        .build()?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
}

/// A batch of a Parquet file in the log's schema: columns found by name,
/// cast when their type differs (a file written elsewhere), the optional
/// ones filled with nulls when absent.
fn conform(file: &str, batch: &RecordBatch) -> Result<RecordBatch, HistoryError> {
    let target = schema::schema();
    if batch.schema() == target {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(col::COUNT);
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => {
                return Err(HistoryError::Schema {
                    file: file.to_owned(),
                    reason: format!("no `{}` column", field.name()),
                });
            }
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => {
                arrow::compute::cast(c, field.data_type()).map_err(|e| HistoryError::Schema {
                    file: file.to_owned(),
                    reason: format!(
                        "column `{}` is {} where the log has {} ({e})",
                        field.name(),
                        c.data_type(),
                        field.data_type()
                    ),
                })?
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(target, columns).map_err(|e| HistoryError::Schema {
        file: file.to_owned(),
        reason: e.to_string(),
    })
}
