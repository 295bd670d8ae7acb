//! The type checker and compiler: resolves every name against the
//! catalogue, checks types, arities and regexes, and produces the
//! checked tree ([`crate::tree`]) that [`crate::eval`] compiles.

use std::collections::HashMap;
use std::sync::Arc;

use verdict_core::{Catalogue, ValueType, edit_distance};

use crate::ast::{BinOp, Expr, ExprKind, ListRef, Lit};
use crate::diag::{Diagnostic, Diagnostics, Source, Span};
use crate::tree::{ArithOp, CmpOp, Const, ListSet, Node};

/// A declared list: its element type and members.
#[derive(Debug, Clone)]
pub struct List {
    pub ty: ValueType,
    pub set: Arc<ListSet>,
}

/// What names an expression may use.
pub struct Scope<'a> {
    pub catalogue: &'a Catalogue,
    pub lists: &'a HashMap<String, List>,
}

const FUNCTIONS: [&str; 11] = [
    "is_missing",
    "coalesce",
    "abs",
    "min",
    "max",
    "lower",
    "starts_with",
    "contains",
    "matches",
    "hour_of_day",
    "days_between",
];

pub fn lit_type(l: &Lit) -> ValueType {
    match l {
        Lit::Number(_) => ValueType::Number,
        Lit::Str(_) => ValueType::String,
        Lit::Bool(_) => ValueType::Bool,
    }
}

/// Builds the set of an inline list, checking that its literals share a
/// type.
pub fn inline_set(src: &Source, items: &[(Lit, Span)], diags: &mut Diagnostics) -> Option<List> {
    let ty = lit_type(&items.first()?.0);
    let mut set = ListSet::default();
    let mut ok = true;
    for (l, span) in items {
        if lit_type(l) != ty {
            diags.push(
                Diagnostic::at(
                    src,
                    *span,
                    format!("this list holds {ty}s, but this is a {}", lit_type(l)),
                )
                .with_help("every value of a list has one type"),
            );
            ok = false;
            continue;
        }
        match l {
            Lit::Number(n) => set.insert_number(*n),
            Lit::Str(s) => {
                set.strings.insert(s.as_str().into());
            }
            Lit::Bool(b) => set.bools[usize::from(*b)] = true,
        }
    }
    ok.then(|| List {
        ty,
        set: Arc::new(set),
    })
}

struct Checker<'a, 'd> {
    src: &'a Source,
    scope: &'a Scope<'a>,
    diags: &'d mut Diagnostics,
}

type Typed = (Node, ValueType);

impl Checker<'_, '_> {
    fn err(&mut self, span: Span, msg: String) {
        self.diags.push(Diagnostic::at(self.src, span, msg));
    }

    fn expect(&mut self, e: &Expr, want: ValueType, what: &str) -> Option<Node> {
        let (node, ty) = self.check(e)?;
        if ty != want {
            self.err(e.span, format!("{what} takes a {want}, but this is a {ty}"));
            return None;
        }
        Some(node)
    }

