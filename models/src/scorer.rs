//! Serving: the micro-batching scorer, hot swap, the champion/challenger
//! pair and the per-event deadline.
//!
//! A [`Scorer`] owns a queue of rows and one scoring thread. Callers hand
//! it one row each ([`Scorer::score`]); once a row waits, the thread lets
//! more gather until there are `max_batch` or `max_wait_us` has passed,
//! whichever comes first, runs them through the model in one session call
//! and answers each caller through its own channel. A caller with nothing
//! else to do (a lane that has read every event available) may score the
//! waiting rows itself ([`Scorer::help`]): then a decision does not wait
//! for the scoring thread to be scheduled, which on a busy machine can
//! take milliseconds. [`Models`] puts a champion and an optional shadow
//! challenger together, applies the per-event deadline and reports to a
//! [`ModelObserver`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::oneshot;
use verdict_core::{Catalogue, Record, Scores, Slot, Value};

use smallvec::SmallVec;

use crate::{
    Backend, Contribution, Explained, Manifest, Model, ModelError, ResolvedInputs, Runtime,
};

/// The `[model]` section of `verdict.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The champion's manifest (`models/fraud-gbt.manifest.toml`).
    pub manifest: PathBuf,
    /// A challenger's manifest, scored in shadow.
    #[serde(default)]
    pub challenger: Option<PathBuf>,
    /// The most rows scored in one session call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first row of a batch waits for company, in microseconds.
    #[serde(default = "default_max_wait_us")]
    pub max_wait_us: u64,
    /// How long an event waits for its score before deciding without it.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// ONNX Runtime intra-op threads per model.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// `libonnxruntime.so`; else `ORT_DYLIB_PATH`, else `.verdict/venv`.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Which decisions carry the model's explanation (`[model.explain]`).
    #[serde(default)]
    pub explain: ExplainConfig,
}

/// `[model.explain]`: the decisions that carry their top contributions.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainConfig {
    /// The outcomes explained (`["review", "deny"]` by default; `[]`: none).
    /// An approval is never worth the cost unless named here.
    #[serde(default = "default_explain_outcomes")]
    pub outcomes: Vec<verdict_core::Action>,
    /// How many contributions a decision carries, largest first (0: none).
    #[serde(default = "default_explain_top")]
    pub top: usize,
}

impl Default for ExplainConfig {
    fn default() -> ExplainConfig {
        ExplainConfig {
            outcomes: default_explain_outcomes(),
            top: default_explain_top(),
        }
    }
}

impl ExplainConfig {
    /// Whether a decision of `outcome` is explained.
    pub fn explains(&self, outcome: verdict_core::Action) -> bool {
        self.top > 0 && self.outcomes.contains(&outcome)
    }
}

fn default_explain_outcomes() -> Vec<verdict_core::Action> {
    vec![verdict_core::Action::Review, verdict_core::Action::Deny]
}
fn default_explain_top() -> usize {
    5
}

fn default_max_batch() -> usize {
    32
}
fn default_max_wait_us() -> u64 {
    200
}
fn default_deadline_ms() -> u64 {
    5
}
fn default_threads() -> usize {
    1
}

impl ModelConfig {
    /// A configuration with defaults for everything but the manifest.
    pub fn new(manifest: impl Into<PathBuf>) -> ModelConfig {
        ModelConfig {
            manifest: manifest.into(),
            challenger: None,
            max_batch: default_max_batch(),
            max_wait_us: default_max_wait_us(),
            deadline_ms: default_deadline_ms(),
            threads: default_threads(),
            ort_library: None,
            explain: ExplainConfig::default(),
        }
    }

