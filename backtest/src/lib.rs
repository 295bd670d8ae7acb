//! Verdict's backtest report: what a candidate rule set or model would
//! have decided over past events, compared with a baseline.
//!
//! What it is: the types the engine pass fills for each event
//! ([`EventInput`], with rules as [`RuleId`]s of a [`RuleTable`]), the
//! ground truth ([`LabelField`], [`Chargebacks`]), the [`ReportBuilder`]
//! that counts them into a [`Report`] (the 3×3 outcome matrix, per-rule
//! hits and unique contributions, rules added, removed and changed, label
//! metrics, money newly denied and approved, score summaries and seeded
//! samples of every changed cell), and its renderings: JSON
//! ([`Report::to_json`]; the same for the CLI and HTTP), a terminal table
//! ([`render::text`]) and a self-contained HTML page ([`render::html`]).
//! The same events give byte-identical JSON and HTML.
//!
//! What it is not: it reads no history, computes no feature and decides
//! nothing; the engine decides each event with both sides over one set of
//! features and hands both decisions here.

mod builder;
mod error;
mod input;
mod label;
pub mod render;
mod report;

pub use builder::{
    Completion, MAX_SAMPLE_SIZE, Progress, ReportBuilder, ReportOptions, SideOptions,
};
pub use error::BacktestError;
pub use input::{
    EventInput, RuleDesc, RuleHit, RuleId, RuleStatus, RuleTable, SideBuffer, SideInput,
};
pub use label::{Chargebacks, LabelField, LabelRule, MAX_CHARGEBACK_BYTES};
pub use report::{
    Cell, CellSample, Count, LabelMetrics, LabelReport, Money, MoneyReport, NotCompared,
    REPORT_FORMAT, Report, RuleChanges, RuleReport, RuleSide, SampleEvent, SampleHit, Samples,
    ScoreReport, SideSummary,
};
