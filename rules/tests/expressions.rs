//! A table of expressions and their values: every function, every
//! missing-value combination of the three-valued logic, and precedence.

mod common;

use verdict_core::{EventParser, Record, Value};
use verdict_rules::Expression;

fn check(cases: &[(&str, Value)]) {
    let catalogue = common::catalogue();
    let parser = EventParser::new(std::sync::Arc::new(common::schema()));
    let event = parser
        .parse(
            br#"{"event_id":"e-1","event_type":"payment","timestamp":"2026-11-24T03:30:00Z",
                "user_id":"u_1","amount":100,"currency":"CNY","attributes":{"new_device":true}}"#,
        )
        .unwrap();
    // user.txn_count_1h = 5; user.last_ip, user.last_seen and
    // device.account_count_7d missing.
    let features = [
        Value::Number(5.0),
        Value::Missing,
        Value::Missing,
        Value::Missing,
    ];
    let model = [Value::Number(0.5)];
    let record = Record {
        event: event.values(),
        features: &features,
        model: &model,
    };
    let mut failures = Vec::new();
    for (text, want) in cases {
        match Expression::compile(text, &catalogue) {
            Ok(e) => {
                let got = e.eval(&record);
                if &got != want {
                    failures.push(format!("{text}: expected {want:?}, got {got:?}"));
                }
            }
            Err(d) => failures.push(format!("{text}: does not compile:\n{d}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const M: Value = Value::Missing;

fn n(x: f64) -> Value {
    Value::Number(x)
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

#[test]
fn three_valued_logic_with_missing_values() {
    let m = "(event.attributes.term_months > 3)";
    check(&[
        ("event.attributes.term_months", M),
        (m, M),
        (&format!("not {m}"), M),
        (&format!("{m} and false"), b(false)),
        (&format!("false and {m}"), b(false)),
        (&format!("{m} and true"), M),
        (&format!("true and {m}"), M),
        (&format!("{m} and {m}"), M),
        (&format!("{m} or true"), b(true)),
        (&format!("true or {m}"), b(true)),
        (&format!("{m} or false"), M),
        (&format!("false or {m}"), M),
        (&format!("{m} or {m}"), M),
        ("event.attributes.term_months + 1", M),
        ("1 - event.attributes.term_months", M),
        ("event.attributes.term_months * 2", M),
        ("-event.attributes.term_months", M),
        ("event.amount / 0", M),
        ("1 / 0", M),
        ("event.device_id == \"d_1\"", M),
        ("event.device_id != \"d_1\"", M),
        ("event.device_id in [\"d_1\"]", M),
        ("event.device_id not in [\"d_1\"]", M),
        ("feature.device.account_count_7d >= 0", M),
        ("model.fraud_score > 0.4", b(true)),
        ("feature.user.txn_count_1h >= 5", b(true)),
        ("feature.user.last_seen < event.timestamp", M),
    ]);
}

#[test]
fn functions_and_their_missing_inputs() {
    check(&[
        ("is_missing(event.device_id)", b(true)),
        ("is_missing(event.amount)", b(false)),
        ("coalesce(event.device_id, \"none\")", s("none")),
        ("coalesce(event.currency, \"none\")", s("CNY")),
        ("coalesce(event.attributes.term_months, 12) + 1", n(13.0)),
        ("abs(-3)", n(3.0)),
        ("abs(event.attributes.term_months)", M),
        ("min(2, 5)", n(2.0)),
        ("max(2, 5)", n(5.0)),
        ("min(2, event.attributes.term_months)", M),
        ("max(event.attributes.term_months, 2)", M),
        ("lower(\"AbC\")", s("abc")),
        ("lower(event.currency)", s("cny")),
        ("lower(event.device_id)", M),
        ("starts_with(event.user_id, \"u_\")", b(true)),
        ("starts_with(event.device_id, \"d\")", M),
        ("contains(event.currency, \"N\")", b(true)),
        ("contains(event.ip, \"1\")", M),
        ("matches(event.currency, \"^C.Y$\")", b(true)),
        ("matches(event.ip, \".\")", M),
        ("hour_of_day(event.timestamp)", n(3.0)),
        ("hour_of_day(feature.user.last_seen)", M),
        ("days_between(event.timestamp, event.timestamp)", n(0.0)),
        ("days_between(feature.user.last_seen, event.timestamp)", M),
        ("event.amount in [100, 200]", b(true)),
        ("event.amount not in [100, 200]", b(false)),
        ("event.currency in [\"CNY\", \"USD\"]", b(true)),
        ("event.attributes.new_device in [false]", b(false)),
        ("event.event_type == \"payment\"", b(true)),
        ("event.timestamp == event.timestamp", b(true)),
    ]);
}

#[test]
fn precedence_and_associativity() {
    check(&[
        ("1 + 2 * 3", n(7.0)),
        ("(1 + 2) * 3", n(9.0)),
        ("10 - 4 - 3", n(3.0)),
        ("8 / 4 / 2", n(1.0)),
        ("-2 * 3", n(-6.0)),
        ("-(2 + 3)", n(-5.0)),
        ("2 - -3", n(5.0)),
        ("not true and false", b(false)),
        ("not (true and false)", b(true)),
        ("true or false and false", b(true)),
        ("(true or false) and false", b(false)),
        ("false and true or true", b(true)),
        ("1 + 1 == 2 and 3 > 2", b(true)),
        ("not 1 > 2", b(true)),
        ("not not true", b(true)),
        ("5 in [1, 2] or true", b(true)),
        ("1 + 2 in [3]", b(true)),
    ]);
}

#[test]
fn constants_are_folded_at_compile_time() {
    let c = common::catalogue();
    assert!(
        Expression::compile("1 + 2 * 3 > 6 and lower(\"A\") == \"a\"", &c)
            .unwrap()
            .is_constant()
    );
    assert!(
        !Expression::compile("event.amount + 1", &c)
            .unwrap()
            .is_constant()
    );
}

#[test]
fn type_errors_are_check_time_errors() {
    let c = common::catalogue();
    for text in [
        "event.amount > \"5\"",
        "true and 3",
        "\"a\" < \"b\"",
        "event.timestamp > 5",
        "event.amount + \"x\"",
        "not event.amount",
        "-event.currency",
        "coalesce(event.amount, \"x\")",
        "event.amount in [\"a\"]",
        "hour_of_day(event.amount)",
        "matches(event.currency, event.currency)",
        "min(1)",
        "event.nope",
        "model.nope",
        "feature.user",
    ] {
        assert!(
            Expression::compile(text, &c).is_err(),
            "{text} compiled but should not"
        );
    }
}
