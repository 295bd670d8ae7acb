//! Writing the decision log: a bounded, non-blocking hand-off from the
//! deciding threads to one writer thread, which appends rows to rolling
//! Parquet files.
//!
//! The hand-off is two lock-free queues of pre-allocated slots: a caller
//! takes a free slot, copies the record into the slot's reused buffers
//! (event bytes, the decision's hits and scores as `Arc` clones), and
//! queues it; the writer copies the slot into its column builders and
//! gives the slot back. When no free slot is left, the writer has fallen
//! behind: the record is dropped and counted, and the caller goes on.
//! Nothing on the caller's side waits, locks or allocates once the slots'
//! buffers have grown to the size of the records.
//!
//! A file is written under a name no reader lists (a hidden temporary
//! file locally, an unfinished multipart upload in an object store) and
//! appears under its final name only once complete: locally after fsync
//! and rename, in a store when the upload completes. A process killed in
//! the middle leaves no torn file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use verdict_core::{Action, Decision, Hit, Position, Str};

use crate::HistoryError;
use crate::location::{Location, LocationKind};
use crate::schema::{
    self, DecidedRow, FORMAT_VERSION, META_INSTANCE, META_VERSION, PositionRef, RowsBuilder,
};

/// How the decision log is written. Every field has a default except
/// `location` and `instance`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Where the log goes: a folder, or `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`.
    pub location: String,
    /// Object-store options overriding the environment (`aws_endpoint`,
    /// `aws_region`, `aws_allow_http` …: the `object_store` builders'
    /// configuration keys). Credentials are best left to the environment.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// This process's name in file names and in the `instance` column:
    /// unique among the processes writing to one location (the pod name).
    /// Letters, digits, `.`, `_` and `-` only.
    pub instance: String,
    /// Records that may wait for the writer; past it, records are dropped
    /// and counted rather than slow the caller.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Rows per Parquet row group (each sorted by event time).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// A row group is also closed when its rows hold about this many bytes.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// A file is closed after this many rows …
    #[serde(default = "default_file_max_rows")]
    pub file_max_rows: u64,
    /// … or this many seconds after its first row, whichever comes first;
    /// and always when the hour of `decided_at` moves on. A file in
    /// progress is lost if the process is killed, so this bounds the loss.
    #[serde(default = "default_file_max_age_secs")]
    pub file_max_age_secs: u64,
    /// zstd level of every column (1 fastest … 22 smallest).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

fn default_queue() -> usize {
    8192
}
fn default_row_group_rows() -> usize {
    65_536
}
fn default_row_group_bytes() -> usize {
    64 << 20
}
fn default_file_max_rows() -> u64 {
    1_000_000
}
fn default_file_max_age_secs() -> u64 {
    600
}
fn default_zstd_level() -> i32 {
    3
}

impl WriterConfig {
    /// The defaults, writing to `location` as `instance`.
    pub fn new(location: impl Into<String>, instance: impl Into<String>) -> WriterConfig {
        WriterConfig {
            location: location.into(),
            options: BTreeMap::new(),
            instance: instance.into(),
            queue: default_queue(),
            row_group_rows: default_row_group_rows(),
            row_group_bytes: default_row_group_bytes(),
            file_max_rows: default_file_max_rows(),
            file_max_age_secs: default_file_max_age_secs(),
            zstd_level: default_zstd_level(),
        }
    }

    fn validate(&self) -> Result<(), HistoryError> {
        let bad = |reason: String| HistoryError::Location {
            location: self.location.clone(),
            reason,
        };
        if self.instance.is_empty()
            || !self
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad(format!(
                "instance `{}` must be non-empty and made of letters, digits, `.`, `_` and `-` (it is part of file names)",
                self.instance
            )));
        }
        if self.queue == 0 || self.row_group_rows == 0 || self.file_max_rows == 0 {
            return Err(bad(
                "queue, row_group_rows and file_max_rows must be at least 1".into(),
            ));
        }
        if ZstdLevel::try_new(self.zstd_level).is_err() {
            return Err(bad(format!(
                "zstd_level {} is not in 1..=22",
                self.zstd_level
            )));
        }
        Ok(())
    }
}

