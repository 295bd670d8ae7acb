//! A checked, compiled rule set and its evaluation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use verdict_core::{Action, Catalogue, Hit, Record, ValueType};

use crate::ast::{Item, ListBody, RuleDef};
use crate::check::{self, List, Scope};
use crate::diag::{Diagnostic, Diagnostics, Source};
use crate::eval::{Builder, Id, Program, Truth};
use crate::parse::{self, MAX_SOURCE_BYTES};
use crate::tree::ListSet;

/// A list file larger than this is refused.
pub const MAX_LIST_BYTES: usize = 64 << 20;

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub action: Action,
    pub priority: i64,
    pub shadow: bool,
    pub reason: Arc<str>,
    /// Position in the rule set (file-name order, then file order).
    pub order: usize,
    /// A hash of what the rule says: its condition (as printed, so
    /// spacing and comments do not count), action, priority, shadow flag
    /// and reason. Two rules of one name and different fingerprints are a
    /// changed rule.
    pub fingerprint: u64,
    /// The condition's root in the rule set's program.
    cond: Id,
}

/// The outcome of evaluating a rule set for one record. Reuse one per
/// thread: evaluation clears and refills it, keeping its capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Action,
    /// Every non-shadow hit, winner first.
    pub hits: Vec<Hit>,
    /// Every shadow hit, in the same order.
    pub shadow_hits: Vec<Hit>,
}

impl Default for Evaluation {
    fn default() -> Self {
        Evaluation {
            decision: Action::Approve,
            hits: Vec::with_capacity(8),
            shadow_hits: Vec::with_capacity(8),
        }
    }
}

/// A rule set that parsed and type-checked: only such a set may serve.
#[derive(Debug)]
pub struct RuleSet {
    version: Arc<str>,
    /// Non-shadow rules in winning order: priority (high first), then
    /// deny > review > approve, then definition order.
    rules: Vec<Rule>,
    /// Shadow rules, in the same order.
    shadow: Vec<Rule>,
    /// Every condition, compiled together so that what rules share is
    /// computed once per record.
    program: Program,
    files: Vec<PathBuf>,
}

/// FNV-1a, 64 bits: a stable content hash (the same on every machine and
/// run), for the rule set's version.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

fn severity(a: Action) -> u8 {
    match a {
        Action::Approve => 0,
        Action::Review => 1,
        Action::Deny => 2,
    }
}

