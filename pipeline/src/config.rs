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
