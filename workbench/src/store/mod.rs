//! Where deployed rule-set versions live, so every instance serves the
//! same rule set.
//!
//! A [`VersionStore`] holds the numbered history of deployed versions and
//! tells which one serves. Every implementation feeds the versions it reads
//! to one [`Follower`], which keeps the newest version that checks against
//! the engine's catalogue and refuses one that does not — the old one keeps
//! serving, as with a rule folder. Implementations:
//! - [`kafka::KafkaVersions`]: a compacted Kafka topic, read from its start
//!   by every instance (one key per version number, so compaction keeps the
//!   whole history);
//! - [`folder::FolderVersions`]: a rule folder or a mounted ConfigMap,
//!   read-only;
//! - [`memory::MemoryVersions`]: this process only, for tests and trials.
//!
//! It is not the engine's hot reload: the service follows
//! [`VersionStore::serving`] and swaps each new rule set in.

pub mod folder;
pub mod kafka;
pub mod memory;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use verdict_core::Catalogue;
use verdict_rules::RuleSet;

use crate::engine::{self, DraftDiagnostic};
use crate::files::RuleFiles;

/// One deployed rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetVersion {
    /// 1, 2, 3…: the order of deployment; the newest that checks serves.
    pub number: u64,
    /// The rule set's content hash, as decisions carry it.
    pub version: String,
    pub files: RuleFiles,
    /// Who wrote the change (the proposer), who approved it, who deployed it.
    pub proposed_by: String,
    pub approved_by: String,
    pub deployed_by: String,
    /// When it was published, RFC 3339.
    pub published_at: String,
    /// The proposer's description of the change.
    pub note: String,
    /// The earlier version this one restores, for a rollback.
    pub restores: Option<u64>,
}

/// The version serving now, compiled.
#[derive(Clone)]
pub struct Served {
    pub version: Arc<RuleSetVersion>,
    pub rules: Arc<RuleSet>,
}

/// A version that was read but did not check: it never served.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub number: u64,
    pub errors: Vec<DraftDiagnostic>,
}

/// What can go wrong storing versions.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is a rule folder or ConfigMap that Verdict only reads.
    #[error(
        "the rule set comes from {0}, which the workbench only reads: deploy by changing it there"
    )]
    ReadOnly(String),
    /// Kafka refused or failed an operation; a retry may help.
    #[error("the rule-set topic {topic}: {why}; check the brokers and the topic's ACLs")]
    Kafka { topic: String, why: String },
    /// The published version was not read back in time.
    #[error("version {0} was published but not read back within {1} s; it will serve once read")]
    NotReadBack(u64, u64),
    /// The rule folder could not be read.
    #[error("cannot read the rule folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A shared history of deployed rule-set versions.
pub trait VersionStore: Send + Sync + 'static {
    /// Where versions live, for people (`Kafka topic verdict.rulesets`).
    fn describe(&self) -> String;
    /// False for a source Verdict only reads: publishing then fails.
    fn writable(&self) -> bool;
    /// Publishes a version, and returns once this instance has read it
    /// back (so the caller sees it serve, or refused).
    fn publish(&self, version: RuleSetVersion) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The follower that holds what was read.
    fn follower(&self) -> &Arc<Follower>;

    /// Every version read, oldest first.
    fn history(&self) -> Vec<Arc<RuleSetVersion>> {
        self.follower().history()
    }
    /// The serving version; changes each time a newer version checks.
    fn serving(&self) -> watch::Receiver<Option<Served>> {
        self.follower().subscribe()
    }
}

/// Keeps the history read from a store and the newest version that checks.
pub struct Follower {
    catalogue: Arc<Catalogue>,
    // A std mutex, not an async one: it is held for map operations only,
    // never across an await or a check.
    history: Mutex<BTreeMap<u64, Arc<RuleSetVersion>>>,
    refused: Mutex<Vec<Refusal>>,
    serving: watch::Sender<Option<Served>>,
}

impl Follower {
    pub fn new(catalogue: Arc<Catalogue>) -> Arc<Follower> {
        Arc::new(Follower {
            catalogue,
            history: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(Vec::new()),
            serving: watch::Sender::new(None),
        })
    }

    /// Takes one version read from the store. A version newer than the
    /// serving one is checked: it serves when it checks, and is refused
    /// (logged, kept in [`Follower::refused`]) when it does not. Blocking:
    /// checking writes a temporary folder.
    pub fn offer(&self, version: RuleSetVersion) {
        let version = Arc::new(version);
        let newer = self
            .serving
            .borrow()
            .as_ref()
            .is_none_or(|s| version.number > s.version.number);
        if newer {
            match engine::check(&version.files, &self.catalogue) {
                Ok(checked) => {
                    tracing::info!(number = version.number, version = %version.version, "rule-set version serves");
                    self.serving.send_replace(Some(Served {
                        version: version.clone(),
                        rules: Arc::new(checked.rules),
                    }));
                }
                Err(errors) => {
                    tracing::warn!(
                        number = version.number,
                        errors = errors.len(),
                        "rule-set version refused: it does not check; the serving one stays"
                    );
                    self.refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Refusal {
                            number: version.number,
                            errors,
                        });
                }
            }
        }
        // Into the history last, once served or refused: whoever waits to see
        // a version read (`read_back`, a test) then sees its outcome too.
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(version.number, version);
    }

    pub fn history(&self) -> Vec<Arc<RuleSetVersion>> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The highest version number read (served or not).
    pub fn newest_number(&self) -> u64 {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    pub fn get(&self, number: u64) -> Option<Arc<RuleSetVersion>> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&number)
            .cloned()
    }

    pub fn refused(&self) -> Vec<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Served>> {
        self.serving.subscribe()
    }

    pub fn current(&self) -> Option<Served> {
        self.serving.borrow().clone()
    }

    /// Waits until version `number` has been read (served or refused).
    pub(crate) async fn read_back(&self, number: u64, timeout_secs: u64) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
        while self.get(number).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::NotReadBack(number, timeout_secs));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Opens the store a configuration names, with its history read.
/// Blocking: it may read a Kafka topic from its start.
pub fn open(
    config: &crate::config::VersionsConfig,
    catalogue: Arc<Catalogue>,
) -> Result<Arc<dyn VersionStore>, StoreError> {
    if let Some(k) = &config.kafka {
        return Ok(Arc::new(kafka::KafkaVersions::open(k, catalogue)?));
    }
    if let Some(dir) = &config.folder {
        return Ok(Arc::new(folder::FolderVersions::open(
            dir.clone(),
            catalogue,
        )?));
    }
    Ok(Arc::new(memory::MemoryVersions::new(catalogue)))
}
