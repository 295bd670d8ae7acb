//! A rule set as the workbench moves it: its files by relative path.
//!
//! A draft, a proposal and a deployed version are all [`RuleFiles`]: the
//! `*.rules` files, the list files they read (`lists/…`) and the analysts'
//! test cases (`tests/*.toml`). Paths come from browsers, so they are
//! bounded and checked before anything touches the disk: at most two
//! segments of letters, digits, `.`, `_` and `-`, none starting with a dot.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// At most this many files in one rule set.
pub const MAX_FILES: usize = 512;
/// At most this many bytes in all the files of one rule set.
pub const MAX_TOTAL_BYTES: usize = 16 << 20;

/// The files of one rule set, by relative path (`10-block.rules`,
/// `lists/blocked_users.txt`, `tests/blocks.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleFiles(pub BTreeMap<String, String>);

/// Why a set of files is refused before it is checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    /// A path is not a plain relative name.
    #[error(
        "the file name {0:?} is not allowed: use letters, digits, `.`, `_` and `-`, at most one folder deep (lists/…, tests/…)"
    )]
    BadPath(String),
    /// Too many files or bytes.
    #[error("the rule set is too large: at most {MAX_FILES} files and {MAX_TOTAL_BYTES} bytes")]
    TooLarge,
}

impl RuleFiles {
    /// Refuses paths that could leave the folder and sets over the limits.
    pub fn validate(&self) -> Result<(), FilesError> {
        if self.0.len() > MAX_FILES
            || self.0.values().map(String::len).sum::<usize>() > MAX_TOTAL_BYTES
        {
            return Err(FilesError::TooLarge);
        }
        for path in self.0.keys() {
            let segments: Vec<&str> = path.split('/').collect();
            let ok = segments.len() <= 2
                && segments.iter().all(|s| {
                    !s.is_empty()
                        && s.len() <= 128
                        && !s.starts_with('.')
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                });
            if !ok {
                return Err(FilesError::BadPath(path.clone()));
            }
        }
        Ok(())
    }

    /// Reads a rule folder: its `*.rules` files and every file one folder
    /// below it (lists, tests). Hidden entries (a ConfigMap's `..data`) are
    /// skipped; the files they point at are read through their plain names.
    pub fn read_dir(dir: &Path) -> std::io::Result<RuleFiles> {
        let mut files = BTreeMap::new();
        let mut total = 0usize;
        let mut add = |rel: String, path: &Path| -> std::io::Result<()> {
            let text = std::fs::read_to_string(path)?;
            total += text.len();
            if files.len() >= MAX_FILES || total > MAX_TOTAL_BYTES {
                return Err(std::io::Error::other(FilesError::TooLarge));
            }
            files.insert(rel, text);
            Ok(())
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                for inner in std::fs::read_dir(&path)? {
                    let inner = inner?;
                    let inner_name = inner.file_name().to_string_lossy().into_owned();
                    if !inner_name.starts_with('.') && inner.path().is_file() {
                        add(format!("{name}/{inner_name}"), &inner.path())?;
                    }
                }
            } else if path.is_file() && name.ends_with(".rules") {
                add(name, &path)?;
            }
        }
        Ok(RuleFiles(files))
    }

    /// Writes the files into `dir` (which exists and is empty), so that the
    /// rules crate reads them as it reads any rule folder.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        for (rel, text) in &self.0 {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)?;
        }
        Ok(())
    }

    /// The `*.rules` files, in the order the rule set reads them.
    pub fn rule_files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter(|(p, _)| !p.contains('/') && p.ends_with(".rules"))
            .map(|(p, t)| (p.as_str(), t.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(path: &str) -> RuleFiles {
        RuleFiles(BTreeMap::from([(path.to_owned(), String::new())]))
    }

    #[test]
    fn paths_that_could_leave_the_folder_are_refused() {
        for bad in [
            "../x.rules",
            "/etc/passwd",
            "a/b/c.rules",
            ".hidden",
            "lists/..",
            "a b.rules",
            "",
            "lists/",
        ] {
            assert_eq!(
                one(bad).validate(),
                Err(FilesError::BadPath(bad.into())),
                "{bad}"
            );
        }
        for good in [
            "10-block.rules",
            "lists/blocked_users.txt",
            "tests/blocks.toml",
        ] {
            assert_eq!(one(good).validate(), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_folder_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let files = RuleFiles(BTreeMap::from([
            ("a.rules".to_owned(), "rule x:\n  deny if true\n".to_owned()),
            ("lists/l.txt".to_owned(), "u_1\n".to_owned()),
            ("tests/t.toml".to_owned(), "".to_owned()),
        ]));
        files.write_to(dir.path()).unwrap();
        assert_eq!(RuleFiles::read_dir(dir.path()).unwrap(), files);
    }
}
