//! What `verdict run` and `verdict demo` share around the Kafka pipeline:
//! the engine and metrics they serve, the HTTP listener (with the
//! analysts' workbench when configured), the shutdown signals and the
//! periodic reporters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Config, KafkaConfig};
use crate::engine::Engine;
use crate::http::AppState;
use crate::http::backtest::BacktestApi;
use crate::kafka::Pipeline;
use crate::metrics::Metrics;

/// A loaded engine with its metrics and readiness.
pub struct Service {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// `/readyz`: set by the pipeline while it can decide.
    pub ready: Arc<AtomicBool>,
    /// The decision log's writer, when `[history]` is configured.
    history: std::sync::Mutex<Option<verdict_history::HistoryWriter>>,
    /// The analysts' workbench, once mounted on the HTTP listener: held
    /// so that its version store (and the reader of its topic) lives as
    /// long as the service.
    workbench: std::sync::Mutex<Option<crate::workbench::Mounted>>,
}

impl Service {
    /// Loads the engine of `config` (every model file vetted first by
    /// `exe`, the `verdict` binary, in a child process) and its metrics.
    pub fn load(config: &Config, exe: &Path) -> Result<Service> {
        let engine = Arc::new(Engine::load_vetted(config, exe)?);
        let metrics = Arc::new(Metrics::new());
        engine.attach_metrics(metrics.clone());
        let history = match &config.history {
            Some(h) => {
                let writer = verdict_history::HistoryWriter::start(h)
                    .with_context(|| format!("cannot start the decision log at {}", h.location))?;
                tracing::info!(
                    location = %h.location,
                    instance = %h.instance,
                    "archiving every decision to the decision log"
                );
                Some(writer)
            }
            None => None,
        };
        Ok(Service {
            history: std::sync::Mutex::new(history),
            workbench: std::sync::Mutex::new(None),
            engine,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The Kafka pipeline over this engine.
    pub fn pipeline(&self, kafka: KafkaConfig) -> Pipeline {
        Pipeline {
            history: self
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|w| w.logger()),
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            kafka,
            ready: self.ready.clone(),
        }
    }

    /// Closes the decision log, writing its last file, within `timeout`.
    /// Blocking: call it off the async workers (or after the runtime).
    pub fn close_history(&self, timeout: Duration) {
        let writer = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            match writer.close(timeout) {
                Ok(stats) => tracing::info!(
                    written = stats.written,
                    dropped = stats.dropped,
                    lost = stats.lost,
                    files = stats.files,
                    "decision log closed"
                ),
                Err(e) => tracing::error!("the decision log did not close cleanly: {e}"),
            }
        }
    }

    /// Binds `[http] listen` and serves the API there until the process
    /// ends, with the analysts' workbench under `/workbench/` when
    /// `[workbench]` is configured (over TLS when it names a certificate);
    /// answers the bound address. Inside a Tokio runtime.
    pub async fn serve_http(&self, config: &Config) -> Result<SocketAddr> {
        let exe = std::env::current_exe().context("cannot find the verdict binary")?;
        let mounted = crate::workbench::mount(
            config,
            self.engine.clone(),
            self.metrics.clone(),
            exe.clone(),
        )
        .await?;
        let tls = mounted.as_ref().and_then(|m| m.config.tls.clone());
        if let Some(t) = &tls {
            verdict_workbench::tls::check(t)
                .await
                .context("the HTTP listener's TLS ([workbench.tls]) cannot be used")?;
        }
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let addr = listener.local_addr()?;
        let state = AppState {
            metrics: self.metrics.clone(),
            engine: Some(self.engine.clone()),
            admin_token: config.http.admin_token.clone(),
            ready: self.ready.clone(),
            max_body_bytes: config.http.max_body_bytes,
            max_in_flight: config.http.max_in_flight,
            backtest: Some(Arc::new(BacktestApi::from_config(config, exe))),
        };
        let mut app = crate::http::router(state);
        if let Some(m) = &mounted {
            app = app.merge(m.workbench.router());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        match tls {
            Some(t) => {
                let listener = listener.into_std()?;
                tokio::spawn(async move {
                    let never = std::future::pending::<()>();
                    if let Err(e) = verdict_workbench::tls::serve_tls(listener, app, t, never).await
                    {
                        tracing::error!(error = %e, "the HTTPS server stopped");
                    }
                });
            }
            None => {
                tokio::spawn(crate::http::serve_router(listener, app));
            }
        }
        tracing::info!(url = %format!("{scheme}://{addr}/metrics"), "serving HTTP");
        if mounted.is_some() {
            tracing::info!(url = %format!("{scheme}://{addr}/workbench/"), "serving the workbench");
        }
        *self.workbench.lock().unwrap_or_else(|e| e.into_inner()) = mounted;
        Ok(addr)
    }

    /// Exports the feature store's size and counters every few seconds,
    /// until the process ends. Inside a Tokio runtime.
    pub fn start_reporters(&self) {
        let (engine, metrics) = (self.engine.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                if let Some(stats) = engine.feature_stats() {
                    metrics.set_feature_store(&stats);
                }
            }
        });
    }
}

/// Sets `stop` on SIGINT or SIGTERM. Inside a Tokio runtime.
pub fn stop_on_signal(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        stop.store(true, Ordering::Relaxed);
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
