//! `verdict run`: the service. Loads the engine, serves the HTTP API and
//! runs the Kafka pipeline until SIGTERM; `--check-config` stops after
//! loading everything it would start with.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use rdkafka::consumer::BaseConsumer;

use crate::config::Config;
use crate::engine::Engine;
use crate::kafka::{consumer_config, producer_config, unsafe_properties};
use crate::service::{Service, stop_on_signal};

/// Consume events from Kafka, decide them, and produce decisions and dead
/// letters keyed by `user_id`.
///
/// Offsets are committed only after the outputs of their events are
/// acknowledged (or, with `kafka.exactly_once`, in the same transaction).
/// On SIGTERM: stop reading, finish in-flight events, produce, commit, and
/// exit 0 within `kafka.shutdown_timeout_ms`. The HTTP API (`POST
/// /v1/decisions`, `/metrics`, `/healthz`, `/readyz`, `/admin/*`) is served
/// on `[http] listen` meanwhile.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: crate::config::EngineOverrides,
    /// Check the configuration and everything it names (schema, rules,
    /// features, model, the Kafka client properties) and print it as
    /// resolved, credentials redacted; exit 0 when Verdict would start with
    /// it, 1 with the reasons when not. Connects to no broker.
    #[arg(long)]
    pub check_config: bool,
}

/// What `verdict run` would load before it reads an event: the engine
/// (every file the configuration names, compiled) and the Kafka clients
/// (librdkafka refuses an unknown or malformed property when a client is
/// created, before it connects); properties Verdict cannot honour safely
/// are refused with the reason; the workbench's users and limits.
fn check_config(config: &Config) -> Result<Engine> {
    let refused = unsafe_properties(&config.kafka);
    if !refused.is_empty() {
        anyhow::bail!(
            "the Kafka settings cannot be used:\n  {}",
            refused.join("\n  ")
        );
    }
    let engine = Engine::load_vetted(config, &std::env::current_exe()?)?;
    if let Some(wb) = &config.workbench {
        wb.validate()
            .context("the workbench settings cannot be used ([workbench])")?;
        anyhow::ensure!(
            engine.rules_dir().is_some(),
            "the workbench deploys rule sets, but no rule folder is configured: set [engine] rules"
        );
    }
    let k = &config.kafka;
    consumer_config(k, 0)
        .create::<BaseConsumer>()
        .context("the Kafka consumer settings are not valid ([kafka] consumer_properties)")?;
    producer_config(k, 0)
        .create::<rdkafka::producer::BaseProducer>()
        .context("the Kafka producer settings are not valid ([kafka] producer_properties)")?;
    Ok(engine)
}

/// `verdict run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config: Config = args.engine.load()?;
    if args.check_config {
        let engine = check_config(&config)?;
        println!("# The configuration Verdict resolved (credentials redacted):\n");
        println!("{}", config.redacted_toml());
        print!("{}", placements(&engine));
        println!(
            "# ok: rule set {}, model {}, {} lanes; Verdict would start with this configuration",
            engine.ruleset_version(),
            engine.model_version().as_deref().unwrap_or("none"),
            config.kafka.lanes()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let service = Service::load(&config, &std::env::current_exe()?)?;
    let pipeline = service.pipeline(config.kafka.clone());
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let result = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        service.serve_http(&config).await?;
        service.start_reporters();
        stop_on_signal(stop.clone());
        let positions = pipeline.run(stop).await?;
        // Every event up to the committed positions is in the store: a
        // restart restores this and resumes from those offsets.
        service.engine.snapshot_features(&positions)
    });
    // Whatever ended the pipeline, the decision log's last file is
    // completed (or, past the timeout, its records counted as lost).
    drop(pipeline);
    service.close_history(std::time::Duration::from_millis(
        config.kafka.shutdown_timeout_ms.max(5_000),
    ));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// What `--check-config` says of each entity kind's placement.
fn placements(engine: &Engine) -> String {
    let kinds = engine.placements();
    if kinds.is_empty() {
        return String::new();
    }
    let mut text = String::from("# Where each entity kind's windows are kept:\n");
    for p in kinds {
        let line = if p.shared {
            format!(
                "shared, in Redis ({}): every instance reads and adds to one state",
                engine.shared_store().unwrap_or_default()
            )
        } else if p.message_key {
            format!(
                "local, keyed by {} (the message key): complete in the instance that owns its \
                 partition",
                p.key_field
            )
        } else {
            format!(
                "local, keyed by {}, not the message key: complete only while one instance \
                 owns every partition; with more instances each counts only its share, so \
                 place it shared ([features.placement] {} = \"shared\", with [features.shared])",
                p.key_field, p.kind
            )
        };
        text.push_str(&format!("#   {}: {line}\n", p.kind));
    }
    text.push('\n');
    text
}
