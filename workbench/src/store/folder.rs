//! A rule folder, or a Kubernetes ConfigMap mounted as one, as a read-only
//! source of versions.
//!
//! The folder stays what deploys rules (a ConfigMap update, a file copy);
//! the workbench shows what it holds, checks and backtests drafts against
//! it, and refuses to publish. Each change seen is a new version number in
//! this process's history, which starts again at 1 on restart: a folder
//! keeps no history.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use verdict_core::Catalogue;

use super::{Follower, RuleSetVersion, StoreError, VersionStore};
use crate::files::RuleFiles;

/// How often the folder is looked at.
const POLL: Duration = Duration::from_secs(2);

/// A rule folder, read-only.
pub struct FolderVersions {
    dir: PathBuf,
    follower: Arc<Follower>,
    stop: Arc<AtomicBool>,
}

impl FolderVersions {
    /// Reads the folder, then looks at it again every two seconds on a
    /// thread of its own until dropped.
    pub fn open(dir: PathBuf, catalogue: Arc<Catalogue>) -> Result<FolderVersions, StoreError> {
        let follower = Follower::new(catalogue.clone());
        let first = read(&dir)?;
        let mut last = first.clone();
        offer(&follower, &catalogue, first, 1);
        let stop = Arc::new(AtomicBool::new(false));
        let (f, d, s) = (follower.clone(), dir.clone(), stop.clone());
        std::thread::Builder::new()
            .name("rules-folder".into())
            .spawn(move || {
                let mut number = 1;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    match read(&d) {
                        Ok(files) if files != last => {
                            number += 1;
                            last = files.clone();
                            offer(&f, &catalogue, files, number);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read the rule folder"),
                    }
                }
            })
            .map_err(|e| StoreError::Folder {
                path: dir.display().to_string(),
                source: e,
            })?;
        Ok(FolderVersions {
            dir,
            follower,
            stop,
        })
    }
}

fn read(dir: &std::path::Path) -> Result<RuleFiles, StoreError> {
    RuleFiles::read_dir(dir).map_err(|e| StoreError::Folder {
        path: dir.display().to_string(),
        source: e,
    })
}

fn offer(follower: &Follower, catalogue: &Catalogue, files: RuleFiles, number: u64) {
    let version = crate::engine::check(&files, catalogue)
        .map(|c| c.rules.version().to_string())
        .unwrap_or_default();
    follower.offer(RuleSetVersion {
        number,
        version,
        files,
        proposed_by: String::new(),
        approved_by: String::new(),
        deployed_by: String::new(),
        published_at: chrono::Utc::now().to_rfc3339(),
        note: "read from the rule folder".into(),
        restores: None,
    });
}

impl Drop for FolderVersions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl VersionStore for FolderVersions {
    fn describe(&self) -> String {
        format!("the rule folder {}", self.dir.display())
    }

    fn writable(&self) -> bool {
        false
    }

    fn publish(&self, _version: RuleSetVersion) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { Err(StoreError::ReadOnly(self.describe())) })
    }

    fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }
}
