//! One loaded ONNX model and the session that runs it: checks the model's
//! tensors against its manifest at load, and scores a batch of rows.

use std::sync::Arc;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use crate::{Manifest, ModelError, Runtime};

/// Where one manifest output is read from in the session's outputs.
#[derive(Debug, Clone, Copy)]
struct OutputPlan {
    /// Index among the session's outputs.
    tensor: usize,
    /// Column of a `[batch, k]` tensor; `None` for a `[batch]` tensor.
    column: Option<usize>,
}

/// A model ready to score: its manifest and an ONNX Runtime session.
pub struct Model {
    manifest: Manifest,
    session: Session,
    plan: Vec<OutputPlan>,
    version: Arc<str>,
    names: Vec<Arc<str>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("version", &self.version)
            .finish()
    }
}

fn dims(shape: &[i64]) -> String {
    let d: Vec<String> = shape
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", d.join(", "))
}

impl Model {
    /// Loads the manifest's `.onnx` file with `threads` intra-op threads and
    /// checks its input and output tensors against the manifest.
    pub fn load(
        manifest: Manifest,
        runtime: &Runtime,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let load_err = |reason: String| ModelError::Load {
            model: manifest.name.clone(),
            file: manifest.file.clone(),
            reason,
        };
        if !manifest.file.is_file() {
            return Err(load_err(format!(
                "file not found (the manifest {} names it)",
                manifest.path.display()
            )));
        }
        let session = Session::builder(runtime.env())
            .and_then(|b| Ok(b.with_intra_threads(threads.max(1))?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_file(&manifest.file))
            .map_err(|e: ort::Error| load_err(e.to_string()))?;
        let plan = check_shapes(&manifest, &session)?;
        Ok(Model {
            version: Arc::from(manifest.version.as_str()),
            names: manifest
                .outputs
                .iter()
                .map(|o| Arc::from(o.name.as_str()))
                .collect(),
            manifest,
            session,
            plan,
        })
    }

    /// Scores one probe row with every input missing: it must run and give
    /// a finite number for every output. A model that fails it would fail
    /// (or score garbage for) real events.
    pub fn probe(&mut self) -> Result<(), ModelError> {
        let probe = vec![self.manifest.missing; self.manifest.inputs.len()];
        let mut out = Vec::new();
        self.run(&probe, &mut out).map_err(|e| ModelError::Run {
            model: self.manifest.name.clone(),
            reason: format!("the probe row (every input missing) failed: {e}"),
        })?;
        if let Some(bad) = out.iter().find(|v| !v.is_finite()) {
            return Err(ModelError::Run {
                model: self.manifest.name.clone(),
                reason: format!(
                    "the probe row (every input missing) scored {bad}, not a finite number"
                ),
            });
        }
        Ok(())
    }

    /// The manifest the model was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's version.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Output names in manifest order.
    pub fn output_names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Scores `rows.len() / width` rows laid out row after row; writes
    /// `outputs.len()` values per row into `out` (row after row).
    pub fn run(&mut self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), ModelError> {
        let width = self.manifest.inputs.len();
        let run_err = |reason: String| ModelError::Run {
            model: self.manifest.name.clone(),
            reason,
        };
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(ModelError::RowWidth {
                model: self.manifest.name.clone(),
                got: rows.len(),
                want: width,
            });
        }
        let n = rows.len() / width;
        let input =
            TensorRef::from_array_view(([n, width], rows)).map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![input])
            .map_err(|e| run_err(e.to_string()))?;
        out.clear();
        out.resize(n * self.plan.len(), f32::NAN);
        let k = self.plan.len();
        for (j, p) in self.plan.iter().enumerate() {
            let (shape, data) = outputs[p.tensor]
                .try_extract_tensor::<f32>()
                .map_err(|e| run_err(e.to_string()))?;
            let cols = match (p.column, &shape[..]) {
                (None, [b]) if *b as usize == n => 1,
                (Some(c), [b, w]) if *b as usize == n && (c as i64) < *w => *w as usize,
                _ => {
                    return Err(run_err(format!(
                        "output `{}` has shape {} for a batch of {n}",
                        self.manifest.outputs[j].from,
                        dims(shape)
                    )));
                }
            };
            let col = p.column.unwrap_or(0);
            for r in 0..n {
                out[r * k + j] = data[r * cols + col];
            }
        }
        Ok(())
    }
}

