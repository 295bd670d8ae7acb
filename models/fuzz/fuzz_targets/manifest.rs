//! Any text as a model manifest: parses and checks against a catalogue, or
//! errors; never panics.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_core::{Catalogue, Record, Schema, ValueType};
use verdict_models::Manifest;

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        let schema = Schema::parse(
            "[fields]\namount = \"number\"\ncurrency = \"string\"\n\"attributes.new_device\" = \"bool\"\n",
            Path::new("schema.toml"),
        )
        .expect("schema");
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
    let Ok(manifest) = Manifest::parse(text, Path::new("/models/fuzz.manifest.toml")) else {
        return;
    };
    if let Ok(inputs) = manifest.check(catalogue()) {
        let record = Record {
            event: &[],
            features: &[],
            model: &[],
        };
        let row = inputs.gather_vec(&record);
        assert_eq!(row.len(), manifest.inputs.len());
    }
    let mut c = catalogue().clone();
    let _ = manifest.register_outputs(&mut c);
});
