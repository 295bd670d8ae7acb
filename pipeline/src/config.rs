//! `verdict.toml`: where the schema, rules, features and model live, and how
//! the service runs.
//!
//! Order of precedence, lowest first: built-in defaults, the file,
//! environment variables, then command-line overrides. Every key can be set
//! by an environment variable named `VERDICT_` + its path in upper case
//! with `__` between levels: `VERDICT_KAFKA__BROKERS=b1:9092`,
//! `VERDICT_KAFKA__PRODUCER_PROPERTIES__LINGER.MS=10` (raw property names
//! are lower-cased), `VERDICT_HTTP__LISTEN=0.0.0.0:9464`. A value is read as
//! a TOML integer, float or boolean when it is one, else as a string. Unknown keys are errors, so a typo is never a
//! silent default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    /// How `verdict run` reads events and writes decisions.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The HTTP listener (`/metrics`, `/healthz`).
    #[serde(default)]
    pub http: HttpConfig,
    /// How the feature store behaves (its definitions are `[engine]
    /// features`).
    #[serde(default)]
    pub features: FeaturesConfig,
    /// The model scored for every event (its manifest, batching and
    /// deadline). Without it, `model.*` names are only the declared ones,
    /// always missing.
    #[serde(default)]
    pub model: Option<verdict_models::ModelConfig>,
    /// The decision log: every decided event with its decision, archived
    /// to rolling Parquet files for backtests (`[history] location`,
    /// `instance`; see `verdict_history::WriterConfig`). Off without it.
    #[serde(default)]
    pub history: Option<verdict_history::WriterConfig>,
    /// The analysts' workbench, served on the HTTP listener under
    /// `/workbench/` (users, where deployed rule-set versions live, TLS;
    /// see `verdict_workbench::config` and `docs/workbench.md`). Off
    /// without it.
    #[serde(default)]
    pub workbench: Option<verdict_workbench::WorkbenchConfig>,
    /// The folder the file was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base: PathBuf,
}

/// A value that is never printed: its `Debug`, `Display` and serialised
/// forms are `<redacted>`. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// True for a raw librdkafka property whose value is a credential
/// (`sasl.password`, `ssl.key.pem`, `sasl.jaas.config` …): printed as
/// `<redacted>`. The workbench's rule-set topic properties use the same
/// test.
pub fn is_secret_property(key: &str) -> bool {
    verdict_workbench::config::is_credential_property(key)
}

/// A property table with its credentials redacted, for printing.
fn redacted(
    properties: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_property(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect()
}

/// Serialises a property table with its credentials redacted.
fn serialize_properties<S: serde::Serializer>(
    properties: &std::collections::BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    redacted(properties).serialize(s)
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("events_topic", &self.events_topic)
            .field("decisions_topic", &self.decisions_topic)
            .field("dead_letters_topic", &self.dead_letters_topic)
            .field("exactly_once", &self.exactly_once)
            .field("lanes", &self.lanes)
            .field("consumer_properties", &redacted(&self.consumer_properties))
            .field("producer_properties", &redacted(&self.producer_properties))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The configuration as Verdict resolved it (file, environment,
    /// command line), as TOML, every credential `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# the configuration cannot be shown as TOML: {e}\n"))
    }
}

/// What decides: the definitions every stage loads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The event schema file (field → type).
    pub schema: PathBuf,
    /// Events larger than this many bytes are dead-lettered unread.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// The rule folder (`*.rules`, read in file-name order). Without it
    /// every event is approved with no hits and ruleset_version "none".
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// How often the rule folder is checked for changes, in milliseconds
    /// (0: only on an explicit reload).
    #[serde(default = "default_rules_watch_ms")]
    pub rules_watch_ms: u64,
    /// Names the rules may use whose values come from outside this
    /// configuration (`[features] "user.x" = "number"`, `[model] y =
    /// "number"`); they read as missing until provided.
    #[serde(default)]
    pub declared: Option<PathBuf>,
    /// The feature definitions (entities, windowed aggregates, batch
    /// views). Without it rules see no features but the declared ones,
    /// always missing.
    #[serde(default)]
    pub features: Option<PathBuf>,
}

