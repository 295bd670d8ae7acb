//! The native evaluator: ONNX tree ensembles (`ai.onnx.ml`
//! `TreeEnsembleClassifier` / `TreeEnsembleRegressor`, as scikit-learn,
//! LightGBM and XGBoost export them) scored in Rust, without ONNX Runtime,
//! in the caller's thread and without allocating; and their exact TreeSHAP
//! explanations.
//!
//! - `import`: which graphs are only a tree ensemble, and checking them;
//! - `ensemble`: the flattened trees and ONNX Runtime's arithmetic on them;
//! - `shap`: path-dependent TreeSHAP over covers written at training.
//!
//! This module reads and evaluates the graph; the manifest, the choice of
//! evaluator and serving live in `model` and `scorer`.

mod compact;
mod ensemble;
mod import;
mod shap;

use smallvec::SmallVec;

pub use shap::{Covers, MAX_COVERS_BYTES};

pub(crate) use import::Decline;
pub(crate) use shap::Explainer;

use crate::OutputSpec;
use import::Value;

/// A manifest output read from the ensemble's output columns.
#[derive(Debug, Clone)]
struct Read {
    column: usize,
    /// Multipliers applied in turn (`Mul` nodes after the ensemble).
    factors: SmallVec<[f32; 2]>,
}

/// A tree ensemble ready to score rows of `width` values.
#[derive(Debug, Clone)]
pub(crate) struct NativeModel {
    ensemble: ensemble::Ensemble,
    reads: Vec<Read>,
    width: usize,
    source_nodes: usize,
}

/// What resolving the manifest's outputs against the graph found wrong.
pub(crate) type OutputMismatch = String;

impl NativeModel {
    /// Reads a model file's bytes for a manifest of `width` inputs and
    /// these outputs. `Ok(Err(_))`: the graph is a tree ensemble, but the
    /// manifest disagrees with it.
    pub fn import(
        bytes: &[u8],
        width: usize,
        outputs: &[OutputSpec],
    ) -> Result<Result<NativeModel, OutputMismatch>, Decline> {
        // A file that does not decode is left to ONNX Runtime, the general
        // ONNX reader, to refuse in its own words.
        let model = crate::onnx::decode(bytes).map_err(Decline::Unsupported)?;
        let imported = import::import(&model)?;
        if let Some(w) = imported.width
            && w != width
        {
            return Ok(Err(format!(
                "input has shape [?, {w}], the manifest lists {width} inputs: expected [?, {width}]"
            )));
        }
        if let Some(f) = imported.max_feature
            && f >= width
        {
            return Ok(Err(format!(
                "a split reads input column {f}, the manifest lists {width} inputs"
            )));
        }
        let columns = imported.ensemble.outputs;
        let mut reads = Vec::with_capacity(outputs.len());
        for spec in outputs {
            let Some((_, value)) = imported.outputs.iter().find(|(n, _)| *n == spec.from) else {
                let names: Vec<&str> = imported.outputs.iter().map(|(n, _)| n.as_str()).collect();
                return Ok(Err(format!(
                    "output `{}` reads `{}`, which the model does not have (it has: {})",
                    spec.name,
                    spec.from,
                    names.join(", ")
                )));
            };
            let (factors, width) = match value {
                Value::Scores { factors } => (factors, columns),
                Value::ZipMap { factors, labels } => (factors, (*labels).min(columns)),
                Value::Input | Value::Other(_) => {
                    return Ok(Err(format!(
                        "output `{}` reads `{}`, which is not a float32 tensor",
                        spec.name, spec.from
                    )));
                }
            };
            let Some(column) = spec.index else {
                return Ok(Err(format!(
                    "output `{}` reads `{}` of shape [?, {width}] without an index; give `index` for a [batch, k] tensor",
                    spec.name, spec.from
                )));
            };
            if column >= width {
                return Ok(Err(format!(
                    "output `{}` reads column {column} of `{}`, which has {width} columns",
                    spec.name, spec.from
                )));
            }
            let factors = factors
                .iter()
                .map(|f| {
                    if f.len() == 1 {
                        f[0]
                    } else {
                        f.get(column).copied().unwrap_or(f32::NAN)
                    }
                })
                .collect();
            reads.push(Read { column, factors });
        }
        Ok(Ok(NativeModel {
            ensemble: imported.ensemble,
            reads,
            width,
            source_nodes: imported.source_nodes,
        }))
    }

    /// Values a row has.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Scores one row (of [`width`](Self::width) values) into `out` (one
    /// value per manifest output). Allocates nothing for models of up to 8
    /// output columns.
    pub fn score(&self, row: &[f32], out: &mut [f32]) {
        debug_assert_eq!(row.len(), self.width);
        let mut z: SmallVec<[f32; 8]> = SmallVec::from_elem(f32::NAN, self.ensemble.outputs);
        self.ensemble.eval(row, &mut z);
        for (o, r) in out.iter_mut().zip(&self.reads) {
            let mut v = z[r.column];
            for f in &r.factors {
                v *= f;
            }
            *o = v;
        }
    }

    /// The explanation data for these covers, or why there is none.
    pub fn explainer(&self, covers: &Covers) -> Result<Explainer, String> {
        Explainer::new(&self.ensemble, covers, self.source_nodes)
    }

    /// Contributions of row `row` (added into `phi`, one slot per input)
    /// and the margin (f64).
    pub fn explain(&self, explainer: &Explainer, row: &[f32], phi: &mut [f64]) -> f64 {
        explainer.explain(&self.ensemble, row, phi)
    }

    /// The margin the served score is computed from (f32, as evaluated).
    pub fn margin(&self, explainer: &Explainer, row: &[f32]) -> f32 {
        self.ensemble.margin(row, explainer.column)
    }

    /// Every split threshold, per input column (for probe rows that reach
    /// both sides of every split).
    pub fn thresholds(&self) -> Vec<Vec<f32>> {
        let mut per = vec![Vec::new(); self.width];
        for n in &self.ensemble.nodes {
            if !n.is_leaf() && n.feature() < self.width && n.threshold.is_finite() {
                per[n.feature()].push(n.threshold);
            }
        }
        for t in &mut per {
            t.sort_by(f32::total_cmp);
            t.dedup();
        }
        per
    }
}

#[cfg(test)]
mod tests;
