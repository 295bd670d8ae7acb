//! The analysts' workbench in the service: `verdict_workbench`'s router,
//! mounted on the HTTP listener over this process's engine.
//!
//! [`mount`] opens the store of deployed rule-set versions, seeds it with
//! the rule folder when it holds no version yet, and follows it: every
//! newer version that checks is swapped into the serving rule set, on
//! every instance that follows the same store, and from then on the store,
//! not the folder, says what serves. [`ServiceEngine`] answers what the
//! workbench asks of the engine: the catalogue and event parser, the
//! serving version, per-rule hits over the last hour and day from the
//! service's own counters, and a backtest of a draft against the decision
//! log (`[history]`) with the pass of `verdict backtest`.
//!
//! It is not the workbench: users, sessions, maker-checker, the audit log
//! and the version stores are `verdict_workbench`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use verdict_core::{Action, Catalogue, EventParser};
use verdict_workbench::engine::HitCounts;
use verdict_workbench::facade;
use verdict_workbench::hits::HitHistory;
use verdict_workbench::{RuleFiles, RuleSetVersion, VersionStore, Workbench, WorkbenchConfig};

use crate::backtest::{Job, LabelSource};
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// The workbench, opened and following its store.
pub struct Mounted {
    pub workbench: Arc<Workbench>,
    pub store: Arc<dyn VersionStore>,
    /// The configuration with its paths resolved.
    pub config: WorkbenchConfig,
}

/// Opens the workbench of `config.workbench` over `engine`: its record,
/// its version store (read from its start), the rule folder published as
/// version 1 when the store is writable and empty, and a task that swaps
/// each newer version that checks into the serving rule set. Inside a
/// Tokio runtime.
pub async fn mount(
    config: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    exe: PathBuf,
) -> Result<Option<Mounted>> {
    let Some(wb_config) = &config.workbench else {
        return Ok(None);
    };
    let wb_config = resolved(config, wb_config);
    let Some(rules_dir) = engine.rules_dir().map(Path::to_path_buf) else {
        anyhow::bail!(
            "the workbench deploys rule sets, but no rule folder is configured: set [engine] rules \
             (the folder is the first version when the version store is empty)"
        );
    };
    let store = {
        let (versions, catalogue) = (wb_config.versions.clone(), engine.catalogue().clone());
        tokio::task::spawn_blocking(move || verdict_workbench::store::open(&versions, catalogue))
            .await
            .context("the version store's opening stopped")?
            .context("cannot open the workbench's version store")?
    };
    if store.writable() && store.follower().newest_number() == 0 {
        let files = RuleFiles::read_dir(&rules_dir)
            .with_context(|| format!("cannot read the rule folder {}", rules_dir.display()))?;
        store
            .publish(RuleSetVersion {
                number: 1,
                version: engine.ruleset_version().to_string(),
                files,
                proposed_by: "verdict".into(),
                approved_by: "verdict".into(),
                deployed_by: "verdict".into(),
                published_at: verdict_core::time::format_rfc3339_ms(verdict_core::time::now_ms()),
                note: format!("the rule folder {}, as first served", rules_dir.display()),
                restores: None,
            })
            .await
            .context("cannot publish the rule folder as the first version")?;
        tracing::info!(store = %store.describe(), "the rule folder published as version 1");
    }
    follow(&store, engine.clone());
    let service = Arc::new(ServiceEngine {
        parser: Arc::new(engine.parser().clone()),
        engine,
        metrics,
        hits: Mutex::new(HitHistory::default()),
        config: config.clone(),
        exe,
        store: store.clone(),
    });
    sample_hits(&service);
    let workbench = {
        let (c, s) = (wb_config.clone(), store.clone());
        tokio::task::spawn_blocking(move || Workbench::open(c, service, s))
            .await
            .context("the workbench's opening stopped")?
            .context("cannot open the workbench")?
    };
    tracing::info!(
        store = %store.describe(),
        users = wb_config.users.len(),
        data_dir = %wb_config.data_dir.display(),
        "workbench served under /workbench/"
    );
    Ok(Some(Mounted {
        workbench,
        store,
        config: wb_config,
    }))
}