/// The feature store's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Where the store is snapshotted on shutdown and restored from at
    /// start (an Arrow IPC file). Without it features start empty.
    pub snapshot: Option<PathBuf>,
    /// Events up to this many seconds older than the newest seen still
    /// update the windows; older ones are decided but not added (and
    /// counted).
    pub lateness_secs: u64,
    /// Recent event ids remembered so that a redelivered event is counted
    /// once and gets its first decision again (each remembered id keeps
    /// that decision: about 200 bytes per id once traffic has filled it).
    pub dedup_capacity: usize,
    /// Memory the store may hold, in MiB; beyond it the longest-idle
    /// entities are evicted.
    pub memory_budget_mb: u64,
    /// Where the kinds the feature definitions place `shared` are kept
    /// (`[features.shared]`: Redis URLs, deadline, key prefix). Required
    /// when any kind is shared; unused otherwise.
    pub shared: Option<verdict_features::shared::SharedConfig>,
    /// Entity kind → `local` or `shared`, over the feature definitions'
    /// `[placement]` (`[features.placement]`, or
    /// `VERDICT_FEATURES__PLACEMENT__DEVICE=shared`): a deployment shares
    /// its kinds without editing the definitions.
    pub placement: std::collections::BTreeMap<String, String>,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        let store = verdict_features::StoreConfig::default();
        FeaturesConfig {
            snapshot: None,
            lateness_secs: store.lateness_secs,
            dedup_capacity: store.dedup_capacity,
            memory_budget_mb: store.memory_budget_mb,
            shared: None,
            placement: Default::default(),
        }
    }
}

impl FeaturesConfig {
    pub fn store(&self) -> verdict_features::StoreConfig {
        verdict_features::StoreConfig {
            lateness_secs: self.lateness_secs,
            dedup_capacity: self.dedup_capacity,
            memory_budget_mb: self.memory_budget_mb,
        }
    }
}

fn default_rules_watch_ms() -> u64 {
    1000
}

/// The Kafka source and sinks of `verdict run`.
#[derive(Clone, Deserialize, Serialize)]
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
    /// On SIGTERM/SIGINT, how long in-flight records may take to be
    /// acknowledged and committed, in milliseconds; past it Verdict exits
    /// non-zero without committing them (they are decided again on restart).
    pub shutdown_timeout_ms: u64,
    /// Consumer-group members this instance runs, each deciding its own
    /// partitions in parallel (default: one per core).
    pub lanes: Option<usize>,
    /// Exactly-once: decisions, dead letters and input offsets are committed
    /// together in Kafka transactions, so a `read_committed` reader sees each
    /// decision once even across crashes. Needs a broker with transactions.
    pub exactly_once: bool,
    /// Prefix of the transactional ids (`<prefix>-lane-<n>`); it must be
    /// stable across restarts of one instance and unique per instance.
    /// Default: the group id and the host name.
    pub transactional_id: Option<String>,
    /// When a partition is assigned whose events are not all in the feature
    /// store (a snapshot older than the committed offset, or a partition
    /// received from another instance), at most this many of its events
    /// before the committed offset are read again to catch the features up
    /// before its events are decided. 0 turns the catch-up off.
    pub catch_up_max_events: u64,
    /// When a partition is assigned, at most this many of the newest
    /// records of each of its output partitions are read back to find the
    /// events that already have a decision or dead letter past the
    /// committed offset (after a commit a rebalance refused, or a crash):
    /// those are not decided again. 0 turns it off.
    pub resume_scan_max_records: i64,
    /// Raw librdkafka consumer properties (TLS, SASL, fetch settings),
    /// applied after Verdict's own. Numbers and booleans are taken as
    /// their text (`"linger.ms" = 5` is `"5"`).
    #[serde(
        deserialize_with = "properties",
        serialize_with = "serialize_properties"
    )]
    pub consumer_properties: std::collections::BTreeMap<String, String>,
    /// Raw librdkafka producer properties (`linger.ms`, `batch.size`,
    /// `compression.type`, TLS, SASL), applied after Verdict's own.
    #[serde(
        deserialize_with = "properties",
        serialize_with = "serialize_properties"
    )]
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
            shutdown_timeout_ms: 30_000,
            lanes: None,
            exactly_once: false,
            transactional_id: None,
            catch_up_max_events: 10_000_000,
            resume_scan_max_records: 100_000,
            consumer_properties: Default::default(),
            producer_properties: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// How many lanes run: the configured number, else one per core.
    pub fn lanes(&self) -> usize {
        self.lanes
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The prefix of this instance's transactional ids.
    pub fn transactional_id_prefix(&self) -> String {
        if let Some(id) = &self.transactional_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "verdict".into());
        format!("{}-{host}", self.group_id)
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address `/metrics` and `/healthz` are served on.
    pub listen: String,
    /// The bearer token of `/admin/*`; without one they answer 401.
    pub admin_token: Option<Secret>,
    /// `POST /v1/decisions` bodies larger than this are refused (413).
    pub max_body_bytes: usize,
    /// `POST /v1/decisions` requests decided at once, at most; more wait
    /// for room.
    pub max_in_flight: usize,
    /// The bearer token of `POST /v1/backtest` (the admin token is
    /// accepted too); without either it answers 401.
    pub analyst_token: Option<Secret>,
    /// `POST /v1/backtest` bodies (a candidate rule set) larger than this
    /// are refused (413).
    pub backtest_max_body_bytes: usize,
    /// A backtest over HTTP stops after this long, its report marked
    /// incomplete.
    pub backtest_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            admin_token: None,
            max_body_bytes: 65536,
            max_in_flight: 1024,
            analyst_token: None,
            backtest_max_body_bytes: 4 << 20,
            backtest_timeout_secs: 120,
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
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("configuration {} is not valid TOML", path.display()))?;
        apply_env(&mut table, std::env::vars())?;
        let mut config: Config = table.try_into().with_context(|| {
            format!(
                "configuration {} (with VERDICT_* environment overrides) is not valid",
                path.display()
            )
        })?;
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