/// One decided event, as the caller holds it. Everything is borrowed;
/// [`HistoryLogger::try_log`] copies what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// The event's original bytes (a JSON object).
    pub event: &'a [u8],
    /// The event's timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The decision, whose `event_id` is the event's.
    pub decision: &'a Decision,
    /// Where the event was read.
    pub position: Option<&'a Position>,
}

/// The writer's counters, each only ever growing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records accepted by `try_log`.
    pub logged: u64,
    /// Records refused by `try_log` because the writer had fallen behind
    /// (every slot taken) or was closing. Export it as a counter metric.
    pub dropped: u64,
    /// Records in files that are complete.
    pub written: u64,
    /// Records accepted but never in a complete file: their file failed to
    /// write, or closing ran out of time.
    pub lost: u64,
    /// Complete files.
    pub files: u64,
    /// Files abandoned after a write error.
    pub failed_files: u64,
}

/// A copy of one record, with buffers reused from record to record.
#[derive(Debug)]
struct Slot {
    event: Vec<u8>,
    timestamp_ms: i64,
    event_id: Str,
    decision: Action,
    hits: Vec<Hit>,
    shadow_hits: Vec<Hit>,
    scores: Vec<(Arc<str>, f64)>,
    ruleset_version: Arc<str>,
    model_version: Option<Arc<str>>,
    degraded: bool,
    latency_us: u64,
    decided_at_ms: i64,
    position: SlotPosition,
}

#[derive(Debug, Default)]
struct SlotPosition {
    kind: u8,
    text: String,
    partition: i32,
    number: i64,
}

const POS_NONE: u8 = 0;
const POS_KAFKA: u8 = 1;
const POS_FILE: u8 = 2;
const POS_HTTP: u8 = 3;

impl Slot {
    fn new() -> Slot {
        let empty: Arc<str> = Arc::from("");
        Slot {
            event: Vec::new(),
            timestamp_ms: 0,
            event_id: Str::default(),
            decision: Action::Approve,
            hits: Vec::new(),
            shadow_hits: Vec::new(),
            scores: Vec::new(),
            ruleset_version: empty,
            model_version: None,
            degraded: false,
            latency_us: 0,
            decided_at_ms: 0,
            position: SlotPosition::default(),
        }
    }

    /// Copies `e` in; allocates only while a buffer grows past its largest
    /// size so far.
    fn fill(&mut self, e: &LogEntry<'_>) {
        let d = e.decision;
        self.event.clear();
        self.event.extend_from_slice(e.event);
        self.timestamp_ms = e.timestamp_ms;
        self.event_id.clone_from(&d.event_id);
        self.decision = d.decision;
        self.hits.clone_from_slice_reusing(&d.hits);
        self.shadow_hits.clone_from_slice_reusing(&d.shadow_hits);
        self.scores.clear();
        self.scores.extend(d.scores.0.iter().cloned());
        self.ruleset_version.clone_from(&d.ruleset_version);
        self.model_version.clone_from(&d.model_version);
        self.degraded = d.degraded;
        self.latency_us = d.latency_us;
        self.decided_at_ms = d.decided_at;
        let p = &mut self.position;
        p.text.clear();
        match e.position {
            None => p.kind = POS_NONE,
            Some(Position::Kafka {
                topic,
                partition,
                offset,
            }) => {
                p.kind = POS_KAFKA;
                p.text.push_str(topic);
                p.partition = *partition;
                p.number = *offset;
            }
            Some(Position::File { file, line }) => {
                p.kind = POS_FILE;
                p.text.push_str(file);
                p.number = i64::try_from(*line).unwrap_or(i64::MAX);
            }
            Some(Position::Http { http }) => {
                p.kind = POS_HTTP;
                p.text.push_str(http);
            }
        }
    }

