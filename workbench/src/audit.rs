//! The audit log: every action, who did it, when, and the diff, appended as
//! JSON lines to one file and synced before the action is answered.
//!
//! The file is the record: it survives restarts (the sequence number goes
//! on from the last line), the UI reads it, and its export is the file as
//! it is. A last line torn by a crash is skipped when read, and the next
//! entry starts on a line of its own.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::WorkbenchError;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Login,
    LoginRefused,
    Logout,
    DraftSaved,
    Proposed,
    Approved,
    Rejected,
    Deployed,
    RolledBack,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3…, in the order written, across restarts.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub user: String,
    pub action: Action,
    /// What it was done to, for people: `proposal 3`, `version 7`.
    pub subject: String,
    /// A unified diff of the rule files it changed; empty when none.
    #[serde(default)]
    pub diff: String,
}

/// The log file, appended under a lock.
pub struct AuditLog {
    path: PathBuf,
    // A std mutex: it is held for one write and sync, on a blocking
    // thread, never across an await.
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    next_seq: u64,
}

impl AuditLog {
    /// Opens (or creates) the log, finding the sequence number to go on
    /// from.
    pub fn open(path: &Path) -> Result<AuditLog, WorkbenchError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| WorkbenchError::io("cannot open the audit log", path, e))?;
        let entries = read_entries(path)?;
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        // A crash mid-write leaves a line without its newline; the next
        // entry must not be glued to it.
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| WorkbenchError::io("cannot read the audit log", path, e))?;
        if len > 0 {
            let mut last = [0u8; 1];
            use std::io::Read;
            file.seek(SeekFrom::End(-1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| WorkbenchError::io("cannot read the audit log", path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .map_err(|e| WorkbenchError::io("cannot write the audit log", path, e))?;
            }
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, next_seq }),
        })
    }

    /// Appends one entry and syncs it to disk. Blocking.
    pub fn append(
        &self,
        user: &str,
        action: Action,
        subject: String,
        diff: String,
    ) -> Result<Entry, WorkbenchError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry {
            seq: inner.next_seq,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            user: user.to_owned(),
            action,
            subject,
            diff,
        };
        let mut line = serde_json::to_vec(&entry).expect("an entry always serialises");
        line.push(b'\n');
        inner
            .file
            .write_all(&line)
            .and_then(|_| inner.file.sync_data())
            .map_err(|e| WorkbenchError::io("cannot write the audit log", &self.path, e))?;
        inner.next_seq += 1;
        tracing::info!(seq = entry.seq, user, action = ?action, subject = %entry.subject, "audit");
        Ok(entry)
    }

    /// Every entry, oldest first. Blocking.
    pub fn entries(&self) -> Result<Vec<Entry>, WorkbenchError> {
        // The lock orders this read after any write in progress.
        let _inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        read_entries(&self.path)
    }

    /// The file as it is, for export: whole lines, read under the lock
    /// so no entry is cut mid-write. Blocking.
    pub fn export(&self) -> Result<Vec<u8>, WorkbenchError> {
        let _inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::read(&self.path)
            .map_err(|e| WorkbenchError::io("cannot read the audit log", &self.path, e))
    }
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, WorkbenchError> {
    let file =
        File::open(path).map_err(|e| WorkbenchError::io("cannot read the audit log", path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| WorkbenchError::io("cannot read the audit log", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => out.push(e),
            Err(e) => {
                tracing::warn!(line = i + 1, error = %e, "a line of the audit log does not parse; skipped")
            }
        }
    }
    Ok(out)
}

/// A unified diff of two rule sets, file by file.
pub fn diff(old: &crate::files::RuleFiles, new: &crate::files::RuleFiles) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = old.0.keys().chain(new.0.keys()).collect();
    for name in names {
        let a = old.0.get(name).map_or("", String::as_str);
        let b = new.0.get(name).map_or("", String::as_str);
        if a == b {
            continue;
        }
        let d = similar::TextDiff::from_lines(a, b);
        let from = if old.0.contains_key(name) {
            format!("a/{name}")
        } else {
            "/dev/null".into()
        };
        let to = if new.0.contains_key(name) {
            format!("b/{name}")
        } else {
            "/dev/null".into()
        };
        out.push_str(
            &d.unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_entry_has_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let log = AuditLog::open(&path).unwrap();
            log.append("alice", Action::Login, "session".into(), String::new())
                .unwrap();
        }
        // A crash in the middle of the second line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":2,\"at\":")
            .unwrap();
        let log = AuditLog::open(&path).unwrap();
        let e = log
            .append("bob", Action::Logout, "session".into(), String::new())
            .unwrap();
        assert_eq!(e.seq, 2);
        let all = log.entries().unwrap();
        assert_eq!(
            all.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
    }

    #[test]
    fn the_diff_names_added_changed_and_removed_files() {
        use std::collections::BTreeMap;
        let old = crate::files::RuleFiles(BTreeMap::from([
            ("a.rules".to_owned(), "x\ny\n".to_owned()),
            ("b.rules".to_owned(), "gone\n".to_owned()),
        ]));
        let new = crate::files::RuleFiles(BTreeMap::from([
            ("a.rules".to_owned(), "x\nz\n".to_owned()),
            ("c.rules".to_owned(), "new\n".to_owned()),
        ]));
        let d = diff(&old, &new);
        assert!(d.contains("--- a/a.rules\n+++ b/a.rules\n"), "{d}");
        assert!(d.contains("-y\n+z\n"), "{d}");
        assert!(d.contains("--- a/b.rules\n+++ /dev/null\n"), "{d}");
        assert!(d.contains("--- /dev/null\n+++ b/c.rules\n"), "{d}");
    }
}
