//! A naive evaluator of the rules language, written from `docs/rules-dsl.md`
//! alone: it walks the syntax tree, looks every name up in the catalogue on
//! every use, and decides a rule set by sorting its hits. It is slow and
//! plain on purpose: the property tests hold the compiled evaluator to it.

use std::collections::HashMap;

use verdict_core::{Action, Catalogue, Record, Value};
use verdict_rules::ast::{BinOp, Expr, ExprKind, ListRef, Lit};

/// A value during naive evaluation: a record value, with `Missing` for
/// missing.
pub type V = Value;

fn lit(l: &Lit) -> V {
    match l {
        Lit::Number(n) => Value::Number(*n),
        Lit::Str(s) => Value::String(s.as_str().into()),
        Lit::Bool(b) => Value::Bool(*b),
    }
}

/// Named lists: their members as literal values.
pub type Lists = HashMap<String, Vec<V>>;

fn member(v: &V, list: &[V]) -> bool {
    list.iter().any(|m| match (v, m) {
        (Value::Number(a), Value::Number(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    })
}

fn num(v: &V) -> Option<f64> {
    v.as_number()
}

fn ts(v: &V) -> Option<i64> {
    v.as_timestamp()
}

fn string(v: &V) -> Option<&str> {
    v.as_str()
}

fn bool3(b: Option<bool>) -> V {
    b.map_or(Value::Missing, Value::Bool)
}

/// The value of `e` for `record`.
pub fn eval(e: &Expr, c: &Catalogue, lists: &Lists, record: &Record<'_>) -> V {
    let ev = |x: &Expr| eval(x, c, lists, record);
    match &e.kind {
        ExprKind::Lit(l) => lit(l),
        ExprKind::Path(p) => {
            let entry = c.lookup(&p.join(".")).expect("a checked path");
            let v = record.get(entry.slot).clone();
            // A value of another type than declared reads as missing.
            if v.value_type() == Some(entry.ty) {
                v
            } else {
                Value::Missing
            }
        }
        ExprKind::Neg(x) => num(&ev(x)).map_or(Value::Missing, |n| Value::Number(-n)),
        ExprKind::Not(x) => bool3(ev(x).as_bool().map(|b| !b)),
        ExprKind::Binary { op, lhs, rhs } => {
            let (a, b) = (ev(lhs), ev(rhs));
            match op {
                BinOp::And => match (a.as_bool(), b.as_bool()) {
                    (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Missing,
                },
                BinOp::Or => match (a.as_bool(), b.as_bool()) {
                    (Some(true), _) | (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Missing,
                },
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (num(&a), num(&b)) {
                    (Some(x), Some(y)) => match op {
                        BinOp::Add => Value::Number(x + y),
                        BinOp::Sub => Value::Number(x - y),
                        BinOp::Mul => Value::Number(x * y),
                        _ if y == 0.0 => Value::Missing,
                        _ => Value::Number(x / y),
                    },
                    _ => Value::Missing,
                },
                _ => compare(*op, &a, &b),
            }
        }
        ExprKind::In {
            value,
            list,
            negated,
        } => {
            let v = ev(value);
            if v.is_missing() {
                return Value::Missing;
            }
            let members: Vec<V> = match list {
                ListRef::Named(n, _) => lists[n].clone(),
                ListRef::Inline(items) => items.iter().map(|(l, _)| lit(l)).collect(),
            };
            Value::Bool(member(&v, &members) != *negated)
        }
        ExprKind::Call { name, args } => {
            let a: Vec<V> = args.iter().map(ev).collect();
            match name.as_str() {
                "is_missing" => Value::Bool(a[0].is_missing()),
                "coalesce" => {
                    if a[0].is_missing() {
                        a[1].clone()
                    } else {
                        a[0].clone()
                    }
                }
                "abs" => num(&a[0]).map_or(Value::Missing, |n| Value::Number(n.abs())),
                "min" | "max" => match (num(&a[0]), num(&a[1])) {
                    (Some(x), Some(y)) if name == "min" => Value::Number(x.min(y)),
                    (Some(x), Some(y)) => Value::Number(x.max(y)),
                    _ => Value::Missing,
                },
                "lower" => {
                    string(&a[0]).map_or(Value::Missing, |s| Value::from(&*s.to_lowercase()))
                }
                "starts_with" | "contains" => match (string(&a[0]), string(&a[1])) {
                    (Some(s), Some(p)) if name == "starts_with" => Value::Bool(s.starts_with(p)),
                    (Some(s), Some(p)) => Value::Bool(s.contains(p)),
                    _ => Value::Missing,
                },
                "matches" => {
                    let ExprKind::Lit(Lit::Str(pattern)) = &args[1].kind else {
                        panic!("a checked pattern is a literal")
                    };
                    let re = regex::Regex::new(pattern).expect("a checked pattern");
                    bool3(string(&a[0]).map(|s| re.is_match(s)))
                }
                "hour_of_day" => ts(&a[0]).map_or(Value::Missing, |t| {
                    Value::Number((t.rem_euclid(86_400_000) / 3_600_000) as f64)
                }),
                "days_between" => match (ts(&a[0]), ts(&a[1])) {
                    (Some(x), Some(y)) => {
                        Value::Number((i128::from(y) - i128::from(x)) as f64 / 86_400_000.0)
                    }
                    _ => Value::Missing,
                },
                other => panic!("unknown function {other}"),
            }
        }
    }
}

fn compare(op: BinOp, a: &V, b: &V) -> V {
    use std::cmp::Ordering::*;
    let ord = match (a, b) {
        (Value::Missing, _) | (_, Value::Missing) => return Value::Missing,
        (Value::Number(x), Value::Number(y)) => match x.partial_cmp(y) {
            Some(o) => o,
            // NaN: every comparison is false except `!=`.
            None => return Value::Bool(op == BinOp::Ne),
        },
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => panic!("a checked comparison has one type on both sides"),
    };
    Value::Bool(match op {
        BinOp::Eq => ord == Equal,
        BinOp::Ne => ord != Equal,
        BinOp::Lt => ord == Less,
        BinOp::Le => ord != Greater,
        BinOp::Gt => ord == Greater,
        BinOp::Ge => ord != Less,
        _ => unreachable!("not a comparison"),
    })
}

/// One rule as the naive decider sees it.
pub struct NaiveRule<'a> {
    pub name: &'a str,
    pub action: Action,
    pub priority: i64,
    pub shadow: bool,
    pub cond: &'a Expr,
}

/// The decision, hit names and shadow hit names of a rule set (rules in
/// definition order), by the documented order: priority high first, then
/// deny > review > approve, then definition order.
pub fn decide(
    rules: &[NaiveRule<'_>],
    c: &Catalogue,
    lists: &Lists,
    record: &Record<'_>,
) -> (Action, Vec<String>, Vec<String>) {
    let mut hits: Vec<(usize, &NaiveRule<'_>)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| eval(r.cond, c, lists, record) == Value::Bool(true))
        .collect();
    hits.sort_by(|(i, a), (j, b)| {
        b.priority
            .cmp(&a.priority)
            .then(b.action.cmp(&a.action))
            .then(i.cmp(j))
    });
    let names = |shadow: bool| {
        hits.iter()
            .filter(|(_, r)| r.shadow == shadow)
            .map(|(_, r)| r.name.to_owned())
            .collect::<Vec<_>>()
    };
    let (plain, shadow) = (names(false), names(true));
    let decision = hits
        .iter()
        .find(|(_, r)| !r.shadow)
        .map_or(Action::Approve, |(_, r)| r.action);
    (decision, plain, shadow)
}