    fn row<'a>(&'a self, instance: &'a str) -> DecidedRow<'a> {
        let p = &self.position;
        DecidedRow {
            event_id: &self.event_id,
            timestamp_ms: self.timestamp_ms,
            event: &self.event,
            decision: self.decision,
            hits: &self.hits,
            shadow_hits: &self.shadow_hits,
            scores: &self.scores,
            ruleset_version: &self.ruleset_version,
            model_version: self.model_version.as_deref(),
            degraded: self.degraded,
            latency_us: self.latency_us,
            decided_at_ms: self.decided_at_ms,
            instance,
            position: match p.kind {
                POS_KAFKA => PositionRef::Kafka {
                    topic: &p.text,
                    partition: p.partition,
                    offset: p.number,
                },
                POS_FILE => PositionRef::File {
                    file: &p.text,
                    line: u64::try_from(p.number).unwrap_or(0),
                },
                POS_HTTP => PositionRef::Http { http: &p.text },
                _ => PositionRef::None,
            },
        }
    }
}

/// `Vec::clear` + `extend` of clones, spelled once: `Hit` holds two
/// `Arc`s, so cloning one is two reference-count increments.
trait CloneFromSliceReusing<T: Clone> {
    fn clone_from_slice_reusing(&mut self, src: &[T]);
}

impl<T: Clone> CloneFromSliceReusing<T> for Vec<T> {
    fn clone_from_slice_reusing(&mut self, src: &[T]) {
        self.clear();
        self.extend_from_slice(src);
    }
}

/// What the callers and the writer thread share.
struct Shared {
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    /// The writer is woken when this many records wait (it also wakes on
    /// its own a few times a second), so that a busy caller rarely pays
    /// for a wake-up.
    wake_at: usize,
    writer: Thread,
    closing: AtomicBool,
    abort: AtomicBool,
    logged: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    lost: AtomicU64,
    files: AtomicU64,
    failed_files: AtomicU64,
}

impl Shared {
    fn stats(&self) -> WriterStats {
        WriterStats {
            logged: self.logged.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            failed_files: self.failed_files.load(Ordering::Relaxed),
        }
    }
}

