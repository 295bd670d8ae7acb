//! `verdict rules check` and `verdict rules test` on the example rule set
//! and on a broken one.

use std::process::Command;

fn verdict(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_rules_check_and_their_tests_pass() {
    let (code, out, err) = verdict(&["rules", "check", "examples/rules"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("check; version rs-"), "{out}");
    let (code, out, err) = verdict(&["rules", "test", "examples/rules"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(!out.contains("FAIL "), "{out}");
}

#[test]
fn a_broken_rule_set_exits_1_with_every_error() {
    let dir = std::env::temp_dir().join(format!("verdict-cli-rules-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("a.rules"),
        "rule one:\n  deny if event.amout > 5\n\nrule two:\n  review if event.amount > \"5\"\n",
    )
    .unwrap();
    let (code, _, err) = verdict(&["rules", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("a.rules:2:11"), "{err}");
    assert!(err.contains("did you mean `event.amount`?"), "{err}");
    assert!(err.contains("a.rules:5:13"), "{err}");
    assert!(err.contains("2 errors"), "{err}");

    std::fs::write(
        dir.join("a.rules"),
        "rule big:\n  deny if event.amount > 100\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tests/t.toml"),
        "[[case]]\nname = \"small\"\nevent = { event_type = \"payment\", user_id = \"u\", amount = 5 }\nexpect = { decision = \"deny\", hits = [\"big\"] }\n",
    )
    .unwrap();
    let (code, out, _) = verdict(&["rules", "test", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("expected deny, got approve"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
