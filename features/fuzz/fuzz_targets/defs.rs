//! Any text as a feature-definitions file, checked against the example
//! event schema: `FeatureDefs::parse` returns definitions or an error, never
//! panics; accepted definitions answer `longest_window_ms`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_core::Schema;
use verdict_features::FeatureDefs;

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse(
            include_str!("../../../examples/schema.toml"),
            Path::new("schema.toml"),
        )
        .expect("the example schema is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(defs) = FeatureDefs::parse(text, Path::new("fuzz/features.toml"), schema()) {
        let _ = defs.longest_window_ms();
    }
});
