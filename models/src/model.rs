//! One loaded model, checked against its manifest: scored by the native
//! tree evaluator or by an ONNX Runtime session (the manifest's
//! `evaluator`), explained by TreeSHAP when the training tools wrote its
//! covers, and the two evaluators compared on probe rows.

use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::tree::{Covers, Decline, Explainer, NativeModel};
use crate::{Evaluator, Manifest, ModelError, Runtime};

/// The largest model file the native evaluator reads; a larger one is
/// served by ONNX Runtime (`auto`) or refused (`native`).
pub const MAX_NATIVE_BYTES: u64 = 256 << 20;

/// What scores a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The native tree evaluator, in the caller's thread.
    Native,
    /// An ONNX Runtime session, behind the micro-batching thread.
    OnnxRuntime,
}

impl Backend {
    /// `native` or `onnxruntime`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::OnnxRuntime => "onnxruntime",
        }
    }
}

/// Where one manifest output is read from in the session's outputs.
#[derive(Debug, Clone, Copy)]
struct OutputPlan {
    /// Index among the session's outputs.
    tensor: usize,
    /// Column of a `[batch, k]` tensor; `None` for a `[batch]` tensor.
    column: Option<usize>,
    /// For a `ZipMap` output (a sequence of maps): the class label read.
    zipmap_key: Option<i64>,
}

struct OnnxModel {
    /// A session runs one call at a time; the lock is never held across an
    /// await (scoring is synchronous).
    session: Mutex<Session>,
    plan: Vec<OutputPlan>,
}

enum Engine {
    Native(NativeModel),
    Onnx(OnnxModel),
}

/// One input's part in a score: the decision's own type.
pub use verdict_core::Contribution;

/// The totals of one explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The mean margin over the training rows (by covers): the margin with
    /// no input known. Every contribution (not only the top ones) plus this
    /// equals `margin`.
    pub base_value: f64,
    /// The model's raw score before its post-transform (for a binary
    /// classifier the log-odds), from the same leaves as the served score.
    pub margin: f64,
    /// The version of the model explained.
    pub model_version: Arc<str>,
}

/// A model ready to score: its manifest and its evaluator.
pub struct Model {
    manifest: Manifest,
    engine: Engine,
    version: Arc<str>,
    names: Vec<Arc<str>>,
    inputs: Arc<[Arc<str>]>,
    /// The trees (when the model is a tree ensemble, whichever evaluator
    /// serves it) and their explanation data, or why there is none.
    explain: Result<(Arc<NativeModel>, Explainer), String>,
    /// How the evaluator was chosen, for logs.
    why: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("version", &self.version)
            .field("backend", &self.backend())
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

/// The native import of a model file: the model, or why not.
enum Native {
    Model(Box<NativeModel>),
    /// A tree ensemble whose tensors disagree with the manifest.
    Mismatch(String),
    Declined(Decline),
    TooLarge(u64),
}

fn import_native(manifest: &Manifest, bytes: Option<&[u8]>) -> Native {
    let Some(bytes) = bytes else {
        let len = std::fs::metadata(&manifest.file)
            .map(|m| m.len())
            .unwrap_or(0);
        return Native::TooLarge(len);
    };
    if manifest.input_tensor.is_some() {
        return Native::Declined(Decline::Unsupported(
            "the manifest names an input tensor".into(),
        ));
    }
    match NativeModel::import(bytes, manifest.inputs.len(), &manifest.outputs) {
        Ok(Ok(m)) => Native::Model(Box::new(m)),
        Ok(Err(mismatch)) => Native::Mismatch(mismatch),
        Err(d) => Native::Declined(d),
    }
}

/// The file's bytes, if it is small enough for the native evaluator.
fn read_small(manifest: &Manifest) -> Result<Option<Vec<u8>>, ModelError> {
    let io = |source| ModelError::Io {
        path: manifest.file.clone(),
        source,
    };
    let len = std::fs::metadata(&manifest.file).map_err(io)?.len();
    if len > MAX_NATIVE_BYTES {
        return Ok(None);
    }
    std::fs::read(&manifest.file).map(Some).map_err(io)
}

impl Model {
    /// Loads the manifest's model file with the evaluator its manifest asks
    /// for (`threads`: ONNX Runtime intra-op threads) and checks its inputs
    /// and outputs against the manifest.
    pub fn load(
        manifest: Manifest,
        runtime: &Runtime,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let evaluator = manifest.evaluator;
        Model::load_as(manifest, runtime, threads, evaluator)
    }

