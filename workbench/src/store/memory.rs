//! Versions kept in this process only: for tests and trials of the
//! workbench, where no other instance needs them.

use std::sync::Arc;

use futures::future::BoxFuture;
use verdict_core::Catalogue;

use super::{Follower, RuleSetVersion, StoreError, VersionStore};

/// A history that lives as long as the process.
pub struct MemoryVersions {
    follower: Arc<Follower>,
}

impl MemoryVersions {
    pub fn new(catalogue: Arc<Catalogue>) -> MemoryVersions {
        MemoryVersions {
            follower: Follower::new(catalogue),
        }
    }
}

impl VersionStore for MemoryVersions {
    fn describe(&self) -> String {
        "this process's memory (versions are lost when it stops)".into()
    }

    fn writable(&self) -> bool {
        true
    }

    fn publish(&self, version: RuleSetVersion) -> BoxFuture<'_, Result<(), StoreError>> {
        let follower = self.follower.clone();
        Box::pin(async move {
            // Checking writes a temporary folder: off the async workers.
            let _ = tokio::task::spawn_blocking(move || follower.offer(version)).await;
            Ok(())
        })
    }

    fn follower(&self) -> &Arc<Follower> {
        &self.follower
    }
}
