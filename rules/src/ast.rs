//! The syntax tree of a rule file, with source spans, and its printer.
//!
//! Printing an AST gives rules-language text that parses back to the same
//! tree (binary operations are fully parenthesised).

use std::fmt;

use verdict_core::Action;

use crate::diag::Span;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Number(f64),
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

/// An expression and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    /// `event.amount`, `feature.user.txn_count_1h`, `model.fraud_score`.
    Path(Vec<String>),
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    In {
        value: Box<Expr>,
        list: ListRef,
        negated: bool,
    },
}

/// The list of an `in` test.
#[derive(Debug, Clone, PartialEq)]
pub enum ListRef {
    Named(String, Span),
    Inline(Vec<(Lit, Span)>),
}

/// A list declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct ListDef {
    pub name: String,
    pub name_span: Span,
    pub body: ListBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListBody {
    Inline(Vec<(Lit, Span)>),
    /// A file of one string per non-empty line, relative to the rule set.
    File(String, Span),
}

/// A rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    pub name: String,
    pub name_span: Span,
    pub priority: i64,
    pub shadow: bool,
    pub action: Action,
    pub cond: Expr,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    List(ListDef),
    Rule(RuleDef),
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

impl Expr {
    /// The same tree with every span zeroed, to compare trees from
    /// different texts.
    pub fn unspanned(&self) -> Expr {
        let kind = match &self.kind {
            ExprKind::Lit(l) => ExprKind::Lit(l.clone()),
            ExprKind::Path(p) => ExprKind::Path(p.clone()),
            ExprKind::Call { name, args } => ExprKind::Call {
                name: name.clone(),
                args: args.iter().map(Expr::unspanned).collect(),
            },
            ExprKind::Neg(e) => ExprKind::Neg(Box::new(e.unspanned())),
            ExprKind::Not(e) => ExprKind::Not(Box::new(e.unspanned())),
            ExprKind::Binary { op, lhs, rhs } => ExprKind::Binary {
                op: *op,
                lhs: Box::new(lhs.unspanned()),
                rhs: Box::new(rhs.unspanned()),
            },
            ExprKind::In {
                value,
                list,
                negated,
            } => ExprKind::In {
                value: Box::new(value.unspanned()),
                list: match list {
                    ListRef::Named(n, _) => ListRef::Named(n.clone(), Span::default()),
                    ListRef::Inline(items) => ListRef::Inline(
                        items
                            .iter()
                            .map(|(l, _)| (l.clone(), Span::default()))
                            .collect(),
                    ),
                },
                negated: *negated,
            },
        };
        Expr {
            kind,
            span: Span::default(),
        }
    }
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `{:?}` keeps a fraction or exponent, so the text parses back
            // to the same f64.
            Lit::Number(n) => write!(f, "{n:?}"),
            Lit::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[(Lit, Span)]) -> fmt::Result {
    f.write_str("[")?;
    for (i, (l, _)) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{l}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Lit(l) => write!(f, "{l}"),
            ExprKind::Path(p) => f.write_str(&p.join(".")),
            ExprKind::Call { name, args } => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            ExprKind::Neg(e) => write!(f, "-({e})"),
            ExprKind::Not(e) => write!(f, "(not ({e}))"),
            ExprKind::Binary { op, lhs, rhs } => write!(f, "({lhs} {} {rhs})", op.as_str()),
            ExprKind::In {
                value,
                list,
                negated,
            } => {
                write!(f, "({value} {}in ", if *negated { "not " } else { "" })?;
                match list {
                    ListRef::Named(n, _) => f.write_str(n)?,
                    ListRef::Inline(items) => write_list(f, items)?,
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::List(l) => match &l.body {
                ListBody::Inline(items) => {
                    write!(f, "list {} = ", l.name)?;
                    write_list(f, items)
                }
                ListBody::File(p, _) => write!(f, "list {} from {}", l.name, Lit::Str(p.clone())),
            },
            Item::Rule(r) => {
                write!(f, "rule {}", r.name)?;
                if r.priority != 0 {
                    write!(f, " priority {}", r.priority)?;
                }
                if r.shadow {
                    f.write_str(" shadow")?;
                }
                write!(f, ":\n  {} if {}", r.action.as_str(), r.cond)?;
                if let Some(reason) = &r.reason {
                    write!(f, "\n  reason {}", Lit::Str(reason.clone()))?;
                }
                Ok(())
            }
        }
    }
}
