//! The compiled program and its evaluator: the one place the rules
//! language's semantics are computed.
//!
//! What it is: the checked trees of a whole rule set (or of one expression)
//! compiled into one flat array of typed nodes. Identical subexpressions are
//! one node however many rules use them (`event.event_type == "payment"` in
//! twenty rules is computed once per record and remembered), constants are
//! folded, `and`/`or` chains are flattened into one node each whose operands
//! run cheapest first, and the commonest shapes (`slot > number`,
//! `slot == "text"`, `slot in list`) are single nodes. Evaluating reads the
//! record's slots and allocates nothing (except `lower` of a string with
//! upper-case letters): what is remembered lives in a per-thread scratch
//! that grows once.
//!
//! What it is not: it resolves no names and checks no types (that is
//! [`crate::check`], which produces [`crate::tree`]); it does not order the
//! hits of a decision (that is [`crate::RuleSet`]).
//!
//! Semantics, as `docs/rules-dsl.md` states them: SQL three-valued logic
//! over missing values; a comparison, arithmetic or function with a missing
//! operand is missing; division by zero is missing; NaN compares false
//! except with `!=`. A value of another type than the catalogue declares
//! (only a malformed record has one) reads as missing.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use verdict_core::{Namespace, Record, Slot, Value, ValueType};

use crate::tree::{ArithOp, CmpOp, Const, ListSet, Node as Tree};

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

/// The index of a node in a [`Program`].
pub type Id = u32;

/// No memo slot: the node is used once, or is as cheap to compute as to
/// look up.
const NO_MEMO: u32 = u32::MAX;

const MS_PER_DAY: f64 = 86_400_000.0;

/// One node's operation. Operand ids always point at earlier nodes.
#[derive(Debug, Clone)]
enum Op {
    // Bool-valued.
    Truth(Truth),
    BoolSlot(Slot),
    Not(Id),
    /// Operands `args[start..start + len]`.
    And(u32, u32),
    Or(u32, u32),
    NumCmp(CmpOp, Id, Id),
    NumCmpConst(CmpOp, Id, f64),
    SlotNumCmpConst(CmpOp, Slot, f64),
    TsCmp(CmpOp, Id, Id),
    /// `a == b`, or `a != b` when the flag is set.
    StrEq(bool, Id, Id),
    StrEqConst(bool, Id, Arc<str>),
    SlotStrEqConst(bool, Slot, Arc<str>),
    BoolEq(bool, Id, Id),
    /// `value in set`, or `not in` when the flag is set.
    InStr(Id, Arc<ListSet>, bool),
    SlotInStr(Slot, Arc<ListSet>, bool),
    InNum(Id, Arc<ListSet>, bool),
    InBool(Id, Arc<ListSet>, bool),
    IsMissing(Id),
    CoalesceBool(Id, Id),
    StartsWith(Id, Id),
    Contains(Id, Id),
    Matches(Id, regex::Regex),
    // Number-valued.
    Num(Option<f64>),
    NumSlot(Slot),
    Neg(Id),
    Arith(ArithOp, Id, Id),
    CoalesceNum(Id, Id),
    Abs(Id),
    Min(Id, Id),
    Max(Id, Id),
    HourOfDay(Id),
    DaysBetween(Id, Id),
    // Timestamp-valued.
    TsSlot(Slot),
    CoalesceTs(Id, Id),
    // String-valued.
    Str(Option<Arc<str>>),
    StrSlot(Slot),
    CoalesceStr(Id, Id),
    Lower(Id),
}

#[derive(Debug, Clone)]
struct Node {
    op: Op,
    ty: ValueType,
    /// Where the node's value is remembered for the record being
    /// evaluated, or [`NO_MEMO`].
    memo: u32,
}

/// Compiled expressions: every node of every rule of a rule set, or of
/// one expression.
#[derive(Debug, Default)]
pub struct Program {
    nodes: Vec<Node>,
    args: Vec<Id>,
    memo_len: usize,
}

/// A remembered value: a truth (0, 1, 2), a number's bits or a timestamp,
/// valid while `epoch` is the scratch's current one.
#[derive(Debug, Clone, Copy, Default)]
struct Memo {
    epoch: u32,
    present: bool,
    bits: u64,
}

/// The per-thread memory of remembered values. An epoch counter makes the
/// previous record's values stale without clearing them.
struct Scratch {
    epoch: u32,
    memo: Vec<Memo>,
}

thread_local! {
    // A `RefCell` in a thread-local, not a buffer in `Evaluation`: callers
    // build evaluations in different ways (one reused, one per decision),
    // and every one of them should allocate nothing once the thread's
    // scratch has grown.
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { epoch: 0, memo: Vec::new() })
    };
}

