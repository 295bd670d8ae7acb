//! The catalogue the rules tests check against: the example event schema
//! plus a few features and a model output.

use std::path::Path;

use verdict_core::{Catalogue, Schema, ValueType};

pub fn schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/schema.toml");
    Schema::load(&path).expect("the example schema loads")
}

pub fn catalogue() -> Catalogue {
    let mut c = Catalogue::from_schema(&schema());
    c.add_feature("user", "txn_count_1h", ValueType::Number);
    c.add_feature("user", "last_ip", ValueType::String);
    c.add_feature("user", "last_seen", ValueType::Timestamp);
    c.add_feature("device", "account_count_7d", ValueType::Number);
    c.add_model_output("fraud_score", ValueType::Number);
    c
}
