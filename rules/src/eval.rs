//! The evaluation form: a typed tree whose names are already slots, whose
//! constants are folded, lists hash sets and regexes compiled. Evaluating it
//! reads the record and allocates nothing (except `lower` of a string that
//! has upper-case letters).

use std::borrow::Cow;
use std::sync::Arc;

use ahash::AHashSet;
use verdict_core::{Record, Slot, Value};

/// A constant of the evaluation form.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Missing,
    Number(f64),
    Str(Arc<str>),
    Bool(bool),
    Timestamp(i64),
}

/// A value during evaluation, borrowed from the record or the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum V<'a> {
    Missing,
    Num(f64),
    Str(Cow<'a, str>),
    Bool(bool),
    Ts(i64),
}

impl V<'_> {
    pub fn to_const(&self) -> Const {
        match self {
            V::Missing => Const::Missing,
            V::Num(n) => Const::Number(*n),
            V::Str(s) => Const::Str(Arc::from(s.as_ref())),
            V::Bool(b) => Const::Bool(*b),
            V::Ts(t) => Const::Timestamp(*t),
        }
    }
}

fn of_value(v: &Value) -> V<'_> {
    match v {
        Value::Missing => V::Missing,
        Value::Number(n) => V::Num(*n),
        Value::String(s) => V::Str(Cow::Borrowed(s)),
        Value::Bool(b) => V::Bool(*b),
        Value::Timestamp(t) => V::Ts(*t),
    }
}

fn of_const(c: &Const) -> V<'_> {
    match c {
        Const::Missing => V::Missing,
        Const::Number(n) => V::Num(*n),
        Const::Str(s) => V::Str(Cow::Borrowed(s)),
        Const::Bool(b) => V::Bool(*b),
        Const::Timestamp(t) => V::Ts(*t),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// The members of a list, hashed.
#[derive(Debug, Default)]
pub struct ListSet {
    pub strings: AHashSet<Box<str>>,
    pub numbers: AHashSet<u64>,
    pub bools: [bool; 2],
}

fn number_key(n: f64) -> u64 {
    // -0.0 and 0.0 are one member.
    if n == 0.0 { 0 } else { n.to_bits() }
}

impl ListSet {
    pub fn insert_number(&mut self, n: f64) {
        self.numbers.insert(number_key(n));
    }

    fn contains(&self, v: &V<'_>) -> Option<bool> {
        match v {
            V::Missing => None,
            V::Str(s) => Some(self.strings.contains(s.as_ref())),
            V::Num(n) => Some(self.numbers.contains(&number_key(*n))),
            V::Bool(b) => Some(self.bools[usize::from(*b)]),
            V::Ts(_) => Some(false),
        }
    }
}

/// A compiled expression.
#[derive(Debug)]
pub enum Node {
    Const(Const),
    Slot(Slot),
    Neg(Box<Node>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    In {
        value: Box<Node>,
        set: Arc<ListSet>,
        negated: bool,
    },
    IsMissing(Box<Node>),
    Coalesce(Box<Node>, Box<Node>),
    Abs(Box<Node>),
    Min(Box<Node>, Box<Node>),
    Max(Box<Node>, Box<Node>),
    Lower(Box<Node>),
    StartsWith(Box<Node>, Box<Node>),
    Contains(Box<Node>, Box<Node>),
    Matches(Box<Node>, regex::Regex),
    HourOfDay(Box<Node>),
    DaysBetween(Box<Node>, Box<Node>),
    /// `slot <op> number`: the commonest comparison, without building
    /// values.
    NumCmpConst(CmpOp, Slot, f64),
    /// `slot == "text"` (or `!=` when `negated`).
    StrEqConst(Slot, Arc<str>, bool),
    /// `slot in list` (or `not in`), the slot read directly.
    SlotIn(Slot, Arc<ListSet>, bool),
    /// A comparison of two numeric expressions, computed as plain numbers.
    NumCmp(CmpOp, Box<Node>, Box<Node>),
}

/// A condition's truth in three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    False,
    True,
    Missing,
}

impl From<bool> for Truth {
    #[inline]
    fn from(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }
}

#[inline]
fn order(op: CmpOp, x: f64, y: f64) -> bool {
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

/// Rewrites the commonest shapes into their direct forms (after folding).
pub fn specialise(node: Node) -> Node {
    use Node::*;
    let b = |n: Box<Node>| Box::new(specialise(*n));
    match node {
        Cmp(op, x, y) => match (*x, *y) {
            (Slot(s), Const(self::Const::Number(c))) => NumCmpConst(op, s, c),
            (Const(self::Const::Number(c)), Slot(s)) => NumCmpConst(flip(op), s, c),
            (Slot(s), Const(self::Const::Str(c))) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                StrEqConst(s, c, op == CmpOp::Ne)
            }
            (Const(self::Const::Str(c)), Slot(s)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                StrEqConst(s, c, op == CmpOp::Ne)
            }
            (x, y) => Cmp(op, b(Box::new(x)), b(Box::new(y))),
        },
        NumCmp(op, x, y) => match (*x, *y) {
            (Slot(s), Const(self::Const::Number(c))) => NumCmpConst(op, s, c),
            (Const(self::Const::Number(c)), Slot(s)) => NumCmpConst(flip(op), s, c),
            (x, y) => NumCmp(op, b(Box::new(x)), b(Box::new(y))),
        },
        In {
            value,
            set,
            negated,
        } => match *value {
            Slot(s) => SlotIn(s, set, negated),
            v => In {
                value: b(Box::new(v)),
                set,
                negated,
            },
        },
        Not(a) => Not(b(a)),
        And(x, y) => And(b(x), b(y)),
        Or(x, y) => Or(b(x), b(y)),
        Neg(a) => Neg(b(a)),
        Arith(op, x, y) => Arith(op, b(x), b(y)),
        IsMissing(a) => IsMissing(b(a)),
        Coalesce(x, y) => Coalesce(b(x), b(y)),
        Abs(a) => Abs(b(a)),
        Min(x, y) => Min(b(x), b(y)),
        Max(x, y) => Max(b(x), b(y)),
        Lower(a) => Lower(b(a)),
        StartsWith(x, y) => StartsWith(b(x), b(y)),
        Contains(x, y) => Contains(b(x), b(y)),
        Matches(a, re) => Matches(b(a), re),
        HourOfDay(a) => HourOfDay(b(a)),
        DaysBetween(x, y) => DaysBetween(b(x), b(y)),
        other => other,
    }
}

const MS_PER_DAY: f64 = 86_400_000.0;

fn num<'a>(v: V<'a>) -> Option<f64> {
    match v {
        V::Num(n) => Some(n),
        _ => None,
    }
}

