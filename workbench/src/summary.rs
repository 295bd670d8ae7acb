//! What a rule set's files define, for the serving page and the backtest's
//! per-rule comparison: each rule and list with its file, line and text.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use verdict_rules::ast::{Item, ListBody};
use verdict_rules::{Diagnostics, Source};

use crate::files::RuleFiles;

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSource {
    pub name: String,
    pub file: String,
    pub line: usize,
    pub action: &'static str,
    pub priority: i64,
    pub shadow: bool,
    pub reason: Option<String>,
    /// The rule's definition, from `rule` to its last line (comments
    /// after it left out).
    pub text: String,
}

/// One list as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListSource {
    pub name: String,
    pub file: String,
    pub line: usize,
    /// The list file it reads, for `list … from`.
    pub from: Option<String>,
    /// Its entries (inline ones, or the list file's non-empty lines).
    pub entries: usize,
}

/// Every rule and list of a set's files. Files that do not parse give the
/// items that did.
pub fn summarise(files: &RuleFiles) -> (Vec<RuleSource>, Vec<ListSource>) {
    let mut rules = Vec::new();
    let mut lists = Vec::new();
    for (name, text) in files.rule_files() {
        let src = Source {
            path: PathBuf::from(name),
            text: Arc::from(text),
        };
        let mut diags = Diagnostics::default();
        let parsed = verdict_rules::parse::parse_file(&src, &mut diags);
        let starts: Vec<usize> = parsed
            .items
            .iter()
            .map(|i| match i {
                Item::List(l) => line_start(text, l.name_span.start),
                Item::Rule(r) => line_start(text, r.name_span.start),
            })
            .collect();
        for (k, item) in parsed.items.iter().enumerate() {
            let start = starts[k];
            let line = text[..start].matches('\n').count() + 1;
            match item {
                Item::Rule(r) => {
                    let end = starts.get(k + 1).copied().unwrap_or(text.len());
                    rules.push(RuleSource {
                        name: r.name.clone(),
                        file: name.to_owned(),
                        line,
                        action: r.action.as_str(),
                        priority: r.priority,
                        shadow: r.shadow,
                        reason: r.reason.clone(),
                        text: definition(&text[start..end]),
                    });
                }
                Item::List(l) => {
                    let (from, entries) = match &l.body {
                        ListBody::Inline(items) => (None, items.len()),
                        ListBody::File(rel, _) => (
                            Some(rel.clone()),
                            files
                                .0
                                .get(rel)
                                .map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count()),
                        ),
                    };
                    lists.push(ListSource {
                        name: l.name.clone(),
                        file: name.to_owned(),
                        line,
                        from,
                        entries,
                    });
                }
            }
        }
    }
    (rules, lists)
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1)
}

/// A rule's lines without the blank and comment lines that follow it.
fn definition(block: &str) -> String {
    let lines: Vec<&str> = block.lines().collect();
    let keep = lines
        .iter()
        .rposition(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map_or(0, |i| i + 1);
    lines[..keep].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn rules_and_lists_are_found_with_their_lines_and_text() {
        let files = RuleFiles(BTreeMap::from([
            (
                "a.rules".to_owned(),
                "list l from \"lists/l.txt\"\n\n# about r\nrule r priority 5:\n  deny if event.x in l\n  reason \"why\"\n\n# next\nrule s shadow:\n  review if true\n".to_owned(),
            ),
            ("lists/l.txt".to_owned(), "a\n\nb\n".to_owned()),
        ]));
        let (rules, lists) = summarise(&files);
        assert_eq!(lists[0].entries, 2);
        assert_eq!(lists[0].from.as_deref(), Some("lists/l.txt"));
        assert_eq!(rules.len(), 2);
        assert_eq!(
            (rules[0].line, rules[0].priority, rules[0].action),
            (4, 5, "deny")
        );
        assert_eq!(
            rules[0].text,
            "rule r priority 5:\n  deny if event.x in l\n  reason \"why\""
        );
        assert!(rules[1].shadow);
    }
}
