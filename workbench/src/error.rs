//! The workbench's errors.

use std::path::PathBuf;

/// What can go wrong in the workbench outside a single request's answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkbenchError {
    /// The `[workbench]` configuration is not usable.
    #[error("the workbench configuration is not valid: {0}")]
    Config(String),
    /// A file of the workbench's own state (audit log, drafts) could not be
    /// read or written.
    #[error("{what} {}: {source}; check that the folder exists and is writable", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The saved drafts and proposals do not parse.
    #[error("the workbench state {} is damaged: {why}; move it aside to start with no drafts", path.display())]
    State { path: PathBuf, why: String },
    /// The certificate or key of the TLS listener cannot be used.
    #[error("the TLS certificate {} or key {}: {why}", cert.display(), key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    /// The store of rule-set versions failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl WorkbenchError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WorkbenchError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
