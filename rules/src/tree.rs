//! The checked tree: what the type checker produces from a syntax tree.
//!
//! Every name is already a slot with its type, every list a hash set, every
//! regex compiled. It is not evaluated: [`crate::eval`] compiles it into the
//! flat program that is, so the language's semantics live in one place.

use std::sync::Arc;

use ahash::AHashSet;
use verdict_core::{Slot, ValueType};

/// A literal of the checked tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Number(f64),
    Str(Arc<str>),
    Bool(bool),
}

impl Const {
    pub fn ty(&self) -> ValueType {
        match self {
            Const::Number(_) => ValueType::Number,
            Const::Str(_) => ValueType::String,
            Const::Bool(_) => ValueType::Bool,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The key of a number in a [`ListSet`]: -0.0 and 0.0 are one member.
pub fn number_key(n: f64) -> u64 {
    if n == 0.0 { 0 } else { n.to_bits() }
}

impl ListSet {
    pub fn insert_number(&mut self, n: f64) {
        self.numbers.insert(number_key(n));
    }

    pub fn contains_number(&self, n: f64) -> bool {
        self.numbers.contains(&number_key(n))
    }
}

/// A checked expression. Operands have the types the checker required
/// (both sides of a comparison one type, numbers for arithmetic, …).
#[derive(Debug)]
pub enum Node {
    Const(Const),
    Slot(Slot, ValueType),
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
}

impl Node {
    /// The type of the expression's value.
    pub fn ty(&self) -> ValueType {
        use ValueType as T;
        match self {
            Node::Const(c) => c.ty(),
            Node::Slot(_, ty) => *ty,
            Node::Coalesce(a, _) => a.ty(),
            Node::Lower(_) => T::String,
            Node::Neg(_)
            | Node::Arith(..)
            | Node::Abs(_)
            | Node::Min(..)
            | Node::Max(..)
            | Node::HourOfDay(_)
            | Node::DaysBetween(..) => T::Number,
            Node::Not(_)
            | Node::And(..)
            | Node::Or(..)
            | Node::Cmp(..)
            | Node::In { .. }
            | Node::IsMissing(_)
            | Node::StartsWith(..)
            | Node::Contains(..)
            | Node::Matches(..) => T::Bool,
        }
    }
}
