//! The analysts' workbench mounted in `verdict run`: two instances on
//! librdkafka's mock cluster follow one compacted topic of rule-set
//! versions.
//! - The rule folder is published as version 1 and serves on both.
//! - A change proposed by an analyst deploys only after another person
//!   approves it; it then decides `POST /v1/decisions` on both instances.
//! - A backtest of a draft runs against the decision log of the service.
//! - A restore of version 1 goes the same way and serves on both, and an
//!   instance started afterwards serves it too.
//! - Once a deployed version serves, a reload of the folder is refused.

#[allow(dead_code)]
#[path = "common/service.rs"]
mod service;

use std::io::{Read, Write};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use service::*;

/// One answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
    text: String,
}

/// A session on one instance: its cookie and CSRF token.
#[derive(Default, Clone)]
struct Session {
    port: u16,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Answer> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            head += "Content-Type: application/json\r\n";
        }
        if let Some(c) = &self.cookie {
            head += &format!("Cookie: {c}\r\n");
        }
        if let Some(t) = &self.csrf {
            head += &format!("X-CSRF-Token: {t}\r\n");
        }
        if path.starts_with("/admin/") {
            head += &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
        }
        head += "\r\n";
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(&body).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, text) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.get(9..12)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Answer {
            status,
            headers,
            body: serde_json::from_str(text).unwrap_or(Value::Null),
            text: text.to_owned(),
        })
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
            .unwrap_or_else(|| panic!("GET {path} got no answer"))
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(&body))
            .unwrap_or_else(|| panic!("POST {path} got no answer"))
    }
}

fn login(port: u16, user: &str) -> Session {
    let anon = Session {
        port,
        ..Session::default()
    };
    let a = anon.post(
        "/workbench/api/login",
        json!({ "user": user, "password": password(user) }),
    );
    assert_eq!(a.status, 200, "login of {user}: {}", a.text);
    let cookie = a
        .headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap().to_owned());
    Session {
        port,
        cookie,
        csrf: Some(a.body["csrf"].as_str().unwrap().to_owned()),
    }
}

/// The probe event: a payment of 4321.75, which only the rule the test
/// deploys singles out.
fn probe(i: usize) -> Value {
    json!({
        "event_id": format!("probe-{i}"),
        "event_type": "payment",
        "timestamp": 1_764_000_000_000u64 + i as u64 * 1_000,
        "user_id": format!("u_probe_{i}"),
        "amount": 4321.75,
        "currency": "EUR",
    })
}

/// Probes decided so far: each gets an event id of its own, as a
/// redelivered id would get its first decision again.
static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `POST /v1/decisions` of a new probe on `port`: the decision.
fn decide(port: u16) -> Value {
    let i = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s = Session {
        port,
        ..Session::default()
    };
    let a = s.post("/v1/decisions", probe(i));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body
}

fn hit_rules(decision: &Value) -> Vec<String> {
    decision["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rule"].as_str().unwrap().to_owned())
        .collect()
}

const PROBE_RULE: &str = "rule workbench_probe:\n  deny if event.amount == 4321.75\n  reason \"the amount of the workbench's probe\"\n";

