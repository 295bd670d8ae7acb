//! Decision semantics, versions, hot reload and the test-case runner.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use verdict_core::{Action, EventParser, Record, Value};
use verdict_rules::reload::{Live, ReloadObserver, Reloader};
use verdict_rules::{Diagnostics, Evaluation, RuleSet, Source};

fn compile(text: &str) -> RuleSet {
    let src = Source {
        path: PathBuf::from("t.rules"),
        text: text.into(),
    };
    RuleSet::compile(&[src], None, &common::catalogue()).unwrap_or_else(|e| panic!("{e}"))
}

fn decide(set: &RuleSet, amount: f64, score: Option<f64>) -> Evaluation {
    let parser = EventParser::new(Arc::new(common::schema()));
    let json = format!(
        r#"{{"event_id":"e","event_type":"payment","timestamp":1,"user_id":"u_1","amount":{amount}}}"#
    );
    let event = parser.parse(json.as_bytes()).unwrap();
    let model = [score.map_or(Value::Missing, Value::Number)];
    let mut out = Evaluation::default();
    set.evaluate(
        &Record {
            event: event.values(),
            features: &[],
            model: &model,
        },
        &mut out,
    );
    out
}

fn names(hits: &[verdict_core::Hit]) -> Vec<&str> {
    hits.iter().map(|h| &*h.rule).collect()
}

#[test]
fn no_hit_approves() {
    let set = compile("rule big:\n  deny if event.amount > 1000\n");
    let e = decide(&set, 10.0, None);
    assert_eq!(e.decision, Action::Approve);
    assert!(e.hits.is_empty());
}

#[test]
fn deny_beats_review_beats_approve_at_equal_priority() {
    let set = compile(
        "rule a:\n  approve if event.amount > 1\nrule r:\n  review if event.amount > 1\nrule d:\n  deny if event.amount > 1\n",
    );
    let e = decide(&set, 10.0, None);
    assert_eq!(e.decision, Action::Deny);
    assert_eq!(names(&e.hits), ["d", "r", "a"]);
}

#[test]
fn priority_beats_action_and_may_be_negative() {
    let set = compile(
        "rule d priority -1:\n  deny if event.amount > 1\nrule vip priority 100:\n  approve if event.amount > 1\n  reason \"VIP\"\nrule r:\n  review if event.amount > 1\n",
    );
    let e = decide(&set, 10.0, None);
    assert_eq!(e.decision, Action::Approve);
    assert_eq!(names(&e.hits), ["vip", "r", "d"]);
    assert_eq!(&*e.hits[0].reason, "VIP");
}

#[test]
fn definition_order_breaks_remaining_ties() {
    let set = compile(
        "rule second:\n  review if event.amount > 1\nrule first:\n  review if event.amount > 2\n",
    );
    assert_eq!(names(&decide(&set, 10.0, None).hits), ["second", "first"]);
}

#[test]
fn shadow_rules_are_reported_apart_and_never_decide() {
    let set = compile("rule s shadow:\n  deny if event.amount > 1\n");
    let e = decide(&set, 10.0, None);
    assert_eq!(e.decision, Action::Approve);
    assert!(e.hits.is_empty());
    assert_eq!(names(&e.shadow_hits), ["s"]);
}

#[test]
fn a_missing_score_does_not_fire_and_a_reason_defaults_to_the_condition() {
    let set = compile("rule m:\n  deny if model.fraud_score > 0.9\n");
    assert_eq!(decide(&set, 10.0, None).decision, Action::Approve);
    let e = decide(&set, 10.0, Some(0.95));
    assert_eq!(e.decision, Action::Deny);
    assert_eq!(&*e.hits[0].reason, "(model.fraud_score > 0.9)");
}

#[test]
fn the_version_is_a_stable_content_hash() {
    let a = compile("rule a:\n  deny if event.amount > 1\n");
    let b = compile("rule a:\n  deny if event.amount > 1\n");
    let c = compile("rule a:\n  deny if event.amount > 2\n");
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
    assert!(a.version().starts_with("rs-") && a.version().len() == 11);
}

#[derive(Default)]
struct Counts {
    reloaded: AtomicUsize,
    refused: AtomicUsize,
    last_errors: Mutex<String>,
}

impl ReloadObserver for Counts {
    fn reloaded(&self, _: &str) {
        self.reloaded.fetch_add(1, Ordering::SeqCst);
    }
    fn refused(&self, errors: &Diagnostics) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        *self.last_errors.lock().unwrap() = errors.to_string();
    }
}

