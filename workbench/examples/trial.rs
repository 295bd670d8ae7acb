//! The workbench on its own, on the facade engine and the example rules,
//! for a look at the screen without the service:
//!
//!     scripts/build-webui.sh && cargo run -p verdict-workbench --example trial
//!
//! It listens on plain HTTP on loopback (browsers send the session's
//! `Secure` cookie to loopback addresses without TLS), keeps its record in
//! a temporary folder, and prints the address and the logins.

use std::sync::Arc;

use verdict_workbench::config::UserConfig;
use verdict_workbench::facade::{FacadeEngine, catalogue_from};
use verdict_workbench::store::memory::MemoryVersions;
use verdict_workbench::{
    Role, RuleFiles, RuleSetVersion, VersionStore, Workbench, WorkbenchConfig, hash_password,
};

#[tokio::main]
async fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ex = repo.join("examples");
    let (catalogue, parser) = catalogue_from(
        &ex.join("schema.toml"),
        Some(&ex.join("features.toml")),
        Some(&ex.join("declared.toml")),
    )
    .expect("the example configuration");
    let store: Arc<dyn VersionStore> = Arc::new(MemoryVersions::new(catalogue.clone()));
    store
        .publish(RuleSetVersion {
            number: 1,
            version: String::new(),
            files: RuleFiles::read_dir(&ex.join("rules")).expect("the example rules"),
            proposed_by: "setup".into(),
            approved_by: "setup".into(),
            deployed_by: "setup".into(),
            published_at: chrono::Utc::now().to_rfc3339(),
            note: "the example rules".into(),
            restores: None,
        })
        .await
        .expect("publishing the example rules");
    let users: Vec<(&str, Role)> = vec![
        ("analyst", Role::Analyst),
        ("approver", Role::Approver),
        ("admin", Role::Admin),
    ];
    let data = tempfile::tempdir().expect("a temporary folder");
    let config = WorkbenchConfig::new(
        data.path().to_path_buf(),
        users
            .iter()
            .map(|(name, role)| UserConfig {
                name: (*name).into(),
                role: *role,
                password_hash: hash_password(&format!("{name}-demo")),
            })
            .collect(),
    );
    let engine = Arc::new(FacadeEngine::new(catalogue, parser, store.clone()));
    let wb = Workbench::open(config, engine, store).expect("opening the workbench");
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8470".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("binding the address");
    println!(
        "workbench: http://{}/workbench/",
        listener.local_addr().unwrap()
    );
    for (name, role) in &users {
        println!("  login {name} / {name}-demo ({})", role.as_str());
    }
    axum::serve(listener, wb.router()).await.expect("serving");
}
