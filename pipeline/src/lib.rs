//! The `verdict` service: sources (Kafka, files, HTTP), the engine that
//! joins the stages on one straight path, sinks, metrics and the command
//! line.
//!
//! What it is not: it holds no decision logic of its own. Parsing lives in
//! `verdict-core`, features in `verdict-features`, scoring in
//! `verdict-models`, rules in `verdict-rules`, the traffic generator in
//! `verdict-gen`; this crate wires them and moves bytes.
//!
//! - [`engine`]: parse → features → model → rules → decision, for one event;
//! - [`window`]: the in-order window every source decides its stream
//!   through;
//! - sources and sinks: [`kafka`] (the service's pipeline), [`file`]
//!   (JSON-lines files), [`http`] (the HTTP API);
//! - [`metrics`], [`config`], [`logging`], and [`service`] (what `run` and
//!   `demo` share);
//! - [`workbench`]: the analysts' workbench mounted over the engine;
//! - [`cli`]: the commands.

pub mod backtest;
pub mod cli;
pub mod config;
pub mod engine;
pub mod file;
pub mod http;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod service;
pub mod window;
pub mod workbench;