fn slot_key(s: Slot) -> u64 {
    let ns = match s.ns {
        Namespace::Event => 0u64,
        Namespace::Feature => 1,
        Namespace::Model => 2,
    };
    (ns << 32) | u64::from(s.index)
}

/// The identity of a node for sharing: its operation with operands, with
/// floats by their bits, lists by their address and strings by content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key(u8, Vec<u64>, Option<Arc<str>>);

fn cmp_code(op: CmpOp) -> u64 {
    op as u64
}

fn key_of(op: &Op, args: &[Id]) -> Key {
    let set = |s: &Arc<ListSet>| Arc::as_ptr(s) as usize as u64;
    let id = |i: &Id| u64::from(*i);
    let opt = |n: &Option<f64>| n.map_or(u64::MAX - 1, |n| n.to_bits());
    match op {
        Op::Truth(t) => Key(0, vec![*t as u64], None),
        Op::BoolSlot(s) => Key(1, vec![slot_key(*s)], None),
        Op::Not(a) => Key(2, vec![id(a)], None),
        Op::And(start, len) => Key(
            3,
            args[*start as usize..(*start + *len) as usize]
                .iter()
                .map(id)
                .collect(),
            None,
        ),
        Op::Or(start, len) => Key(
            4,
            args[*start as usize..(*start + *len) as usize]
                .iter()
                .map(id)
                .collect(),
            None,
        ),
        Op::NumCmp(o, a, b) => Key(5, vec![cmp_code(*o), id(a), id(b)], None),
        Op::NumCmpConst(o, a, c) => Key(6, vec![cmp_code(*o), id(a), c.to_bits()], None),
        Op::SlotNumCmpConst(o, s, c) => Key(7, vec![cmp_code(*o), slot_key(*s), c.to_bits()], None),
        Op::TsCmp(o, a, b) => Key(8, vec![cmp_code(*o), id(a), id(b)], None),
        Op::StrEq(ne, a, b) => Key(9, vec![u64::from(*ne), id(a), id(b)], None),
        Op::StrEqConst(ne, a, c) => Key(10, vec![u64::from(*ne), id(a)], Some(c.clone())),
        Op::SlotStrEqConst(ne, s, c) => {
            Key(11, vec![u64::from(*ne), slot_key(*s)], Some(c.clone()))
        }
        Op::BoolEq(ne, a, b) => Key(12, vec![u64::from(*ne), id(a), id(b)], None),
        Op::InStr(a, l, n) => Key(13, vec![id(a), set(l), u64::from(*n)], None),
        Op::SlotInStr(s, l, n) => Key(14, vec![slot_key(*s), set(l), u64::from(*n)], None),
        Op::InNum(a, l, n) => Key(15, vec![id(a), set(l), u64::from(*n)], None),
        Op::InBool(a, l, n) => Key(16, vec![id(a), set(l), u64::from(*n)], None),
        Op::IsMissing(a) => Key(17, vec![id(a)], None),
        Op::CoalesceBool(a, b) => Key(18, vec![id(a), id(b)], None),
        Op::StartsWith(a, b) => Key(19, vec![id(a), id(b)], None),
        Op::Contains(a, b) => Key(20, vec![id(a), id(b)], None),
        Op::Matches(a, re) => Key(21, vec![id(a)], Some(Arc::from(re.as_str()))),
        Op::Num(n) => Key(22, vec![opt(n)], None),
        Op::NumSlot(s) => Key(23, vec![slot_key(*s)], None),
        Op::Neg(a) => Key(24, vec![id(a)], None),
        Op::Arith(o, a, b) => Key(25, vec![*o as u64, id(a), id(b)], None),
        Op::CoalesceNum(a, b) => Key(26, vec![id(a), id(b)], None),
        Op::Abs(a) => Key(27, vec![id(a)], None),
        Op::Min(a, b) => Key(28, vec![id(a), id(b)], None),
        Op::Max(a, b) => Key(29, vec![id(a), id(b)], None),
        Op::HourOfDay(a) => Key(30, vec![id(a)], None),
        Op::DaysBetween(a, b) => Key(31, vec![id(a), id(b)], None),
        Op::TsSlot(s) => Key(32, vec![slot_key(*s)], None),
        Op::CoalesceTs(a, b) => Key(33, vec![id(a), id(b)], None),
        Op::Str(s) => Key(34, vec![u64::from(s.is_some())], s.clone()),
        Op::StrSlot(s) => Key(35, vec![slot_key(*s)], None),
        Op::CoalesceStr(a, b) => Key(36, vec![id(a), id(b)], None),
        Op::Lower(a) => Key(37, vec![id(a)], None),
    }
}