fn ts<'a>(v: V<'a>) -> Option<i64> {
    match v {
        V::Ts(t) => Some(t),
        _ => None,
    }
}

fn num_or_missing(n: Option<f64>) -> V<'static> {
    n.map_or(V::Missing, V::Num)
}

impl Node {
    pub fn is_const(&self) -> bool {
        matches!(self, Node::Const(_))
    }

    /// The truth of a boolean expression, without building values on the
    /// common paths.
    #[inline]
    pub fn truth(&self, r: &Record<'_>) -> Truth {
        match self {
            Node::NumCmpConst(op, slot, c) => match r.get(*slot) {
                Value::Number(x) => order(*op, *x, *c).into(),
                _ => Truth::Missing,
            },
            Node::StrEqConst(slot, c, negated) => match r.get(*slot) {
                Value::String(s) => ((s.len() == c.len() && **s == **c) != *negated).into(),
                _ => Truth::Missing,
            },
            Node::SlotIn(slot, set, negated) => {
                let found = match r.get(*slot) {
                    Value::String(s) => set.strings.contains(&**s),
                    Value::Number(n) => set.numbers.contains(&number_key(*n)),
                    Value::Bool(b) => set.bools[usize::from(*b)],
                    Value::Timestamp(_) => false,
                    Value::Missing => return Truth::Missing,
                };
                (found != *negated).into()
            }
            Node::NumCmp(op, a, b) => match (a.number(r), b.number(r)) {
                (Some(x), Some(y)) => order(*op, x, y).into(),
                _ => Truth::Missing,
            },
            Node::And(a, b) => match a.truth(r) {
                Truth::False => Truth::False,
                ta => match (ta, b.truth(r)) {
                    (_, Truth::False) => Truth::False,
                    (Truth::True, Truth::True) => Truth::True,
                    _ => Truth::Missing,
                },
            },
            Node::Or(a, b) => match a.truth(r) {
                Truth::True => Truth::True,
                ta => match (ta, b.truth(r)) {
                    (_, Truth::True) => Truth::True,
                    (Truth::False, Truth::False) => Truth::False,
                    _ => Truth::Missing,
                },
            },
            Node::Not(a) => match a.truth(r) {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                Truth::Missing => Truth::Missing,
            },
            other => match other.eval(r) {
                V::Bool(b) => b.into(),
                _ => Truth::Missing,
            },
        }
    }

    /// The value of a numeric expression (`None` when missing), without
    /// building values on the common paths.
    #[inline]
    pub fn number(&self, r: &Record<'_>) -> Option<f64> {
        match self {
            Node::Const(Const::Number(n)) => Some(*n),
            Node::Slot(s) => r.get(*s).as_number(),
            Node::Arith(op, a, b) => {
                let (x, y) = (a.number(r)?, b.number(r)?);
                match op {
                    ArithOp::Add => Some(x + y),
                    ArithOp::Sub => Some(x - y),
                    ArithOp::Mul => Some(x * y),
                    ArithOp::Div if y == 0.0 => None,
                    ArithOp::Div => Some(x / y),
                }
            }
            Node::Neg(a) => a.number(r).map(|x| -x),
            Node::Coalesce(a, b) => a.number(r).or_else(|| b.number(r)),
            other => num(other.eval(r)),
        }
    }

