//! Diagnostics: what is wrong with a rule file, where, and what to do.
//!
//! Every error carries its file, a byte span, and optionally a hint; it
//! renders like a compiler's message, with the source line and a caret under
//! the offending text. A rule set reports all its errors in one run.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A byte range in one source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// One source file of a rule set.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub help: Option<String>,
    /// Where: the file, 1-based line and column, the line's text, and how
    /// many characters the caret covers. `None` for an error about a whole
    /// folder (no rule files, say).
    pub at: Option<Location>,
    /// Other places that explain the error (where an unclosed bracket was
    /// opened), each underlined with `-` and its note, in the same file.
    pub labels: Vec<Label>,
}

/// A secondary place of a diagnostic and what it says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub at: Location,
    pub message: String,
}

/// A resolved position, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub line_text: String,
    pub width: usize,
}

impl Location {
    /// Resolves a span of `text`.
    pub fn of(file: &std::path::Path, text: &str, span: Span) -> Location {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = text[start..end].chars().count().max(1);
        Location {
            file: file.to_path_buf(),
            line,
            column,
            line_text: text[line_start..line_end].trim_end_matches('\r').to_owned(),
            width,
        }
    }
}

impl Diagnostic {
    pub fn at(source: &Source, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            help: None,
            at: Some(Location::of(&source.path, &source.text, span)),
            labels: Vec::new(),
        }
    }

    pub fn general(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            help: None,
            at: None,
            labels: Vec::new(),
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds a secondary place of the same source, underlined with `-` and
    /// `message` beside it.
    pub fn with_label(
        mut self,
        source: &Source,
        span: Span,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.labels.push(Label {
            at: Location::of(&source.path, &source.text, span),
            message: message.into(),
        });
        self
    }
}

/// One underlined source line of a rendered diagnostic.
struct Mark<'a> {
    at: &'a Location,
    underline: char,
    note: &'a str,
}

fn underline(f: &mut fmt::Formatter<'_>, pad: &str, m: &Mark<'_>) -> fmt::Result {
    // Tabs stay tabs so the mark lines up under the text whatever the
    // terminal's tab width.
    let lead: String =
        m.at.line_text
            .chars()
            .take(m.at.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
    let marks: String = std::iter::repeat_n(m.underline, m.at.width).collect();
    if m.note.is_empty() {
        writeln!(f, "{pad} | {lead}{marks}")
    } else {
        writeln!(f, "{pad} | {lead}{marks} {}", m.note)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(at) = &self.at {
            // The primary place and the labels, in line order, as one
            // snippet (as rustc shows an unclosed delimiter).
            let mut marks = vec![Mark {
                at,
                underline: '^',
                note: "",
            }];
            marks.extend(
                self.labels
                    .iter()
                    .filter(|l| l.at.file == at.file)
                    .map(|l| Mark {
                        at: &l.at,
                        underline: '-',
                        note: &l.message,
                    }),
            );
            marks.sort_by_key(|m| (m.at.line, m.at.column));
            let widest = marks.iter().map(|m| m.at.line).max().unwrap_or(at.line);
            let pad = " ".repeat(widest.to_string().len());
            writeln!(
                f,
                "{pad}--> {}:{}:{}",
                at.file.display(),
                at.line,
                at.column
            )?;
            writeln!(f, "{pad} |")?;
            let mut last_line = None;
            for m in &marks {
                if last_line != Some(m.at.line) {
                    if last_line.is_some_and(|l| l + 1 < m.at.line) {
                        writeln!(f, "...")?;
                    }
                    let n = m.at.line.to_string();
                    writeln!(f, "{n:>w$} | {}", m.at.line_text, w = pad.len())?;
                    last_line = Some(m.at.line);
                }
                underline(f, &pad, m)?;
            }
        }
        if let Some(help) = &self.help {
            writeln!(f, "help: {help}")?;
        }
        Ok(())
    }
}

/// Every error of one rule set (or one expression).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}
