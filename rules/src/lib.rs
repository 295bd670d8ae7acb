//! Verdict's rules language: the analysts' rules, from text to decision.
//!
//! `parse` turns `*.rules` files into syntax trees; `check` resolves every
//! name against the [`Catalogue`](verdict_core::Catalogue) (event schema,
//! features, model outputs) and the rule set's lists, checks types, and
//! compiles to the evaluation form of `eval`, with names as slots, constants
//! folded, lists as hash sets and regexes compiled once; [`RuleSet`] decides
//! a record by priority, then deny > review > approve, then definition
//! order. [`reload`] swaps the serving rule set atomically; [`testing`] runs
//! the analysts' test cases.
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