    /// The value of the expression for one record.
    pub fn eval<'a>(&'a self, r: &Record<'a>) -> V<'a> {
        match self {
            Node::Const(c) => of_const(c),
            Node::Slot(s) => of_value(r.get(*s)),
            Node::Neg(e) => num_or_missing(num(e.eval(r)).map(|n| -n)),
            Node::Not(e) => match e.eval(r) {
                V::Bool(b) => V::Bool(!b),
                _ => V::Missing,
            },
            Node::And(a, b) => match a.eval(r) {
                V::Bool(false) => V::Bool(false),
                va => match (va, b.eval(r)) {
                    (_, V::Bool(false)) => V::Bool(false),
                    (V::Bool(true), V::Bool(true)) => V::Bool(true),
                    _ => V::Missing,
                },
            },
            Node::Or(a, b) => match a.eval(r) {
                V::Bool(true) => V::Bool(true),
                va => match (va, b.eval(r)) {
                    (_, V::Bool(true)) => V::Bool(true),
                    (V::Bool(false), V::Bool(false)) => V::Bool(false),
                    _ => V::Missing,
                },
            },
            Node::Cmp(op, a, b) => compare(*op, a.eval(r), b.eval(r)),
            Node::Arith(op, a, b) => match (num(a.eval(r)), num(b.eval(r))) {
                (Some(x), Some(y)) => match op {
                    ArithOp::Add => V::Num(x + y),
                    ArithOp::Sub => V::Num(x - y),
                    ArithOp::Mul => V::Num(x * y),
                    ArithOp::Div if y == 0.0 => V::Missing,
                    ArithOp::Div => V::Num(x / y),
                },
                _ => V::Missing,
            },
            Node::In {
                value,
                set,
                negated,
            } => match set.contains(&value.eval(r)) {
                Some(found) => V::Bool(found != *negated),
                None => V::Missing,
            },
            Node::IsMissing(e) => V::Bool(matches!(e.eval(r), V::Missing)),
            Node::Coalesce(a, b) => match a.eval(r) {
                V::Missing => b.eval(r),
                v => v,
            },
            Node::Abs(e) => num_or_missing(num(e.eval(r)).map(f64::abs)),
            Node::Min(a, b) => match (num(a.eval(r)), num(b.eval(r))) {
                (Some(x), Some(y)) => V::Num(x.min(y)),
                _ => V::Missing,
            },
            Node::Max(a, b) => match (num(a.eval(r)), num(b.eval(r))) {
                (Some(x), Some(y)) => V::Num(x.max(y)),
                _ => V::Missing,
            },
            Node::Lower(e) => match e.eval(r) {
                V::Str(s) if s.chars().any(char::is_uppercase) => {
                    V::Str(Cow::Owned(s.to_lowercase()))
                }
                V::Str(s) => V::Str(s),
                _ => V::Missing,
            },
            Node::StartsWith(a, b) => str2(a.eval(r), b.eval(r), |s, p| s.starts_with(p)),
            Node::Contains(a, b) => str2(a.eval(r), b.eval(r), |s, p| s.contains(p)),
            Node::Matches(e, re) => match e.eval(r) {
                V::Str(s) => V::Bool(re.is_match(&s)),
                _ => V::Missing,
            },
            Node::HourOfDay(e) => match ts(e.eval(r)) {
                Some(t) => V::Num((t.rem_euclid(86_400_000) / 3_600_000) as f64),
                None => V::Missing,
            },
            Node::DaysBetween(a, b) => match (ts(a.eval(r)), ts(b.eval(r))) {
                (Some(x), Some(y)) => V::Num((y - x) as f64 / MS_PER_DAY),
                _ => V::Missing,
            },
            Node::NumCmpConst(..) | Node::StrEqConst(..) | Node::SlotIn(..) | Node::NumCmp(..) => {
                match self.truth(r) {
                    Truth::True => V::Bool(true),
                    Truth::False => V::Bool(false),
                    Truth::Missing => V::Missing,
                }
            }
        }
    }
}

fn str2(a: V<'_>, b: V<'_>, f: impl Fn(&str, &str) -> bool) -> V<'static> {
    match (a, b) {
        (V::Str(x), V::Str(y)) => V::Bool(f(&x, &y)),
        _ => V::Missing,
    }
}

fn compare(op: CmpOp, a: V<'_>, b: V<'_>) -> V<'static> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (&a, &b) {
        (V::Missing, _) | (_, V::Missing) => return V::Missing,
        (V::Num(x), V::Num(y)) => x.partial_cmp(y),
        (V::Ts(x), V::Ts(y)) => Some(x.cmp(y)),
        (V::Str(x), V::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        // The checker rules mixed types out; a value of an unexpected type
        // (only from a malformed record) is treated as missing.
        _ => return V::Missing,
    };
    let Some(ord) = ord else {
        // NaN compares with nothing: every comparison is false except `!=`.
        return V::Bool(op == CmpOp::Ne);
    };
    V::Bool(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}
