//! Any bytes as a history file, read both as JSON lines and as Parquet:
//! the reader hands out events or returns an error, never panics, and what
//! it hands out is in time order.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_history::{HistoryReader, OnInvalid, ReaderOptions};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("verdict-history-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary folder");
        d
    })
}

fn read_all(path: &std::path::Path, on_invalid: OnInvalid) {
    let options = ReaderOptions {
        on_invalid,
        ..ReaderOptions::default()
    };
    let Ok(mut r) = HistoryReader::open(path.to_str().expect("utf-8 path"), &options) else {
        return;
    };
    let mut last = i64::MIN;
    while let Ok(Some(e)) = r.next() {
        assert!(e.timestamp_ms >= last, "events out of time order");
        last = e.timestamp_ms;
        if let Some(d) = e.recorded {
            let _ = d.to_decision(e.event_id);
            let _ = d.position();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for (name, on_invalid) in [
        ("h.jsonl", OnInvalid::Fail),
        ("s.jsonl", OnInvalid::Skip),
        ("h.parquet", OnInvalid::Fail),
    ] {
        let path = dir().join(name);
        std::fs::write(&path, data).expect("the temporary file is writable");
        read_all(&path, on_invalid);
    }
});