/// A table of raw librdkafka properties: librdkafka takes every value as
/// text, so a number or boolean (from the file, or an environment variable
/// that reads as one) is taken as its text.
fn properties<'de, D>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Integer(i64),
        Float(f64),
        Boolean(bool),
    }
    let raw = std::collections::BTreeMap::<String, Text>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Text::String(s) => s,
                Text::Integer(i) => i.to_string(),
                Text::Float(f) => f.to_string(),
                Text::Boolean(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Applies `VERDICT_A__B=value` variables onto the parsed file.
/// `VERDICT_CONFIG` and `VERDICT_LOG` name no key and are skipped.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (name, value) in vars {
        let Some(path) = name.strip_prefix("VERDICT_") else {
            continue;
        };
        if !path.contains("__") {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let (last, parents) = keys.split_last().expect("split yields one part at least");
        let mut at = &mut *table;
        for key in parents {
            let entry = at
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry.as_table_mut().with_context(|| {
                format!("environment variable {name}: `{key}` is not a section")
            })?;
        }
        // Raw librdkafka properties are text to librdkafka: "007" stays "007".
        if parents.last().is_some_and(|p| p.ends_with("_properties")) {
            at.insert(last.clone(), toml::Value::String(value));
            continue;
        }
        let parsed = value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| value.parse::<f64>().map(toml::Value::Float))
            .or_else(|_| value.parse::<bool>().map(toml::Value::Boolean))
            .unwrap_or_else(|_| toml::Value::String(value.clone()));
        at.insert(last.clone(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_nested_keys() {
        let mut t: toml::Table =
            toml::from_str("[engine]\nschema = \"s.toml\"\n[kafka]\nbrokers = \"a:1\"\n").unwrap();
        apply_env(
            &mut t,
            [
                ("VERDICT_KAFKA__BROKERS".into(), "b:2".into()),
                ("VERDICT_KAFKA__MAX_IN_FLIGHT".into(), "7".into()),
                (
                    "VERDICT_KAFKA__PRODUCER_PROPERTIES__LINGER.MS".into(),
                    "5".into(),
                ),
                (
                    "VERDICT_KAFKA__CONSUMER_PROPERTIES__ENABLE.SSL.CERTIFICATE.VERIFICATION"
                        .into(),
                    "false".into(),
                ),
                (
                    "VERDICT_KAFKA__CONSUMER_PROPERTIES__SASL.PASSWORD".into(),
                    "007".into(),
                ),
                ("VERDICT_CONFIG".into(), "other.toml".into()),
                ("PATH".into(), "/bin".into()),
            ],
        )
        .unwrap();
        let c: Config = t.try_into().unwrap();
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.max_in_flight, 7);
        // librdkafka properties stay text, even when they read as numbers.
        assert_eq!(c.kafka.producer_properties["linger.ms"], "5");
        assert_eq!(
            c.kafka.consumer_properties["enable.ssl.certificate.verification"],
            "false"
        );
        assert_eq!(c.kafka.consumer_properties["sasl.password"], "007");
    }

    #[test]
    fn unknown_key_from_environment_is_an_error() {
        let mut t: toml::Table = toml::from_str("[engine]\nschema = \"s.toml\"\n").unwrap();
        apply_env(&mut t, [("VERDICT_KAFKA__BROKRS".into(), "b:2".into())]).unwrap();
        assert!(t.try_into::<Config>().is_err());
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
    /// Rule folder, instead of the configuration's (to replay traffic
    /// through a candidate rule set, say).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Feature definitions file, instead of the configuration's.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Model manifest, instead of the configuration's champion (to replay
    /// traffic through a candidate model, say).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

impl EngineOverrides {
    /// Loads the configuration and applies the overrides.
    pub fn load(&self) -> Result<Config> {
        let mut config = Config::load(&self.config)?;
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(p) = &self.schema {
            config.engine.schema = cwd.join(p);
        }
        if let Some(p) = &self.rules {
            config.engine.rules = Some(cwd.join(p));
        }
        if let Some(p) = &self.features {
            config.engine.features = Some(cwd.join(p));
        }
        if let Some(p) = &self.model {
            let manifest = cwd.join(p);
            match &mut config.model {
                Some(m) => m.manifest = manifest,
                None => config.model = Some(verdict_models::ModelConfig::new(manifest)),
            }
        }
        Ok(config)
    }
}
