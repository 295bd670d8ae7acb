//! Any bytes as what Redis hands back for a shared entity — its stored
//! state, and what an event read on its first delivery — applied as a call
//! of the shared store does: an error for anything malformed, never a
//! panic. The bytes come from the network, from whatever answers at the
//! Redis address (or another program writing the keys).
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use verdict_core::{Catalogue, EventParser, Schema};
use verdict_features::shared::{SharedBatch, SharedConfig, apply_stored};
use verdict_features::{FeatureDefs, FeatureStore, StoreConfig, UpdateOutcome};

const SCHEMA: &str = include_str!("../../../examples/schema.toml");
const DEFS: &str = include_str!("../../../examples/features.toml");

/// A batch of one event on the example definitions with the user, device
/// and IP shared (a user has every aggregate).
fn batch() -> &'static (FeatureStore, SharedBatch) {
    static BATCH: OnceLock<(FeatureStore, SharedBatch)> = OnceLock::new();
    BATCH.get_or_init(|| {
        let schema = Schema::parse(SCHEMA, Path::new("schema.toml")).unwrap();
        let mut catalogue = Catalogue::from_schema(&schema);
        let defs = DEFS
            .split("# --- batch")
            .next()
            .unwrap()
            .replace("# [placement]\n# device = \"shared\"\n# ip = \"shared\"", "[placement]\nuser = \"shared\"\ndevice = \"shared\"\nip = \"shared\"");
        let defs = FeatureDefs::parse(&defs, Path::new("features.toml"), &schema).unwrap();
        let store = FeatureStore::new(defs, &mut catalogue, StoreConfig::default()).unwrap();
        let mut batch = store.shared_batch(&SharedConfig::default());
        let parser = EventParser::new(Arc::new(schema));
        let event = parser
            .parse(br#"{"event_id":"e1","event_type":"payment","timestamp":"2026-01-01T00:00:00Z","user_id":"u1","device_id":"d1","ip":"1.2.3.4","amount":10}"#)
            .unwrap();
        store.push_shared(&event, UpdateOutcome::Added, &mut batch);
        (store, batch)
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte: whether a state and a read are present, and where
    // the read starts.
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let cut = (usize::from(head >> 2)).min(rest.len());
    let (state, read) = rest.split_at(rest.len() - cut);
    let state = (head & 1 == 1).then_some(state);
    let read = (head & 2 == 2).then_some(read);
    let _ = apply_stored(&batch().1, "user", state, &[read]);
});