fn check_shapes(manifest: &Manifest, session: &Session) -> Result<Vec<OutputPlan>, ModelError> {
    let mismatch = |reason: String| ModelError::ShapeMismatch {
        model: manifest.name.clone(),
        file: manifest.file.clone(),
        reason,
    };
    let inputs = session.inputs();
    let input = match &manifest.input_tensor {
        Some(name) => inputs.iter().find(|i| i.name() == name).ok_or_else(|| {
            mismatch(format!(
                "the manifest's input_tensor `{name}` is not an input of the model (it has: {})",
                inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => match inputs {
            [one] => one,
            _ => {
                return Err(mismatch(format!(
                    "the model has {} inputs; Verdict feeds one [batch, n] float tensor (name it with input_tensor)",
                    inputs.len()
                )));
            }
        },
    };
    if inputs.len() != 1 {
        return Err(mismatch(format!(
            "the model has {} inputs; Verdict feeds exactly one",
            inputs.len()
        )));
    }
    let want = manifest.inputs.len() as i64;
    match (input.dtype().tensor_type(), input.dtype().tensor_shape()) {
        (Some(TensorElementType::Float32), Some(shape))
            if shape.len() == 2 && (shape[1] == want || shape[1] < 0) && shape[0] <= 0 => {}
        (Some(TensorElementType::Float32), Some(shape)) => {
            return Err(mismatch(format!(
                "input `{}` has shape {}, the manifest lists {want} inputs: expected [?, {want}]",
                input.name(),
                dims(shape)
            )));
        }
        _ => {
            return Err(mismatch(format!(
                "input `{}` is {:?}, expected a float32 tensor [?, {want}]",
                input.name(),
                input.dtype()
            )));
        }
    }
    let outputs = session.outputs();
    let mut plan = Vec::with_capacity(manifest.outputs.len());
    for spec in &manifest.outputs {
        let Some(tensor) = outputs.iter().position(|o| o.name() == spec.from) else {
            return Err(mismatch(format!(
                "output `{}` reads `{}`, which the model does not have (it has: {})",
                spec.name,
                spec.from,
                outputs
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let o = &outputs[tensor];
        let (ty, shape) = (o.dtype().tensor_type(), o.dtype().tensor_shape());
        if ty != Some(TensorElementType::Float32) {
            return Err(mismatch(format!(
                "output `{}` reads `{}`, which is {:?}, not a float32 tensor",
                spec.name,
                spec.from,
                o.dtype()
            )));
        }
        let shape: &[i64] = shape.map(|s| &s[..]).unwrap_or(&[]);
        match (spec.index, shape) {
            (None, [_]) => {}
            (Some(i), [_, w]) if *w < 0 || (i as i64) < *w => {}
            (Some(i), [_, w]) => {
                return Err(mismatch(format!(
                    "output `{}` reads column {i} of `{}`, which has {w} columns",
                    spec.name, spec.from
                )));
            }
            (None, s) => {
                return Err(mismatch(format!(
                    "output `{}` reads `{}` of shape {} without an index; give `index` for a [batch, k] tensor",
                    spec.name,
                    spec.from,
                    dims(s)
                )));
            }
            (Some(_), s) => {
                return Err(mismatch(format!(
                    "output `{}` reads a column of `{}`, whose shape {} is not [batch, k]",
                    spec.name,
                    spec.from,
                    dims(s)
                )));
            }
        }
        plan.push(OutputPlan {
            tensor,
            column: spec.index,
        });
    }
    Ok(plan)
}
