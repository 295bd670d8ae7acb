//! Any bytes as an event: the parser returns an event or a rejection, never
//! panics, and an accepted event has its built-in fields; reading into a
//! reused event (one that held another event) gives the same outcome.
#![no_main]

use std::path::Path;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use verdict_core::{Event, EventParser, Schema};

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

thread_local! {
    static REUSED: RefCell<Event> = RefCell::new(parser().new_event());
}

fuzz_target!(|data: &[u8]| {
    let fresh = parser().parse(data);
    if let Ok(event) = &fresh {
        assert!(!event.id().is_empty());
        let _ = event.timestamp_ms();
    }
    REUSED.with(|e| {
        let mut e = e.borrow_mut();
        let reused = parser().parse_into(data, &mut e);
        assert_eq!(reused.as_ref().err(), fresh.as_ref().err());
        if let Ok(event) = &fresh {
            assert_eq!(*event, *e);
        }
    });
});
