//! The engine: one event's straight path, source bytes to decision.
//!
//! `parse → features → model → rules → decision`. Every stage is built once
//! from the configuration (names resolved to slots there); deciding an event
//! is then plain synchronous work on slot arrays, except the model, which is
//! scored by a batcher on its own thread and awaited with a deadline.
//!
//! The engine is split in two halves so that a source can keep events of one
//! partition in order while several are in flight:
//! - [`Engine::prepare`] parses and reads-then-updates the features. It must
//!   be called in source order (velocity features depend on it).
//! - [`Engine::finish`] scores, runs the rules and builds the decision. It
//!   may run concurrently for several prepared events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use verdict_core::{
    Action, Catalogue, DeadLetter, Decision, Event, EventParser, Position, Record, RejectionKind,
    Schema, Str, ValueType,
};
use verdict_features::shared::SharedStore;
use verdict_features::{FeatureDefs, FeatureStore, StoreStats, UpdateOutcome};
use verdict_models::{Manifest, ModelConfig, ModelError, ModelObserver, ModelOutcome, Models};
use verdict_rules::reload::{Live, ReloadObserver, Reloader};
use verdict_rules::{Diagnostics, Evaluation, RuleSet};

use crate::config::Config;
use crate::metrics::Metrics;
use vetting::Vetting;

mod recent;
mod shared;
pub mod vetting;

pub use shared::Burst;
pub use verdict_features::StreamClock;

/// Time spent in each stage of one event, for the latency histograms.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub parse: Duration,
    pub features: Duration,
    pub model: Duration,
    pub rules: Duration,
}

impl StageTimings {
    /// Parse, features, model, rules: the order of
    /// [`crate::metrics::STAGES`].
    pub fn as_array(&self) -> [Duration; 4] {
        [self.parse, self.features, self.model, self.rules]
    }
}

/// An event that was refused: its dead-letter record, and why (the
/// metric's label).
#[derive(Debug)]
pub struct Rejected {
    /// Boxed: rejections are rare, and it keeps the common result small.
    pub letter: Box<DeadLetter>,
    pub kind: RejectionKind,
}

/// What a source writes for one event: its decision, or its dead letter.
// The common variant is the large one: boxing it would allocate per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    Decision(Decided),
    DeadLetter(Rejected),
}

/// An event that has been parsed and has seen its features, waiting to be
/// scored and decided.
#[derive(Debug)]
pub struct Prepared {
    pub event: Event,
    /// The features the event saw (indexed by feature slot).
    pub features: Vec<verdict_core::Value>,
    /// When the source read the event: `latency_us` starts here.
    pub read_at: Instant,
    pub timings: StageTimings,
    /// The feature store had seen this `event_id` recently: a redelivery.
    pub duplicate: bool,
    /// Where the store's dedup keeps the event's id (its first delivery's,
    /// for a redelivery), and the id's hash.
    pub dedup: Option<(verdict_features::DedupSlot, u64)>,
    /// Where its shared features come from, when some kinds are shared.
    shared: Option<shared::Ticket>,
    /// Some of its features are missing (a shared kind without its burst,
    /// or whose burst failed): the decision is degraded.
    missing_features: bool,
}

/// A decided event.
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    /// The event's time, ms since the epoch (for the decision log).
    pub timestamp_ms: i64,
    /// The event's `user_id` (the output key), when it has one.
    pub key: Option<Str>,
    pub timings: StageTimings,
}

impl Decided {
    /// Counts the decision in `metrics`: outcome, latencies, rule hits,
    /// degraded.
    pub fn count(&self, metrics: &Metrics) {
        let d = &self.decision;
        metrics.decision(
            d.decision,
            d.latency_us,
            self.timings.as_array(),
            d.degraded,
        );
        for hit in d.hits.iter().chain(&d.shadow_hits) {
            metrics.rule_hit(&hit.rule);
        }
    }
}

/// The answer of [`Engine::explain_event`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventExplanation {
    pub event_id: Str,
    /// The champion explained.
    pub model_version: Arc<str>,
    /// Its scores (and a challenger's), as a decision carries them.
    pub scores: verdict_core::Scores,
    /// The margin with no input known; it plus every contribution (not
    /// only the top ones) is `margin`.
    pub base_value: f64,
    /// The model's raw score before its post-transform (log-odds for a
    /// binary classifier).
    pub margin: f64,
    /// The largest contributions, largest first.
    pub explanation: Vec<verdict_core::Contribution>,
}

/// Why an event was not explained.
#[derive(Debug, Clone, PartialEq)]
pub enum NotExplained {
    /// The event does not parse against the schema.
    Invalid {
        kind: verdict_core::RejectionKind,
        reason: String,
    },
    /// No model explains it (none configured, not serving, or one without
    /// explanations); why.
    Unavailable(String),
}

/// Everything that decides, built once from the configuration.
pub struct Engine {
    parser: EventParser,
    catalogue: Arc<Catalogue>,
    /// The slot of `user_id`, the key of every output record.
    key_slot: Option<usize>,
    rules: Option<Rules>,
    observer: Arc<Observer>,
    features: Option<Arc<FeatureStore>>,
    /// The shared store, when the definitions place kinds `shared` and the
    /// engine decides a live stream (not for files: there every kind is
    /// local, see [`Placements`]).
    shared: Option<Arc<SharedStore>>,
    /// Feature slots the record has (the store's and the declared ones).
    feature_slots: usize,
    model: ModelStage,
    /// Model-output slots the record has.
    model_slots: usize,
    snapshot: Option<std::path::PathBuf>,
    /// The positions the restored snapshot covers.
    restored: BTreeMap<String, i64>,
    /// Decisions by event id, given again to a redelivered event.
    first: recent::FirstDecisions,
    /// Stops the background threads (rule watcher, batch refresh).
    stop: Arc<AtomicBool>,
    /// The `verdict` binary that vets a model file in a child process
    /// before it is loaded here (see [`vetting`]); unset: loaded directly.
    vet_with: Option<PathBuf>,
}