/// A cheap, cloneable handle for the deciding threads.
#[derive(Clone)]
pub struct HistoryLogger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HistoryLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryLogger")
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl HistoryLogger {
    /// Hands one record to the writer without waiting: true when it was
    /// queued, false when it was dropped (and counted in
    /// [`WriterStats::dropped`]) because the writer has fallen behind or
    /// is closing.
    pub fn try_log(&self, entry: &LogEntry<'_>) -> bool {
        let s = &*self.shared;
        if s.closing.load(Ordering::Relaxed) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(mut slot) = s.free.pop() else {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        slot.fill(entry);
        if let Err(slot) = s.full.push(slot) {
            // Both queues hold as many slots as exist, so this cannot
            // happen; give the slot back rather than lose it.
            let _ = s.free.push(slot);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        s.logged.fetch_add(1, Ordering::Relaxed);
        if s.full.len() >= s.wake_at {
            s.writer.unpark();
        }
        true
    }

    /// The counters so far.
    pub fn stats(&self) -> WriterStats {
        self.shared.stats()
    }
}

/// The decision log's writer: owns the writer thread. Hand
/// [`HistoryWriter::logger`] to the deciding threads, and call
/// [`HistoryWriter::close`] on shutdown.
pub struct HistoryWriter {
    logger: HistoryLogger,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

impl std::fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("stats", &self.stats())
            .finish()
    }
}

/// How long the writer sleeps when nothing arrives.
const IDLE: Duration = Duration::from_millis(100);

/// How long the writer waits before trying a failing location again.
const RETRY: Duration = Duration::from_secs(5);

impl HistoryWriter {
    /// Starts a writer for `config.location`.
    pub fn start(config: &WriterConfig) -> Result<HistoryWriter, HistoryError> {
        let location = Location::parse(&config.location, &config.options)?;
        HistoryWriter::start_at(config, location)
    }

    /// Starts a writer for a location built by the caller (`config.location`
    /// and `config.options` are not read).
    pub fn start_at(
        config: &WriterConfig,
        location: Location,
    ) -> Result<HistoryWriter, HistoryError> {
        config.validate()?;
        let target = Target::new(location)?;
        let (ready_tx, ready_rx) = mpsc::channel::<Thread>();
        let (shared_tx, shared_rx) = mpsc::channel::<Arc<Shared>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let cfg = config.clone();
        let thread = thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let _ = ready_tx.send(thread::current());
                let Ok(shared) = shared_rx.recv() else {
                    return;
                };
                let mut w = Writer::new(cfg, target, shared);
                w.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| HistoryError::Internal(format!("cannot start the writer thread: {e}")))?;
        let writer = ready_rx
            .recv()
            .map_err(|_| HistoryError::Internal("the writer thread stopped at start".into()))?;
        let free = ArrayQueue::new(config.queue);
        for _ in 0..config.queue {
            let _ = free.push(Box::new(Slot::new()));
        }
        let shared = Arc::new(Shared {
            free,
            full: ArrayQueue::new(config.queue),
            wake_at: (config.queue / 4).max(1),
            writer,
            closing: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            logged: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            files: AtomicU64::new(0),
            failed_files: AtomicU64::new(0),
        });
        shared_tx
            .send(shared.clone())
            .map_err(|_| HistoryError::Internal("the writer thread stopped at start".into()))?;
        Ok(HistoryWriter {
            logger: HistoryLogger { shared },
            thread: Some(thread),
            done: done_rx,
        })
    }

    /// A handle for the deciding threads.
    pub fn logger(&self) -> HistoryLogger {
        self.logger.clone()
    }

    /// [`HistoryLogger::try_log`] on the writer itself.
    pub fn try_log(&self, entry: &LogEntry<'_>) -> bool {
        self.logger.try_log(entry)
    }

    /// The counters so far.
    pub fn stats(&self) -> WriterStats {
        self.logger.stats()
    }

    /// Stops accepting records, writes every queued one and completes the
    /// file in progress, waiting at most `timeout`. Past it, the file in
    /// progress is abandoned (it never appears), the records not yet in a
    /// complete file are counted as lost, and the error says how many.
    pub fn close(mut self, timeout: Duration) -> Result<WriterStats, HistoryError> {
        let s = self.logger.shared.clone();
        s.closing.store(true, Ordering::SeqCst);
        s.writer.unpark();
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    t.join()
                        .map_err(|_| HistoryError::Internal("the writer thread panicked".into()))?;
                }
                Ok(s.stats())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                s.abort.store(true, Ordering::SeqCst);
                s.writer.unpark();
                let st = s.stats();
                let unwritten = st.logged.saturating_sub(st.written + st.lost);
                // The thread is left to finish abandoning on its own: it may
                // be inside a network call that only its own timeout ends.
                self.thread.take();
                Err(HistoryError::CloseTimeout { timeout, unwritten })
            }
        }
    }
}

impl Drop for HistoryWriter {
    /// Dropped without `close`: stop accepting records and let the thread
    /// finish in the background (a process that exits right after loses
    /// the file in progress, which never appears torn).
    fn drop(&mut self) {
        let s = &self.logger.shared;
        s.closing.store(true, Ordering::SeqCst);
        s.writer.unpark();
    }
}

/// Where finished files go.
enum Target {
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
        runtime: tokio::runtime::Runtime,
    },
}

impl Target {
    fn new(location: Location) -> Result<Target, HistoryError> {
        match location.kind {
            LocationKind::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| HistoryError::io(dir.display(), e))?;
                Ok(Target::Local(dir))
            }
            LocationKind::Store { store, prefix } => {
                // One worker thread drives the uploads; the writer thread
                // blocks on it, never a caller.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("history-upload")
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        HistoryError::Internal(format!("cannot start the upload runtime: {e}"))
                    })?;
                Ok(Target::Store {
                    store,
                    prefix,
                    runtime,
                })
            }
        }
    }
}

/// A multipart part; S3 needs at least 5 MiB for every part but the last.
const PART_BYTES: usize = 8 << 20;

/// The bytes of one file on their way to its final name.
enum Upload {
    Local {
        file: std::io::BufWriter<File>,
        tmp: PathBuf,
        dest: PathBuf,
    },
    Store {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        handle: tokio::runtime::Handle,
        pending: Vec<u8>,
        multipart: Option<WriteMultipart>,
        failed: Option<object_store::Error>,
    },
    /// Abandoned: every write fails.
    Dead,
}

