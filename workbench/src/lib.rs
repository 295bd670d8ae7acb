//! Verdict's analysts' workbench: write, check, test, backtest and deploy
//! rules from a browser, never without a second pair of eyes.
//!
//! [`Workbench::router`] is an axum [`Router`](axum::Router) the service
//! mounts beside its own endpoints: the browser bundle under `/workbench/`
//! and its API under `/workbench/api/`. It holds:
//! - users, roles, sessions, CSRF tokens and the login limit ([`auth`]),
//!   and logins through an OpenID Connect provider ([`oidc`]);
//! - maker-checker drafts and proposals ([`flow`]);
//! - the audit log of every action ([`audit`]);
//! - the store of deployed versions that every instance follows
//!   ([`store`]);
//! - TLS for the listener ([`tls::serve_tls`]).
//!
//! What it needs from the engine is the [`Engine`] trait; checking drafts
//! and running their test cases use `verdict-rules` itself ([`engine`]).
//! It is not the engine: it never decides an event, and it swaps no rule
//! set in — the service follows [`store::VersionStore::serving`].

pub mod api;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod facade;
pub mod files;
pub mod flow;
pub mod hits;
pub mod oidc;
pub mod store;
pub mod summary;
pub mod tls;

use std::sync::Arc;

pub use api::{Access, RouteInfo, route_table};
pub use auth::{Role, hash_password};
pub use config::WorkbenchConfig;
pub use engine::Engine;
pub use error::WorkbenchError;
pub use files::RuleFiles;
pub use store::{RuleSetVersion, Served, VersionStore};

/// The workbench's state, shared by its handlers.
pub struct Workbench {
    pub(crate) config: WorkbenchConfig,
    pub(crate) auth: auth::Auth,
    pub(crate) oidc: Option<oidc::Oidc>,
    pub(crate) flow: flow::Flow,
    pub(crate) audit: audit::AuditLog,
    pub(crate) store: Arc<dyn VersionStore>,
    pub(crate) engine: Arc<dyn Engine>,
    /// Deploys one at a time: a deploy reads the serving number, publishes
    /// the next, and waits to read it back. An async mutex on purpose, as it
    /// is held across that publish.
    pub(crate) deploying: tokio::sync::Mutex<()>,
}

impl Workbench {
    /// Opens the workbench's record in `config.data_dir` (created if
    /// missing). Blocking: it reads the audit log and the state file.
    pub fn open(
        config: WorkbenchConfig,
        engine: Arc<dyn Engine>,
        store: Arc<dyn VersionStore>,
    ) -> Result<Arc<Workbench>, WorkbenchError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            WorkbenchError::io("cannot create the workbench folder", &config.data_dir, e)
        })?;
        let audit = audit::AuditLog::open(&config.data_dir.join("audit.jsonl"))?;
        let flow = flow::Flow::open(&config.data_dir.join("state.json"))?;
        Ok(Arc::new(Workbench {
            auth: auth::Auth::new(&config),
            oidc: config.oidc.clone().map(oidc::Oidc::new),
            config,
            flow,
            audit,
            store,
            engine,
            deploying: tokio::sync::Mutex::new(()),
        }))
    }

    /// The routes of [`route_table`], each behind its access check.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }

    /// The store of versions it deploys to.
    pub fn store(&self) -> &Arc<dyn VersionStore> {
        &self.store
    }
}
