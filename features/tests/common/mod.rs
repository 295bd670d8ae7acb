//! What the feature store's tests share: a schema, definitions, events.

#![allow(dead_code)]

pub mod servers;

use std::path::Path;
use std::sync::Arc;

use verdict_core::{Catalogue, Event, EventParser, Namespace, Schema, Value};
use verdict_features::{FeatureDefs, FeatureStore, StoreConfig};

pub const SCHEMA: &str = r#"
[fields]
user_id = { type = "string", required = true }
device_id = "string"
amount = "number"
"#;

/// One of each aggregate over a one-hour window (5-minute buckets), a
/// filtered count, and a ten-minute distinct count per device.
pub const DEFS: &str = r#"
[entities]
user = "user_id"
device = "device_id"

[[feature]]
entity = "user"
name = "count_1h"
agg = "count"
window = "1h"

[[feature]]
entity = "user"
name = "sum_1h"
agg = "sum"
field = "amount"
window = "1h"

[[feature]]
entity = "user"
name = "avg_1h"
agg = "avg"
field = "amount"
window = "1h"

[[feature]]
entity = "user"
name = "min_1h"
agg = "min"
field = "amount"
window = "1h"

[[feature]]
entity = "user"
name = "max_1h"
agg = "max"
field = "amount"
window = "1h"

[[feature]]
entity = "user"
name = "devices_1h"
agg = "distinct_count"
field = "device_id"
window = "1h"

[[feature]]
entity = "user"
name = "last_amount"
agg = "last"
field = "amount"

[[feature]]
entity = "user"
name = "since"
agg = "secs_since_last"

[[feature]]
entity = "user"
name = "payments_1h"
agg = "count"
window = "1h"
filter = 'event.event_type == "payment"'

[[feature]]
entity = "device"
name = "users_10m"
agg = "distinct_count"
field = "user_id"
window = "10m"
"#;

pub fn schema() -> Schema {
    Schema::parse(SCHEMA, Path::new("schema.toml")).unwrap()
}

/// A store of `defs` and the length of the feature array it fills.
pub fn store_of(defs: &str, config: StoreConfig) -> (FeatureStore, Catalogue) {
    let schema = schema();
    let mut catalogue = Catalogue::from_schema(&schema);
    let defs = FeatureDefs::parse(defs, Path::new("features.toml"), &schema).unwrap();
    let store = FeatureStore::new(defs, &mut catalogue, config).unwrap();
    (store, catalogue)
}

pub fn parser() -> EventParser {
    EventParser::new(Arc::new(schema()))
}

/// An event as the tests describe it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: String,
    pub payment: bool,
    pub t: i64,
    pub user: String,
    pub device: Option<String>,
    pub amount: Option<i64>,
}

impl Ev {
    pub fn parse(&self, parser: &EventParser) -> Event {
        let mut json = format!(
            r#"{{"event_id":"{}","event_type":"{}","timestamp":{},"user_id":"{}""#,
            self.id,
            if self.payment { "payment" } else { "login" },
            self.t,
            self.user
        );
        if let Some(d) = &self.device {
            json += &format!(r#","device_id":"{d}""#);
        }
        if let Some(a) = self.amount {
            json += &format!(r#","amount":{a}"#);
        }
        json += "}";
        parser.parse(json.as_bytes()).unwrap()
    }
}

/// The value of `path` (`feature.user.count_1h`) in a feature array.
pub fn get<'a>(catalogue: &Catalogue, out: &'a [Value], path: &str) -> &'a Value {
    let e = catalogue
        .lookup(path)
        .unwrap_or_else(|| panic!("no {path}"));
    assert_eq!(e.slot.ns, Namespace::Feature);
    &out[e.slot.index as usize]
}

pub fn features_len(catalogue: &Catalogue) -> usize {
    catalogue.len(Namespace::Feature)
}

pub const HOUR: i64 = 3_600_000;
/// A base time well clear of zero.
pub const T0: i64 = 1_764_000_000_000;