/// Builds a [`Program`] from checked trees, sharing identical nodes.
#[derive(Debug, Default)]
pub struct Builder {
    program: Program,
    shared: HashMap<Key, Id>,
    /// How many operands and roots use each node.
    uses: Vec<u32>,
}

impl Builder {
    /// Compiles one checked tree; returns its root. Calling it again with
    /// another tree shares what the two have in common.
    pub fn add(&mut self, tree: &Tree) -> Id {
        let id = self.lower(tree);
        self.uses[id as usize] += 1;
        id
    }

    /// Decides which nodes are remembered and in which order `and`/`or`
    /// operands run, and returns the program.
    pub fn finish(mut self) -> Program {
        let p = &mut self.program;
        let mut memo_len = 0;
        for (i, node) in p.nodes.iter_mut().enumerate() {
            let cheap = matches!(
                node.op,
                Op::Truth(_)
                    | Op::Num(_)
                    | Op::Str(_)
                    | Op::BoolSlot(_)
                    | Op::NumSlot(_)
                    | Op::TsSlot(_)
                    | Op::StrSlot(_)
                    | Op::SlotNumCmpConst(..)
            );
            // Strings are not remembered: the scratch holds no borrow of
            // the record.
            if self.uses[i] > 1 && !cheap && node.ty != ValueType::String {
                node.memo = memo_len;
                memo_len += 1;
            }
        }
        p.memo_len = memo_len as usize;
        // Operands cheapest first: `and` and `or` are commutative in
        // three-valued logic and evaluation has no side effects, so only
        // the cost changes. A remembered node counts as cheap, since every
        // rule after the first that uses it only looks it up.
        let mut cost = vec![0u32; p.nodes.len()];
        for i in 0..p.nodes.len() {
            let c = |j: &Id| cost[*j as usize];
            let own = match &p.nodes[i].op {
                Op::Truth(_) | Op::Num(_) | Op::Str(_) => 0,
                Op::BoolSlot(_) | Op::NumSlot(_) | Op::TsSlot(_) | Op::StrSlot(_) => 1,
                Op::SlotNumCmpConst(..) => 2,
                Op::SlotStrEqConst(..) => 3,
                Op::SlotInStr(..) => 8,
                Op::Matches(a, _) => 100 + c(a),
                Op::Lower(a) => 20 + c(a),
                Op::And(s, l) | Op::Or(s, l) => {
                    1 + p.args[*s as usize..(*s + *l) as usize]
                        .iter()
                        .map(c)
                        .sum::<u32>()
                }
                Op::Not(a)
                | Op::NumCmpConst(_, a, _)
                | Op::StrEqConst(_, a, _)
                | Op::IsMissing(a)
                | Op::Neg(a)
                | Op::Abs(a)
                | Op::HourOfDay(a) => 1 + c(a),
                Op::InStr(a, ..) | Op::InNum(a, ..) | Op::InBool(a, ..) => 6 + c(a),
                Op::StartsWith(a, b) | Op::Contains(a, b) => 5 + c(a) + c(b),
                Op::NumCmp(_, a, b)
                | Op::TsCmp(_, a, b)
                | Op::StrEq(_, a, b)
                | Op::BoolEq(_, a, b)
                | Op::CoalesceBool(a, b)
                | Op::Arith(_, a, b)
                | Op::CoalesceNum(a, b)
                | Op::Min(a, b)
                | Op::Max(a, b)
                | Op::DaysBetween(a, b)
                | Op::CoalesceTs(a, b)
                | Op::CoalesceStr(a, b) => 1 + c(a) + c(b),
            };
            cost[i] = if p.nodes[i].memo != NO_MEMO {
                own.min(2)
            } else {
                own
            };
            if let Op::And(s, l) | Op::Or(s, l) = p.nodes[i].op {
                p.args[s as usize..(s + l) as usize].sort_by_key(|j| cost[*j as usize]);
            }
        }
        self.program
    }

    fn push(&mut self, op: Op, ty: ValueType) -> Id {
        let key = key_of(&op, &self.program.args);
        if let Some(&id) = self.shared.get(&key) {
            return id;
        }
        let id = self.program.nodes.len() as Id;
        self.program.nodes.push(Node {
            op,
            ty,
            memo: NO_MEMO,
        });
        self.uses.push(0);
        self.shared.insert(key, id);
        id
    }

