//! `verdict.toml`: where the schema, rules, features and model live, and how
//! the service runs.
//!
//! Order of precedence, lowest first: built-in defaults, the file, then
//! command-line overrides. Unknown keys are errors, so a typo is never a
//! silent default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    /// How `verdict run` reads events and writes decisions.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The HTTP listener (`/metrics`, `/healthz`).
    #[serde(default)]
    pub http: HttpConfig,
    /// The folder the file was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base: PathBuf,
}

/// What decides: the definitions every stage loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The event schema file (field → type).
    pub schema: PathBuf,
    /// Events larger than this many bytes are dead-lettered unread.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

/// The Kafka source and sinks of `verdict run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The consumer group every Verdict instance joins.
    pub group_id: String,
    /// Where events are read from.
    pub events_topic: String,
    /// Where decisions are written, keyed by `user_id`.
    pub decisions_topic: String,
    /// Where rejected events are written, keyed by their original key.
    pub dead_letters_topic: String,
    /// Decisions produced but not yet acknowledged by the broker, at most;
    /// when reached, consumption waits, so a burst never grows memory.
    pub max_in_flight: usize,
    /// How often stored offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Raw librdkafka consumer properties (TLS, SASL, fetch settings),
    /// applied after Verdict's own.
    pub consumer_properties: std::collections::BTreeMap<String, String>,
    /// Raw librdkafka producer properties (`linger.ms`, `batch.size`,
    /// `compression.type`, TLS, SASL), applied after Verdict's own.
    pub producer_properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "verdict".into(),
            events_topic: "events".into(),
            decisions_topic: "decisions".into(),
            dead_letters_topic: "dead-letters".into(),
            max_in_flight: 10_000,
            commit_interval_ms: 1_000,
            consumer_properties: Default::default(),
            producer_properties: Default::default(),
        }
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address `/metrics` and `/healthz` are served on.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

fn default_max_event_bytes() -> usize {
    verdict_core::DEFAULT_MAX_EVENT_BYTES
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("configuration {} is not valid", path.display()))?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// A path from the file, resolved against the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() || self.base.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// Command-line overrides of the engine's paths, so an analyst can replay
/// traffic through a candidate rule set without editing the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EngineOverrides {
    /// Configuration file.
    #[arg(long, default_value = "verdict.toml", env = "VERDICT_CONFIG")]
    pub config: PathBuf,
    /// Event schema file, instead of the configuration's.
    #[arg(long)]
    pub schema: Option<PathBuf>,
}

impl EngineOverrides {
    /// Loads the configuration and applies the overrides.
    pub fn load(&self) -> Result<Config> {
        let mut config = Config::load(&self.config)?;
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(p) = &self.schema {
            config.engine.schema = cwd.join(p);
        }
        Ok(config)
    }
}