/// Where one entity kind's windows are kept ([`Engine::placements`]).
#[derive(Debug, Clone)]
pub struct KindPlacement {
    pub kind: String,
    /// The event field that keys it.
    pub key_field: String,
    /// In the shared store (else in this process).
    pub shared: bool,
    /// Keyed by the message key (`user_id`): every event of one key reaches
    /// the instance that owns its partition, so `local` is complete.
    pub message_key: bool,
}

impl KindPlacement {
    /// Kept locally though its events are spread over every instance: with
    /// more than one, each counts only its share.
    pub fn incomplete_when_scaled(&self) -> bool {
        !self.shared && !self.message_key
    }
}

/// A model loaded for one side of a backtest ([`Engine::load_side_model`]),
/// scored beside the configured one.
pub struct SideModel {
    models: Models,
}

impl SideModel {
    /// The version its manifest declares.
    pub fn version(&self) -> Arc<str> {
        self.models.champion().version()
    }

    /// Its output names, in manifest order.
    pub fn outputs(&self) -> &[Arc<str>] {
        self.models.champion().output_names()
    }
}

/// One side of a backtest: the rules it decides with, and the model whose
/// outputs those rules read (`None`: the configured model).
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub rules: &'a RuleSet,
    pub model: Option<&'a SideModel>,
}

fn same_model(a: Option<&SideModel>, b: Option<&SideModel>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}

/// Whether the model's per-event deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadlines {
    /// Live traffic: past `deadline_ms` an event is decided without its
    /// score, marked degraded.
    WallClock,
    /// Files: every event waits for its score.
    None,
}

/// The model stage as loaded.
enum ModelStage {
    /// No model is configured: decisions are not degraded by its absence.
    None,
    /// A model is configured but ONNX Runtime could not be loaded: every
    /// decision is made without it and marked degraded.
    Unavailable,
    Loaded {
        models: Models,
        /// The champion's manifest, re-read on an explicit reload.
        manifest: PathBuf,
        /// ONNX Runtime's library as configured (for the vetting child).
        ort_library: Option<PathBuf>,
        /// Which decisions carry the champion's explanation.
        explain: verdict_models::ExplainConfig,
    },
}

/// The serving rule set and what reloads it.
struct Rules {
    live: Arc<Live>,
    reloader: Arc<Reloader>,
    stop_watch: Arc<AtomicBool>,
    /// The rule folder it was loaded from.
    dir: PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = &self.rules {
            r.stop_watch.store(true, Ordering::Relaxed);
        }
    }
}

/// Logs every rule reload and model event, and counts them once metrics
/// are attached.
struct Observer {
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    /// The serving model's version, for the info metric's label.
    model_version: std::sync::Mutex<Arc<str>>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            metrics: Default::default(),
            model_version: std::sync::Mutex::new(Arc::from("none")),
        }
    }
}

impl Observer {
    fn model_version(&self) -> Arc<str> {
        self.model_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_model_version(&self, version: Arc<str>) {
        *self.model_version.lock().unwrap_or_else(|e| e.into_inner()) = version;
    }
}

impl ModelObserver for Observer {
    fn observe_model_batch(&self, size: usize) {
        if let Some(m) = self.metrics.get() {
            m.observe_model_batch(size);
        }
    }

    fn model_timeout(&self) {
        if let Some(m) = self.metrics.get() {
            m.model_timeout();
        }
    }

    fn model_error(&self) {
        if let Some(m) = self.metrics.get() {
            m.model_error();
        }
    }
}

impl ReloadObserver for Observer {
    fn reloaded(&self, version: &str) {
        tracing::info!(ruleset_version = version, "rules reloaded");
        if let Some(m) = self.metrics.get() {
            m.reload("rules", true);
            m.set_versions(version, &self.model_version());
        }
    }