    /// As [`load`](Self::load), with `evaluator` instead of the manifest's.
    pub fn load_as(
        manifest: Manifest,
        runtime: &Runtime,
        threads: usize,
        evaluator: Evaluator,
    ) -> Result<Model, ModelError> {
        Model::load_inner(manifest, Some(runtime), threads, evaluator)
    }

    /// Loads a model for the native evaluator alone: no ONNX Runtime
    /// needed. Refuses a model it cannot evaluate.
    pub fn load_native(manifest: Manifest) -> Result<Model, ModelError> {
        Model::load_inner(manifest, None, 1, Evaluator::Native)
    }

    fn load_inner(
        manifest: Manifest,
        runtime: Option<&Runtime>,
        threads: usize,
        evaluator: Evaluator,
    ) -> Result<Model, ModelError> {
        let load_err = |reason: String| ModelError::Load {
            model: manifest.name.clone(),
            file: manifest.file.clone(),
            reason,
        };
        let mismatch = |reason: String| ModelError::ShapeMismatch {
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
        let bytes = read_small(&manifest)?;
        let native = import_native(&manifest, bytes.as_deref());
        let (engine, tree, why) = match (evaluator, native) {
            // A manifest that asks for ONNX Runtime leaves the judgement to
            // it: such a file is loaded in the vetting child first, where a
            // crash refuses it without harm to the serving process.
            (Evaluator::Auto | Evaluator::Native, Native::Declined(Decline::Invalid(reason))) => {
                return Err(load_err(format!("a broken tree ensemble: {reason}")));
            }
            (Evaluator::Auto | Evaluator::Native, Native::Mismatch(reason)) => {
                return Err(mismatch(reason));
            }
            (Evaluator::Auto | Evaluator::Native, Native::Model(m)) => {
                let why = format!("{} a supported tree ensemble", evaluator.name());
                let tree = Arc::new((*m).clone());
                (Engine::Native(*m), Some(tree), why)
            }
            (Evaluator::Native, Native::Declined(Decline::Unsupported(reason))) => {
                return Err(ModelError::NotNative {
                    model: manifest.name.clone(),
                    file: manifest.file.clone(),
                    reason,
                });
            }
            (Evaluator::Native, Native::TooLarge(len)) => {
                return Err(ModelError::NotNative {
                    model: manifest.name.clone(),
                    file: manifest.file.clone(),
                    reason: format!("the file is {len} bytes, more than {MAX_NATIVE_BYTES}"),
                });
            }
            (evaluator, native) => {
                let why = match (&native, evaluator) {
                    (_, Evaluator::OnnxRuntime) => "the manifest asks for onnxruntime".to_string(),
                    (Native::Declined(Decline::Unsupported(r)), _) => {
                        format!("not for the native evaluator: {r}")
                    }
                    (Native::TooLarge(len), _) => format!("a {len}-byte file"),
                    _ => String::new(),
                };
                let tree = match native {
                    Native::Model(m) => Some(Arc::new(*m)),
                    _ => None,
                };
                let Some(runtime) = runtime else {
                    return Err(ModelError::NotNative {
                        model: manifest.name.clone(),
                        file: manifest.file.clone(),
                        reason: why,
                    });
                };
                (
                    Engine::Onnx(OnnxModel::load(
                        &manifest,
                        runtime,
                        threads,
                        bytes.as_deref(),
                    )?),
                    tree,
                    why,
                )
            }
        };
        let explain = explainer(&manifest, tree, bytes.as_deref());
        Ok(Model {
            version: Arc::from(manifest.version.as_str()),
            names: manifest
                .outputs
                .iter()
                .map(|o| Arc::from(o.name.as_str()))
                .collect(),
            inputs: manifest
                .inputs
                .iter()
                .map(|i| Arc::from(i.as_str()))
                .collect(),
            manifest,
            engine,
            explain,
            why,
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

    /// Input paths in manifest (column) order.
    pub fn input_names(&self) -> &Arc<[Arc<str>]> {
        &self.inputs
    }

    /// What scores the model.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Native(_) => Backend::Native,
            Engine::Onnx(_) => Backend::OnnxRuntime,
        }
    }

    /// Why that evaluator was chosen (for the load log line).
    pub fn backend_reason(&self) -> &str {
        &self.why
    }

    /// Whether explanations are available, or why not.
    pub fn explanations(&self) -> Result<(), &str> {
        self.explain.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Scores one row (of the manifest's input width) into `out` (one value
    /// per output), in the calling thread. For a native model this
    /// allocates nothing; an ONNX Runtime model runs a session call.
    pub fn score_row(&self, row: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        let width = self.manifest.inputs.len();
        if row.len() != width || out.len() != self.names.len() {
            return Err(ModelError::RowWidth {
                model: self.manifest.name.clone(),
                got: row.len(),
                want: width,
            });
        }
        match &self.engine {
            Engine::Native(m) => {
                m.score(row, out);
                Ok(())
            }
            Engine::Onnx(_) => {
                let mut v = Vec::with_capacity(out.len());
                self.run(row, &mut v)?;
                out.copy_from_slice(&v);
                Ok(())
            }
        }
    }

    /// Scores `rows.len() / width` rows laid out row after row; writes
    /// `outputs.len()` values per row into `out` (row after row).
    pub fn run(&self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), ModelError> {
        let width = self.manifest.inputs.len();
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(ModelError::RowWidth {
                model: self.manifest.name.clone(),
                got: rows.len(),
                want: width,
            });
        }
        let n = rows.len() / width;
        let k = self.names.len();
        out.clear();
        out.resize(n * k, f32::NAN);
        match &self.engine {
            Engine::Native(m) => {
                for (row, o) in rows.chunks_exact(width).zip(out.chunks_exact_mut(k)) {
                    m.score(row, o);
                }
                Ok(())
            }
            Engine::Onnx(o) => o.run(&self.manifest, rows, n, out),
        }
    }

    /// Explains one row: its inputs' exact TreeSHAP contributions to the
    /// margin, the `top` largest by size (ties in input order) into `out`
    /// (cleared first), largest first; inputs that contribute nothing are
    /// left out. Errors when the model has no explanations (not a tree
    /// ensemble the native evaluator reads, or no covers file).
    pub fn explain(
        &self,
        row: &[f32],
        top: usize,
        out: &mut Vec<Contribution>,
    ) -> Result<Explained, ModelError> {
        out.clear();
        let (tree, explainer) =
            self.explain
                .as_ref()
                .map_err(|why| ModelError::NoExplanations {
                    model: self.manifest.name.clone(),
                    reason: why.clone(),
                })?;
        let width = self.manifest.inputs.len();
        if row.len() != width {
            return Err(ModelError::RowWidth {
                model: self.manifest.name.clone(),
                got: row.len(),
                want: width,
            });
        }
        let mut phi = vec![0.0f64; width];
        let margin = tree.explain(explainer, row, &mut phi);
        let mut order: Vec<usize> = (0..width).filter(|&i| phi[i] != 0.0).collect();
        order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()).then(a.cmp(&b)));
        out.extend(order.into_iter().take(top).map(|i| Contribution {
            input: self.inputs[i].clone(),
            value: Some(f64::from(row[i])).filter(|v| !v.is_nan()),
            contribution: phi[i],
        }));
        Ok(Explained {
            base_value: explainer.base_value,
            margin,
            model_version: self.version.clone(),
        })
    }

    /// Every input's contribution for `row`, in input order, and the totals
    /// (for tests and tools; [`explain`](Self::explain) is the serving form).
    pub fn contributions(&self, row: &[f32]) -> Result<(Vec<f64>, Explained), ModelError> {
        let (tree, explainer) =
            self.explain
                .as_ref()
                .map_err(|why| ModelError::NoExplanations {
                    model: self.manifest.name.clone(),
                    reason: why.clone(),
                })?;
        let mut phi = vec![0.0f64; self.manifest.inputs.len()];
        if row.len() != phi.len() {
            return Err(ModelError::RowWidth {
                model: self.manifest.name.clone(),
                got: row.len(),
                want: phi.len(),
            });
        }
        let margin = tree.explain(explainer, row, &mut phi);
        Ok((
            phi,
            Explained {
                base_value: explainer.base_value,
                margin,
                model_version: self.version.clone(),
            },
        ))
    }

    /// The margin as the native evaluator computes it for scoring (f32).
    pub fn margin(&self, row: &[f32]) -> Option<f32> {
        let (tree, explainer) = self.explain.as_ref().ok()?;
        (row.len() == tree.width()).then(|| tree.margin(explainer, row))
    }

    /// `count` probe rows for comparing evaluators: the all-missing row,
    /// then rows whose values sit on, just below and just above the model's
    /// own split thresholds (so both sides of every split are taken), with
    /// missing values mixed in. Deterministic for a `seed`. Empty for a
    /// model that is not a tree ensemble the native evaluator reads.
    pub fn probe_rows(&self, count: usize, seed: u64) -> Vec<f32> {
        let width = self.manifest.inputs.len();
        let thresholds = match (&self.engine, &self.explain) {
            (Engine::Native(m), _) => m.thresholds(),
            (_, Ok((m, _))) => m.thresholds(),
            _ => return Vec::new(),
        };
        probe_rows(&thresholds, width, self.manifest.missing, count, seed)
    }

    /// Loads the manifest's model with both evaluators and scores the same
    /// rows (`rows`, laid out row after row) with each. The model must be
    /// one the native evaluator takes.
    pub fn compare_evaluators(
        manifest: &Manifest,
        runtime: &Runtime,
        rows: &[f32],
    ) -> Result<ParityReport, ModelError> {
        let native = Model::load_as(manifest.clone(), runtime, 1, Evaluator::Native)?;
        let onnx = Model::load_as(manifest.clone(), runtime, 1, Evaluator::OnnxRuntime)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let width = manifest.inputs.len().max(1);
        let k = native.names.len();
        let mut report = ParityReport {
            rows: rows.len() / width,
            outputs: native.names.clone(),
            max_abs_diff: 0.0,
            identical: 0,
            compared: 0,
            worst: None,
        };
        // ONNX Runtime in batches, the native evaluator row by row as it
        // serves.
        for (chunk_no, chunk) in rows.chunks(width * 1024).enumerate() {
            native.run(chunk, &mut a)?;
            onnx.run(chunk, &mut b)?;
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                report.compared += 1;
                if x.to_bits() == y.to_bits() {
                    report.identical += 1;
                }
                let d = if x.is_nan() && y.is_nan() {
                    0.0
                } else {
                    (f64::from(*x) - f64::from(*y)).abs()
                };
                let d = if d.is_nan() { f64::INFINITY } else { d };
                if d > report.max_abs_diff || (report.worst.is_none() && d > 0.0) {
                    report.max_abs_diff = d;
                    report.worst = Some(Disagreement {
                        row: chunk_no * 1024 + i / k,
                        output: native.names[i % k].clone(),
                        native: *x,
                        onnxruntime: *y,
                    });
                }
            }
        }
        Ok(report)
    }
}

/// Where two evaluators disagree most.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// The row (0-based).
    pub row: usize,
    /// The output.
    pub output: Arc<str>,
    /// The native evaluator's value.
    pub native: f32,
    /// ONNX Runtime's value.
    pub onnxruntime: f32,
}

