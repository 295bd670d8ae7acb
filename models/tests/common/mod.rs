//! Shared set-up for the model tests: the example catalogue, the test
//! models, and the ONNX Runtime library (which must be installed: the tests
//! fail, with the command to run, when it is not).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use verdict_core::{Catalogue, Namespace, Schema, Value, ValueType};
use verdict_models::Runtime;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

pub fn runtime() -> Runtime {
    match Runtime::discover(None) {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    }
}

/// The example schema's catalogue plus the feature-store features the
/// shipped model reads.
pub fn catalogue() -> Catalogue {
    let schema =
        Schema::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schema.toml"))
            .expect("examples/schema.toml");
    let mut c = Catalogue::from_schema(&schema);
    for (entity, name) in [
        ("user", "txn_count_1h"),
        ("user", "txn_count_24h"),
        ("user", "app_count_24h"),
        ("user", "amount_sum_24h"),
        ("user", "amount_avg_30d"),
        ("user", "amount_max_7d"),
        ("user", "distinct_devices_7d"),
        ("user", "distinct_ips_24h"),
        ("user", "secs_since_last"),
        ("user", "account_age_days"),
        ("user", "credit_limit"),
        ("user", "prior_defaults"),
        ("device", "account_count_7d"),
        ("device", "app_count_1h"),
        ("ip", "account_count_24h"),
        ("ip", "txn_count_1h"),
    ] {
        c.add_feature(entity, name, ValueType::Number);
    }
    c
}

/// An event array with `amount`, `attributes.term_months` and
/// `attributes.new_device` set (None leaves a field missing).
pub fn event(
    c: &Catalogue,
    amount: Option<f64>,
    term: Option<f64>,
    new_device: Option<bool>,
) -> Vec<Value> {
    let mut ev = vec![Value::Missing; c.len(Namespace::Event)];
    let mut set = |path: &str, v: Value| {
        ev[c.lookup(path).unwrap().slot.index as usize] = v;
    };
    if let Some(a) = amount {
        set("event.amount", Value::Number(a));
    }
    if let Some(t) = term {
        set("event.attributes.term_months", Value::Number(t));
    }
    if let Some(b) = new_device {
        set("event.attributes.new_device", Value::Bool(b));
    }
    ev
}