    fn refused(&self, errors: &Diagnostics) {
        tracing::error!(
            errors = errors.len(),
            "rules refused; the previous rule set keeps serving:\n{errors}"
        );
        if let Some(m) = self.metrics.get() {
            m.reload("rules", false);
        }
    }
}

/// Adds the names of a `declared` file to the catalogue.
pub fn declare(catalogue: &mut Catalogue, path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Declared {
        #[serde(default)]
        features: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        model: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the declared names {}", path.display()))?;
    let d: Declared = toml::from_str(&text)
        .with_context(|| format!("declared names {} are not valid", path.display()))?;
    let ty = |name: &str, t: &str| {
        ValueType::parse(t).with_context(|| {
            format!(
                "{}: `{name}` has unknown type `{t}` (number, string, bool or timestamp)",
                path.display()
            )
        })
    };
    for (name, t) in &d.features {
        let (entity, feature) = name.split_once('.').with_context(|| {
            format!(
                "{}: feature `{name}` must be `<entity>.<name>`",
                path.display()
            )
        })?;
        catalogue.add_feature(entity, feature, ty(name, t)?);
    }
    for (name, t) in &d.model {
        catalogue.add_model_output(name, ty(name, t)?);
    }
    Ok(())
}

/// The catalogue a configuration gives rules, and the feature store that
/// fills its feature slots: the event schema's fields, the features'
/// names, then the declared names.
pub fn catalogue_and_store(
    config: &Config,
    schema: &Schema,
) -> Result<(Catalogue, Option<FeatureStore>)> {
    catalogue_and_store_placed(config, schema, Placements::AsDefined)
}

/// Where the engine keeps the kinds the definitions place `shared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placements {
    /// As the definitions say: a live stream, of which this instance may
    /// see a share.
    AsDefined,
    /// Every kind local: a file (replay, export, backtest) is the whole
    /// stream, so local windows hold every event and equal shared ones.
    AllLocal,
}

fn catalogue_and_store_placed(
    config: &Config,
    schema: &Schema,
    placements: Placements,
) -> Result<(Catalogue, Option<FeatureStore>)> {
    let mut catalogue = Catalogue::from_schema(schema);
    let store = match &config.engine.features {
        Some(p) => {
            let path = config.resolve(p);
            let mut defs = FeatureDefs::load(&path, schema)
                .with_context(|| format!("loading the feature definitions {}", path.display()))?;
            for (kind, placement) in &config.features.placement {
                defs.place(kind, placement)
                    .map_err(|why| anyhow::anyhow!("[features.placement]: {why}"))?;
            }
            if placements == Placements::AllLocal {
                defs.place_all_local();
            }
            let store = FeatureStore::new(defs, &mut catalogue, config.features.store())
                .context("loading the batch features")?;
            for (entity, bytes) in store.bytes_per_entity() {
                tracing::debug!(entity, bytes, "feature state per entity");
            }
            Some(store)
        }
        None => None,
    };
    if let Some(p) = &config.engine.declared {
        declare(&mut catalogue, &config.resolve(p))?;
    }
    Ok((catalogue, store))
}

/// The catalogue a configuration gives rules (see [`catalogue_and_store`]),
/// with the outputs its model manifests name. Reads the manifests only: it
/// needs neither ONNX Runtime nor the model files.
pub fn catalogue(config: &Config, schema: &Schema) -> Result<Catalogue> {
    let mut catalogue = catalogue_and_store(config, schema)?.0;
    if let Some(mc) = model_config(config) {
        register_model_outputs(&mc, &mut catalogue)?;
    }
    Ok(catalogue)
}

/// The `[model]` section with its paths resolved against the configuration.
fn model_config(config: &Config) -> Option<ModelConfig> {
    let mut mc = config.model.clone()?;
    mc.manifest = config.resolve(&mc.manifest);
    mc.challenger = mc.challenger.map(|p| config.resolve(&p));
    mc.ort_library = mc.ort_library.map(|p| config.resolve(&p));
    Some(mc)
}

/// Loads a model file in a child process (see [`vetting`]) before
/// this process opens it; a refusal names the manifest. A missing ONNX
/// Runtime passes: the engine's own load reports it and decides degraded.
fn vet(exe: &Path, manifest: &Path, ort_library: Option<&Path>) -> Result<()> {
    match vetting::vet(exe, manifest, ort_library, vetting::VET_TIMEOUT) {
        Vetting::Passed { .. } | Vetting::RuntimeMissing => Ok(()),
        Vetting::Refused(why) => Err(anyhow::anyhow!(why)),
    }
}

/// Registers the outputs the manifests of `mc` name, as [`Models::load`]
/// would, without loading the models.
fn register_model_outputs(mc: &ModelConfig, catalogue: &mut Catalogue) -> Result<()> {
    let champion = Manifest::load(&mc.manifest)?;
    champion.register_outputs(catalogue);
    if let Some(path) = &mc.challenger {
        for o in Manifest::load(path)?.outputs {
            let name = if champion.outputs.iter().any(|c| c.name == o.name) {
                verdict_models::challenger_output_name(&o.name)
            } else {
                o.name
            };
            catalogue.add_model_output(&name, ValueType::Number);
        }
    }
    Ok(())
}

impl Engine {
    /// Loads every configured stage. Fails with a message naming the file
    /// and the problem when a definition does not load. Model files are
    /// opened in this process only: the service loads with
    /// [`load_vetted`](Self::load_vetted).
    pub fn load(config: &Config) -> Result<Engine> {
        Engine::load_with(config, None, Deadlines::WallClock)
    }

    /// As [`load`](Self::load), but every model file (at start and on each
    /// reload) is first loaded by `verdict` (the binary at `exe`) in a child
    /// process: a file that crashes ONNX Runtime is refused instead of
    /// taking the service down.
    pub fn load_vetted(config: &Config, exe: &Path) -> Result<Engine> {
        Engine::load_with(config, Some(exe.to_path_buf()), Deadlines::WallClock)
    }

    /// As [`load_vetted`](Self::load_vetted), for deciding files (replay,
    /// export, backtest): no wall-clock deadline applies, so every event
    /// waits for its score and the same file gives the same decisions on
    /// every run, however busy the machine is.
    pub fn load_for_files(config: &Config, exe: &Path) -> Result<Engine> {
        Engine::load_with(config, Some(exe.to_path_buf()), Deadlines::None)
    }

    /// As [`load_for_files`](Self::load_for_files), loading model files in
    /// this process without a vetting child (benchmarks, which have no
    /// `verdict` binary beside them).
    pub fn load_for_files_in_process(config: &Config) -> Result<Engine> {
        Engine::load_with(config, None, Deadlines::None)
    }