/// The native evaluator against ONNX Runtime on the same rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// Rows scored.
    pub rows: usize,
    /// Outputs compared, in manifest order.
    pub outputs: Vec<Arc<str>>,
    /// The largest absolute difference (infinite when one is NaN and the
    /// other not).
    pub max_abs_diff: f64,
    /// Values equal to the bit.
    pub identical: usize,
    /// Values compared.
    pub compared: usize,
    /// The worst disagreement, if any value differs.
    pub worst: Option<Disagreement>,
}

impl ParityReport {
    /// Whether every value agrees within `tolerance`.
    pub fn within(&self, tolerance: f64) -> bool {
        self.max_abs_diff <= tolerance
    }
}

impl std::fmt::Display for ParityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows: largest difference {:e}, {} of {} values identical",
            self.rows, self.max_abs_diff, self.identical, self.compared
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                " (worst: row {}, output {}: native {}, onnxruntime {})",
                w.row, w.output, w.native, w.onnxruntime
            )?;
        }
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*), for probe rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn probe_rows(
    thresholds: &[Vec<f32>],
    width: usize,
    missing: f32,
    count: usize,
    seed: u64,
) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut rows = Vec::with_capacity(count * width);
    for r in 0..count {
        for t in thresholds.iter().take(width) {
            if r == 0 || rng.unit() < 0.15 || t.is_empty() {
                rows.push(missing);
                continue;
            }
            let at = t[rng.below(t.len())];
            rows.push(match rng.below(4) {
                0 => at,
                1 => at.next_down(),
                2 => at.next_up(),
                _ => at + (rng.unit() as f32 - 0.5) * at.abs().max(1.0),
            });
        }
    }
    rows
}

