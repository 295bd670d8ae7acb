//! Verdict's in-memory feature store: sliding-window aggregates per entity
//! (user, device, IP …) kept in memory, and batch features loaded with SQL.
//!
//! [`FeatureDefs`] reads the definitions file and checks it against the
//! event schema; [`FeatureStore::read_and_update`] gives an event the
//! features of the events before it (point-in-time) and then adds it,
//! once per `event_id`; `window` holds the fixed-size ring buffers; `batch`
//! runs the batch views' SQL with DataFusion; `snapshot` writes and
//! restores the whole store with the source positions it covers.
//!
//! It is not a database: state lives in this process and survives a
//! restart only through snapshots (plus a replay of the events after them).

pub mod batch;
pub mod defs;
pub mod snapshot;
pub mod store;
pub mod window;

use std::path::PathBuf;

pub use defs::{Agg, FeatureDefs};
pub use store::{FeatureStore, StoreConfig, StoreStats, UpdateOutcome};

/// What can go wrong loading definitions, batch views or snapshots.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Definition {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("batch view `{view}`: {message}")]
    Batch { view: String, message: String },
    #[error("snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },
}
