//! Any bytes as an event: the parser returns an event or a rejection, never
//! panics, and an accepted event has its built-in fields.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use verdict_core::{EventParser, Schema};

fn parser() -> &'static EventParser {
    static PARSER: OnceLock<EventParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        let schema = Schema::parse(
            "[fields]\nuser_id = { type = \"string\", required = true }\namount = \"number\"\n\
             vip = \"bool\"\nopened = \"timestamp\"\n\"attributes.channel\" = \"string\"\n\
             \"attributes.deep.er\" = \"number\"\n",
            Path::new("fuzz.toml"),
        )
        .expect("fuzz schema is valid");
        EventParser::new(Arc::new(schema))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parser().parse(data) {
        assert!(!event.id().is_empty());
        let _ = event.timestamp_ms();
    }
});
