//! Any text as an event-schema file: loads or errors, never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use verdict_core::Schema;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Schema::parse(text, Path::new("fuzz.toml"));
    }
});