    fn load_with(
        config: &Config,
        vet_with: Option<PathBuf>,
        deadlines: Deadlines,
    ) -> Result<Engine> {
        let schema_path = config.resolve(&config.engine.schema);
        let schema = Arc::new(Schema::load(&schema_path).context("loading the event schema")?);
        let placements = match deadlines {
            Deadlines::WallClock => Placements::AsDefined,
            Deadlines::None => Placements::AllLocal,
        };
        let (mut catalogue, store) = catalogue_and_store_placed(config, &schema, placements)?;
        let observer = Arc::new(Observer::default());
        let shared = match &store {
            Some(store) if store.defs().has_shared() => {
                let kinds: Vec<&str> = store.defs().shared_kinds().collect();
                let Some(sc) = config.features.shared.clone() else {
                    bail!(
                        "{} placed `shared` (by the feature definitions' [placement] or \
                         [features.placement]), but the configuration has no [features.shared] \
                         section: give the Redis URLs there (urls = [\"redis://host:6379\"]), \
                         or place every kind local",
                        kinds.join(", ")
                    );
                };
                let client =
                    SharedStore::new(sc, Box::new(shared::SharedMetrics(observer.clone())))
                        .context("the shared feature store")?;
                tracing::info!(
                    kinds = %kinds.join(","),
                    redis = %client.describe(),
                    "kinds kept in the shared store"
                );
                Some(Arc::new(client))
            }
            _ => None,
        };
        let mc = model_config(config);
        if let (Some(exe), Some(mc)) = (&vet_with, &mc) {
            for manifest in std::iter::once(&mc.manifest).chain(&mc.challenger) {
                vet(exe, manifest, mc.ort_library.as_deref())?;
            }
        }
        let model = match mc {
            None => ModelStage::None,
            Some(mc) => match Models::load(&mc, &mut catalogue, observer.clone()) {
                Ok(models) => {
                    let models = match deadlines {
                        Deadlines::WallClock => models,
                        Deadlines::None => models.without_deadline(),
                    };
                    let version = models.champion().version();
                    tracing::info!(
                        model = models.champion().name(),
                        model_version = %version,
                        challenger = models.challenger().map(|c| c.name()),
                        "model loaded"
                    );
                    observer.set_model_version(version);
                    if mc.explain.top > 0
                        && let Err(why) = models.champion().explanations()
                    {
                        tracing::warn!(
                            model = models.champion().name(),
                            "decisions will carry no explanation: {why}"
                        );
                    }
                    ModelStage::Loaded {
                        models,
                        manifest: mc.manifest,
                        ort_library: mc.ort_library,
                        explain: mc.explain,
                    }
                }
                Err(e @ (ModelError::RuntimeMissing { .. } | ModelError::RuntimeLoad { .. })) => {
                    tracing::error!(
                        "{e}. Deciding without the model: every decision is marked degraded until Verdict restarts with ONNX Runtime available"
                    );
                    register_model_outputs(&mc, &mut catalogue)?;
                    ModelStage::Unavailable
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("loading the model {}", mc.manifest.display())));
                }
            },
        };
        let catalogue = Arc::new(catalogue);
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot = config.features.snapshot.as_ref().map(|p| config.resolve(p));
        let features = store.map(Arc::new);
        let mut restored = BTreeMap::new();
        if let (Some(store), Some(path)) = (&features, &snapshot)
            && path.exists()
        {
            restored = store
                .restore(path)
                .context("restoring the feature snapshot (delete it to start empty)")?;
            tracing::info!(positions = ?restored, "features resume from the snapshot");
        }
        if let Some(store) = &features
            && let Some(every) = store.batch_refresh_every()
        {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::Builder::new()
                .name("batch-refresh".into())
                .spawn(move || {
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        waited += Duration::from_millis(200);
                        if waited >= every {
                            waited = Duration::ZERO;
                            let _ = store.refresh_batch();
                        }
                    }
                })
                .context("cannot start the batch refresh thread")?;
        }
        let key_slot = schema.slot("user_id");
        let parser = EventParser::new(schema).with_max_bytes(config.engine.max_event_bytes);
        let rules = match &config.engine.rules {
            None => None,
            Some(dir) => {
                let dir = config.resolve(dir);
                let set = RuleSet::load_dir(&dir, &catalogue).map_err(|errors| {
                    anyhow::anyhow!("the rules in {} do not check:\n{errors}", dir.display())
                })?;
                tracing::info!(
                    ruleset_version = %set.version(),
                    rules = set.rules().count(),
                    dir = %dir.display(),
                    "rules loaded"
                );
                let live = Arc::new(Live::new(set));
                let reloader = Arc::new(Reloader::new(
                    dir.clone(),
                    catalogue.clone(),
                    live.clone(),
                    observer.clone(),
                ));
                let stop_watch = Arc::new(AtomicBool::new(false));
                if config.engine.rules_watch_ms > 0 {
                    reloader.clone().watch(
                        Duration::from_millis(config.engine.rules_watch_ms),
                        stop_watch.clone(),
                    );
                }
                Some(Rules {
                    live,
                    reloader,
                    stop_watch,
                    dir,
                })
            }
        };
        let feature_slots = catalogue.len(verdict_core::Namespace::Feature);
        let model_slots = catalogue.len(verdict_core::Namespace::Model);
        let first =
            recent::FirstDecisions::new(features.as_ref().map_or(0, |store| store.dedup_slots()));
        Ok(Engine {
            parser,
            catalogue,
            key_slot,
            rules,
            observer,
            features,
            shared,
            feature_slots,
            model,
            model_slots,
            snapshot,
            restored,
            first,
            stop,
            vet_with,
        })
    }

    /// Counts reloads and exports versions in `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        metrics.set_versions(&self.ruleset_version(), &self.observer.model_version());
        let _ = self.observer.metrics.set(metrics);
    }

    /// True when every configured stage is serving: the rules and features
    /// load with the engine or not at all; a configured model may be
    /// unavailable (ONNX Runtime missing), and then the engine decides
    /// degraded and is not ready.
    pub fn stages_ready(&self) -> bool {
        !matches!(self.model, ModelStage::Unavailable)
    }

    /// The version of the serving champion model, if one is loaded.
    /// The champion's output names, in the order it scores them (none
    /// without a serving model).
    pub fn model_outputs(&self) -> Vec<Arc<str>> {
        match &self.model {
            ModelStage::Loaded { models, .. } => models.champion().output_names().to_vec(),
            _ => Vec::new(),
        }
    }

    pub fn model_version(&self) -> Option<Arc<str>> {
        match &self.model {
            ModelStage::Loaded { models, .. } => Some(models.champion().version()),
            _ => None,
        }
    }

    /// Re-reads the champion's manifest and model file and swaps them in
    /// when they load and score a probe row (in a vetting child first, for
    /// an engine from [`load_vetted`](Self::load_vetted)); the old model
    /// keeps serving otherwise. Blocks while the model loads.
    pub fn reload_model(&self) -> Result<Arc<str>, String> {
        let ModelStage::Loaded {
            models,
            manifest,
            ort_library,
            ..
        } = &self.model
        else {
            return Err(match self.model {
                ModelStage::Unavailable => {
                    "ONNX Runtime is not loaded; restart Verdict once it is installed".into()
                }
                _ => "no model is configured ([model] manifest)".into(),
            });
        };
        let result = match &self.vet_with {
            Some(exe) => vet(exe, manifest, ort_library.as_deref()).map_err(|e| format!("{e:#}")),
            None => Ok(()),
        }
        .and_then(|()| models.reload_champion(manifest).map_err(|e| e.to_string()));
        let metrics = self.observer.metrics.get();
        match &result {
            Ok(version) => {
                tracing::info!(model_version = %version, "model reloaded");
                self.observer.set_model_version(version.clone());
                if let Some(m) = metrics {
                    m.reload("model", true);
                    m.set_versions(&self.ruleset_version(), version);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "model refused; the previous model keeps serving");
                if let Some(m) = metrics {
                    m.reload("model", false);
                }
            }
        }
        result
    }

    /// The versions in use (rule set, model), for `GET /admin/versions`.
    pub fn versions(&self) -> serde_json::Value {
        serde_json::json!({
            "ruleset_version": &*self.ruleset_version(),
            "model_version": self.model_version().as_deref(),
        })
    }

    /// The rule set serving now, if rules are configured.
    pub fn serving_rules(&self) -> Option<Arc<RuleSet>> {
        self.rules.as_ref().map(|r| r.live.load_full())
    }

    /// Loads the model of `manifest` for one side of a backtest, beside the
    /// configured one: vetted in a child process first (for an engine that
    /// vets), with no wall-clock deadline. Rules read model outputs by
    /// name, so the model must give outputs the configured model gives
    /// (`fraud_score`); a model with another output is refused, naming it.
    pub fn load_side_model(&self, manifest: &Path) -> Result<SideModel> {
        let ort_library = match &self.model {
            ModelStage::Loaded { ort_library, .. } => ort_library.clone(),
            _ => None,
        };
        if let Some(exe) = &self.vet_with {
            vet(exe, manifest, ort_library.as_deref())?;
        }
        let mut config = ModelConfig::new(manifest.to_path_buf());
        config.ort_library = ort_library;
        let mut catalogue = (*self.catalogue).clone();
        let models = Models::load(
            &config,
            &mut catalogue,
            Arc::new(verdict_models::NoObserver),
        )
        .with_context(|| format!("loading the model {}", manifest.display()))?
        .without_deadline();
        for name in models.champion().output_names() {
            let path = format!("model.{name}");
            let known = self.catalogue.lookup(&path).map(|e| e.slot);
            if known.is_none() || known != catalogue.lookup(&path).map(|e| e.slot) {
                let serving = self.model_outputs();
                bail!(
                    "the model {} gives `{path}`, which the configured model does not ({}): rules read model outputs by name, so a model compared in a backtest must give the configured model's outputs",
                    manifest.display(),
                    if serving.is_empty() {
                        "it gives none; configure [model] or pass --model".to_owned()
                    } else {
                        serving
                            .iter()
                            .map(|o| format!("model.{o}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
            }
        }
        Ok(SideModel { models })
    }

    /// For backtests: evaluates each side of `sides` into the matching
    /// `evals` and `outcomes` on one prepared event — the same event and
    /// point-in-time features for every side, each side's model outputs
    /// from its own model (the configured one unless it names another).
    /// A model two sides share is scored once. Without a model a side's
    /// outcome is `None`.
    pub async fn evaluate_sides(
        &self,
        prepared: &Prepared,
        sides: &[Side<'_>],
        evals: &mut [Evaluation],
        outcomes: &mut [Option<ModelOutcome>],
    ) {
        let input = Record {
            event: prepared.event.values(),
            features: &prepared.features,
            model: &[],
        };
        for i in 0..sides.len() {
            let same = (0..i).find(|&j| same_model(sides[j].model, sides[i].model));
            outcomes[i] = match (same, sides[i].model) {
                (Some(j), _) => outcomes[j].clone(),
                (None, Some(side)) => Some(side.models.score(&input).await),
                (None, None) => match &self.model {
                    ModelStage::Loaded { models, .. } => Some(models.score(&input).await),
                    _ => None,
                },
            };
            let model = self.model_values(outcomes[i].as_ref());
            let record = Record {
                model: &model,
                ..input
            };
            sides[i].rules.evaluate(&record, &mut evals[i]);
        }
    }

    pub fn ruleset_version(&self) -> Arc<str> {
        match &self.rules {
            Some(r) => r.live.load().version().clone(),
            None => Arc::from("none"),
        }
    }

    /// Re-reads the rule folder now; the old set keeps serving when the new
    /// one does not check. Refused once a version deployed through the
    /// workbench serves ([`Engine::serve_rules`]).
    pub fn reload_rules(&self) -> Result<Arc<str>, String> {
        match &self.rules {
            Some(r) if r.stop_watch.load(Ordering::Relaxed) => Err(
                "the serving rule set follows the workbench's version store, and a folder \
                 reload would override it: change the rule set there (deploy it through the \
                 workbench, or edit the folder the store reads)"
                    .into(),
            ),
            Some(r) => r.reloader.reload().map_err(|e| e.to_string()),
            None => Err("no rule folder is configured ([engine] rules)".into()),
        }
    }

    /// Serves `set`, checked against this engine's catalogue elsewhere (a
    /// version deployed through the workbench's store), and stops watching
    /// the rule folder: from then on the store says what serves. Errors
    /// when no rule folder is configured, as there is then no serving set.
    pub fn serve_rules(&self, set: Arc<RuleSet>) -> Result<Arc<str>, String> {
        match &self.rules {
            Some(r) => {
                r.stop_watch.store(true, Ordering::Relaxed);
                Ok(r.reloader.serve(set))
            }
            None => Err("no rule folder is configured ([engine] rules)".into()),
        }
    }

    /// The rule folder the serving set was first loaded from.
    pub fn rules_dir(&self) -> Option<&Path> {
        self.rules.as_ref().map(|r| r.dir.as_path())
    }

    /// The feature store's counters, when there is one.
    pub fn feature_stats(&self) -> Option<StoreStats> {
        self.features.as_ref().map(|f| f.stats())
    }

    /// The feature store, when one is configured.
    pub fn feature_store(&self) -> Option<&Arc<FeatureStore>> {
        self.features.as_ref()
    }

    /// Writes the feature snapshot (when configured) covering `positions`.
    pub fn snapshot_features(
        &self,
        positions: &std::collections::BTreeMap<String, i64>,
    ) -> Result<()> {
        if let (Some(store), Some(path)) = (&self.features, &self.snapshot) {
            store
                .snapshot(path, positions)
                .context("writing the feature snapshot")?;
        }
        Ok(())
    }

    /// Every name rules and models can refer to.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// The parser of the configured event schema.
    pub fn parser(&self) -> &EventParser {
        &self.parser
    }

    /// The source positions the restored feature snapshot covers
    /// (`topic/partition` → next offset); empty without one.
    pub fn restored_positions(&self) -> &BTreeMap<String, i64> {
        &self.restored
    }

    /// Adds an event read again from the source to the feature store,
    /// without deciding it (see [`FeatureStore::replay`]): the catch-up of a
    /// partition whose events are not all in the store. False when it does
    /// not parse (its dead letter was written when it was first read).
    /// `clock`, the stream's, when it is read on afterwards.
    pub fn replay_features(&self, bytes: &[u8], clock: Option<&mut StreamClock>) -> bool {
        let Some(store) = &self.features else {
            return true;
        };
        match self.parser.parse(bytes) {
            Ok(event) => {
                store.replay(&event, clock);
                true
            }
            Err(_) => false,
        }
    }

    /// Parses one event and reads-then-updates its features. Call in source
    /// order, with the clock of the event's stream (one per Kafka
    /// partition, file or listener: the lateness rule follows it). A bad
    /// event comes back as its dead-letter record.
    ///
    /// Kinds placed `shared` read missing here (and the decision is
    /// degraded): a source of a live stream prepares with
    /// [`prepare_in`](Self::prepare_in).
    pub fn prepare(
        &self,
        clock: &mut StreamClock,
        bytes: &[u8],
        position: impl FnOnce() -> Position,
        read_at: Instant,
    ) -> Result<Prepared, Rejected> {
        self.prepare_in(&mut Burst::none(), clock, bytes, position, read_at)
    }

    /// As [`prepare`](Self::prepare), adding the event's shared-entity
    /// operations to `burst` (see [`Engine::burst`]); send the burst once
    /// the events available for now are prepared.
    pub fn prepare_in(
        &self,
        burst: &mut Burst,
        clock: &mut StreamClock,
        bytes: &[u8],
        position: impl FnOnce() -> Position,
        read_at: Instant,
    ) -> Result<Prepared, Rejected> {
        let event = self.parse(bytes, position)?;
        let parsed = read_at.elapsed();
        Ok(self.enrich_in(burst, clock, event, read_at, parsed))
    }

    /// Every entity kind's placement, as this engine keeps it.
    pub fn placements(&self) -> Vec<KindPlacement> {
        let Some(store) = &self.features else {
            return Vec::new();
        };
        store
            .defs()
            .entities
            .iter()
            .map(|e| KindPlacement {
                kind: e.name.clone(),
                key_field: e.key_field.clone(),
                shared: e.placement == verdict_features::Placement::Shared,
                message_key: Some(e.key_slot) == self.key_slot,
            })
            .collect()
    }

    /// The shared store's servers (passwords hidden), when kinds are shared.
    pub fn shared_store(&self) -> Option<String> {
        self.shared.as_ref().map(|s| s.describe())
    }

    /// A source's bursts of shared-store operations: active when kinds are
    /// placed `shared`. Call within the runtime that decides (its runner
    /// is a task there).
    pub fn burst(&self) -> Burst {
        match (&self.shared, &self.features) {
            (Some(shared), Some(features)) => Burst::new(shared.clone(), features.clone()),
            _ => Burst::none(),
        }
    }

    /// The first half of [`Engine::prepare`]: parses and validates one
    /// event, touching no state, so a pass may parse on one thread while
    /// another enriches the events before.
    pub fn parse(
        &self,
        bytes: &[u8],
        position: impl FnOnce() -> Position,
    ) -> Result<Event, Rejected> {
        self.parser.parse(bytes).map_err(|rejection| Rejected {
            letter: Box::new(DeadLetter::new(position(), &rejection, bytes)),
            kind: rejection.kind(),
        })
    }

    /// The second half of [`Engine::prepare`]: reads-then-updates the
    /// features of a parsed event (call in source order); `parsed` is how
    /// long parsing took, for the stage timings.
    pub fn enrich(
        &self,
        clock: &mut StreamClock,
        event: Event,
        read_at: Instant,
        parsed: Duration,
    ) -> Prepared {
        self.enrich_in(&mut Burst::none(), clock, event, read_at, parsed)
    }

    fn enrich_in(
        &self,
        burst: &mut Burst,
        clock: &mut StreamClock,
        event: Event,
        read_at: Instant,
        parsed: Duration,
    ) -> Prepared {
        let mut timings = StageTimings {
            parse: parsed,
            ..StageTimings::default()
        };
        let mut features = vec![verdict_core::Value::Missing; self.feature_slots];
        let mut duplicate = false;
        let mut dedup = None;
        let mut shared = None;
        if let Some(store) = &self.features {
            let update = store.read_and_update_slot(&event, &mut features, clock);
            duplicate = update.outcome == UpdateOutcome::Duplicate;
            dedup = update.slot.map(|slot| (slot, update.id_hash));
            if self.shared.is_some() {
                shared = burst.push(&event, update.outcome);
            }
            timings.features = read_at.elapsed().saturating_sub(timings.parse);
        }
        Prepared {
            missing_features: self.shared.is_some() && shared.is_none(),
            event,
            features,
            read_at,
            timings,
            duplicate,
            dedup,
            shared,
        }
    }

    /// Scores, runs the rules and builds the decision of a prepared event.
    /// The event's row is queued for the model now; the returned future
    /// awaits the score at most the model's deadline (past it the decision
    /// is made without it and marked degraded), then concludes.
    pub fn finish(&self, mut prepared: Prepared) -> impl Future<Output = Decided> + Send + '_ {
        let repeated = match (prepared.duplicate, prepared.dedup) {
            (true, Some((slot, hash))) => self.first.get(slot, hash, prepared.event.id()),
            _ => None,
        };
        // An event with shared features is scored once they are read.
        let scoring = match (&self.model, &repeated) {
            (ModelStage::Loaded { models, .. }, None) if prepared.shared.is_none() => Some((
                Instant::now(),
                models.score(&Record {
                    event: prepared.event.values(),
                    features: &prepared.features,
                    model: &[],
                }),
            )),
            _ => None,
        };
        async move {
            if let Some(mut decision) = repeated {
                decision.latency_us = prepared.read_at.elapsed().as_micros() as u64;
                decision.decided_at = verdict_core::time::now_ms();
                return Decided {
                    key: self.output_key(&prepared.event),
                    timestamp_ms: prepared.event.timestamp_ms(),
                    decision,
                    timings: prepared.timings,
                };
            }
            let mut scoring = scoring;
            if let Some(ticket) = prepared.shared.take() {
                let waited = Instant::now();
                if !shared::read(ticket, &mut prepared.features).await {
                    prepared.missing_features = true;
                }
                prepared.timings.features += waited.elapsed();
                if let ModelStage::Loaded { models, .. } = &self.model {
                    scoring = Some((
                        Instant::now(),
                        models.score(&Record {
                            event: prepared.event.values(),
                            features: &prepared.features,
                            model: &[],
                        }),
                    ));
                }
            }
            let outcome = match scoring {
                Some((started, scoring)) => {
                    let outcome = scoring.await;
                    prepared.timings.model = started.elapsed();
                    Some(outcome)
                }
                None => None,
            };
            self.conclude(prepared, outcome)
        }
    }

    /// Scores the rows waiting for the model in the calling thread, so
    /// their decisions need not wait for the scoring thread to be
    /// scheduled. For a caller with nothing else to do; returns how many.
    pub fn help_score(&self) -> usize {
        match &self.model {
            ModelStage::Loaded { models, .. } => models.help(),
            _ => 0,
        }
    }

    /// The event's `user_id`, the key of its output record.
    fn output_key(&self, event: &Event) -> Option<Str> {
        self.key_slot.and_then(|slot| match event.get(slot) {
            verdict_core::Value::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// Explains the champion's score of one event without deciding it: the
    /// features it would see now (read, not added: the event does not
    /// count as traffic, and kinds placed `shared` read as missing), its
    /// scores, and its `top` contributions. For `POST /v1/explain`.
    pub async fn explain_event(
        &self,
        bytes: &[u8],
        top: usize,
    ) -> Result<EventExplanation, NotExplained> {
        let event = self
            .parser
            .parse(bytes)
            .map_err(|rejection| NotExplained::Invalid {
                kind: rejection.kind(),
                reason: rejection.to_string(),
            })?;
        let models = match &self.model {
            ModelStage::Loaded { models, .. } => models,
            ModelStage::None => {
                return Err(NotExplained::Unavailable(
                    "no model is configured ([model] in the configuration)".into(),
                ));
            }
            ModelStage::Unavailable => {
                return Err(NotExplained::Unavailable(
                    "the model is not serving: ONNX Runtime could not be loaded".into(),
                ));
            }
        };
        let mut features = vec![verdict_core::Value::Missing; self.feature_slots];
        if let Some(store) = &self.features {
            store.peek(&event, &mut features);
        }
        let record = Record {
            event: event.values(),
            features: &features,
            model: &[],
        };
        let scored = models.score(&record).await;
        let mut explanation = Vec::with_capacity(top);
        let explained = models
            .explain(&record, top, &mut explanation)
            .map_err(|e| NotExplained::Unavailable(e.to_string()))?;
        Ok(EventExplanation {
            event_id: event.id_str(),
            model_version: explained.model_version,
            scores: scored.scores(),
            base_value: explained.base_value,
            margin: explained.margin,
            explanation,
        })
    }

    /// The champion's top contributions to the score of a decision whose
    /// outcome `[model.explain]` names; empty otherwise, and when the
    /// event was not scored or the model serving now is not the one that
    /// scored it.
    fn explain(
        &self,
        event: &Event,
        features: &[verdict_core::Value],
        outcome: Action,
        scored: Option<&ModelOutcome>,
    ) -> Vec<verdict_core::Contribution> {
        let ModelStage::Loaded {
            models, explain, ..
        } = &self.model
        else {
            return Vec::new();
        };
        let Some(version) = scored
            .filter(|o| !o.degraded)
            .and_then(|o| o.model_version())
        else {
            return Vec::new();
        };
        if !explain.explains(outcome) {
            return Vec::new();
        }
        let record = Record {
            event: event.values(),
            features,
            model: &[],
        };
        let mut out = Vec::with_capacity(explain.top);
        match models.explain(&record, explain.top, &mut out) {
            Ok(explained) if explained.model_version == *version => out,
            _ => Vec::new(),
        }
    }

    /// The model outputs of a record, by model slot (missing without a
    /// score); on the stack for the usual handful of outputs.
    fn model_values(
        &self,
        outcome: Option<&ModelOutcome>,
    ) -> smallvec::SmallVec<[verdict_core::Value; 4]> {
        let mut model = smallvec::smallvec![verdict_core::Value::Missing; self.model_slots];
        if let Some(o) = outcome {
            o.write_slots(&mut model);
        }
        model
    }

    /// The rules and the decision record: synchronous, no I/O.
    fn conclude(&self, prepared: Prepared, outcome: Option<ModelOutcome>) -> Decided {
        let Prepared {
            event,
            features,
            read_at,
            mut timings,
            dedup,
            missing_features,
            ..
        } = prepared;
        let degraded = missing_features
            || match &self.model {
                ModelStage::None => false,
                ModelStage::Unavailable => true,
                ModelStage::Loaded { .. } => outcome.as_ref().is_none_or(|o| o.degraded),
            };
        let model = self.model_values(outcome.as_ref());
        let key = self.output_key(&event);
        let started = Instant::now();
        // Hits are moved into the decision: no buffer is kept, and a
        // decision without hits allocates nothing here.
        let mut eval = Evaluation {
            decision: Action::Approve,
            hits: Vec::new(),
            shadow_hits: Vec::new(),
        };
        let ruleset_version = match &self.rules {
            Some(r) => {
                let set = r.live.load();
                let record = Record {
                    event: event.values(),
                    features: &features,
                    model: &model,
                };
                set.evaluate(&record, &mut eval);
                set.version().clone()
            }
            None => Arc::from("none"),
        };
        timings.rules = started.elapsed();
        let explanation = self.explain(&event, &features, eval.decision, outcome.as_ref());
        timings.model += started.elapsed() - timings.rules;
        let decision = Decision {
            event_id: event.id_str(),
            decision: eval.decision,
            hits: eval.hits,
            shadow_hits: eval.shadow_hits,
            scores: outcome
                .as_ref()
                .map(ModelOutcome::scores)
                .unwrap_or_default(),
            explanation,
            ruleset_version,
            model_version: outcome.as_ref().and_then(|o| o.model_version().cloned()),
            degraded,
            latency_us: read_at.elapsed().as_micros() as u64,
            decided_at: verdict_core::time::now_ms(),
        };
        if let Some((slot, hash)) = dedup {
            self.first.record(slot, hash, &decision);
        }
        Decided {
            timestamp_ms: event.timestamp_ms(),
            decision,
            key,
            timings,
        }
    }
}