    /// Adds a node that uses operands `operands`, folding it to a constant
    /// when every operand is one.
    fn node(&mut self, op: Op, ty: ValueType, operands: &[Id]) -> Id {
        if !operands.is_empty() && operands.iter().all(|&a| self.is_const(a)) {
            return self.fold(op, ty);
        }
        if let Some(&id) = self.shared.get(&key_of(&op, &self.program.args)) {
            return id;
        }
        for &a in operands {
            self.uses[a as usize] += 1;
        }
        self.push(op, ty)
    }

    fn is_const(&self, id: Id) -> bool {
        matches!(
            self.program.nodes[id as usize].op,
            Op::Truth(_) | Op::Num(_) | Op::Str(_)
        )
    }

    /// Evaluates a node of constant operands once, with the evaluator
    /// itself, and keeps only its value.
    fn fold(&mut self, op: Op, ty: ValueType) -> Id {
        let p = &mut self.program;
        p.nodes.push(Node {
            op,
            ty,
            memo: NO_MEMO,
        });
        let id = (p.nodes.len() - 1) as Id;
        let empty = Record {
            event: &[],
            features: &[],
            model: &[],
        };
        let value = {
            let mut memo = [];
            let mut cx = Cx {
                p,
                r: &empty,
                memo: &mut memo,
                epoch: 1,
            };
            cx.value(id)
        };
        p.nodes.pop();
        let op = match value {
            Value::Bool(b) => Op::Truth(b.into()),
            Value::Missing if ty == ValueType::Bool => Op::Truth(Truth::Missing),
            Value::Number(n) => Op::Num(Some(n)),
            Value::String(s) => Op::Str(Some(Arc::from(&*s))),
            // Only numbers, strings and bools are folded: no literal is a
            // timestamp, so no timestamp node has constant operands.
            _ if ty == ValueType::Number => Op::Num(None),
            _ => Op::Str(None),
        };
        self.push(op, ty)
    }

    fn truth_const(&self, id: Id) -> Option<Truth> {
        match self.program.nodes[id as usize].op {
            Op::Truth(t) => Some(t),
            _ => None,
        }
    }

    fn slot_of(&self, id: Id) -> Option<Slot> {
        match self.program.nodes[id as usize].op {
            Op::NumSlot(s) | Op::StrSlot(s) | Op::BoolSlot(s) | Op::TsSlot(s) => Some(s),
            _ => None,
        }
    }

    fn num_const(&self, id: Id) -> Option<f64> {
        match self.program.nodes[id as usize].op {
            Op::Num(Some(n)) => Some(n),
            _ => None,
        }
    }