    fn path(&mut self, e: &Expr, segments: &[String]) -> Option<Typed> {
        let path = segments.join(".");
        let shape_ok = match segments.first().map(String::as_str) {
            Some("event") => segments.len() >= 2,
            Some("feature") => segments.len() == 3,
            Some("model") => segments.len() == 2,
            _ => {
                let mut d = Diagnostic::at(self.src, e.span, format!("unknown name `{path}`"));
                d = match self.scope.catalogue.suggest(&format!("event.{path}")) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d.with_help(
                        "a value is `event.<field>`, `feature.<entity>.<name>` or `model.<output>`",
                    ),
                };
                self.diags.push(d);
                return None;
            }
        };
        match self.scope.catalogue.lookup(&path) {
            Some(entry) if shape_ok => Some((Node::Slot(entry.slot, entry.ty), entry.ty)),
            _ => {
                let kind = match segments[0].as_str() {
                    "event" => "field",
                    "feature" => "feature",
                    _ => "model output",
                };
                let mut d = Diagnostic::at(self.src, e.span, format!("unknown {kind} `{path}`"));
                if let Some(s) = self.scope.catalogue.suggest(&path) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                } else if kind == "field" {
                    d = d.with_help("declare it in the event schema");
                } else if kind == "feature" {
                    d = d.with_help(
                        "features are `feature.<entity>.<name>` from the feature definitions",
                    );
                } else {
                    d = d.with_help("model outputs are declared in the model manifest");
                }
                self.diags.push(d);
                None
            }
        }
    }

    fn check(&mut self, e: &Expr) -> Option<Typed> {
        match &e.kind {
            ExprKind::Lit(l) => Some((
                Node::Const(match l {
                    Lit::Number(n) => Const::Number(*n),
                    Lit::Str(s) => Const::Str(Arc::from(s.as_str())),
                    Lit::Bool(b) => Const::Bool(*b),
                }),
                lit_type(l),
            )),
            ExprKind::Path(p) => self.path(e, p),
            ExprKind::Neg(inner) => {
                let n = self.expect(inner, ValueType::Number, "`-`")?;
                Some((Node::Neg(Box::new(n)), ValueType::Number))
            }
            ExprKind::Not(inner) => {
                let n = self.expect(inner, ValueType::Bool, "`not`")?;
                Some((Node::Not(Box::new(n)), ValueType::Bool))
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs),
            ExprKind::In {
                value,
                list,
                negated,
            } => {
                let (v, ty) = self.check(value)?;
                let l = match list {
                    ListRef::Named(name, span) => match self.scope.lists.get(name) {
                        Some(l) => l.clone(),
                        None => {
                            let mut d =
                                Diagnostic::at(self.src, *span, format!("unknown list `{name}`"));
                            let best = self
                                .scope
                                .lists
                                .keys()
                                .map(|k| (edit_distance(k, name), k))
                                .filter(|(d, _)| *d <= 2)
                                .min();
                            if let Some((_, k)) = best {
                                d = d.with_help(format!("did you mean `{k}`?"));
                            } else {
                                d = d.with_help("declare it with `list <name> = [...]` or `list <name> from \"file\"`");
                            }
                            self.diags.push(d);
                            return None;
                        }
                    },
                    ListRef::Inline(items) => inline_set(self.src, items, self.diags)?,
                };
                if l.ty != ty {
                    self.err(
                        e.span,
                        format!("`in` tests a {ty} against a list of {}s", l.ty),
                    );
                    return None;
                }
                Some((
                    Node::In {
                        value: Box::new(v),
                        set: l.set,
                        negated: *negated,
                    },
                    ValueType::Bool,
                ))
            }
            ExprKind::Call { name, args } => self.call(e, name, args),
        }
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr) -> Option<Typed> {
        use ValueType as T;
        let l = self.check(lhs);
        let r = self.check(rhs);
        let ((ln, lt), (rn, rt)) = (l?, r?);
        let (ln, rn) = (Box::new(ln), Box::new(rn));
        let span = lhs.span.to(rhs.span);
        let sym = op.as_str();
        match op {
            BinOp::And | BinOp::Or => {
                for (t, s) in [(lt, lhs.span), (rt, rhs.span)] {
                    if t != T::Bool {
                        self.err(s, format!("`{sym}` takes bools, but this is a {t}"));
                        return None;
                    }
                }
                let node = if op == BinOp::And {
                    Node::And(ln, rn)
                } else {
                    Node::Or(ln, rn)
                };
                Some((node, T::Bool))
            }
            BinOp::Eq | BinOp::Ne => {
                if lt != rt {
                    self.diags.push(
                        Diagnostic::at(
                            self.src,
                            span,
                            format!("`{sym}` compares a {lt} with a {rt}"),
                        )
                        .with_help("both sides of a comparison have one type"),
                    );
                    return None;
                }
                let cmp = if op == BinOp::Eq {
                    CmpOp::Eq
                } else {
                    CmpOp::Ne
                };
                Some((Node::Cmp(cmp, ln, rn), T::Bool))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if lt != rt || !matches!(lt, T::Number | T::Timestamp) {
                    self.diags.push(
                        Diagnostic::at(
                            self.src,
                            span,
                            format!("`{sym}` compares a {lt} with a {rt}"),
                        )
                        .with_help("`<`, `<=`, `>` and `>=` compare numbers with numbers or timestamps with timestamps"),
                    );
                    return None;
                }
                let cmp = match op {
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                Some((Node::Cmp(cmp, ln, rn), T::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                for (t, s) in [(lt, lhs.span), (rt, rhs.span)] {
                    if t != T::Number {
                        self.err(s, format!("`{sym}` takes numbers, but this is a {t}"));
                        return None;
                    }
                }
                let a = match op {
                    BinOp::Add => ArithOp::Add,
                    BinOp::Sub => ArithOp::Sub,
                    BinOp::Mul => ArithOp::Mul,
                    _ => ArithOp::Div,
                };
                Some((Node::Arith(a, ln, rn), T::Number))
            }
        }
    }

    fn call(&mut self, e: &Expr, name: &str, args: &[Expr]) -> Option<Typed> {
        use ValueType as T;
        let arity = match name {
            "is_missing" | "abs" | "lower" | "hour_of_day" => 1,
            "coalesce" | "min" | "max" | "starts_with" | "contains" | "matches"
            | "days_between" => 2,
            _ => {
                let mut d = Diagnostic::at(self.src, e.span, format!("unknown function `{name}`"));
                let best = FUNCTIONS
                    .iter()
                    .map(|f| (edit_distance(f, name), *f))
                    .filter(|(d, _)| *d <= 2)
                    .min();
                d = match best {
                    Some((_, f)) => d.with_help(format!("did you mean `{f}`?")),
                    None => d.with_help(format!("the functions are {}", FUNCTIONS.join(", "))),
                };
                self.diags.push(d);
                return None;
            }
        };
        if args.len() != arity {
            self.err(
                e.span,
                format!(
                    "`{name}` takes {arity} argument{}, but {} {} given",
                    if arity == 1 { "" } else { "s" },
                    args.len(),
                    if args.len() == 1 { "was" } else { "were" }
                ),
            );
            return None;
        }
        let f = format!("`{name}`");
        let b = Box::new;
        match name {
            "is_missing" => {
                let (n, _) = self.check(&args[0])?;
                Some((Node::IsMissing(b(n)), T::Bool))
            }
            "coalesce" => {
                let (x, xt) = self.check(&args[0])?;
                let (d, dt) = self.check(&args[1])?;
                if xt != dt {
                    self.err(
                        args[1].span,
                        format!("the default of `coalesce` must be a {xt} like its value, but this is a {dt}"),
                    );
                    return None;
                }
                Some((Node::Coalesce(b(x), b(d)), xt))
            }
            "abs" => Some((
                Node::Abs(b(self.expect(&args[0], T::Number, &f)?)),
                T::Number,
            )),
            "min" | "max" => {
                let x = self.expect(&args[0], T::Number, &f);
                let y = self.expect(&args[1], T::Number, &f);
                let (x, y) = (b(x?), b(y?));
                Some((
                    if name == "min" {
                        Node::Min(x, y)
                    } else {
                        Node::Max(x, y)
                    },
                    T::Number,
                ))
            }
            "lower" => Some((
                Node::Lower(b(self.expect(&args[0], T::String, &f)?)),
                T::String,
            )),
            "starts_with" | "contains" => {
                let x = self.expect(&args[0], T::String, &f);
                let y = self.expect(&args[1], T::String, &f);
                let (x, y) = (b(x?), b(y?));
                Some((
                    if name == "contains" {
                        Node::Contains(x, y)
                    } else {
                        Node::StartsWith(x, y)
                    },
                    T::Bool,
                ))
            }
            "matches" => {
                let x = self.expect(&args[0], T::String, &f)?;
                let ExprKind::Lit(Lit::Str(pattern)) = &args[1].kind else {
                    self.diags.push(
                        Diagnostic::at(
                            self.src,
                            args[1].span,
                            "the pattern of `matches` must be a string literal",
                        )
                        .with_help("patterns are compiled once, when the rules are checked"),
                    );
                    return None;
                };
                match regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => Some((Node::Matches(b(x), re), T::Bool)),
                    Err(err) => {
                        let msg = err.to_string();
                        let last = msg
                            .lines()
                            .last()
                            .unwrap_or("invalid pattern")
                            .trim()
                            .to_owned();
                        self.diags.push(
                            Diagnostic::at(
                                self.src,
                                args[1].span,
                                format!("invalid regular expression: {last}"),
                            )
                            .with_help("the syntax is that of the Rust `regex` crate"),
                        );
                        None
                    }
                }
            }
            "hour_of_day" => Some((
                Node::HourOfDay(b(self.expect(&args[0], T::Timestamp, &f)?)),
                T::Number,
            )),
            _ => {
                let x = self.expect(&args[0], T::Timestamp, &f);
                let y = self.expect(&args[1], T::Timestamp, &f);
                Some((Node::DaysBetween(b(x?), b(y?)), T::Number))
            }
        }
    }
}

/// Checks one expression into its checked tree; `None` when it has errors
/// (they are in `diags`).
pub fn compile(
    src: &Source,
    e: &Expr,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Typed> {
    let mut c = Checker { src, scope, diags };
    c.check(e)
}