#[test]
fn reload_swaps_a_good_set_and_refuses_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("verdict-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.rules");
    std::fs::write(&file, "rule big:\n  deny if event.amount > 1000\n").unwrap();
    let catalogue = Arc::new(common::catalogue());
    let live = Arc::new(Live::new(RuleSet::load_dir(&dir, &catalogue).unwrap()));
    let counts = Arc::new(Counts::default());
    let reloader = Reloader::new(dir.clone(), catalogue, live.clone(), counts.clone());
    let v1 = live.load().version().clone();
    assert!(
        reloader.reload_if_changed().is_none(),
        "nothing changed yet"
    );

    // A held set keeps deciding with its own rules while a swap happens.
    let held = live.load_full();
    std::fs::write(&file, "rule big:\n  deny if event.amount > 5\n").unwrap();
    let v2 = reloader.reload_if_changed().unwrap().unwrap();
    assert_ne!(v1, v2);
    assert_eq!(live.load().version(), &v2);
    assert_eq!(decide(&held, 10.0, None).decision, Action::Approve);
    assert_eq!(decide(&live.load(), 10.0, None).decision, Action::Deny);

    std::fs::write(&file, "rule big:\n  deny if event.amout > 5\n").unwrap();
    assert!(reloader.reload_if_changed().unwrap().is_err());
    assert_eq!(live.load().version(), &v2, "the old set keeps serving");
    assert_eq!(counts.reloaded.load(Ordering::SeqCst), 1);
    assert_eq!(counts.refused.load(Ordering::SeqCst), 1);
    assert!(
        counts
            .last_errors
            .lock()
            .unwrap()
            .contains("did you mean `event.amount`?")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ConfigMap mounted in a Kubernetes pod (the Helm chart's rule folder) is
/// updated by swapping a `..data` symlink to a new timestamped folder; each
/// file is a symlink through it. The swap is one change, reloaded.
#[cfg(unix)]
#[test]
fn a_configmap_style_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let dir = std::env::temp_dir().join(format!("verdict-configmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    std::fs::write(
        dir.join("..v1/a.rules"),
        "rule big:\n  deny if event.amount > 1000\n",
    )
    .unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/a.rules", dir.join("a.rules")).unwrap();

    let catalogue = Arc::new(common::catalogue());
    let live = Arc::new(Live::new(RuleSet::load_dir(&dir, &catalogue).unwrap()));
    let counts = Arc::new(Counts::default());
    let reloader = Reloader::new(dir.clone(), catalogue, live.clone(), counts);
    assert_eq!(decide(&live.load(), 10.0, None).decision, Action::Approve);
    assert!(reloader.reload_if_changed().is_none());

    // The kubelet's atomic update: a new folder, then `..data` replaced.
    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/a.rules"),
        "rule big:\n  deny if event.amount > 5\n",
    )
    .unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();

    reloader.reload_if_changed().unwrap().unwrap();
    assert_eq!(decide(&live.load(), 10.0, None).decision, Action::Deny);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_test_runner_reports_failures() {
    let dir = std::env::temp_dir().join(format!("verdict-cases-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("a.rules"),
        "rule big:\n  deny if event.amount > 1000\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/cases.toml"),
        r#"
[[case]]
name = "passes"
event = { event_type = "payment", user_id = "u", amount = 5000 }
expect = { decision = "deny", hits = ["big"] }

[[case]]
name = "fails"
event = { event_type = "payment", user_id = "u", amount = 5 }
expect = { decision = "deny", hits = ["big"] }

[[case]]
name = "unknown feature"
event = { event_type = "payment", user_id = "u" }
features = { "user.txn_count_1" = 3 }
expect = { decision = "approve" }
"#,
    )
    .unwrap();
    let catalogue = common::catalogue();
    let set = RuleSet::load_dir(&dir, &catalogue).unwrap();
    let parser = EventParser::new(Arc::new(common::schema()));
    let report = verdict_rules::testing::run_dir(&dir, &set, &parser, &catalogue);
    assert_eq!((report.passed(), report.failed()), (1, 2));
    let text = report.render();
    assert!(
        text.contains("decision: expected deny, got approve"),
        "{text}"
    );
    assert!(
        text.contains("did you mean `feature.user.txn_count_1h`?"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
