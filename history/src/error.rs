//! The one error type of `verdict-history`.

use std::time::Duration;

/// What went wrong configuring, writing or reading the decision log. Each
/// message says what was wrong, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The log's location or one of its options is not usable.
    #[error("decision log location `{location}`: {reason}")]
    Location { location: String, reason: String },
    /// `--history` (a file, a folder, a glob or an object-store URL) matched
    /// no file the reader can read.
    #[error(
        "history `{spec}`: no decision-log (*.parquet) or JSON-lines (*.jsonl, *.json, *.ndjson) file found; check the path, or quote a glob so the shell does not expand it"
    )]
    NoFiles { spec: String },
    /// A glob pattern does not parse.
    #[error("history `{spec}`: not a valid glob pattern: {reason}")]
    BadGlob { spec: String, reason: String },
    /// A local file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An object store refused or failed a request (after its own retries).
    #[error("{path}: object store: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A file is not Parquet, or its Parquet is damaged.
    #[error("{file}: not a readable Parquet file: {reason}")]
    Parquet { file: String, reason: String },
    /// A Parquet file lacks a column of the decision log, or holds it with
    /// another type.
    #[error(
        "{file}: not a Verdict decision log: {reason} (the columns are listed in docs/contracts.md, \"The decision log\")"
    )]
    Schema { file: String, reason: String },
    /// One row of a Parquet log holds a value the log never writes.
    #[error("{file}: row {row}: {reason}")]
    BadRow {
        file: String,
        row: u64,
        reason: String,
    },
    /// One line of a JSON-lines file is neither an event nor a decision-log
    /// line.
    #[error("{file}:{line}: {reason}")]
    BadLine {
        file: String,
        line: u64,
        reason: String,
    },
    /// A file of the history is larger than the reader accepts whole.
    #[error(
        "{file}: {bytes} bytes is more than the {limit} bytes a JSON-lines history file may hold; split it or convert it to the Parquet decision log"
    )]
    TooLarge {
        file: String,
        bytes: u64,
        limit: u64,
    },
    /// The time range is empty or inverted.
    #[error("time range: `from` ({from}) is not before `to` ({to})")]
    BadRange { from: String, to: String },
    /// The writer's or reader's background thread stopped unexpectedly. This
    /// is a bug in Verdict.
    #[error("decision log: {0} (this is a bug in Verdict)")]
    Internal(String),
    /// Closing the writer took longer than allowed; the file being written
    /// was abandoned (it never appears) and its records are counted as lost.
    #[error(
        "decision log: not closed within {timeout:?}; {unwritten} records were not written (the file in progress was abandoned, not left torn)"
    )]
    CloseTimeout { timeout: Duration, unwritten: u64 },
}

impl HistoryError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> HistoryError {
        HistoryError::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn store(path: impl std::fmt::Display, source: object_store::Error) -> HistoryError {
        HistoryError::Store {
            path: path.to_string(),
            source,
        }
    }
}