impl Upload {
    fn display(&self) -> String {
        match self {
            Upload::Local { dest, .. } => dest.display().to_string(),
            Upload::Store { path, .. } => path.to_string(),
            Upload::Dead => "(abandoned)".into(),
        }
    }

    /// Sends the pending bytes as parts once there is a part's worth.
    fn ship(&mut self, last: bool) -> std::io::Result<()> {
        let Upload::Store {
            store,
            path,
            handle,
            pending,
            multipart,
            failed,
        } = self
        else {
            return Ok(());
        };
        if failed.is_some() {
            return Err(std::io::Error::other("the upload already failed"));
        }
        if pending.len() < PART_BYTES && !(last && multipart.is_some()) {
            return Ok(());
        }
        let bytes = Bytes::from(std::mem::take(pending));
        let result = handle.block_on(async {
            if multipart.is_none() {
                let up = store.put_multipart(path).await?;
                *multipart = Some(WriteMultipart::new_with_chunk_size(up, PART_BYTES));
            }
            let m = multipart.as_mut().expect("just set");
            m.wait_for_capacity(2).await?;
            m.put(bytes);
            Ok::<_, object_store::Error>(())
        });
        result.map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            *failed = Some(e);
            io
        })
    }

    /// Makes the file appear under its final name.
    fn complete(mut self) -> Result<(), HistoryError> {
        let name = self.display();
        match self {
            Upload::Local {
                mut file,
                ref tmp,
                ref dest,
            } => {
                let done = (|| {
                    file.flush()?;
                    let f = file.into_inner().map_err(|e| e.into_error())?;
                    f.sync_all()?;
                    drop(f);
                    std::fs::rename(tmp, dest)?;
                    if let Some(dir) = dest.parent() {
                        // The rename is durable once the folder is synced.
                        File::open(dir)?.sync_all()?;
                    }
                    Ok::<_, std::io::Error>(())
                })();
                done.map_err(|e| {
                    let _ = std::fs::remove_file(tmp);
                    HistoryError::io(&name, e)
                })
            }
            Upload::Dead => Err(HistoryError::Internal(
                "completing an abandoned file".into(),
            )),
            Upload::Store { .. } => {
                self.ship(true).map_err(|e| HistoryError::io(&name, e))?;
                let Upload::Store {
                    store,
                    path,
                    handle,
                    pending,
                    multipart,
                    ..
                } = self
                else {
                    unreachable!()
                };
                let result = handle.block_on(async {
                    match multipart {
                        // Small enough for one request: a single PUT is
                        // atomic by itself.
                        None => store
                            .put(&path, Bytes::from(pending).into())
                            .await
                            .map(|_| ()),
                        Some(m) => m.finish().await.map(|_| ()),
                    }
                });
                result.map_err(|e| HistoryError::store(&name, e))
            }
        }
    }

    /// Throws the file away: it never appears. The upload is dead
    /// afterwards.
    fn abandon(&mut self) {
        match std::mem::replace(self, Upload::Dead) {
            Upload::Local { file, tmp, .. } => {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
            }
            Upload::Store {
                handle, multipart, ..
            } => {
                if let Some(m) = multipart {
                    // An incomplete multipart upload is invisible; aborting
                    // it frees its parts (a bucket lifecycle rule should
                    // clean up after processes killed before this).
                    let _ = handle.block_on(m.abort());
                }
            }
            Upload::Dead => {}
        }
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Upload::Local { file, .. } => file.write(buf),
            Upload::Store { pending, .. } => {
                pending.extend_from_slice(buf);
                self.ship(false)?;
                Ok(buf.len())
            }
            Upload::Dead => Err(std::io::Error::other("the file was abandoned")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Upload::Local { file, .. } => file.flush(),
            Upload::Store { .. } => Ok(()),
            Upload::Dead => Err(std::io::Error::other("the file was abandoned")),
        }
    }
}

/// The file being written.
struct OpenFile {
    writer: ArrowWriter<Upload>,
    hour: i64,
    rows: u64,
    opened: Instant,
}

/// The writer thread's state.
struct Writer {
    cfg: WriterConfig,
    target: Target,
    shared: Arc<Shared>,
    props: WriterProperties,
    rows: RowsBuilder,
    file: Option<OpenFile>,
    /// Start of this writer, in file names: a restarted instance never
    /// reuses a name.
    started_ms: i64,
    seq: u64,
    /// After a file failed to open, when to try again.
    retry_at: Option<Instant>,
}

