//! Any bytes as a reply of the shared store's script (what a Redis server,
//! or whatever answers in its place, sends back): `parse_reply` returns the
//! values or a `ReplyError`, never panics, and accepted values are one per
//! feature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_features::Agg;
use verdict_features::shared::parse_reply;

const AGGS: [Agg; 4] = [Agg::Count, Agg::DistinctCount, Agg::Last, Agg::Avg];

fuzz_target!(|data: &[u8]| {
    // The first byte picks how many features the kind has.
    let Some((&n, reply)) = data.split_first() else {
        return;
    };
    let aggs = &AGGS[..usize::from(n) % (AGGS.len() + 1)];
    if let Ok(values) = parse_reply(reply, aggs) {
        assert_eq!(values.len(), aggs.len());
    }
});
