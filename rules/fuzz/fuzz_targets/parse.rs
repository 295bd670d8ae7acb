//! Any bytes as a rule file, and as a single expression: parsing and
//! checking return a rule set or errors, never panic; an accepted rule set
//! evaluates an empty record without panicking.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_core::{Catalogue, Record, Schema, ValueType};
use verdict_rules::{Evaluation, Expression, RuleSet, Source};

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        let schema = Schema::parse(
            "[fields]\nuser_id = { type = \"string\", required = true }\namount = \"number\"\n\
             ip = \"string\"\n\"attributes.new_device\" = \"bool\"\n",
            std::path::Path::new("fuzz.toml"),
        )
        .expect("fuzz schema is valid");
        let mut c = Catalogue::from_schema(&schema);
        c.add_feature("user", "txn_count_1h", ValueType::Number);
        c.add_model_output("fraud_score", ValueType::Number);
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Expression::compile(text, catalogue());
    let src = Source {
        path: PathBuf::from("fuzz.rules"),
        text: text.into(),
    };
    if let Ok(set) = RuleSet::compile(&[src], None, catalogue()) {
        let mut out = Evaluation::default();
        set.evaluate(
            &Record {
                event: &[],
                features: &[],
                model: &[],
            },
            &mut out,
        );
    }
});