    fn str_const(&self, id: Id) -> Option<Arc<str>> {
        match &self.program.nodes[id as usize].op {
            Op::Str(Some(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Flattens nested `and` (or `or`) into one operand list, folding
    /// constants: `false` decides an `and` and `true` an `or`; the other
    /// constant drops out; an operand repeated is kept once.
    fn junction(&mut self, is_and: bool, x: &Tree, y: &Tree) -> Id {
        let mut operands = Vec::new();
        self.collect(is_and, x, &mut operands);
        self.collect(is_and, y, &mut operands);
        let (decides, neutral) = if is_and {
            (Truth::False, Truth::True)
        } else {
            (Truth::True, Truth::False)
        };
        let mut kept: Vec<Id> = Vec::new();
        for id in operands {
            match self.truth_const(id) {
                Some(t) if t == decides => return self.push(Op::Truth(decides), ValueType::Bool),
                Some(t) if t == neutral => {}
                _ if kept.contains(&id) => {}
                _ => kept.push(id),
            }
        }
        match kept.len() {
            0 => self.push(Op::Truth(neutral), ValueType::Bool),
            1 => kept[0],
            _ => {
                for &a in &kept {
                    self.uses[a as usize] += 1;
                }
                let start = self.program.args.len() as u32;
                let len = kept.len() as u32;
                self.program.args.extend(&kept);
                let op = if is_and {
                    Op::And(start, len)
                } else {
                    Op::Or(start, len)
                };
                let key = key_of(&op, &self.program.args);
                if let Some(&id) = self.shared.get(&key) {
                    // The same junction exists: drop the operand copy.
                    self.program.args.truncate(start as usize);
                    for &a in &kept {
                        self.uses[a as usize] -= 1;
                    }
                    return id;
                }
                self.push(op, ValueType::Bool)
            }
        }
    }

    fn collect(&mut self, is_and: bool, t: &Tree, out: &mut Vec<Id>) {
        match t {
            Tree::And(a, b) if is_and => {
                self.collect(is_and, a, out);
                self.collect(is_and, b, out);
            }
            Tree::Or(a, b) if !is_and => {
                self.collect(is_and, a, out);
                self.collect(is_and, b, out);
            }
            other => out.push(self.lower(other)),
        }
    }

    fn cmp(&mut self, op: CmpOp, x: &Tree, y: &Tree) -> Id {
        use ValueType as T;
        let ty = x.ty();
        let (a, b) = (self.lower(x), self.lower(y));
        let bool_ty = T::Bool;
        match ty {
            T::Number => {
                // The constant on the right: `5 < x` is `x > 5`.
                let (op, a, b) = if self.num_const(a).is_some() && self.num_const(b).is_none() {
                    (op.flip(), b, a)
                } else {
                    (op, a, b)
                };
                match (self.slot_of(a), self.num_const(b)) {
                    (_, Some(_)) if self.is_const(a) => {
                        self.node(Op::NumCmp(op, a, b), bool_ty, &[a, b])
                    }
                    (Some(s), Some(c)) => self.node(Op::SlotNumCmpConst(op, s, c), bool_ty, &[]),
                    (None, Some(c)) => self.node(Op::NumCmpConst(op, a, c), bool_ty, &[a]),
                    _ => self.node(Op::NumCmp(op, a, b), bool_ty, &[a, b]),
                }
            }
            T::Timestamp => self.node(Op::TsCmp(op, a, b), bool_ty, &[a, b]),
            T::String => {
                let ne = op == CmpOp::Ne;
                let (a, b) = if self.str_const(a).is_some() && self.str_const(b).is_none() {
                    (b, a)
                } else {
                    (a, b)
                };
                match (self.slot_of(a), self.str_const(b)) {
                    (_, Some(_)) if self.is_const(a) => {
                        self.node(Op::StrEq(ne, a, b), bool_ty, &[a, b])
                    }
                    (Some(s), Some(c)) => self.node(Op::SlotStrEqConst(ne, s, c), bool_ty, &[]),
                    (None, Some(c)) => self.node(Op::StrEqConst(ne, a, c), bool_ty, &[a]),
                    _ => self.node(Op::StrEq(ne, a, b), bool_ty, &[a, b]),
                }
            }
            T::Bool => {
                let ne = op == CmpOp::Ne;
                let (a, b) = if self.truth_const(a).is_some() && self.truth_const(b).is_none() {
                    (b, a)
                } else {
                    (a, b)
                };
                // `x == true` is `x`, `x == false` is `not x` (a missing
                // `x` stays missing either way).
                match self.truth_const(b) {
                    Some(t @ (Truth::True | Truth::False)) if !self.is_const(a) => {
                        if (t == Truth::True) != ne {
                            a
                        } else {
                            self.node(Op::Not(a), bool_ty, &[a])
                        }
                    }
                    _ => self.node(Op::BoolEq(ne, a, b), bool_ty, &[a, b]),
                }
            }
        }
    }

    fn lower(&mut self, t: &Tree) -> Id {
        use ValueType as T;
        match t {
            Tree::Const(c) => match c {
                Const::Number(n) => self.push(Op::Num(Some(*n)), T::Number),
                Const::Str(s) => self.push(Op::Str(Some(s.clone())), T::String),
                Const::Bool(b) => self.push(Op::Truth((*b).into()), T::Bool),
            },
            Tree::Slot(s, ty) => {
                let op = match ty {
                    T::Number => Op::NumSlot(*s),
                    T::String => Op::StrSlot(*s),
                    T::Bool => Op::BoolSlot(*s),
                    T::Timestamp => Op::TsSlot(*s),
                };
                self.push(op, *ty)
            }
            Tree::Neg(a) => {
                let a = self.lower(a);
                self.node(Op::Neg(a), T::Number, &[a])
            }
            Tree::Not(a) => {
                let a = self.lower(a);
                self.node(Op::Not(a), T::Bool, &[a])
            }
            Tree::And(x, y) => self.junction(true, x, y),
            Tree::Or(x, y) => self.junction(false, x, y),
            Tree::Cmp(op, x, y) => self.cmp(*op, x, y),
            Tree::Arith(op, x, y) => {
                let (a, b) = (self.lower(x), self.lower(y));
                self.node(Op::Arith(*op, a, b), T::Number, &[a, b])
            }
            Tree::In {
                value,
                set,
                negated,
            } => {
                let ty = value.ty();
                let a = self.lower(value);
                let (set, n) = (set.clone(), *negated);
                match (ty, self.slot_of(a)) {
                    (T::String, Some(s)) => self.node(Op::SlotInStr(s, set, n), T::Bool, &[]),
                    (T::String, None) => self.node(Op::InStr(a, set, n), T::Bool, &[a]),
                    (T::Number, _) => self.node(Op::InNum(a, set, n), T::Bool, &[a]),
                    (_, _) => self.node(Op::InBool(a, set, n), T::Bool, &[a]),
                }
            }
            Tree::IsMissing(x) => {
                let a = self.lower(x);
                self.node(Op::IsMissing(a), T::Bool, &[a])
            }
            Tree::Coalesce(x, y) => {
                let ty = x.ty();
                let (a, b) = (self.lower(x), self.lower(y));
                let op = match ty {
                    T::Number => Op::CoalesceNum(a, b),
                    T::String => Op::CoalesceStr(a, b),
                    T::Bool => Op::CoalesceBool(a, b),
                    T::Timestamp => Op::CoalesceTs(a, b),
                };
                self.node(op, ty, &[a, b])
            }
            Tree::Abs(x) => {
                let a = self.lower(x);
                self.node(Op::Abs(a), T::Number, &[a])
            }
            Tree::Min(x, y) | Tree::Max(x, y) => {
                let (a, b) = (self.lower(x), self.lower(y));
                let op = if matches!(t, Tree::Min(..)) {
                    Op::Min(a, b)
                } else {
                    Op::Max(a, b)
                };
                self.node(op, T::Number, &[a, b])
            }
            Tree::Lower(x) => {
                let a = self.lower(x);
                self.node(Op::Lower(a), T::String, &[a])
            }
            Tree::StartsWith(x, y) | Tree::Contains(x, y) => {
                let (a, b) = (self.lower(x), self.lower(y));
                let op = if matches!(t, Tree::StartsWith(..)) {
                    Op::StartsWith(a, b)
                } else {
                    Op::Contains(a, b)
                };
                self.node(op, T::Bool, &[a, b])
            }
            Tree::Matches(x, re) => {
                let a = self.lower(x);
                self.node(Op::Matches(a, re.clone()), T::Bool, &[a])
            }
            Tree::HourOfDay(x) => {
                let a = self.lower(x);
                self.node(Op::HourOfDay(a), T::Number, &[a])
            }
            Tree::DaysBetween(x, y) => {
                let (a, b) = (self.lower(x), self.lower(y));
                self.node(Op::DaysBetween(a, b), T::Number, &[a, b])
            }
        }
    }
}

impl Program {
    /// Compiles one checked tree alone.
    pub fn single(tree: &Tree) -> (Program, Id) {
        let mut b = Builder::default();
        let root = b.add(tree);
        (b.finish(), root)
    }

    /// Whether node `id` is a constant (its expression was folded).
    pub fn is_const(&self, id: Id) -> bool {
        matches!(
            self.nodes[id as usize].op,
            Op::Truth(_) | Op::Num(_) | Op::Str(_)
        )
    }

    /// The number of nodes, shared ones counted once.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs `f` with an evaluation context for one record: values it
    /// remembers are valid for this call only.
    #[inline]
    pub fn with<'a, R>(
        &'a self,
        record: &'a Record<'a>,
        f: impl FnOnce(&mut Cx<'a, '_>) -> R,
    ) -> R {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => {
                if s.memo.len() < self.memo_len {
                    s.memo.resize(self.memo_len, Memo::default());
                }
                s.epoch = s.epoch.wrapping_add(1);
                if s.epoch == 0 {
                    s.memo.iter_mut().for_each(|m| m.epoch = 0);
                    s.epoch = 1;
                }
                let epoch = s.epoch;
                let mut cx = Cx {
                    p: self,
                    r: record,
                    memo: &mut s.memo,
                    epoch,
                };
                f(&mut cx)
            }
            // Only an evaluation started from inside another on the same
            // thread gets here (none does today); it remembers in a
            // buffer of its own.
            Err(_) => {
                let mut memo = vec![Memo::default(); self.memo_len];
                let mut cx = Cx {
                    p: self,
                    r: record,
                    memo: &mut memo,
                    epoch: 1,
                };
                f(&mut cx)
            }
        })
    }
}

/// Evaluating a [`Program`] for one record.
pub struct Cx<'a, 'm> {
    p: &'a Program,
    r: &'a Record<'a>,
    memo: &'m mut [Memo],
    epoch: u32,
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

#[inline]
fn order_ts(op: CmpOp, x: i64, y: i64) -> bool {
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

#[inline]
fn found(hit: Option<bool>, negated: bool) -> Truth {
    match hit {
        Some(h) => (h != negated).into(),
        None => Truth::Missing,
    }
}

impl<'a> Cx<'a, '_> {
    #[inline]
    fn node(&self, id: Id) -> &'a Node {
        &self.p.nodes[id as usize]
    }

