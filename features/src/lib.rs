//! Verdict's feature store: sliding-window aggregates per entity (user,
//! device, IP …), kept in this process or, for the kinds placed `shared`,
//! in Redis, and batch features loaded with SQL.
//!
//! [`FeatureDefs`] reads the definitions file and checks it against the
//! event schema; [`FeatureStore::read_and_update`] gives an event the
//! features of the events before it (point-in-time) and then adds it,
//! once per `event_id`; `dedup` remembers the recent ids (and gives each a
//! [`DedupSlot`]); `entity` lays each entity's windows out in one
//! allocation; `shared` keeps the same windows in Redis for every instance
//! of a consumer group; `batch` runs the batch views' SQL with DataFusion;
//! `snapshot` writes and restores the local store with the source
//! positions it covers; `codec` is the byte form of states and values that
//! snapshots and the shared store keep.
//!
//! It is not a database: local state lives in this process and survives a
//! restart only through snapshots (plus a replay of the events after
//! them); shared state is as durable as the Redis that holds it.

pub mod batch;
mod codec;
mod dedup;
pub mod defs;
mod entity;
pub mod shared;
pub mod snapshot;
pub mod store;
pub mod window;

use std::path::PathBuf;

pub use dedup::DedupSlot;
pub use defs::{Agg, FeatureDefs, Placement};
pub use store::{FeatureStore, StoreConfig, StoreStats, StreamClock, Update, UpdateOutcome};

/// What can go wrong loading definitions, batch views or snapshots.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The definitions file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A definition is invalid; the message says which and how to fix it.
    #[error("{path}:{line}: {message}")]
    Definition {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A batch view's query or tables failed.
    #[error("batch view `{view}`: {message}")]
    Batch { view: String, message: String },
    /// A snapshot could not be written, or is refused on restore.
    #[error("snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },
    /// The store's maintenance thread could not be started.
    #[error(
        "cannot start the feature store's maintenance thread: {0}; the process is out of threads or memory"
    )]
    Thread(String),
}
