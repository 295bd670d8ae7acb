//! Verdict's model scoring: ONNX models run through ONNX Runtime (loaded at
//! start from `libonnxruntime.so`), each described by a manifest that names
//! its inputs as rules-language paths and its outputs as `model.<name>`.
//!
//! - [`Manifest`]: parse and check a manifest; [`ResolvedInputs`] gathers a
//!   model row from a [`verdict_core::Record`] by slot.
//! - [`Runtime`]: find and load ONNX Runtime; a missing library is an error
//!   value saying what to run, so the rules can decide without the model.
//! - [`Model`]: one ONNX session checked against its manifest.
//! - [`Scorer`]: micro-batched serving with hot swap; [`Models`]: champion,
//!   shadow challenger and per-event deadline, the engine's handle.
//!
//! This crate does not compute features, evaluate rules or train models
//! (training lives in `models/train/`, in Python).

mod error;
mod manifest;
mod model;
mod runtime;
mod scorer;

pub use error::ModelError;
pub use manifest::{
    MAX_INPUTS, MAX_MANIFEST_BYTES, MAX_OUTPUTS, Manifest, OutputSpec, ResolvedInputs,
};
pub use model::Model;
pub use runtime::{ORT_DYLIB_ENV, Runtime, locate};
pub use scorer::{
    Batching, ModelConfig, ModelObserver, ModelOutcome, ModelStats, Models, NoObserver, Scored,
    Scorer, challenger_output_name,
};
