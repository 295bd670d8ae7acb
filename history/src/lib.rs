//! Verdict's decision log: every decided event with its decision, kept in
//! rolling Parquet files, and a history read back in event-time order.
//!
//! What it is:
//! - [`HistoryWriter`] (with its cloneable [`HistoryLogger`]): a bounded,
//!   non-blocking hand-off from the deciding threads to one writer thread
//!   that appends each event (its original bytes, id and time), its
//!   decision (outcome, hits, shadow hits, scores, versions, degraded,
//!   latency, decided_at), the instance and the source position to
//!   zstd-compressed Parquet files, per hour and instance, in a folder or
//!   an object store (`object_store`: S3 and S3-compatible stores with the
//!   `aws` feature, GCS with `gcp`, Azure with `azure`). A file is
//!   complete or absent, never torn. When the writer falls behind, records
//!   are dropped and counted ([`WriterStats::dropped`]), never waited for.
//! - [`HistoryReader`]: a file, a folder, a glob or an object-store prefix
//!   of decision-log Parquet files or JSON-lines files (plain events, such
//!   as `verdict gen` output, or the log's JSON-lines form,
//!   [`write_log_line`]), filtered to a time range, merged into one stream
//!   in event-time order with ties broken by file name and position. A
//!   file that does not parse is an error naming the file and the row or
//!   line.
//!
//! The columns are specified in `docs/contracts.md` ("The decision log").
//!
//! What it is not: it does not parse events against the schema, decide, or
//! compare decisions (that is the engine's and `verdict-backtest`'s job),
//! and it is not a query engine: point DataFusion or DuckDB at the files
//! for ad-hoc questions.

mod error;
mod jsonl;
mod location;
mod reader;
mod schema;
mod writer;

pub use error::HistoryError;
pub use jsonl::write_log_line;
pub use location::Location;
pub use reader::{
    HistoryEvent, HistoryReader, HitRef, Hits, OnInvalid, Origin, ReaderOptions, ReaderStats,
    Recorded,
};
pub use schema::{FORMAT_VERSION, META_INSTANCE, META_VERSION, PositionRef, schema};
pub use writer::{HistoryLogger, HistoryWriter, LogEntry, WriterConfig, WriterStats};