impl RuleSet {
    /// Reads, parses and checks every `*.rules` file of `dir`, in file-name
    /// order. All errors of the whole set come back together.
    pub fn load_dir(dir: &Path, catalogue: &Catalogue) -> Result<RuleSet, Diagnostics> {
        let mut diags = Diagnostics::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                diags.push(
                    Diagnostic::general(format!(
                        "cannot read the rule folder {}: {e}",
                        dir.display()
                    ))
                    .with_help("point `[engine] rules` (or --rules) at a folder of *.rules files"),
                );
                return Err(diags);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rules") && p.is_file())
            .collect();
        paths.sort();
        if paths.is_empty() {
            diags.push(Diagnostic::general(format!(
                "no *.rules files in {}",
                dir.display()
            )));
            return Err(diags);
        }
        let mut sources = Vec::new();
        for path in paths {
            match read_bounded(&path, MAX_SOURCE_BYTES) {
                Ok(text) => sources.push(Source {
                    path,
                    text: text.into(),
                }),
                Err(msg) => diags.push(Diagnostic::general(msg)),
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        RuleSet::compile(&sources, Some(dir), catalogue)
    }

    /// Checks and compiles rule sources (in the order given). `dir` is
    /// where `list … from` files are read from; without it such lists are
    /// errors.
    pub fn compile(
        sources: &[Source],
        dir: Option<&Path>,
        catalogue: &Catalogue,
    ) -> Result<RuleSet, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut hash = Fnv::new();
        let files: Vec<_> = sources
            .iter()
            .map(|s| (s, parse::parse_file(s, &mut diags)))
            .collect();

        // Lists first: a rule may use a list declared in any file.
        let mut lists: HashMap<String, List> = HashMap::new();
        let mut list_files: Vec<(String, String)> = Vec::new();
        for (src, file) in &files {
            hash.write(
                src.path
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hash.write(src.text.as_bytes());
            for item in &file.items {
                let Item::List(l) = item else { continue };
                if lists.contains_key(&l.name) {
                    diags.push(
                        Diagnostic::at(
                            src,
                            l.name_span,
                            format!("the list `{}` is declared twice", l.name),
                        )
                        .with_help("list names are unique within a rule set"),
                    );
                    continue;
                }
                let list = match &l.body {
                    ListBody::Inline(items) => check::inline_set(src, items, &mut diags),
                    ListBody::File(rel, span) => {
                        let Some(dir) = dir else {
                            diags.push(Diagnostic::at(
                                src,
                                *span,
                                "lists from files need a rule folder",
                            ));
                            continue;
                        };
                        let path = dir.join(rel);
                        match read_bounded(&path, MAX_LIST_BYTES) {
                            Ok(text) => {
                                list_files.push((rel.clone(), text.clone()));
                                let mut set = ListSet::default();
                                for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                                    set.strings.insert(line.into());
                                }
                                Some(List {
                                    ty: ValueType::String,
                                    set: Arc::new(set),
                                })
                            }
                            Err(_) if !path.is_file() => {
                                diags.push(
                                    Diagnostic::at(
                                        src,
                                        *span,
                                        format!("the list file `{rel}` does not exist"),
                                    )
                                    .with_help("the path is relative to the rule folder"),
                                );
                                None
                            }
                            Err(msg) => {
                                diags.push(Diagnostic::at(src, *span, msg));
                                None
                            }
                        }
                    }
                };
                if let Some(list) = list {
                    lists.insert(l.name.clone(), list);
                }
            }
        }
        list_files.sort();
        for (name, text) in &list_files {
            hash.write(name.as_bytes());
            hash.write(text.as_bytes());
        }

        let scope = Scope {
            catalogue,
            lists: &lists,
        };
        let mut rules = Vec::new();
        let mut shadow = Vec::new();
        let mut builder = Builder::default();
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut order = 0;
        for (src, file) in &files {
            for item in &file.items {
                let Item::Rule(r) = item else { continue };
                if names.insert(r.name.clone(), ()).is_some() {
                    diags.push(
                        Diagnostic::at(
                            src,
                            r.name_span,
                            format!("the rule `{}` is defined twice", r.name),
                        )
                        .with_help("rule names are unique within a rule set"),
                    );
                    continue;
                }
                if let Some(rule) = compile_rule(src, r, &scope, order, &mut builder, &mut diags) {
                    if rule.shadow {
                        shadow.push(rule);
                    } else {
                        rules.push(rule);
                    }
                }
                order += 1;
            }
        }
        if !diags.is_empty() {
            // In reading order: by file, then line and column.
            diags.0.sort_by(|a, b| {
                let key =
                    |d: &Diagnostic| d.at.as_ref().map(|l| (l.file.clone(), l.line, l.column));
                key(a).cmp(&key(b))
            });
            return Err(diags);
        }
        let key = |r: &Rule| {
            (
                std::cmp::Reverse(r.priority),
                std::cmp::Reverse(severity(r.action)),
                r.order,
            )
        };
        rules.sort_by_key(key);
        shadow.sort_by_key(key);
        let version: Arc<str> = format!("rs-{:08x}", (hash.0 >> 32) as u32 ^ hash.0 as u32).into();
        Ok(RuleSet {
            version,
            rules,
            shadow,
            program: builder.finish(),
            files: sources.iter().map(|s| s.path.clone()).collect(),
        })
    }

    /// The content hash of the rule files and lists: `rs-` and 8 hex digits.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Every rule, non-shadow first, each in winning order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().chain(&self.shadow)
    }

    /// The files the set was read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Decides one record: the winning action, every hit winner first, and
    /// the shadow hits. Allocates nothing once `out` has grown.
    pub fn evaluate(&self, record: &Record<'_>, out: &mut Evaluation) {
        out.hits.clear();
        out.shadow_hits.clear();
        self.program.with(record, |cx| {
            for rule in &self.rules {
                if cx.truth(rule.cond) == Truth::True {
                    out.hits.push(rule.hit());
                }
            }
            for rule in &self.shadow {
                if cx.truth(rule.cond) == Truth::True {
                    out.shadow_hits.push(rule.hit());
                }
            }
        });
        out.decision = out.hits.first().map_or(Action::Approve, |h| h.action);
    }

