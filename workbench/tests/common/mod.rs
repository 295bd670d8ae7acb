//! What the workbench's tests share: the example configuration's catalogue,
//! a workbench on the facade engine with five users, and a client that
//! calls the router in process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use verdict_workbench::config::UserConfig;
use verdict_workbench::facade::{FacadeEngine, catalogue_from};
use verdict_workbench::store::memory::MemoryVersions;
use verdict_workbench::{
    Role, RuleFiles, RuleSetVersion, VersionStore, Workbench, WorkbenchConfig, hash_password,
};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example rule folder's files.
pub fn example_files() -> RuleFiles {
    RuleFiles::read_dir(&repo().join("examples/rules")).unwrap()
}

/// The catalogue and event parser of the example configuration.
pub fn example_catalogue() -> (Arc<verdict_core::Catalogue>, Arc<verdict_core::EventParser>) {
    let ex = repo().join("examples");
    catalogue_from(
        &ex.join("schema.toml"),
        Some(&ex.join("features.toml")),
        Some(&ex.join("declared.toml")),
    )
    .unwrap()
}

/// The users of every test: one per role, and a second approver.
pub const USERS: [(&str, Role); 5] = [
    ("vera", Role::Viewer),
    ("alice", Role::Analyst),
    ("bob", Role::Approver),
    ("carol", Role::Approver),
    ("root", Role::Admin),
];

pub fn password(user: &str) -> String {
    format!("{user}-correct-horse")
}

pub fn config(data_dir: &Path) -> WorkbenchConfig {
    let users = USERS
        .iter()
        .map(|(name, role)| UserConfig {
            name: (*name).into(),
            role: *role,
            password_hash: hash_password(&password(name)),
        })
        .collect();
    WorkbenchConfig::new(data_dir.to_path_buf(), users)
}

/// A workbench on the facade engine, its store holding the example rules
/// as version 1.
pub async fn workbench(data_dir: &Path) -> (Arc<Workbench>, Arc<dyn VersionStore>) {
    workbench_with(config(data_dir)).await
}

pub async fn workbench_with(config: WorkbenchConfig) -> (Arc<Workbench>, Arc<dyn VersionStore>) {
    let (catalogue, parser) = example_catalogue();
    let store: Arc<dyn VersionStore> = Arc::new(MemoryVersions::new(catalogue.clone()));
    store.publish(first_version()).await.unwrap();
    let engine = Arc::new(FacadeEngine::new(catalogue, parser, store.clone()));
    let wb = tokio::task::spawn_blocking({
        let store = store.clone();
        move || Workbench::open(config, engine, store).unwrap()
    })
    .await
    .unwrap();
    (wb, store)
}

pub fn first_version() -> RuleSetVersion {
    RuleSetVersion {
        number: 1,
        version: String::new(),
        files: example_files(),
        proposed_by: "setup".into(),
        approved_by: "setup".into(),
        deployed_by: "setup".into(),
        published_at: "2026-11-24T12:00:00Z".into(),
        note: "the example rules".into(),
        restores: None,
    }
}

/// A logged-in user: the session cookie and the CSRF token.
#[derive(Clone, Default)]
pub struct Client {
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Client {
    pub async fn call(
        &self,
        router: &Router,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(t) = &self.csrf {
            req = req.header("x-csrf-token", t);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            bytes,
        }
    }

    pub async fn get(&self, router: &Router, path: &str) -> Answer {
        self.call(router, "GET", path, None).await
    }

    pub async fn post(&self, router: &Router, path: &str, body: Value) -> Answer {
        self.call(router, "POST", path, Some(body)).await
    }
}

/// Logs `user` in with their password.
pub async fn login(router: &Router, user: &str) -> Client {
    let a = Client::default()
        .post(
            router,
            "/workbench/api/login",
            serde_json::json!({ "user": user, "password": password(user) }),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "login of {user}: {}", a.body);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    Client {
        cookie: Some(set.split(';').next().unwrap().to_owned()),
        csrf: Some(a.body["csrf"].as_str().unwrap().to_owned()),
    }
}

/// The example files with one more rule.
pub fn with_rule(files: &RuleFiles, rule: &str) -> Value {
    let mut f = files.clone();
    f.0.insert("70-workbench.rules".into(), rule.into());
    serde_json::to_value(f).unwrap()
}
