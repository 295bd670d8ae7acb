//! The Kafka store of rule-set versions on rdkafka's mock cluster: every
//! instance serves the newest version that checks, refuses one that does
//! not, and a new instance reads the whole history from the topic's start.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use verdict_workbench::config::KafkaVersionsConfig;
use verdict_workbench::store::kafka::KafkaVersions;
use verdict_workbench::{RuleFiles, RuleSetVersion, VersionStore};

fn config(brokers: &str) -> KafkaVersionsConfig {
    KafkaVersionsConfig {
        brokers: brokers.into(),
        topic: "verdict.rulesets".into(),
        replication: 1,
        properties: BTreeMap::new(),
    }
}

fn version(number: u64, files: RuleFiles) -> RuleSetVersion {
    RuleSetVersion {
        number,
        files,
        note: format!("version {number}"),
        ..first_version()
    }
}

async fn open(brokers: &str) -> Arc<KafkaVersions> {
    let (catalogue, _) = example_catalogue();
    let c = config(brokers);
    Arc::new(
        tokio::task::spawn_blocking(move || KafkaVersions::open(&c, catalogue).unwrap())
            .await
            .unwrap(),
    )
}

/// Waits (bounded) until `store` serves version `n`.
async fn serves(store: &KafkaVersions, n: u64) {
    for _ in 0..1500 {
        if store.follower().current().map(|s| s.version.number) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "version {n} never served; serving {:?}",
        store.follower().current().map(|s| s.version.number)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_serves_the_newest_version_that_checks() {
    let cluster = MockCluster::new(1).unwrap();
    // As the demo's embedded broker has its topics made: the mock cluster
    // answers no CreateTopics request.
    cluster.create_topic("verdict.rulesets", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (a, b) = (open(&brokers).await, open(&brokers).await);
    assert!(
        a.follower().current().is_none(),
        "an empty topic serves nothing"
    );

    a.publish(version(1, example_files())).await.unwrap();
    serves(&a, 1).await;
    serves(&b, 1).await;

    // A version that does not check, published straight to the topic (as a
    // bad tool or an older instance with another schema could): refused by
    // every instance, the old one keeps serving.
    let mut broken = example_files();
    broken.0.insert(
        "70-bad.rules".into(),
        "rule bad:\n  deny if event.nope > 1\n".into(),
    );
    b.publish(version(2, broken)).await.unwrap();
    for s in [&a, &b] {
        // Both have read version 2 (publish waits for b's read-back; a reads
        // the same partition) and refused it.
        for _ in 0..1500 {
            if s.follower().get(2).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            s.follower()
                .refused()
                .iter()
                .map(|r| r.number)
                .collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(s.follower().current().unwrap().version.number, 1);
    }

    let mut three = example_files();
    three.0.insert(
        "70-big.rules".into(),
        "rule big:\n  review if event.amount > 90000\n".into(),
    );
    a.publish(version(3, three.clone())).await.unwrap();
    serves(&a, 3).await;
    serves(&b, 3).await;
    assert!(
        b.follower()
            .current()
            .unwrap()
            .rules
            .rules()
            .any(|r| &*r.name == "big")
    );

    // A message that is no version is skipped, not fatal.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("verdict.rulesets")
                .key("junk")
                .payload("{not json"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    // A new instance reads the whole history from the start.
    let c = open(&brokers).await;
    assert_eq!(c.follower().current().unwrap().version.number, 3);
    assert_eq!(c.follower().current().unwrap().version.files, three);
    let numbers: Vec<u64> = c.history().iter().map(|v| v.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        c.follower()
            .refused()
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        [2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_serves_the_newest_version_that_checks_even_when_the_last_does_not() {
    let cluster = MockCluster::new(1).unwrap();
    // As the demo's embedded broker has its topics made: the mock cluster
    // answers no CreateTopics request.
    cluster.create_topic("verdict.rulesets", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let a = open(&brokers).await;
    a.publish(version(1, example_files())).await.unwrap();
    let mut broken = example_files();
    broken
        .0
        .insert("70-bad.rules".into(), "rule bad deny\n".into());
    a.publish(version(2, broken)).await.unwrap();
    let b = open(&brokers).await;
    assert_eq!(b.follower().current().unwrap().version.number, 1);
    assert_eq!(b.follower().refused()[0].number, 2);
    assert!(!b.follower().refused()[0].errors.is_empty());
}