    #[inline]
    fn slot(&self, s: Slot) -> &'a Value {
        self.r.get(s)
    }

    /// The value of any node, as a record value.
    pub fn value(&mut self, id: Id) -> Value {
        match self.node(id).ty {
            ValueType::Bool => match self.truth(id) {
                Truth::True => Value::Bool(true),
                Truth::False => Value::Bool(false),
                Truth::Missing => Value::Missing,
            },
            ValueType::Number => self.number(id).map_or(Value::Missing, Value::Number),
            ValueType::Timestamp => self.ts(id).map_or(Value::Missing, Value::Timestamp),
            ValueType::String => self
                .string(id)
                .map_or(Value::Missing, |s| Value::String(s.as_ref().into())),
        }
    }

    /// The truth of a bool node.
    #[inline]
    pub fn truth(&mut self, id: Id) -> Truth {
        let m = self.node(id).memo;
        if m == NO_MEMO {
            return self.truth_of(id);
        }
        let slot = self.memo[m as usize];
        if slot.epoch == self.epoch {
            return match slot.bits {
                0 => Truth::False,
                1 => Truth::True,
                _ => Truth::Missing,
            };
        }
        let t = self.truth_of(id);
        self.memo[m as usize] = Memo {
            epoch: self.epoch,
            present: true,
            bits: t as u64,
        };
        t
    }

