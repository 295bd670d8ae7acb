//! Any bytes as a message of the rule-set topic, a draft's body from a
//! browser, and a Cookie header: each is refused or taken, never a panic,
//! and nothing is written outside the draft's own folder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_core::{Catalogue, Schema, ValueType};
use verdict_workbench::RuleSetVersion;
use verdict_workbench::files::RuleFiles;

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        let schema = Schema::parse(
            "[fields]\nuser_id = { type = \"string\", required = true }\namount = \"number\"\n",
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
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verdict_workbench::auth::cookie_token(text);
    }
    // A Kafka message is a whole version; a browser sends the files alone.
    let files = match serde_json::from_slice::<RuleSetVersion>(data) {
        Ok(v) => Some(v.files),
        Err(_) => serde_json::from_slice::<RuleFiles>(data).ok(),
    };
    let Some(files) = files else { return };
    if verdict_workbench::engine::check(&files, catalogue()).is_ok() {
        // Whatever was written had plain names only: nothing outside the
        // draft's folder.
        for path in files.0.keys() {
            let plain = std::path::Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            assert!(plain, "{path:?} was accepted");
        }
    }
    let _ = verdict_workbench::summary::summarise(&files);
});
