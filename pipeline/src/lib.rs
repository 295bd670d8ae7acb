//! The `verdict` service: sources (Kafka, files, HTTP), the engine that joins
//! the stages on one straight path, sinks, metrics and the command line.
//!
//! What it is not: it holds no decision logic of its own. Parsing lives in
//! `verdict-core`, features in `verdict-features`, scoring in
//! `verdict-models`, rules in `verdict-rules`; this crate wires them and
//! moves bytes.

pub mod config;
pub mod demo;
pub mod engine;
pub mod features_cli;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model_cli;
pub mod recent;
pub mod replay;
pub mod rules_cli;
pub mod run;
