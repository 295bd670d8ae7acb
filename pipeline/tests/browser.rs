//! The analyst's path in a real browser against `verdict run`: headless
//! Chromium driven through WebDriver (chromedriver), the workbench served
//! over TLS by the service on librdkafka's mock cluster, with a decision
//! log of traffic it decided. Log in; edit a rule; see the inline error;
//! fix it; run the tests; backtest on the decision log; propose; approve
//! and deploy as a second user; see the new version decide `POST
//! /v1/decisions`; roll back the same way, and see the old one decide
//! again.
//!
//! With `VERDICT_SCREENSHOTS=1` it saves a screenshot of each page under
//! `docs/screenshots/`. Chromium and chromedriver come from
//! `scripts/ensure-browser.sh`.

#[allow(dead_code)]
#[path = "common/service.rs"]
mod service;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use service::*;

/// Ends chromedriver (and its browser) when the test ends, passing or not.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: run scripts/ensure-browser.sh");
    let driver = Driver(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (driver, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), true.into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000", "--ignore-certificate-errors",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("cannot start a Chromium session")
}

/// Waits (bounded) until the element's text contains `needle`.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if t.contains(needle) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never contained {needle:?}; it said {last:?}");
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}`: {e}"))
        .click()
        .await
        .unwrap();
}

async fn shot(c: &Client, name: &str) {
    if std::env::var_os("VERDICT_SCREENSHOTS").is_none() {
        return;
    }
    // Let the page settle (fonts, the editor's lint marks) before the shot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    let dir = repo().join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn log_in(c: &Client, user: &str) {
    let field = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("login-user"))
        .await
        .unwrap();
    field.send_keys(user).await.unwrap();
    c.find(Locator::Id("login-password"))
        .await
        .unwrap()
        .send_keys(&password(user))
        .await
        .unwrap();
    click(c, "#login-submit").await;
    wait_text(c, "#whoami", user).await;
}

async fn log_out(c: &Client) {
    click(c, "#logout").await;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("login-user"))
        .await
        .unwrap();
}

fn chord(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| char::from(*k))
        .chain([char::from(Key::Null)])
        .collect()
}

/// Decides one payment through `POST /v1/decisions`, from the page (same
/// origin, over the service's TLS listener); answers the decision.
async fn decide(c: &Client, id: &str, user: &str, amount: f64) -> Value {
    let event = json!({
        "event_id": id,
        "event_type": "payment",
        "timestamp": 1_764_000_000_000u64 + 41 * 300_000,
        "user_id": user,
        "amount": amount,
        "currency": "EUR",
    })
    .to_string();
    c.execute(
        "return fetch('/v1/decisions', {method: 'POST', headers: {'content-type': 'application/json'}, body: arguments[0]}).then(r => r.json());",
        vec![json!(event)],
    )
    .await
    .expect("POST /v1/decisions from the page")
}

fn hits(decision: &Value) -> Vec<String> {
    decision["hits"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_and_an_approver_change_what_the_service_decides_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let log = dir.path().join("verdict.log");
    let config = config_file(dir.path(), &brokers, "a", Some((&crt, &key)));
    let _verdict = verdict_run(&config, &brokers, port, &log);
    wait_until(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the service's TLS listener",
        &[&log],
    );

    // Traffic through Kafka for the decision log a backtest reads: eight
    // users' payments five minutes apart (each user's 40 minutes apart),
    // the even users' large.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..40u64 {
        let user = format!("u_b_{}", i % 8);
        let event = json!({
            "event_id": format!("k-{i}"),
            "event_type": "payment",
            "timestamp": 1_764_000_000_000u64 + i * 300_000,
            "user_id": user,
            "amount": if i % 2 == 0 { 2500.0 } else { 12.5 },
            "currency": "EUR",
        })
        .to_string();
        // One partition, so that one lane reads them in time order: spread
        // over two lanes, one could run ahead and the other's events would
        // be older than the lateness the windows accept.
        producer
            .send(
                BaseRecord::to("events")
                    .key(&user)
                    .payload(&event)
                    .partition(0),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let decisions = dir.path().join("decisions");
    wait_until(
        || parquet_rows(&decisions) >= 40,
        "the 40 events in complete decision-log files",
        &[&log],
    );

    let (_driver, driver_port) = start_driver().await;
    let c = browser(driver_port, &dir.path().join("profile")).await;
    let base = format!("https://localhost:{port}/workbench/");
    c.goto(&base).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("login-user"))
        .await
        .unwrap();
    shot(&c, "login").await;

    // The analyst edits a rule file and sees the checker's error inline.
    log_in(&c, "alice").await;
    wait_text(&c, "#serving-version", "Version 1").await;
    let v1 = decide(&c, "b-0", "u_b_0", 9000.0).await["ruleset_version"]
        .as_str()
        .unwrap()
        .to_owned();
    click(&c, "#nav-draft").await;
    click(&c, "a[data-file='60-model.rules']").await;
    let editor = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(".cm-content"))
        .await
        .unwrap();
    editor.click().await.unwrap();
    editor
        .send_keys(&chord(&[Key::Control, Key::End]))
        .await
        .unwrap();
    editor
        .send_keys("\n\nrule wb_large_amount:\n  review if event.amout > 2000 and feature.user.txn_count_24h >= 3")
        .await
        .unwrap();
    wait_text(&c, "#check-status", "1 error").await;
    let diag = wait_text(&c, "#diagnostics", "event.amout").await;
    assert!(diag.contains("60-model.rules:"), "{diag}");
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(".cm-lintRange-error"))
        .await
        .expect("the error is marked in the editor");
    shot(&c, "draft-error").await;

    // Fixed: the line typed again.
    editor
        .send_keys(&chord(&[Key::Shift, Key::Home]))
        .await
        .unwrap();
    editor
        .send_keys("  review if event.amount > 2000 and feature.user.txn_count_24h >= 3")
        .await
        .unwrap();
    wait_text(&c, "#check-status", "The draft checks").await;
    editor
        .send_keys("\n  reason \"very large amount\"")
        .await
        .unwrap();
    wait_text(&c, "#check-status", "The draft checks").await;

    click(&c, "#run-tests").await;
    let tests = wait_text(&c, "#results", "passed").await;
    assert!(tests.contains(" 0 failed"), "{tests}");
    assert!(
        wait_text(&c, "#test-results", "PASS")
            .await
            .contains("a blocked user is denied")
    );
    shot(&c, "draft-tests").await;

    click(&c, "#run-backtest").await;
    let report = wait_text(&c, "#backtest-report", "decisions change").await;
    // Each even user's fourth and fifth large payment (three payments
    // before it that day) moves from approve to review.
    assert!(
        report.contains("Backtest: 40 events, 8 decisions change"),
        "{report}"
    );
    let rules = wait_text(&c, "#backtest-rules", "wb_large_amount").await;
    assert!(rules.contains("added"), "{rules}");
    shot(&c, "backtest").await;

    c.find(Locator::Id("propose-note"))
        .await
        .unwrap()
        .send_keys("Review very large amounts")
        .await
        .unwrap();
    click(&c, "#propose").await;
    wait_text(&c, "#draft-message", "Proposal 1 is waiting").await;
    // The analyst cannot approve: the page offers no button, and the
    // server refuses anyway (tests/api.rs).
    click(&c, "#nav-proposals").await;
    wait_text(&c, "#proposal-1", "proposed").await;
    assert!(c.find(Locator::Id("approve-1")).await.is_err());
    log_out(&c).await;

    // A second person approves and deploys.
    log_in(&c, "bob").await;
    click(&c, "#nav-proposals").await;
    wait_text(&c, "#proposal-1", "very large amount").await;
    shot(&c, "proposals").await;
    click(&c, "#approve-1").await;
    wait_text(&c, "#proposals-message", "approved").await;
    click(&c, "#deploy-1").await;
    wait_text(&c, "#proposals-message", "deployed").await;
    click(&c, "#nav-serving").await;
    wait_text(&c, "#serving-version", "Version 2").await;
    wait_text(&c, "#serving-rules", "wb_large_amount").await;
    shot(&c, "serving").await;
    // The new version decides `POST /v1/decisions`: the large payment of
    // a user with payments today is now sent to review by the new rule.
    let d = decide(&c, "b-1", "u_b_0", 9000.0).await;
    assert_ne!(d["ruleset_version"], v1.as_str(), "{d}");
    assert!(hits(&d).contains(&"wb_large_amount".to_owned()), "{d}");
    log_out(&c).await;

    // Roll back: the analyst restores version 1, the approver approves.
    log_in(&c, "alice").await;
    click(&c, "#nav-history").await;
    wait_text(&c, "#diff-output", "wb_large_amount").await;
    shot(&c, "history").await;
    click(&c, "#restore-1").await;
    wait_text(&c, "#history-message", "Proposal 2 restores version 1").await;
    log_out(&c).await;
    log_in(&c, "bob").await;
    click(&c, "#nav-proposals").await;
    click(&c, "#approve-2").await;
    wait_text(&c, "#proposals-message", "approved").await;
    click(&c, "#deploy-2").await;
    wait_text(&c, "#proposals-message", "deployed").await;
    click(&c, "#nav-serving").await;
    wait_text(&c, "#serving-version", "restores version 1").await;
    let rules = wait_text(&c, "#serving-rules", "model_high_risk").await;
    assert!(
        !rules.contains("wb_large_amount"),
        "the rollback still serves the new rule"
    );
    // Rolled back: the same payment decides as it did before.
    let d = decide(&c, "b-2", "u_b_0", 9000.0).await;
    assert_eq!(d["ruleset_version"], v1.as_str(), "{d}");
    assert!(!hits(&d).contains(&"wb_large_amount".to_owned()), "{d}");

    click(&c, "#nav-audit").await;
    let audit = wait_text(&c, "#audit", "rolled back").await;
    for action in ["login", "proposed", "approved", "deployed"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    shot(&c, "audit").await;
    c.close().await.unwrap();
}