/// The workbench's paths resolved against the configuration's folder.
fn resolved(config: &Config, wb: &WorkbenchConfig) -> WorkbenchConfig {
    let mut wb = wb.clone();
    wb.data_dir = config.resolve(&wb.data_dir);
    if let Some(folder) = &mut wb.versions.folder {
        *folder = config.resolve(folder);
    }
    if let Some(tls) = &mut wb.tls {
        tls.cert = config.resolve(&tls.cert);
        tls.key = config.resolve(&tls.key);
    }
    wb
}

/// Swaps the store's serving version into the engine now and at every
/// change, until the store goes.
fn follow(store: &Arc<dyn VersionStore>, engine: Arc<Engine>) {
    let mut serving = store.serving();
    tokio::spawn(async move {
        loop {
            let served = serving.borrow_and_update().clone();
            if let Some(s) = served {
                match engine.serve_rules(s.rules) {
                    Ok(v) => tracing::info!(
                        number = s.version.number,
                        ruleset_version = %v,
                        deployed_by = %s.version.deployed_by,
                        "deployed rule-set version serves"
                    ),
                    Err(e) => tracing::error!("a deployed version cannot serve: {e}"),
                }
            }
            if serving.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Samples the hit counters once a minute, so the hour and day windows
/// have their starting points even when nobody looks.
fn sample_hits(service: &Arc<ServiceEngine>) {
    let weak = Arc::downgrade(service);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(service) = weak.upgrade() else {
                return;
            };
            service.sample();
        }
    });
}

/// The engine as the workbench sees it.
pub struct ServiceEngine {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    parser: Arc<EventParser>,
    hits: Mutex<HitHistory>,
    /// What a backtest's own engine is loaded from, and its `[history]`.
    config: Config,
    /// The `verdict` binary, which vets model files in a child process.
    exe: PathBuf,
    /// The serving version's files are a backtest's baseline.
    store: Arc<dyn VersionStore>,
}

impl ServiceEngine {
    fn sample(&self) {
        let (events, hits) = self.metrics.rule_hit_totals();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(now, events, hits);
    }
}

impl verdict_workbench::Engine for ServiceEngine {
    fn catalogue(&self) -> Arc<Catalogue> {
        self.engine.catalogue().clone()
    }

    fn event_parser(&self) -> Arc<EventParser> {
        self.parser.clone()
    }

    fn serving_version(&self) -> String {
        self.engine.ruleset_version().to_string()
    }

    fn rule_hits(&self) -> HitCounts {
        self.sample();
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).counts()
    }

    fn backtest(&self, candidate: &Path) -> Result<serde_json::Value, String> {
        let Some(history) = &self.config.history else {
            return Err(
                "no decision log is configured: set [history] location, where `verdict run` \
                 archives what it decides, to backtest drafts against it"
                    .into(),
            );
        };
        let baseline = tempfile::Builder::new()
            .prefix("verdict-serving-")
            .tempdir()
            .map_err(|e| format!("cannot make a folder for the serving rules: {e}"))?;
        match self.store.follower().current() {
            Some(served) => served.version.files.write_to(baseline.path()),
            None => RuleFiles::read_dir(self.engine.rules_dir().unwrap_or(Path::new(".")))
                .and_then(|f| f.write_to(baseline.path())),
        }
        .map_err(|e| format!("cannot write the serving rules for the baseline: {e}"))?;
        let engine = Engine::load_for_files(&self.config, &self.exe)
            .map_err(|e| format!("cannot load the engine for the backtest: {e:#}"))?;
        let label = engine
            .catalogue()
            .lookup("event.label")
            .map_or(LabelSource::None, |_| LabelSource::Field {
                field: "label".into(),
                rule: verdict_backtest::LabelRule::LegitValues(vec!["legit".into()]),
            });
        let job = Job {
            history: crate::backtest::history_location(&self.config, &history.location),
            store_options: history.options.clone(),
            candidate_rules: Some(candidate.to_path_buf()),
            candidate_name: Some("the draft".into()),
            baseline_rules: Some(baseline.path().to_path_buf()),
            label,
            samples: 5,
            ..Job::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the backtest: {e}"))?;
        let outcome = runtime
            .block_on(job.run(&engine, |_, _| {}))
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!(
            events = outcome.report.events,
            secs = outcome.elapsed.as_secs_f64(),
            "workbench backtest answered"
        );
        serde_json::to_value(for_the_browser(&outcome.report))
            .map_err(|e| format!("cannot write the report: {e}"))
    }
}

/// The backtest report in the shape the browser reads
/// (`facade::BacktestReport`, `BacktestReport` in `webui/src/api.ts`).
pub fn for_the_browser(r: &verdict_backtest::Report) -> facade::BacktestReport {
    use verdict_backtest::RuleStatus;
    let status = |s: RuleStatus| -> &'static str {
        match s {
            RuleStatus::Added => "added",
            RuleStatus::Removed => "removed",
            RuleStatus::Changed => "changed",
            RuleStatus::Unchanged | RuleStatus::Unknown => "same",
        }
    };
    let outcome = |name: &str| -> Option<Action> {
        match name {
            "approve" => Some(Action::Approve),
            "review" => Some(Action::Review),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    };
    let metrics = |m: &verdict_backtest::LabelMetrics| facade::Metrics {
        catch_rate: m.catch_rate.unwrap_or(0.0),
        false_positive_rate: m.false_positive_rate.unwrap_or(0.0),
        precision: m.precision,
    };
    facade::BacktestReport {
        history: r.history.clone(),
        events: r.events,
        seed: r.samples.seed,
        baseline_version: r.baseline.ruleset_version.clone().unwrap_or_default(),
        candidate_version: r.candidate.ruleset_version.clone().unwrap_or_default(),
        matrix: r
            .matrix
            .iter()
            .map(|c| facade::Cell {
                baseline: c.baseline,
                candidate: c.candidate,
                count: c.events,
                share: c.share,
            })
            .collect(),
        rules: r
            .rules
            .iter()
            .map(|x| facade::RuleDelta {
                rule: x.rule.clone(),
                status: status(x.status),
                baseline_hits: x.baseline.hits + x.baseline.shadow_hits,
                candidate_hits: x.candidate.hits + x.candidate.shadow_hits,
                unique_contribution: x.moved_in + x.moved_out,
            })
            .collect(),
        labels: r.labels.as_ref().map(|l| facade::Labels {
            field: l.source.clone(),
            positives: l.fraud,
            outcomes: l
                .baseline
                .iter()
                .filter_map(|b| {
                    let o = outcome(&b.outcome)?;
                    let c = l.candidate.iter().find(|c| c.outcome == b.outcome)?;
                    Some(facade::OutcomeMetrics {
                        outcome: o,
                        baseline: metrics(b),
                        candidate: metrics(c),
                    })
                })
                .collect(),
        }),
        money: r.money.as_ref().map(|m| facade::Money {
            field: m.field.clone(),
            newly_denied: m.newly_denied.amount,
            newly_approved: m.newly_approved.amount,
        }),
        samples: r
            .samples
            .cells
            .iter()
            .map(|c| facade::Samples {
                baseline: c.baseline,
                candidate: c.candidate,
                events: c
                    .events
                    .iter()
                    .map(|e| {
                        // The winning rule of each side, then the hits the
                        // other side does not have.
                        let side =
                            |winner: &Option<String>, only: &[verdict_backtest::SampleHit]| {
                                let mut hits: Vec<String> = winner.iter().cloned().collect();
                                for h in only {
                                    if !hits.contains(&h.rule) {
                                        hits.push(h.rule.clone());
                                    }
                                }
                                hits
                            };
                        facade::SampleEvent {
                            event_id: e.event_id.clone(),
                            baseline_hits: side(&e.baseline_rule, &e.only_baseline),
                            candidate_hits: side(&e.candidate_rule, &e.only_candidate),
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}
