//! The event validator against a table of good and bad events: every kind of
//! bad input that `contracts.md` names (not JSON, a missing required field, a
//! field of the wrong type, a bad timestamp) and the limits around them.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use verdict_core::{EventParser, RejectionKind, Schema, Value};

fn parser() -> EventParser {
    let schema = Schema::parse(
        r#"
        [fields]
        user_id = { type = "string", required = true }
        amount = "number"
        vip = "bool"
        opened_at = "timestamp"
        "attributes.channel" = "string"
        "attributes.term_months" = "number"
        "#,
        Path::new("schema.toml"),
    )
    .unwrap();
    EventParser::new(Arc::new(schema)).with_max_bytes(512)
}

const BASE: &str = r#""event_id":"e-1","event_type":"loan_application","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_1""#;

/// (name, input, expected: Ok or the rejection kind and a fragment of its reason)
/// What a case expects: acceptance, or a rejection of this kind whose reason
/// contains this fragment.
type Expected = Result<(), (RejectionKind, &'static str)>;

fn table() -> Vec<(&'static str, String, Expected)> {
    use RejectionKind::*;
    let with = |extra: &str| format!("{{{BASE}{extra}}}");
    vec![
        ("minimal", with(""), Ok(())),
        ("all fields", with(r#","amount":4200.0,"vip":true,"opened_at":1764000000000,"attributes":{"channel":"app","term_months":12}"#), Ok(())),
        ("integer amount", with(r#","amount":4200"#), Ok(())),
        ("epoch ms timestamp", r#"{"event_id":"e","event_type":"t","timestamp":1764000000000,"user_id":"u"}"#.into(), Ok(())),
        ("offset timestamp", r#"{"event_id":"e","event_type":"t","timestamp":"2026-11-24T16:15:30+08:00","user_id":"u"}"#.into(), Ok(())),
        ("unknown fields are kept and ignored", with(r#","label":"legit","extra":{"deep":[1,2,{"x":null}]}"#), Ok(())),
        ("null optional field is missing", with(r#","amount":null"#), Ok(())),
        ("unknown nested field", with(r#","attributes":{"colour":"red"}"#), Ok(())),
        ("escaped key", with(r#","am\u006funt":5"#), Ok(())),
        ("not json", "this is not json".into(), Err((NotJson, "not valid JSON"))),
        ("truncated", with("").trim_end_matches('}').to_owned(), Err((NotJson, "EOF"))),
        ("trailing garbage", with("") + "x", Err((NotJson, "trailing"))),
        ("empty line", "".into(), Err((NotJson, "EOF"))),
        ("array", "[1,2]".into(), Err((NotObject, "found an array"))),
        ("string", "\"event\"".into(), Err((NotObject, "found a string"))),
        ("null", "null".into(), Err((NotObject, "found null"))),
        ("missing event_id", r#"{"event_type":"t","timestamp":1,"user_id":"u"}"#.into(), Err((MissingField, "`event_id`"))),
        ("missing event_type", r#"{"event_id":"e","timestamp":1,"user_id":"u"}"#.into(), Err((MissingField, "`event_type`"))),
        ("missing timestamp", r#"{"event_id":"e","event_type":"t","user_id":"u"}"#.into(), Err((MissingField, "`timestamp`"))),
        ("missing required schema field", r#"{"event_id":"e","event_type":"t","timestamp":1}"#.into(), Err((MissingField, "`user_id`"))),
        ("null required field", r#"{"event_id":null,"event_type":"t","timestamp":1,"user_id":"u"}"#.into(), Err((MissingField, "`event_id`"))),
        ("empty event_id", r#"{"event_id":"","event_type":"t","timestamp":1,"user_id":"u"}"#.into(), Err((InvalidValue, "must not be empty"))),
        ("amount as string", with(r#","amount":"4200""#), Err((WrongType, r#"`amount` must be a number, found string "4200""#))),
        ("amount as object", with(r#","amount":{"v":1}"#), Err((WrongType, "found an object"))),
        ("bool as number", with(r#","vip":1"#), Err((WrongType, "`vip` must be a boolean, found number 1"))),
        ("event_id as number", r#"{"event_id":7,"event_type":"t","timestamp":1,"user_id":"u"}"#.into(), Err((WrongType, "`event_id` must be a string"))),
        ("nested wrong type", with(r#","attributes":{"term_months":"12"}"#), Err((WrongType, "`attributes.term_months`"))),
        ("parent not an object", with(r#","attributes":"app""#), Err((WrongType, "`attributes` must be an object"))),
        ("bad timestamp text", r#"{"event_id":"e","event_type":"t","timestamp":"yesterday","user_id":"u"}"#.into(), Err((BadTimestamp, "RFC 3339"))),
        ("negative epoch", r#"{"event_id":"e","event_type":"t","timestamp":-5,"user_id":"u"}"#.into(), Err((BadTimestamp, "epoch milliseconds"))),
        ("fractional epoch", r#"{"event_id":"e","event_type":"t","timestamp":1.5,"user_id":"u"}"#.into(), Err((BadTimestamp, "epoch milliseconds"))),
        ("timestamp as bool", r#"{"event_id":"e","event_type":"t","timestamp":true,"user_id":"u"}"#.into(), Err((WrongType, "`timestamp` must be a timestamp"))),
        ("schema timestamp field", with(r#","opened_at":"soon""#), Err((BadTimestamp, "`opened_at`"))),
        ("too large", with(&format!(r#","pad":"{}""#, "x".repeat(600))), Err((TooLarge, "over the limit of 512 bytes"))),
        ("deep array", format!("{}{}", "[".repeat(200), "]".repeat(200)), Err((NotObject, "found an array"))),
        ("deep unknown field", with(&format!(r#","x":{}{}"#, "[".repeat(200), "]".repeat(200))), Ok(())),
        ("duplicate amount", with(r#","amount":1,"amount":9000"#), Err((DuplicateKey, "field `amount` appears twice"))),
        ("duplicate amount, same value", with(r#","amount":1,"amount":1"#), Err((DuplicateKey, "`amount`"))),
        ("duplicate built-in field", with(r#","event_id":"e-2""#), Err((DuplicateKey, "`event_id`"))),
        ("duplicate behind an escape", with(r#","amount":1,"am\u006funt":2"#), Err((DuplicateKey, "`amount`"))),
        ("duplicate inside attributes", with(r#","attributes":{"channel":"app","channel":"web"}"#), Err((DuplicateKey, "`attributes.channel`"))),
        ("duplicate attributes object", with(r#","attributes":{"channel":"app"},"attributes":{"channel":"web"}"#), Err((DuplicateKey, "`attributes`"))),
        ("duplicate unknown key", with(r#","label":"legit","label":"fraud""#), Err((DuplicateKey, "`label`"))),
        ("duplicate unknown key in attributes", with(r#","attributes":{"colour":"red","colour":"blue"}"#), Err((DuplicateKey, "`attributes.colour`"))),
        ("duplicate deep in an unknown field", with(r#","extra":{"items":[{"sku":1},{"sku":2,"sku":3}]}"#), Err((DuplicateKey, "`extra.items[1].sku`"))),
        ("duplicate in a wrongly typed field", with(r#","amount":{"v":1,"v":2}"#), Err((DuplicateKey, "`amount.v`"))),
        ("duplicate beats a wrong type", with(r#","amount":"x","amount":1"#), Err((DuplicateKey, "`amount`"))),
        ("duplicate among many keys", with(&(0..40).map(|i| format!(r#","k{i}":{i}"#)).collect::<String>().replace(r#""k37""#, r#""k7""#)), Err((DuplicateKey, "`k7`"))),
        ("same key in sibling objects is fine", with(r#","a":{"x":1},"b":{"x":2},"c":[{"x":1},{"x":2}]"#), Ok(())),
        ("broken JSON with a duplicate is not JSON", with(r#","amount":1,"amount":2"#).trim_end_matches('}').to_owned(), Err((NotJson, "EOF"))),
    ]
}

#[test]
fn validator_table() {
    let parser = parser();
    let mut failures = Vec::new();
    for (name, input, expected) in table() {
        let got = parser.parse(input.as_bytes());
        match (&got, &expected) {
            (Ok(_), Ok(())) => {}
            (Err(r), Err((kind, fragment)))
                if r.kind() == *kind && r.to_string().contains(fragment) => {}
            _ => failures.push(format!("{name}: expected {expected:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn very_deep_nesting_is_a_value_not_a_crash() {
    let parser = parser().with_max_bytes(1 << 20);
    let deep = format!(
        r#"{{{BASE},"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let _ = parser.parse(deep.as_bytes());
    let deep = format!(r#"{{{BASE},"x":{}"#, "{\"a\":".repeat(100_000));
    assert!(parser.parse(deep.as_bytes()).is_err());
}

#[test]
fn invalid_utf8_is_not_json() {
    let r = parser().parse(b"{\"event_id\":\"\xff\xfe\"}").unwrap_err();
    assert_eq!(r.kind(), RejectionKind::NotJson, "{r}");
}

#[test]
fn values_land_in_their_slots() {
    let parser = parser();
    let schema = parser.schema().clone();
    let e = parser
        .parse(
            format!(
                r#"{{{BASE},"amount":4200,"attributes":{{"channel":"app","term_months":12}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(e.id(), "e-1");
    assert_eq!(e.event_type(), "loan_application");
    assert_eq!(e.timestamp_ms(), 1_795_508_130_250);
    assert_eq!(
        e.get(schema.slot("amount").unwrap()),
        &Value::Number(4200.0)
    );
    assert_eq!(
        e.get(schema.slot("attributes.channel").unwrap()),
        &Value::from("app")
    );
    assert_eq!(
        e.get(schema.slot("event.attributes.term_months").unwrap()),
        &Value::Number(12.0)
    );
    assert_eq!(e.get(schema.slot("vip").unwrap()), &Value::Missing);
}

proptest! {
    /// Whatever the bytes, the parser returns a value, never panics.
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parser().parse(&bytes);
    }

    /// JSON-shaped noise around the real fields never panics either.
    #[test]
    fn never_panics_on_json(amount in any::<f64>(), key in "[a-z._]{0,12}", text in ".{0,20}") {
        let body = serde_json::json!({
            "event_id": text, "event_type": "t", "timestamp": 1, "user_id": "u",
            "amount": amount, key.clone(): text, "attributes": { key.clone(): amount }
        });
        let _ = parser().parse(body.to_string().as_bytes());
    }
}
