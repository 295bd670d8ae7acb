//! Verdict's model scoring: ONNX models run through ONNX Runtime (loaded at
//! start from `libonnxruntime.so`), each described by a manifest that names
//! its inputs as rules-language paths and its outputs as `model.<name>`.
//!
//! - [`Manifest`]: parse and check a manifest; [`ResolvedInputs`] gathers a
//!   model row from a [`verdict_core::Record`] by slot.
//! - [`Runtime`]: find and load ONNX Runtime; a missing library is an error
//!   value saying what to run, so the rules can decide without the model.
//! - [`Model`]: one model checked against its manifest, scored by the
//!   native tree evaluator (`tree`: ONNX tree ensembles in Rust, in the
//!   caller's thread) or by an ONNX Runtime session, explained by exact
//!   TreeSHAP; [`Model::compare_evaluators`] checks the two agree.
//! - [`Scorer`]: micro-batched serving with hot swap; [`Models`]: champion,
//!   shadow challenger and per-event deadline, the engine's handle.
//!
//! This crate does not compute features, evaluate rules or train models
//! (training lives in `models/train/`, in Python).

mod error;
mod manifest;
mod model;
mod onnx;
mod runtime;
mod scorer;
mod tree;

pub use error::ModelError;
pub use manifest::{
    Evaluator, MAX_INPUTS, MAX_MANIFEST_BYTES, MAX_OUTPUTS, Manifest, OutputSpec, ResolvedInputs,
};
pub use model::{
    Backend, Contribution, Disagreement, Explained, MAX_NATIVE_BYTES, Model, ParityReport,
};
pub use runtime::{ORT_DYLIB_ENV, Runtime, locate};
pub use scorer::{
    Batching, ExplainConfig, ModelConfig, ModelObserver, ModelOutcome, ModelStats, Models,
    NoObserver, Scored, Scorer, challenger_output_name,
};
pub use tree::MAX_COVERS_BYTES;