    /// The batching part of the configuration.
    pub fn batching(&self) -> Batching {
        Batching {
            max_batch: self.max_batch,
            max_wait: Duration::from_micros(self.max_wait_us),
            threads: self.threads,
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.max_batch == 0 || self.max_batch > 65_536 {
            return Err(ModelError::Config(format!(
                "max_batch = {} must be between 1 and 65536",
                self.max_batch
            )));
        }
        if self.max_wait_us > 1_000_000 {
            return Err(ModelError::Config(format!(
                "max_wait_us = {} is over a second; use a few hundred microseconds",
                self.max_wait_us
            )));
        }
        if self.deadline_ms == 0 {
            return Err(ModelError::Config(
                "deadline_ms = 0 would skip every score; use a few milliseconds".into(),
            ));
        }
        Ok(())
    }
}

/// How a scorer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub threads: usize,
}

impl Default for Batching {
    fn default() -> Self {
        ModelConfig::new("").batching()
    }
}

/// Receives the model metrics. Every method has a no-op default.
pub trait ModelObserver: Send + Sync {
    /// One session call scored `size` rows.
    fn observe_model_batch(&self, _size: usize) {}
    /// An event went on without its score: the deadline passed.
    fn model_timeout(&self) {}
    /// Scoring failed for an event (the model errored or stopped).
    fn model_error(&self) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl ModelObserver for NoObserver {}

/// An observer that counts, for tests and simple reporting.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
}

impl ModelObserver for ModelStats {
    fn observe_model_batch(&self, size: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(size as u64, Ordering::Relaxed);
    }
    fn model_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
    fn model_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The model serving now, with the input plan it was checked with.
struct Serving {
    /// `Model` is shared: a native model scores from any thread at once,
    /// and an ONNX Runtime model locks its session inside.
    model: Model,
    inputs: ResolvedInputs,
    version: Arc<str>,
}

/// The scores of one row: on the stack for up to four outputs.
type Values = SmallVec<[f32; 4]>;

thread_local! {
    /// The row a native model scores, reused so that scoring allocates
    /// nothing once a thread has gathered its first row.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

struct Request {
    serving: Arc<Serving>,
    row: Vec<f32>,
    reply: oneshot::Sender<Result<Values, ModelError>>,
}

/// The scores of one event from one model, in manifest output order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The version of the model that scored it.
    pub model_version: Arc<str>,
    names: Arc<[Arc<str>]>,
    slots: Arc<[Slot]>,
    values: Values,
}

impl Scored {
    /// `(name, model slot, value)` per output.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, Slot, f64)> + '_ {
        self.names
            .iter()
            .zip(self.slots.iter())
            .zip(self.values.iter())
            .map(|((n, s), v)| (n, *s, f64::from(*v)))
    }

    /// Writes each value into its `model.<name>` slot.
    pub fn write_slots(&self, model: &mut [Value]) {
        for (_, slot, v) in self.iter() {
            if let Some(m) = model.get_mut(slot.index as usize) {
                *m = Value::Number(v);
            }
        }
    }

    /// Appends each value to a decision's scores under its output name.
    pub fn append_to(&self, scores: &mut Scores) {
        for (name, _, v) in self.iter() {
            scores.0.push((name.clone(), v));
        }
    }
}

/// The rows waiting to be scored, shared by the scoring thread and
/// helpers.
struct Queue {
    state: Mutex<Waiting>,
    /// How many rows wait, for the thread to poll without the lock.
    queued: AtomicUsize,
    /// Signalled when the first row arrives, when a batch is full, and on
    /// shutdown.
    ready: Condvar,
    batching: Batching,
    observer: Arc<dyn ModelObserver>,
    name: String,
}

#[derive(Default)]
struct Waiting {
    requests: VecDeque<Request>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn max_batch(&self) -> usize {
        self.batching.max_batch.max(1)
    }

    fn push(&self, request: Request) -> bool {
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        q.requests.push_back(request);
        let n = q.requests.len();
        self.queued.store(n, Ordering::Release);
        drop(q);
        if n == 1 || n == self.max_batch() {
            self.ready.notify_one();
        }
        true
    }

