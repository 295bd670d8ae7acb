//! Any bytes as a chargeback file, CSV and Parquet: loaded or refused with
//! an error, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_backtest::Chargebacks;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("verdict-backtest-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary folder");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    for name in ["cb.csv", "cb.parquet"] {
        let path = dir().join(name);
        std::fs::write(&path, data).expect("the temporary file is writable");
        if let Ok(cb) = Chargebacks::load(&path) {
            let _ = cb.contains("e-1");
        }
    }
});
