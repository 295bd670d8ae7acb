//! A rule folder (or a mounted ConfigMap) as a read-only source: it serves
//! what the folder holds, sees a change, and refuses to deploy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use verdict_workbench::facade::FacadeEngine;
use verdict_workbench::store::folder::FolderVersions;
use verdict_workbench::{VersionStore, Workbench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_serves_what_it_holds_sees_changes_and_refuses_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    example_files().write_to(&rules).unwrap();
    let (catalogue, parser) = example_catalogue();
    let c = catalogue.clone();
    let r = rules.clone();
    let store: Arc<dyn VersionStore> = Arc::new(
        tokio::task::spawn_blocking(move || FolderVersions::open(r, c).unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(
        store.follower().current().unwrap().version.files,
        example_files()
    );
    assert!(!store.writable());

    let engine = Arc::new(FacadeEngine::new(catalogue, parser, store.clone()));
    let config = config(&dir.path().join("data"));
    let s = store.clone();
    let wb = tokio::task::spawn_blocking(move || Workbench::open(config, engine, s).unwrap())
        .await
        .unwrap();
    let router = wb.router();
    let (alice, bob) = (login(&router, "alice").await, login(&router, "bob").await);
    let files = with_rule(
        &example_files(),
        "rule big:\n  review if event.amount > 90000\n",
    );
    let p = alice
        .post(
            &router,
            "/workbench/api/proposals",
            json!({ "files": files }),
        )
        .await;
    let id = p.body["id"].as_u64().unwrap();
    bob.post(
        &router,
        &format!("/workbench/api/proposals/{id}/approve"),
        json!({}),
    )
    .await;
    let d = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{id}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CONFLICT, "{}", d.body);
    assert!(
        d.body["error"].as_str().unwrap().contains("only reads"),
        "{}",
        d.body
    );

    // Whatever deploys the folder (a ConfigMap update) is seen.
    std::fs::write(
        rules.join("70-big.rules"),
        "rule big:\n  review if event.amount > 90000\n",
    )
    .unwrap();
    for _ in 0..100 {
        if store.follower().current().unwrap().version.number == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = store.follower().current().unwrap();
    assert_eq!(served.version.number, 2, "the change was never seen");
    assert!(served.rules.rules().any(|r| &*r.name == "big"));

    // A change that does not check is refused; the last good one serves.
    std::fs::write(
        rules.join("70-big.rules"),
        "rule big:\n  review if event.nope > 1\n",
    )
    .unwrap();
    for _ in 0..100 {
        if !store.follower().refused().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.follower().refused()[0].number, 3);
    assert_eq!(store.follower().current().unwrap().version.number, 2);
}