    fn truth_of(&mut self, id: Id) -> Truth {
        match &self.node(id).op {
            Op::Truth(t) => *t,
            Op::BoolSlot(s) => self.slot(*s).as_bool().map_or(Truth::Missing, Truth::from),
            Op::SlotNumCmpConst(op, s, c) => match self.slot(*s) {
                Value::Number(x) => order(*op, *x, *c).into(),
                _ => Truth::Missing,
            },
            Op::SlotStrEqConst(ne, s, c) => match self.slot(*s).as_str() {
                Some(x) => ((x == &**c) != *ne).into(),
                None => Truth::Missing,
            },
            Op::SlotInStr(s, set, negated) => found(
                self.slot(*s).as_str().map(|x| set.strings.contains(x)),
                *negated,
            ),
            Op::And(start, len) => {
                let mut missing = false;
                for i in *start..*start + *len {
                    match self.truth(self.p.args[i as usize]) {
                        Truth::False => return Truth::False,
                        Truth::Missing => missing = true,
                        Truth::True => {}
                    }
                }
                if missing { Truth::Missing } else { Truth::True }
            }
            Op::Or(start, len) => {
                let mut missing = false;
                for i in *start..*start + *len {
                    match self.truth(self.p.args[i as usize]) {
                        Truth::True => return Truth::True,
                        Truth::Missing => missing = true,
                        Truth::False => {}
                    }
                }
                if missing {
                    Truth::Missing
                } else {
                    Truth::False
                }
            }
            Op::Not(a) => match self.truth(*a) {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                Truth::Missing => Truth::Missing,
            },
            Op::NumCmpConst(op, a, c) => match self.number(*a) {
                Some(x) => order(*op, x, *c).into(),
                None => Truth::Missing,
            },
            Op::NumCmp(op, a, b) => match (self.number(*a), self.number(*b)) {
                (Some(x), Some(y)) => order(*op, x, y).into(),
                _ => Truth::Missing,
            },
            Op::TsCmp(op, a, b) => match (self.ts(*a), self.ts(*b)) {
                (Some(x), Some(y)) => order_ts(*op, x, y).into(),
                _ => Truth::Missing,
            },
            Op::StrEqConst(ne, a, c) => match self.string(*a) {
                Some(x) => ((*x == **c) != *ne).into(),
                None => Truth::Missing,
            },
            Op::StrEq(ne, a, b) => match (self.string(*a), self.string(*b)) {
                (Some(x), Some(y)) => ((x == y) != *ne).into(),
                _ => Truth::Missing,
            },
            Op::BoolEq(ne, a, b) => match (self.truth(*a), self.truth(*b)) {
                (Truth::Missing, _) | (_, Truth::Missing) => Truth::Missing,
                (x, y) => ((x == y) != *ne).into(),
            },
            Op::InStr(a, set, negated) => {
                let hit = self.string(*a).map(|x| set.strings.contains(&*x));
                found(hit, *negated)
            }
            Op::InNum(a, set, negated) => {
                found(self.number(*a).map(|x| set.contains_number(x)), *negated)
            }
            Op::InBool(a, set, negated) => {
                let hit = match self.truth(*a) {
                    Truth::True => Some(set.bools[1]),
                    Truth::False => Some(set.bools[0]),
                    Truth::Missing => None,
                };
                found(hit, *negated)
            }
            Op::IsMissing(a) => {
                let a = *a;
                let missing = match self.node(a).ty {
                    ValueType::Bool => self.truth(a) == Truth::Missing,
                    ValueType::Number => self.number(a).is_none(),
                    ValueType::Timestamp => self.ts(a).is_none(),
                    ValueType::String => self.string(a).is_none(),
                };
                missing.into()
            }
            Op::CoalesceBool(a, b) => match self.truth(*a) {
                Truth::Missing => self.truth(*b),
                t => t,
            },
            Op::StartsWith(a, b) => match (self.string(*a), self.string(*b)) {
                (Some(x), Some(y)) => x.starts_with(&*y).into(),
                _ => Truth::Missing,
            },
            Op::Contains(a, b) => match (self.string(*a), self.string(*b)) {
                (Some(x), Some(y)) => x.contains(&*y).into(),
                _ => Truth::Missing,
            },
            Op::Matches(a, re) => match self.string(*a) {
                Some(x) => re.is_match(&x).into(),
                None => Truth::Missing,
            },
            _ => Truth::Missing,
        }
    }

