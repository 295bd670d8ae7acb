//! Verdict's rules language: the analysts' rules, from text to decision.
//!
//! `parse` turns `*.rules` files into syntax trees (`ast`); `check` resolves
//! every name against the [`Catalogue`](verdict_core::Catalogue) (event
//! schema, features, model outputs) and the rule set's lists and checks
//! types, giving the checked tree of `tree` (names as slots, lists as hash
//! sets, regexes compiled once); `eval` compiles the checked trees of a
//! whole rule set into one flat program, where what rules share is one node
//! computed once per record and constants are folded, and evaluates it: the
//! only place the language's semantics are computed. [`RuleSet`] decides a
//! record by priority, then deny > review > approve, then definition order.
//! [`reload`] swaps the serving rule set atomically; [`testing`] runs the
//! analysts' test cases.
//!
//! It is not the feature store or the model: it reads their values from a
//! [`Record`](verdict_core::Record) and never computes them.

pub mod ast;
pub mod check;
pub mod diag;
pub mod eval;
pub mod parse;
pub mod reload;
pub mod ruleset;
pub mod testing;
pub mod tree;

pub use diag::{Diagnostic, Diagnostics, Source, Span};
pub use ruleset::{Evaluation, Expression, Filter, Rule, RuleSet};