/// The explanation data of a model, or why it has none. A covers file
/// that is missing, unreadable or of another model leaves the model without
/// explanations (logged, and told by [`Model::explanations`]) rather than
/// refusing it: scoring does not depend on covers.
fn explainer(
    manifest: &Manifest,
    tree: Option<Arc<NativeModel>>,
    bytes: Option<&[u8]>,
) -> Result<(Arc<NativeModel>, Explainer), String> {
    let Some(tree) = tree else {
        return Err("explanations need a tree ensemble the native evaluator reads".into());
    };
    let Some(path) = &manifest.covers else {
        return Err(format!(
            "the manifest {} names no covers file (`covers = ...`, written by the training tools)",
            manifest.path.display()
        ));
    };
    let covers = bytes
        .ok_or_else(|| "the model file is too large to explain".to_string())
        .and_then(|bytes| Covers::load(path, bytes))
        .and_then(|covers| tree.explainer(&covers));
    match covers {
        Ok(explainer) => Ok((tree, explainer)),
        Err(why) => {
            let why = format!("covers file {}: {why}", path.display());
            tracing::warn!(model = %manifest.name, "{why}; the model serves without explanations");
            Err(why)
        }
    }
}

impl OnnxModel {
    fn load(
        manifest: &Manifest,
        runtime: &Runtime,
        threads: usize,
        bytes: Option<&[u8]>,
    ) -> Result<OnnxModel, ModelError> {
        let load_err = |reason: String| ModelError::Load {
            model: manifest.name.clone(),
            file: manifest.file.clone(),
            reason,
        };
        let session = Session::builder(runtime.env())
            .and_then(|b| Ok(b.with_intra_threads(threads.max(1))?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_file(&manifest.file))
            .map_err(|e: ort::Error| load_err(e.to_string()))?;
        let plan = check_shapes(manifest, &session, bytes)?;
        Ok(OnnxModel {
            session: Mutex::new(session),
            plan,
        })
    }

    fn run(
        &self,
        manifest: &Manifest,
        rows: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let width = manifest.inputs.len();
        let run_err = |reason: String| ModelError::Run {
            model: manifest.name.clone(),
            reason,
        };
        let input =
            TensorRef::from_array_view(([n, width], rows)).map_err(|e| run_err(e.to_string()))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| run_err(e.to_string()))?;
        let k = self.plan.len();
        for (j, p) in self.plan.iter().enumerate() {
            if let Some(key) = p.zipmap_key {
                let maps = outputs[p.tensor]
                    .try_extract_sequence::<ort::value::DynMapValueType>()
                    .map_err(|e| run_err(e.to_string()))?;
                if maps.len() != n {
                    return Err(run_err(format!(
                        "output `{}` has {} maps for a batch of {n}",
                        manifest.outputs[j].from,
                        maps.len()
                    )));
                }
                for (r, m) in maps.iter().enumerate() {
                    let pairs = m
                        .try_extract_key_values::<i64, f32>()
                        .map_err(|e| run_err(e.to_string()))?;
                    out[r * k + j] = pairs
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(f32::NAN, |(_, v)| *v);
                }
                continue;
            }
            let (shape, data) = outputs[p.tensor]
                .try_extract_tensor::<f32>()
                .map_err(|e| run_err(e.to_string()))?;
            let cols = match (p.column, &shape[..]) {
                (None, [b]) if *b as usize == n => 1,
                (Some(c), [b, w]) if *b as usize == n && (c as i64) < *w => *w as usize,
                _ => {
                    return Err(run_err(format!(
                        "output `{}` has shape {} for a batch of {n}",
                        manifest.outputs[j].from,
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

/// The class label at `index` of the `ZipMap` producing `output`.
fn zipmap_key(bytes: Option<&[u8]>, output: &str, index: usize) -> Result<i64, String> {
    let bytes = bytes.ok_or("the model file is too large to read its ZipMap")?;
    let model = crate::onnx::decode(bytes)?;
    let graph = model.graph.ok_or("the file has no graph")?;
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type == "ZipMap" && n.output.iter().any(|o| o == output))
        .ok_or("it is not the output of a ZipMap")?;
    let labels = node
        .attribute
        .iter()
        .find(|a| a.name == "classlabels_int64s")
        .map(|a| a.ints.clone())
        .unwrap_or_default();
    labels.get(index).copied().ok_or_else(|| {
        format!(
            "column {index} of a ZipMap of {} integer class labels",
            labels.len()
        )
    })
}

fn check_shapes(
    manifest: &Manifest,
    session: &Session,
    bytes: Option<&[u8]>,
) -> Result<Vec<OutputPlan>, ModelError> {
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
        if let ValueType::Sequence(inner) = o.dtype()
            && matches!(
                **inner,
                ValueType::Map {
                    key: TensorElementType::Int64,
                    value: TensorElementType::Float32
                }
            )
        {
            let Some(index) = spec.index else {
                return Err(mismatch(format!(
                    "output `{}` reads the ZipMap `{}` without an index; give `index`, the class's position",
                    spec.name, spec.from
                )));
            };
            let key = zipmap_key(bytes, &spec.from, index).map_err(|why| {
                mismatch(format!(
                    "output `{}` reads `{}`: {why}",
                    spec.name, spec.from
                ))
            })?;
            plan.push(OutputPlan {
                tensor,
                column: Some(index),
                zipmap_key: Some(key),
            });
            continue;
        }
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
            zipmap_key: None,
        });
    }
    Ok(plan)
}