    /// The value of a number node; `None` when missing.
    #[inline]
    pub fn number(&mut self, id: Id) -> Option<f64> {
        let m = self.node(id).memo;
        if m == NO_MEMO {
            return self.number_of(id);
        }
        let slot = self.memo[m as usize];
        if slot.epoch == self.epoch {
            return slot.present.then(|| f64::from_bits(slot.bits));
        }
        let n = self.number_of(id);
        self.memo[m as usize] = Memo {
            epoch: self.epoch,
            present: n.is_some(),
            bits: n.map_or(0, f64::to_bits),
        };
        n
    }

    fn number_of(&mut self, id: Id) -> Option<f64> {
        match &self.node(id).op {
            Op::Num(n) => *n,
            Op::NumSlot(s) => self.slot(*s).as_number(),
            Op::Arith(op, a, b) => {
                let (x, y) = (self.number(*a)?, self.number(*b)?);
                match op {
                    ArithOp::Add => Some(x + y),
                    ArithOp::Sub => Some(x - y),
                    ArithOp::Mul => Some(x * y),
                    ArithOp::Div if y == 0.0 => None,
                    ArithOp::Div => Some(x / y),
                }
            }
            Op::Neg(a) => self.number(*a).map(|x| -x),
            Op::CoalesceNum(a, b) => match self.number(*a) {
                Some(x) => Some(x),
                None => self.number(*b),
            },
            Op::Abs(a) => self.number(*a).map(f64::abs),
            Op::Min(a, b) => Some(self.number(*a)?.min(self.number(*b)?)),
            Op::Max(a, b) => Some(self.number(*a)?.max(self.number(*b)?)),
            Op::HourOfDay(a) => self
                .ts(*a)
                .map(|t| (t.rem_euclid(86_400_000) / 3_600_000) as f64),
            Op::DaysBetween(a, b) => {
                let (x, y) = (self.ts(*a)?, self.ts(*b)?);
                // In i128: the difference of two i64 does not overflow.
                Some((i128::from(y) - i128::from(x)) as f64 / MS_PER_DAY)
            }
            _ => None,
        }
    }

    /// The value of a timestamp node; `None` when missing.
    pub fn ts(&mut self, id: Id) -> Option<i64> {
        let m = self.node(id).memo;
        if m == NO_MEMO {
            return self.ts_of(id);
        }
        let slot = self.memo[m as usize];
        if slot.epoch == self.epoch {
            return slot.present.then_some(slot.bits as i64);
        }
        let t = self.ts_of(id);
        self.memo[m as usize] = Memo {
            epoch: self.epoch,
            present: t.is_some(),
            bits: t.unwrap_or(0) as u64,
        };
        t
    }

    fn ts_of(&mut self, id: Id) -> Option<i64> {
        match &self.node(id).op {
            Op::TsSlot(s) => self.slot(*s).as_timestamp(),
            Op::CoalesceTs(a, b) => match self.ts(*a) {
                Some(t) => Some(t),
                None => self.ts(*b),
            },
            _ => None,
        }
    }

    /// The value of a string node; `None` when missing.
    pub fn string(&mut self, id: Id) -> Option<Cow<'a, str>> {
        match &self.node(id).op {
            Op::Str(s) => s.as_deref().map(Cow::Borrowed),
            Op::StrSlot(s) => self.slot(*s).as_str().map(Cow::Borrowed),
            Op::CoalesceStr(a, b) => match self.string(*a) {
                Some(s) => Some(s),
                None => self.string(*b),
            },
            Op::Lower(a) => match self.string(*a)? {
                s if s.chars().any(char::is_uppercase) => Some(Cow::Owned(s.to_lowercase())),
                s => Some(s),
            },
            _ => None,
        }
    }
}
