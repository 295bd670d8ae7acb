//! The analyst's path in a real browser: headless Chromium driven through
//! WebDriver (chromedriver), against the workbench served over TLS on the
//! facade engine. Log in; edit a rule; see the inline error; fix it; run
//! the tests; backtest; propose; approve and deploy as a second user; see
//! the new version serving; roll back the same way.
//!
//! With `VERDICT_SCREENSHOTS=1` it saves a screenshot of each page under
//! `docs/screenshots/`. Chromium and chromedriver come from
//! `scripts/ensure-browser.sh`.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use verdict_workbench::config::TlsConfig;
use verdict_workbench::tls::serve_tls;

/// Ends chromedriver (and its browser) when the test ends, passing or not.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_and_an_approver_change_the_serving_rules_and_roll_back() {
    assert!(
        verdict_workbench::assets::ui_built(),
        "the browser bundle is not built: run scripts/build-webui.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let (wb, store) = workbench(&dir.path().join("data")).await;

    // The workbench over TLS, as a browser meets it in production.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = TlsConfig {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        poll_secs: 60,
    };
    tokio::spawn(serve_tls(
        listener,
        wb.router(),
        tls,
        std::future::pending(),
    ));

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
        .send_keys("\n\nrule wb_large_amount:\n  review if event.amout > 5000 and feature.user.txn_count_24h >= 3")
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
        .send_keys("  review if event.amount > 5000 and feature.user.txn_count_24h >= 3")
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
    wait_text(&c, "#backtest-report", "decisions change").await;
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
    assert_eq!(store.follower().current().unwrap().version.number, 2);
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
    assert_eq!(
        store.follower().current().unwrap().version.files,
        example_files()
    );

    click(&c, "#nav-audit").await;
    let audit = wait_text(&c, "#audit", "rolled back").await;
    for action in ["login", "proposed", "approved", "deployed"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    shot(&c, "audit").await;
    c.close().await.unwrap();
}
