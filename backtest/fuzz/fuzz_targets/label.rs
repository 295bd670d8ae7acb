//! Any bytes as an event whose label is read: a label, no label, or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_backtest::{LabelField, LabelRule};

fuzz_target!(|data: &[u8]| {
    for field in ["label", "attributes.fraud"] {
        let mut l = LabelField::new(field, LabelRule::LegitValues(vec!["legit".into(), "0".into()]))
            .expect("a valid field");
        let _ = l.classify("fuzz", data);
        let _ = l.check();
    }
});