impl Writer {
    fn new(cfg: WriterConfig, target: Target, shared: Arc<Shared>) -> Writer {
        let level = ZstdLevel::try_new(cfg.zstd_level).unwrap_or_default();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: schema::col::TIMESTAMP as i32,
                descending: false,
                nulls_first: false,
            }]))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_VERSION.to_owned(), FORMAT_VERSION.to_owned()),
                KeyValue::new(META_INSTANCE.to_owned(), cfg.instance.clone()),
            ]))
            .build();
        Writer {
            cfg,
            target,
            shared,
            props,
            rows: RowsBuilder::new(),
            file: None,
            started_ms: verdict_core::time::now_ms(),
            seq: 0,
            retry_at: None,
        }
    }

    fn run(&mut self) {
        let s = self.shared.clone();
        loop {
            let mut took = 0usize;
            while let Some(slot) = s.full.pop() {
                self.append(&slot);
                let _ = s.free.push(slot);
                took += 1;
                if s.abort.load(Ordering::Relaxed) {
                    break;
                }
            }
            if s.abort.load(Ordering::Relaxed) {
                self.abandon_all();
                return;
            }
            if s.closing.load(Ordering::SeqCst) && s.full.is_empty() {
                self.close_file();
                return;
            }
            let max_age = Duration::from_secs(self.cfg.file_max_age_secs);
            if self
                .file
                .as_ref()
                .is_some_and(|f| f.opened.elapsed() >= max_age)
            {
                self.close_file();
            }
            if took == 0 {
                thread::park_timeout(IDLE);
            }
        }
    }

    fn append(&mut self, slot: &Slot) {
        let hour = slot.decided_at_ms.div_euclid(3_600_000);
        // Later hours start a new file; a record of an earlier hour (a lane
        // a little behind another) joins the current one, so that files do
        // not flip back and forth around the hour.
        if self.file.as_ref().is_some_and(|f| hour > f.hour) {
            self.close_file();
        }
        if self.file.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
            self.open_file(hour);
        }
        if self.file.is_none() {
            // The location is failing: count the record lost rather than
            // hold it, and try again a little later.
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let row = slot.row(&self.cfg.instance);
        self.rows.push_decided(&row);
        if self.rows.len() >= self.cfg.row_group_rows
            || self.rows.bytes() >= self.cfg.row_group_bytes
        {
            self.write_row_group();
        }
        if self
            .file
            .as_ref()
            .is_some_and(|f| f.rows + self.rows.len() as u64 >= self.cfg.file_max_rows)
        {
            self.close_file();
        }
    }

    fn file_name(&mut self, hour: i64) -> (String, String) {
        self.seq += 1;
        let stamp = verdict_core::time::format_rfc3339_ms(hour * 3_600_000);
        // `2026-11-24T08:00:00.000Z` → date `2026-11-24`, hour `08`.
        let (date, hh) = (
            stamp.get(..10).unwrap_or("0000-00-00"),
            stamp.get(11..13).unwrap_or("00"),
        );
        let dir = format!("date={date}/hour={hh}");
        let name = format!(
            "{}-{}-{:06}.parquet",
            self.cfg.instance, self.started_ms, self.seq
        );
        (dir, name)
    }

    fn open_file(&mut self, hour: i64) {
        let (dir, name) = self.file_name(hour);
        let upload = match &self.target {
            Target::Local(root) => {
                let folder = root.join(&dir);
                let opened = std::fs::create_dir_all(&folder).and_then(|()| {
                    let tmp = folder.join(format!(".{name}.inprogress"));
                    File::create(&tmp).map(|f| (f, tmp))
                });
                match opened {
                    Ok((f, tmp)) => Upload::Local {
                        file: std::io::BufWriter::with_capacity(1 << 20, f),
                        tmp,
                        dest: folder.join(&name),
                    },
                    Err(e) => {
                        self.fail_file(&folder.join(&name), &e.to_string());
                        return;
                    }
                }
            }
            Target::Store {
                store,
                prefix,
                runtime,
                ..
            } => {
                let mut path = prefix.clone();
                for part in dir.split('/').chain([name.as_str()]) {
                    path = path.join(part);
                }
                Upload::Store {
                    store: store.clone(),
                    path,
                    handle: runtime.handle().clone(),
                    pending: Vec::new(),
                    multipart: None,
                    failed: None,
                }
            }
        };
        let display = upload.display();
        match ArrowWriter::try_new(upload, schema::schema(), Some(self.props.clone())) {
            Ok(writer) => {
                self.file = Some(OpenFile {
                    writer,
                    hour,
                    rows: 0,
                    opened: Instant::now(),
                })
            }
            Err(e) => self.fail_file(Path::new(&display), &e.to_string()),
        }
    }

    /// Notes a file that could not be opened: its rows will be lost, one
    /// log line says why.
    fn fail_file(&mut self, name: &Path, reason: &str) {
        self.retry_at = Some(Instant::now() + RETRY);
        self.shared.failed_files.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(file = %name.display(), reason, "decision log: cannot write a file; its records are lost");
    }

    fn write_row_group(&mut self) {
        if self.rows.len() == 0 {
            return;
        }
        let batch: RecordBatch = self.rows.finish();
        let n = batch.num_rows() as u64;
        let Some(f) = self.file.as_mut() else {
            self.shared.lost.fetch_add(n, Ordering::Relaxed);
            return;
        };
        let result = f.writer.write(&batch).and_then(|()| f.writer.flush());
        match result {
            Ok(()) => f.rows += n,
            Err(e) => {
                let f = self.file.take().expect("checked above");
                self.shared.lost.fetch_add(f.rows + n, Ordering::Relaxed);
                let name = f.writer.inner().display();
                self.abandon_writer(f.writer);
                self.fail_file(Path::new(&name), &e.to_string());
            }
        }
    }

    fn close_file(&mut self) {
        self.write_row_group();
        let Some(f) = self.file.take() else {
            return;
        };
        let rows = f.rows;
        let result = f
            .writer
            .into_inner()
            .map_err(|e| HistoryError::Parquet {
                file: String::new(),
                reason: e.to_string(),
            })
            .and_then(|upload| {
                let name = upload.display();
                upload.complete().map(|()| name)
            });
        match result {
            Ok(name) => {
                let s = &self.shared;
                s.written.fetch_add(rows, Ordering::Relaxed);
                s.files.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %name, rows, "decision log: file complete");
            }
            Err(e) => {
                self.shared.lost.fetch_add(rows, Ordering::Relaxed);
                self.shared.failed_files.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, rows, "decision log: a file failed to complete; its records are lost");
            }
        }
    }

    fn abandon_writer(&self, mut writer: ArrowWriter<Upload>) {
        // Not `into_inner`, which would write the footer of a file that is
        // thrown away.
        writer.inner_mut().abandon();
    }

    fn abandon_all(&mut self) {
        let s = &self.shared;
        let mut lost = self.rows.len() as u64;
        let _ = self.rows.finish();
        while let Some(slot) = s.full.pop() {
            lost += 1;
            let _ = s.free.push(slot);
        }
        if let Some(f) = self.file.take() {
            lost += f.rows;
            self.abandon_writer(f.writer);
        }
        s.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::warn!(
            records = lost,
            "decision log: closing ran out of time; the file in progress was abandoned"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_instance_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WriterConfig::new(dir.path().to_str().unwrap(), "pod/0");
        let e = HistoryWriter::start(&cfg).unwrap_err();
        assert!(e.to_string().contains("instance `pod/0`"), "{e}");
    }

    #[test]
    fn a_bad_zstd_level_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WriterConfig::new(dir.path().to_str().unwrap(), "pod-0");
        cfg.zstd_level = 40;
        let e = HistoryWriter::start(&cfg).unwrap_err();
        assert!(e.to_string().contains("zstd_level 40"), "{e}");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let e = toml::from_str::<WriterConfig>("location = \"x\"\ninstance = \"a\"\nqueu = 3\n")
            .unwrap_err();
        assert!(e.to_string().contains("queu"), "{e}");
    }
}