    /// Up to `max_batch` waiting rows, taken off the queue.
    fn take(&self, q: &mut Waiting) -> Vec<Request> {
        let n = q.requests.len().min(self.max_batch());
        let batch = q.requests.drain(..n).collect();
        self.queued.store(q.requests.len(), Ordering::Release);
        batch
    }

    /// Polls until `rows` rows wait, for up to [`SPIN`] (or `until`):
    /// under load the next row is microseconds away, and a sleep and
    /// wake-up cost more.
    fn spin_for_rows(&self, rows: usize, until: Instant) -> bool {
        let until = until.min(Instant::now() + SPIN);
        loop {
            for _ in 0..64 {
                if self.queued.load(Ordering::Acquire) >= rows {
                    return true;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }

    /// Scores `batch`: rows whose caller stopped waiting are skipped, rows
    /// gathered for different models (around a swap) run apart.
    fn process(&self, mut batch: Vec<Request>, rows: &mut Vec<f32>, out: &mut Vec<f32>) {
        batch.retain(|r| !r.reply.is_closed());
        while !batch.is_empty() {
            let serving = batch[0].serving.clone();
            let split = batch
                .iter()
                .position(|r| !Arc::ptr_eq(&r.serving, &serving))
                .unwrap_or(batch.len());
            let group: Vec<Request> = batch.drain(..split).collect();
            run_group(
                &serving,
                group,
                rows,
                out,
                self.observer.as_ref(),
                &self.name,
            );
        }
    }
}

struct Inner {
    name: String,
    current: ArcSwap<Serving>,
    queue: Arc<Queue>,
    catalogue: Catalogue,
    runtime: Runtime,
    threads: usize,
    output_names: Arc<[Arc<str>]>,
    output_slots: Arc<[Slot]>,
    reload: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// A served model: a micro-batching thread in front of an ONNX session,
/// swappable without a restart. Cheap to clone.
#[derive(Clone)]
pub struct Scorer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("name", &self.inner.name)
            .field("version", &self.version())
            .finish()
    }
}

/// Loads, checks and probes a model; the shared part of start and reload.
fn prepare(
    manifest_path: &Path,
    catalogue: &Catalogue,
    runtime: &Runtime,
    threads: usize,
    rename: &dyn Fn(&str) -> String,
) -> Result<Serving, ModelError> {
    let mut manifest = Manifest::load(manifest_path)?;
    for o in &mut manifest.outputs {
        o.name = rename(&o.name);
    }
    let inputs = manifest.check(catalogue)?;
    let mut model = Model::load(manifest, runtime, threads)?;
    model.probe()?;
    Ok(Serving {
        version: model.version().clone(),
        inputs,
        model,
    })
}

impl Scorer {
    /// Loads the model of `manifest_path`, checks its inputs against the
    /// catalogue, registers its outputs there as `model.<name>`, scores a
    /// probe row, and starts its scoring thread.
    pub fn start(
        manifest_path: &Path,
        catalogue: &mut Catalogue,
        runtime: &Runtime,
        batching: Batching,
        observer: Arc<dyn ModelObserver>,
    ) -> Result<Scorer, ModelError> {
        Scorer::start_renamed(
            manifest_path,
            catalogue,
            runtime,
            batching,
            observer,
            &|n| n.to_string(),
        )
    }

    fn start_renamed(
        manifest_path: &Path,
        catalogue: &mut Catalogue,
        runtime: &Runtime,
        batching: Batching,
        observer: Arc<dyn ModelObserver>,
        rename: &dyn Fn(&str) -> String,
    ) -> Result<Scorer, ModelError> {
        let serving = prepare(manifest_path, catalogue, runtime, batching.threads, rename)?;
        let (name, output_names, output_slots) = {
            let model = &serving.model;
            let m = model.manifest();
            // A name declared beforehand (so rules could be checked against
            // it) is taken over if it is a number.
            for o in &m.outputs {
                if let Some(e) = catalogue.lookup(&format!("model.{}", o.name))
                    && e.ty != verdict_core::ValueType::Number
                {
                    return Err(ModelError::Manifest {
                        path: m.path.clone(),
                        reason: format!(
                            "output `model.{}` is declared as a {}, but a model output is a number",
                            o.name,
                            e.ty.name()
                        ),
                    });
                }
            }
            let slots = m.register_outputs(catalogue);
            (m.name.clone(), model.output_names().to_vec(), slots)
        };
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            queued: AtomicUsize::new(0),
            ready: Condvar::new(),
            batching,
            observer,
            name: name.clone(),
        });
        let thread_name = format!("model-{name}");
        let q = queue.clone();
        std::thread::Builder::new()
            .name(thread_name.chars().take(15).collect())
            .spawn(move || batch_loop(&q))
            .map_err(|e| ModelError::Config(format!("cannot start the scoring thread: {e}")))?;
        tracing::info!(
            model = %name,
            version = %serving.version,
            evaluator = serving.model.backend().name(),
            why = serving.model.backend_reason(),
            "model loaded"
        );
        Ok(Scorer {
            inner: Arc::new(Inner {
                name,
                current: ArcSwap::from_pointee(serving),
                queue,
                catalogue: catalogue.clone(),
                runtime: runtime.clone(),
                threads: batching.threads,
                output_names: output_names.into(),
                output_slots: output_slots.into(),
                reload: Mutex::new(()),
            }),
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The version serving now.
    pub fn version(&self) -> Arc<str> {
        self.inner.current.load().version.clone()
    }

    /// Output names (as rules see them after `model.`), in manifest order.
    pub fn output_names(&self) -> &[Arc<str>] {
        &self.inner.output_names
    }

    /// The `model.<name>` slots of the outputs, in manifest order.
    pub fn output_slots(&self) -> &[Slot] {
        &self.inner.output_slots
    }

    /// The input plan of the model serving now.
    pub fn inputs(&self) -> ResolvedInputs {
        self.inner.current.load().inputs.clone()
    }

    /// Gathers the event's row and queues it; the future resolves when its
    /// batch has been scored. Gathering happens now, so the future does not
    /// borrow the record.
    pub fn score_record(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<Scored, ModelError>> + Send + use<> {
        let pending = self.pending(record);
        async move {
            match pending {
                Pending::Ready(scored) => scored,
                Pending::Queued(queued) => queued.await,
            }
        }
    }

    /// What scores the model serving now.
    pub fn backend(&self) -> Backend {
        self.inner.current.load().model.backend()
    }

    /// Scores the event now, in the calling thread, when the serving model
    /// is native (no queue, no thread hop, no allocation); `None` for an
    /// ONNX Runtime model, which is scored through the queue.
    pub fn score_now(&self, record: &Record) -> Option<Result<Scored, ModelError>> {
        let serving = self.inner.current.load();
        if serving.model.backend() != Backend::Native {
            return None;
        }
        Some(self.score_inline(&serving, record))
    }

    fn score_inline(&self, serving: &Serving, record: &Record) -> Result<Scored, ModelError> {
        let mut values = Values::from_elem(f32::NAN, self.inner.output_names.len());
        let scored = ROW.with(|row| {
            let mut row = row.borrow_mut();
            row.clear();
            row.resize(serving.inputs.width(), serving.inputs.missing());
            serving.inputs.gather(record, &mut row);
            serving.model.score_row(&row, &mut values)
        });
        self.inner.queue.observer.observe_model_batch(1);
        scored.map(|()| Scored {
            model_version: serving.version.clone(),
            names: self.inner.output_names.clone(),
            slots: self.inner.output_slots.clone(),
            values,
        })
    }

    /// The event scored now (a native model) or queued (ONNX Runtime).
    fn pending(
        &self,
        record: &Record,
    ) -> Pending<impl Future<Output = Result<Scored, ModelError>> + Send + use<>> {
        let serving = self.inner.current.load_full();
        if serving.model.backend() == Backend::Native {
            return Pending::Ready(self.score_inline(&serving, record));
        }
        let row = serving.inputs.gather_vec(record);
        Pending::Queued(self.submit(serving, row))
    }

    /// Explains the event with the model serving now: the `top` largest
    /// input contributions into `out` (see [`Model::explain`]).
    pub fn explain(
        &self,
        record: &Record,
        top: usize,
        out: &mut Vec<Contribution>,
    ) -> Result<Explained, ModelError> {
        let serving = self.inner.current.load();
        let row = serving.inputs.gather_vec(record);
        serving.model.explain(&row, top, out)
    }

    /// Whether the model serving now has explanations, or why not.
    pub fn explanations(&self) -> Result<(), String> {
        self.inner
            .current
            .load()
            .model
            .explanations()
            .map_err(str::to_string)
    }

    /// Scores an already gathered row (of the serving model's input
    /// width): now for a native model, else queued.
    pub fn score(
        &self,
        row: Vec<f32>,
    ) -> impl Future<Output = Result<Scored, ModelError>> + Send + use<> {
        let serving = self.inner.current.load_full();
        let pending = if serving.model.backend() == Backend::Native {
            let mut values = Values::from_elem(f32::NAN, self.inner.output_names.len());
            self.inner.queue.observer.observe_model_batch(1);
            Pending::Ready(serving.model.score_row(&row, &mut values).map(|()| Scored {
                model_version: serving.version.clone(),
                names: self.inner.output_names.clone(),
                slots: self.inner.output_slots.clone(),
                values,
            }))
        } else {
            Pending::Queued(self.submit(serving, row))
        };
        async move {
            match pending {
                Pending::Ready(scored) => scored,
                Pending::Queued(queued) => queued.await,
            }
        }
    }

    fn submit(
        &self,
        serving: Arc<Serving>,
        row: Vec<f32>,
    ) -> impl Future<Output = Result<Scored, ModelError>> + Send + use<> {
        let (reply, rx) = oneshot::channel();
        let name = self.inner.name.clone();
        let width = serving.inputs.width();
        let version = serving.version.clone();
        let names = self.inner.output_names.clone();
        let slots = self.inner.output_slots.clone();
        let queued = if row.len() != width {
            Err(ModelError::RowWidth {
                model: name.clone(),
                got: row.len(),
                want: width,
            })
        } else if self.inner.queue.push(Request {
            serving,
            row,
            reply,
        }) {
            Ok(())
        } else {
            Err(ModelError::Stopped {
                model: name.clone(),
            })
        };
        async move {
            queued?;
            let values = rx
                .await
                .map_err(|_| ModelError::Stopped { model: name })??;
            Ok(Scored {
                model_version: version,
                names,
                slots,
                values,
            })
        }
    }

    /// Scores the rows waiting now, in the calling thread, in batches of at
    /// most `max_batch`; returns how many. For a caller that would
    /// otherwise wait for their answers (it blocks for the session calls).
    pub fn help(&self) -> usize {
        let queue = &self.inner.queue;
        let (mut rows, mut out) = (Vec::new(), Vec::new());
        let mut scored = 0;
        loop {
            let batch = queue.take(&mut queue.lock());
            if batch.is_empty() {
                return scored;
            }
            scored += batch.len();
            queue.process(batch, &mut rows, &mut out);
        }
    }

    /// Loads the model of `manifest_path`, checks it against the catalogue
    /// the scorer started with, scores a probe row, and only then swaps it
    /// in; on any failure the serving model stays. The new manifest must
    /// name the same outputs. Returns the new version.
    pub fn reload(&self, manifest_path: &Path) -> Result<Arc<str>, ModelError> {
        self.reload_renamed(manifest_path, &|n| n.to_string())
    }

    fn reload_renamed(
        &self,
        manifest_path: &Path,
        rename: &dyn Fn(&str) -> String,
    ) -> Result<Arc<str>, ModelError> {
        let _one_at_a_time = self.inner.reload.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &self.inner;
        let serving = prepare(
            manifest_path,
            &inner.catalogue,
            &inner.runtime,
            inner.threads,
            rename,
        )?;
        {
            let model = &serving.model;
            if model.output_names() != &inner.output_names[..] {
                let join = |v: &[Arc<str>]| v.iter().map(|s| &**s).collect::<Vec<_>>().join(", ");
                return Err(ModelError::OutputsChanged {
                    model: inner.name.clone(),
                    old: join(&inner.output_names),
                    new: join(model.output_names()),
                });
            }
        }
        let version = serving.version.clone();
        let evaluator = serving.model.backend().name();
        let old = inner.current.swap(Arc::new(serving));
        tracing::info!(model = %inner.name, from = %old.version, to = %version, evaluator, "model swapped");
        Ok(version)
    }
}

/// The scoring thread: waits for a row, lets more gather (they stay
/// queued meanwhile, so a helper may take them), then scores a batch.
fn batch_loop(queue: &Queue) {
    let max_batch = queue.max_batch();
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    loop {
        let batch = {
            let mut q = queue.lock();
            loop {
                while q.requests.is_empty() {
                    if q.closed {
                        return;
                    }
                    drop(q);
                    let spotted = queue.spin_for_rows(1, Instant::now() + SPIN);
                    q = queue.lock();
                    if spotted || !q.requests.is_empty() || q.closed {
                        continue;
                    }
                    q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                let until = Instant::now() + queue.batching.max_wait;
                while q.requests.len() < max_batch && !q.closed {
                    let now = Instant::now();
                    if now >= until || q.requests.is_empty() {
                        break;
                    }
                    drop(q);
                    let full = queue.spin_for_rows(max_batch, until);
                    q = queue.lock();
                    if full || q.requests.len() >= max_batch {
                        continue;
                    }
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    q = match queue.ready.wait_timeout(q, until - now) {
                        Ok((q, _)) => q,
                        Err(p) => p.into_inner().0,
                    };
                }
                // Empty: a helper scored them; wait for the next row.
                if !q.requests.is_empty() {
                    break queue.take(&mut q);
                }
            }
        };
        queue.process(batch, &mut rows, &mut out);
    }
}

/// How long the scoring thread polls for the next row before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

fn run_group(
    serving: &Serving,
    group: Vec<Request>,
    rows: &mut Vec<f32>,
    out: &mut Vec<f32>,
    observer: &dyn ModelObserver,
    name: &str,
) {
    rows.clear();
    for r in &group {
        rows.extend_from_slice(&r.row);
    }
    let result = serving.model.run(rows, out);
    observer.observe_model_batch(group.len());
    match result {
        Ok(()) => {
            let k = out.len() / group.len().max(1);
            for (i, r) in group.into_iter().enumerate() {
                let _ = r
                    .reply
                    .send(Ok(Values::from_slice(&out[i * k..(i + 1) * k])));
            }
        }
        Err(e) => {
            tracing::warn!(model = name, error = %e, rows = group.len(), "model batch failed");
            let reason = e.to_string();
            for r in group {
                let _ = r.reply.send(Err(ModelError::Run {
                    model: name.to_string(),
                    reason: reason.clone(),
                }));
            }
        }
    }
}

/// An event's scores: computed already (a native model), or queued for
/// the scoring thread.
enum Pending<F> {
    Ready(Result<Scored, ModelError>),
    Queued(F),
}

/// An answer computed already: an error is told to the observer.
fn settled(answer: Result<Scored, ModelError>, observer: &dyn ModelObserver) -> Option<Scored> {
    match answer {
        Ok(s) => Some(s),
        Err(_) => {
            observer.model_error();
            None
        }
    }
}

/// A model's answer by `until` (without one, whenever it comes); a miss
/// or an error is told to the observer and answers `None`.
async fn until_deadline(
    scoring: impl Future<Output = Result<Scored, ModelError>>,
    until: Option<tokio::time::Instant>,
    observer: &dyn ModelObserver,
) -> Option<Scored> {
    let answer = match until {
        Some(until) => tokio::time::timeout_at(until, scoring).await,
        None => Ok(scoring.await),
    };
    match answer {
        Ok(Ok(s)) => Some(s),
        Ok(Err(_)) => {
            observer.model_error();
            None
        }
        Err(_) => {
            observer.model_timeout();
            None
        }
    }
}

/// What the models made of one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOutcome {
    /// The champion's scores; `None` when it missed the deadline or failed.
    pub champion: Option<Scored>,
    /// The challenger's scores, when there is one and it answered in time.
    pub challenger: Option<Scored>,
    /// True when the champion's scores are missing: decide `degraded`.
    pub degraded: bool,
}

impl ModelOutcome {
    /// The version of the champion that scored, for `model_version`.
    pub fn model_version(&self) -> Option<&Arc<str>> {
        self.champion.as_ref().map(|s| &s.model_version)
    }

    /// Writes every score into its `model.<name>` slot.
    pub fn write_slots(&self, model: &mut [Value]) {
        for s in self.champion.iter().chain(self.challenger.iter()) {
            s.write_slots(model);
        }
    }

    /// The decision's `scores`: champion outputs, then challenger outputs.
    pub fn scores(&self) -> Scores {
        let mut scores = Scores::default();
        for s in self.champion.iter().chain(self.challenger.iter()) {
            s.append_to(&mut scores);
        }
        scores
    }
}

/// The engine's handle on its models: a champion, an optional challenger
/// scored in shadow, and the per-event deadline.
#[derive(Clone)]
pub struct Models {
    champion: Scorer,
    challenger: Option<Scorer>,
    /// How long an event waits for its score; `None`: as long as scoring
    /// takes (files are decided so, never by how busy the machine is).
    deadline: Option<Duration>,
    observer: Arc<dyn ModelObserver>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("champion", &self.champion)
            .field("challenger", &self.challenger)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The name a challenger output takes when the champion already uses it.
pub fn challenger_output_name(name: &str) -> String {
    format!("{name}_challenger")
}

impl Models {
    /// Finds and loads ONNX Runtime, then the champion and the challenger.
    /// Registers `model.<name>` for every output in the catalogue; a
    /// challenger output whose name the champion uses is registered as
    /// `model.<name>_challenger`.
    pub fn load(
        config: &ModelConfig,
        catalogue: &mut Catalogue,
        observer: Arc<dyn ModelObserver>,
    ) -> Result<Models, ModelError> {
        config.validate()?;
        let runtime = Runtime::discover(config.ort_library.as_deref())?;
        Models::load_with(config, catalogue, &runtime, observer)
    }

    /// As [`load`](Self::load), with a runtime already loaded.
    pub fn load_with(
        config: &ModelConfig,
        catalogue: &mut Catalogue,
        runtime: &Runtime,
        observer: Arc<dyn ModelObserver>,
    ) -> Result<Models, ModelError> {
        config.validate()?;
        let batching = config.batching();
        let champion = Scorer::start(
            &config.manifest,
            catalogue,
            runtime,
            batching,
            observer.clone(),
        )?;
        let challenger = match &config.challenger {
            None => None,
            Some(path) => {
                let taken: Vec<String> = champion
                    .output_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let rename = move |n: &str| {
                    if taken.iter().any(|t| t == n) {
                        challenger_output_name(n)
                    } else {
                        n.to_string()
                    }
                };
                Some(Scorer::start_renamed(
                    path,
                    catalogue,
                    runtime,
                    batching,
                    observer.clone(),
                    &rename,
                )?)
            }
        };
        Ok(Models {
            champion,
            challenger,
            deadline: Some(Duration::from_millis(config.deadline_ms)),
            observer,
        })
    }

    /// The same models with no wall-clock deadline: every event waits for
    /// its score however long it takes, so that deciding a file gives the
    /// same decisions on every run, whatever else the machine is doing.
    pub fn without_deadline(mut self) -> Models {
        self.deadline = None;
        self
    }

    /// The champion.
    pub fn champion(&self) -> &Scorer {
        &self.champion
    }

    /// The challenger, if any.
    pub fn challenger(&self) -> Option<&Scorer> {
        self.challenger.as_ref()
    }

    /// Scores the rows waiting for either model in the calling thread
    /// (see [`Scorer::help`]); returns how many.
    pub fn help(&self) -> usize {
        self.champion.help() + self.challenger.as_ref().map_or(0, Scorer::help)
    }

    /// Hot-swaps the champion (see [`Scorer::reload`]).
    pub fn reload_champion(&self, manifest_path: &Path) -> Result<Arc<str>, ModelError> {
        self.champion.reload(manifest_path)
    }

    /// Hot-swaps the challenger, keeping its registered output names.
    pub fn reload_challenger(&self, manifest_path: &Path) -> Result<Arc<str>, ModelError> {
        let Some(ch) = &self.challenger else {
            return Err(ModelError::Config(
                "no challenger is configured; set [model] challenger and restart".into(),
            ));
        };
        let taken: Vec<String> = self
            .champion
            .output_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        ch.reload_renamed(manifest_path, &move |n: &str| {
            if taken.iter().any(|t| t == n) {
                challenger_output_name(n)
            } else {
                n.to_string()
            }
        })
    }

    /// Scores one event with the champion (and the challenger), waiting at
    /// most the deadline. Past it, or on a model error, the outcome is
    /// `degraded` with no champion scores and the observer is told. The
    /// returned future does not borrow the record.
    ///
    /// A native model is scored here, before this returns: the future is
    /// ready at its first poll and no deadline applies (nothing waits).
    pub fn score(&self, record: &Record) -> impl Future<Output = ModelOutcome> + Send + use<> {
        let champion = self.champion.pending(record);
        let challenger = self.challenger.as_ref().map(|c| c.pending(record));
        let deadline = self.deadline;
        let observer = self.observer.clone();
        async move {
            let until = deadline.map(|d| tokio::time::Instant::now() + d);
            let champion = match champion {
                Pending::Ready(s) => settled(s, observer.as_ref()),
                Pending::Queued(f) => until_deadline(f, until, observer.as_ref()).await,
            };
            let challenger = match challenger {
                Some(Pending::Ready(s)) => settled(s, observer.as_ref()),
                Some(Pending::Queued(f)) => until_deadline(f, until, observer.as_ref()).await,
                None => None,
            };
            ModelOutcome {
                degraded: champion.is_none(),
                champion,
                challenger,
            }
        }
    }

    /// Scores the event now, in the calling thread, when every model is
    /// native; `None` when one is served by ONNX Runtime (then use
    /// [`score`](Self::score)). A failure is a degraded outcome.
    pub fn score_now(&self, record: &Record) -> Option<ModelOutcome> {
        if self.champion.backend() != Backend::Native
            || self
                .challenger
                .as_ref()
                .is_some_and(|c| c.backend() != Backend::Native)
        {
            return None;
        }
        let champion = self
            .champion
            .score_now(record)
            .and_then(|s| settled(s, self.observer.as_ref()));
        let challenger = self
            .challenger
            .as_ref()
            .and_then(|c| c.score_now(record))
            .and_then(|s| settled(s, self.observer.as_ref()));
        Some(ModelOutcome {
            degraded: champion.is_none(),
            champion,
            challenger,
        })
    }

    /// Explains the event with the champion: its `top` largest input
    /// contributions to the margin into `out` (cleared first), and the base
    /// value and margin. Errors (never panics) when the champion has no
    /// explanations; see [`Model::explain`].
    pub fn explain(
        &self,
        record: &Record,
        top: usize,
        out: &mut Vec<Contribution>,
    ) -> Result<Explained, ModelError> {
        self.champion.explain(record, top, out)
    }
}