    /// The number of nodes of the compiled conditions, what rules share
    /// counted once.
    pub fn program_len(&self) -> usize {
        self.program.len()
    }
}

impl Rule {
    fn hit(&self) -> Hit {
        Hit {
            rule: self.name.clone(),
            action: self.action,
            reason: self.reason.clone(),
        }
    }
}

fn compile_rule(
    src: &Source,
    r: &RuleDef,
    scope: &Scope<'_>,
    order: usize,
    builder: &mut Builder,
    diags: &mut Diagnostics,
) -> Option<Rule> {
    let (cond, ty) = check::compile(src, &r.cond, scope, diags)?;
    if ty != ValueType::Bool {
        diags.push(
            Diagnostic::at(
                src,
                r.cond.span,
                format!("a rule's condition is a bool, but this is a {ty}"),
            )
            .with_help("compare it with something, e.g. `> 0`"),
        );
        return None;
    }
    let printed = r.cond.to_string();
    let reason = r.reason.clone().unwrap_or_else(|| printed.clone());
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same in every run and build.
        let mut h = std::hash::DefaultHasher::new();
        (&printed, r.action.as_str(), r.priority, r.shadow, &reason).hash(&mut h);
        h.finish()
    };
    Some(Rule {
        name: r.name.as_str().into(),
        action: r.action,
        priority: r.priority,
        shadow: r.shadow,
        reason: reason.into(),
        order,
        fingerprint,
        cond: builder.add(&cond),
    })
}

fn read_bounded(path: &Path, max: usize) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > max as u64 {
        return Err(format!(
            "{} is {} bytes, more than the {max} allowed",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// One expression of the rules language, checked and compiled: what a
/// filter is made of, and what tests evaluate.
#[derive(Debug)]
pub struct Expression {
    program: Program,
    root: Id,
    ty: ValueType,
    text: String,
}

impl Expression {
    /// Parses, checks and compiles `text` against the catalogue.
    pub fn compile(text: &str, catalogue: &Catalogue) -> Result<Expression, Diagnostics> {
        let src = Source {
            path: PathBuf::from("<expression>"),
            text: text.into(),
        };
        let mut diags = Diagnostics::default();
        let lists = HashMap::new();
        let scope = Scope {
            catalogue,
            lists: &lists,
        };
        let Some(expr) = parse::parse_expr(&src, &mut diags) else {
            return Err(diags);
        };
        match check::compile(&src, &expr, &scope, &mut diags) {
            Some((node, ty)) if diags.is_empty() => {
                let (program, root) = Program::single(&node);
                Ok(Expression {
                    program,
                    root,
                    ty,
                    text: text.to_owned(),
                })
            }
            _ => Err(diags),
        }
    }

    pub fn ty(&self) -> ValueType {
        self.ty
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value for one record.
    pub fn eval(&self, record: &Record<'_>) -> verdict_core::Value {
        self.program.with(record, |cx| cx.value(self.root))
    }

    /// Whether the compiled form is a single constant (it was folded).
    pub fn is_constant(&self) -> bool {
        self.program.is_const(self.root)
    }
}

/// A boolean expression of the rules language over one event, used by
/// feature definitions (`event.event_type == "payment"`).
#[derive(Debug)]
pub struct Filter(Expression);

impl Filter {
    /// Checks and compiles a filter against the catalogue.
    pub fn compile(text: &str, catalogue: &Catalogue) -> Result<Filter, Diagnostics> {
        let e = Expression::compile(text, catalogue)?;
        if e.ty != ValueType::Bool {
            let src = Source {
                path: PathBuf::from("<filter>"),
                text: text.into(),
            };
            let mut diags = Diagnostics::default();
            diags.push(Diagnostic::at(
                &src,
                crate::Span::new(0, text.len()),
                format!("a filter is a bool, but this is a {}", e.ty),
            ));
            return Err(diags);
        }
        Ok(Filter(e))
    }

    /// Whether the record passes (a missing result does not).
    #[inline]
    pub fn matches(&self, record: &Record<'_>) -> bool {
        let e = &self.0;
        e.program.with(record, |cx| cx.truth(e.root)) == Truth::True
    }

    pub fn text(&self) -> &str {
        &self.0.text
    }
}