#[test]
fn every_instance_serves_what_the_workbench_deploys_once_a_second_person_approves() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let (pa, pb) = (free_port(), free_port());
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let logs = [la.as_path(), lb.as_path()];
    let ca = config_file(dir.path(), &brokers, "a", None);
    let cb = config_file(dir.path(), &brokers, "b", None);
    let _a = verdict_run(&ca, &brokers, pa, &la);
    let up = |port: u16| {
        move || {
            Session {
                port,
                ..Session::default()
            }
            .call("GET", "/healthz", None)
            .is_some_and(|a| a.status == 200)
        }
    };
    wait_until(up(pa), "instance a's HTTP listener", &logs);
    let mut b = verdict_run(&cb, &brokers, pb, &lb);
    wait_until(up(pb), "instance b's HTTP listener", &logs);

    // Version 1 is the rule folder, serving on both; the probe is
    // approved by it.
    let alice = login(pa, "alice");
    let versions = alice.get("/workbench/api/versions");
    let listed = versions.body["versions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{}", versions.text);
    let v1 = listed[0]["version"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["number"], 1);
    for port in [pa, pb] {
        let d = decide(port);
        assert_eq!(d["ruleset_version"], v1.as_str(), "{d}");
        assert!(
            !hit_rules(&d).contains(&"workbench_probe".to_owned()),
            "{d}"
        );
    }

    // Some traffic through Kafka, for the decision log a backtest reads.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..40 {
        let mut e = probe(0);
        e["event_id"] = json!(format!("k-{i}"));
        e["user_id"] = json!(format!("u_k_{}", i % 7));
        if i % 2 == 0 {
            e["amount"] = json!(12.5);
        }
        let key = e["user_id"].as_str().unwrap().to_owned();
        let payload = e.to_string();
        producer
            .send(BaseRecord::to("events").key(&key).payload(&payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until(
        || parquet_rows(&dir.path().join("decisions")) >= 40,
        "the 40 events in complete decision-log files",
        &logs,
    );

    // The analyst's change: checked, backtested, proposed.
    let serving = alice.get("/workbench/api/serving");
    let mut files = serving.body["files"].clone();
    assert!(files.is_object(), "{}", serving.text);
    files["70-workbench.rules"] = json!(PROBE_RULE);
    let report = alice.post("/workbench/api/backtest", json!({ "files": files }));
    assert_eq!(report.status, 200, "{}", report.text);
    let r = &report.body["report"];
    assert_eq!(r["events"], 40, "{}", report.text);
    let moved: u64 = r["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["baseline"] != "deny" && c["candidate"] == "deny")
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(moved, 20, "the 20 probes move to deny: {}", report.text);
    assert_eq!(
        r["baseline_version"],
        v1.as_str(),
        "the serving version is the baseline"
    );
    assert_ne!(r["candidate_version"], v1.as_str());
    let probe_rule = r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "workbench_probe")
        .unwrap_or_else(|| panic!("the new rule in the report: {}", report.text));
    assert_eq!(
        (
            probe_rule["status"].as_str(),
            probe_rule["candidate_hits"].as_u64()
        ),
        (Some("added"), Some(20))
    );

    let p = alice.post(
        "/workbench/api/proposals",
        json!({ "files": files, "note": "deny the probe amount" }),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let id = p.body["id"].as_u64().unwrap();

    // Nobody approves their own change; nothing deploys unapproved.
    let own = alice.post(&format!("/workbench/api/proposals/{id}/approve"), json!({}));
    assert_eq!(own.status, 403, "{}", own.text);
    let early = alice.post(&format!("/workbench/api/proposals/{id}/deploy"), json!({}));
    assert_eq!(early.status, 409, "{}", early.text);
    let viewer = login(pa, "vera");
    let refused = viewer.post(&format!("/workbench/api/proposals/{id}/approve"), json!({}));
    assert_eq!(refused.status, 403, "{}", refused.text);

    let bob = login(pa, "bob");
    let ok = bob.post(&format!("/workbench/api/proposals/{id}/approve"), json!({}));
    assert_eq!(ok.status, 200, "{}", ok.text);
    let d = alice.post(&format!("/workbench/api/proposals/{id}/deploy"), json!({}));
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["number"], 2, "{}", d.text);
    let v2 = alice.get("/workbench/api/versions/2").body["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2);

    // Both instances decide with it, the one that did not deploy too.
    for port in [pa, pb] {
        wait_until(
            || decide(port)["ruleset_version"] == v2.as_str(),
            "version 2 to serve",
            &logs,
        );
        let d = decide(port);
        assert_eq!(d["decision"], "deny", "{d}");
        assert!(hit_rules(&d).contains(&"workbench_probe".to_owned()), "{d}");
    }

    // The Serving page counts the new rule's hits from the service's own
    // counters: at least the two probes just decided on this instance.
    let page = alice.get("/workbench/api/serving");
    let row = page.body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "workbench_probe")
        .unwrap_or_else(|| panic!("{}", page.text))
        .clone();
    assert!(row["hits_hour"].as_u64().unwrap() >= 2, "{row}");
    assert_eq!(page.body["engine_version"], v2.as_str(), "{}", page.text);

    // The folder no longer decides what serves.
    let reload = alice.post("/admin/reload/rules", json!({}));
    assert_ne!(reload.status, 200, "{}", reload.text);
    assert!(reload.text.contains("workbench"), "{}", reload.text);

    // Rollback: version 1's files, approved and deployed as version 3.
    let r = alice.post("/workbench/api/restore", json!({ "number": 1 }));
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.body["id"].as_u64().unwrap();
    let ok = bob.post(
        &format!("/workbench/api/proposals/{rid}/approve"),
        json!({}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    let d = alice.post(&format!("/workbench/api/proposals/{rid}/deploy"), json!({}));
    assert_eq!(d.body["number"], 3, "{}", d.text);
    for port in [pa, pb] {
        wait_until(
            || decide(port)["ruleset_version"] == v1.as_str(),
            "the restored version 1 to serve",
            &logs,
        );
        let d = decide(port);
        assert!(
            !hit_rules(&d).contains(&"workbench_probe".to_owned()),
            "{d}"
        );
    }

    // An instance that starts now reads the topic from its start and
    // serves version 3, not its folder's first load.
    drop(b);
    let lc = dir.path().join("c.log");
    b = verdict_run(&cb, &brokers, pb, &lc);
    wait_until(up(pb), "instance b's restart", &[&lc]);
    let restarted = login(pb, "vera").get("/workbench/api/serving");
    assert_eq!(restarted.body["version"]["number"], 3, "{}", restarted.text);
    assert_eq!(decide(pb)["ruleset_version"], v1.as_str());
    drop(b);

    // The audit log holds each step, with who did it.
    let audit = bob.get("/workbench/api/audit");
    let actions: Vec<(String, String)> = audit.body["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", audit.text))
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap_or("").to_owned(),
                e["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for step in [
        ("alice", "proposed"),
        ("bob", "approved"),
        ("alice", "deployed"),
        ("alice", "rolled_back"),
    ] {
        assert!(
            actions.contains(&(step.0.to_owned(), step.1.to_owned())),
            "{step:?} in {actions:?}"
        );
    }
}
