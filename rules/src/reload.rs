//! Hot reload: the serving rule set, swapped atomically.
//!
//! [`Live`] holds the serving [`RuleSet`] behind an `ArcSwap`: an event
//! loads it once and decides with that one set, so no event sees half of
//! two rule sets, and no lock is ever held. A [`Reloader`] re-reads the
//! folder on request or when a watcher sees its contents change, or serves a
//! set checked elsewhere ([`Reloader::serve`]: a deployed version); a set that
//! fails to check is refused and the old one keeps serving. Every outcome
//! is reported to a [`ReloadObserver`] (the service logs it and counts it
//! in a metric).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use verdict_core::Catalogue;

use crate::{Diagnostics, RuleSet};

/// Told of every reload attempt.
pub trait ReloadObserver: Send + Sync {
    fn reloaded(&self, version: &str);
    fn refused(&self, errors: &Diagnostics);
}

/// The serving rule set.
pub struct Live {
    current: ArcSwap<RuleSet>,
}

impl Live {
    pub fn new(set: RuleSet) -> Live {
        Live {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The rule set to decide one event with.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<RuleSet>> {
        self.current.load()
    }

    /// The rule set as an owned handle (to keep it past a swap).
    pub fn load_full(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    fn store(&self, set: Arc<RuleSet>) {
        self.current.store(set);
    }
}

/// Reloads a rule folder into a [`Live`] set.
pub struct Reloader {
    dir: PathBuf,
    catalogue: Arc<Catalogue>,
    live: Arc<Live>,
    observer: Arc<dyn ReloadObserver>,
    /// The contents last seen by the watcher.
    seen: Mutex<u64>,
}

impl Reloader {
    pub fn new(
        dir: PathBuf,
        catalogue: Arc<Catalogue>,
        live: Arc<Live>,
        observer: Arc<dyn ReloadObserver>,
    ) -> Reloader {
        let seen = Mutex::new(fingerprint(&dir));
        Reloader {
            dir,
            catalogue,
            live,
            observer,
            seen,
        }
    }

    /// Reads and checks the folder; swaps it in when it checks. Returns the
    /// new version, or the errors (the old set keeps serving).
    pub fn reload(&self) -> Result<Arc<str>, Diagnostics> {
        match RuleSet::load_dir(&self.dir, &self.catalogue) {
            Ok(set) => Ok(self.serve(Arc::new(set))),
            Err(errors) => {
                self.observer.refused(&errors);
                Err(errors)
            }
        }
    }

    /// Swaps in a rule set that was checked elsewhere (against the same
    /// catalogue), such as a deployed version read from a version store;
    /// the observer is told as for a reload. Returns its version.
    pub fn serve(&self, set: Arc<RuleSet>) -> Arc<str> {
        let version = set.version().clone();
        self.live.store(set);
        self.observer.reloaded(&version);
        version
    }

    /// Reloads when the folder's contents changed since the last look.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<str>, Diagnostics>> {
        let now = fingerprint(&self.dir);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(self.reload())
    }

    /// Polls the folder every `every` on a thread of its own until `stop`.
    pub fn watch(
        self: Arc<Self>,
        every: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("rules-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let _ = self.reload_if_changed();
                }
            })
            .expect("spawning a thread")
    }
}

/// A hash of every file under `dir` (names and contents), to notice edits.
fn fingerprint(dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        f.hash(&mut h);
        if let Ok(bytes) = std::fs::read(&f) {
            bytes.hash(&mut h);
        }
    }
    h.finish()
}
