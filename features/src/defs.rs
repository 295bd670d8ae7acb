//! Feature definitions: one TOML file of entities, streaming aggregates and
//! batch views, checked at load against the event schema.
//!
//! ```toml
//! [entities]
//! user = "user_id"          # entity = the event field that keys it
//! device = "device_id"
//!
//! [placement]               # optional: where each kind's windows live
//! device = "shared"         # local (the default: in this process) or shared (Redis)
//!
//! [[feature]]
//! entity = "user"
//! name = "txn_count_1h"
//! agg = "count"             # count sum avg min max distinct_count last secs_since_last
//! window = "1h"             # 1s … 30d (not for last / secs_since_last)
//! field = "amount"          # what sum/avg/min/max/distinct_count/last read
//! filter = 'event.event_type == "payment"'   # optional, in the rules language
//!
//! [[batch]]
//! name = "profile"
//! entity = "user"
//! key = "user_id"           # the query's column holding the entity key
//! sql = "SELECT user_id, credit_limit FROM profiles"
//! refresh_secs = 300
//! tables = { profiles = "data/profiles.csv" }   # CSV or Parquet, by extension
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use verdict_core::{Catalogue, Schema, ValueType};
use verdict_rules::Filter;

use crate::FeatureError;

/// The longest window a feature may have.
pub const MAX_WINDOW_MS: i64 = 30 * 86_400_000;
/// Buckets per window: a window's precision is its length divided by this.
pub const BUCKETS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    DistinctCount,
    Last,
    SecsSinceLast,
}

impl Agg {
    fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "distinct_count" => Agg::DistinctCount,
            "last" => Agg::Last,
            "secs_since_last" => Agg::SecsSinceLast,
            _ => return None,
        })
    }

    fn windowed(self) -> bool {
        !matches!(self, Agg::Last | Agg::SecsSinceLast)
    }
}

/// One streaming feature, resolved.
#[derive(Debug)]
pub struct StreamFeature {
    pub entity: usize,
    pub name: String,
    pub agg: Agg,
    /// Window length in milliseconds (0 for `last` / `secs_since_last`).
    pub window_ms: i64,
    /// The event slot read (for aggregates of a field).
    pub field: Option<usize>,
    pub ty: ValueType,
    pub filter: Option<Filter>,
    /// The feature's slot in the record's feature array.
    pub slot: usize,
}

/// Where an entity kind's windows are kept.
///
/// Events are partitioned by one key (the message key, `user_id` in the
/// examples): every event of one user reaches the instance that owns the
/// user's partition, so the user's windows are complete there, `local`.
/// A kind keyed by another field (a device, an IP) sees its events spread
/// over every instance of the consumer group: with more than one
/// instance, each local copy holds a fraction of them, and only `shared`
/// gives every instance the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// In this process: right for the kind of the partition key, and for
    /// every kind when one instance runs.
    #[default]
    Local,
    /// In Redis, shared by every instance (see `shared`).
    Shared,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Local => "local",
            Placement::Shared => "shared",
        }
    }
}

/// One entity kind.
#[derive(Debug)]
pub struct Entity {
    pub name: String,
    /// The event slot of its key (a string field).
    pub key_slot: usize,
    pub key_field: String,
    pub placement: Placement,
}

/// One batch view: a SQL query returning one row per entity key.
#[derive(Debug, Clone)]
pub struct BatchView {
    pub name: String,
    pub entity: usize,
    pub key: String,
    pub sql: String,
    pub refresh_secs: u64,
    pub tables: BTreeMap<String, PathBuf>,
}

/// Every definition of one file.
#[derive(Debug)]
pub struct FeatureDefs {
    pub path: PathBuf,
    pub entities: Vec<Entity>,
    pub features: Vec<StreamFeature>,
    pub batches: Vec<BatchView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    entities: BTreeMap<String, String>,
    #[serde(default)]
    placement: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    feature: Vec<toml::Spanned<RawFeature>>,
    #[serde(default)]
    batch: Vec<toml::Spanned<RawBatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    entity: String,
    name: String,
    agg: String,
    window: Option<String>,
    field: Option<String>,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    name: String,
    entity: String,
    key: String,
    sql: String,
    #[serde(default = "default_refresh")]
    refresh_secs: u64,
    tables: BTreeMap<String, PathBuf>,
}

fn default_refresh() -> u64 {
    300
}

/// `30s`, `5m`, `1h`, `7d` in milliseconds.
pub fn parse_window(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl FeatureDefs {
    /// Reads and checks a definitions file.
    pub fn load(path: &Path, schema: &Schema) -> Result<FeatureDefs, FeatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| FeatureError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        FeatureDefs::parse(&text, path, schema)
    }

    /// Checks definitions text; `path` names it in errors and anchors the
    /// batch tables' relative paths.
    pub fn parse(text: &str, path: &Path, schema: &Schema) -> Result<FeatureDefs, FeatureError> {
        let bad = |line: usize, message: String| FeatureError::Definition {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            bad(line, e.message().to_owned())
        })?;
        let catalogue = Catalogue::from_schema(schema);
        let mut entities = Vec::new();
        for (name, field) in &raw.entities {
            let key_slot = schema.slot(field).ok_or_else(|| {
                bad(1, format!("entity `{name}` is keyed by `{field}`, which the event schema does not declare"))
            })?;
            if schema.fields()[key_slot].ty != ValueType::String {
                return Err(bad(
                    1,
                    format!("entity `{name}` is keyed by `{field}`, which is not a string"),
                ));
            }
            entities.push(Entity {
                name: name.clone(),
                key_slot,
                key_field: field.clone(),
                placement: Placement::Local,
            });
        }
        for (name, value) in &raw.placement {
            let line = line_of(text, value.span().start);
            let entity = entities.iter_mut().find(|e| &e.name == name).ok_or_else(|| {
                bad(
                    line,
                    format!("[placement] names `{name}`, which is not an entity; declare it under [entities]"),
                )
            })?;
            entity.placement = match value.get_ref().as_str() {
                "local" => Placement::Local,
                "shared" => Placement::Shared,
                other => {
                    return Err(bad(
                        line,
                        format!(
                            "placement `{other}` for `{name}`: use \"local\" (kept in this process) or \"shared\" (kept in Redis, for a kind that is not the message key when several instances run)"
                        ),
                    ));
                }
            };
        }
        let entity_index = |name: &str, line: usize| {
            entities.iter().position(|e| e.name == name).ok_or_else(|| {
                bad(
                    line,
                    format!("unknown entity `{name}`; declare it under [entities]"),
                )
            })
        };
        let mut features: Vec<StreamFeature> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for spanned in &raw.feature {
            let line = line_of(text, spanned.span().start);
            let f = spanned.get_ref();
            let entity = entity_index(&f.entity, line)?;
            if !seen.insert(format!("{}.{}", f.entity, f.name)) {
                return Err(bad(
                    line,
                    format!("the feature `{}.{}` is defined twice", f.entity, f.name),
                ));
            }
            let agg = Agg::parse(&f.agg).ok_or_else(|| {
                bad(line, format!("unknown aggregate `{}`; use count, sum, avg, min, max, distinct_count, last or secs_since_last", f.agg))
            })?;
            let window_ms = match (&f.window, agg.windowed()) {
                (Some(w), true) => {
                    let ms = parse_window(w).ok_or_else(|| {
                        bad(
                            line,
                            format!("window `{w}` is not a duration like 30s, 5m, 1h or 7d"),
                        )
                    })?;
                    if !(1_000..=MAX_WINDOW_MS).contains(&ms) {
                        return Err(bad(line, format!("window `{w}` is outside 1s to 30d")));
                    }
                    ms
                }
                (None, true) => return Err(bad(line, format!("`{}` needs a window", f.agg))),
                (Some(_), false) => return Err(bad(line, format!("`{}` takes no window", f.agg))),
                (None, false) => 0,
            };
            let needs_field = !matches!(agg, Agg::Count | Agg::SecsSinceLast);
            let field = match (&f.field, needs_field) {
                (Some(name), true) => {
                    let slot = schema
                        .slot(name)
                        .ok_or_else(|| bad(line, format!("unknown event field `{name}`")))?;
                    let ty = schema.fields()[slot].ty;
                    let numeric = matches!(agg, Agg::Sum | Agg::Avg | Agg::Min | Agg::Max);
                    if numeric && ty != ValueType::Number {
                        return Err(bad(
                            line,
                            format!("`{}` needs a number field, but `{name}` is a {ty}", f.agg),
                        ));
                    }
                    Some(slot)
                }
                (None, true) => return Err(bad(line, format!("`{}` needs a field", f.agg))),
                (Some(_), false) => return Err(bad(line, format!("`{}` takes no field", f.agg))),
                (None, false) => None,
            };
            let ty = match agg {
                Agg::Last => schema.fields()[field.unwrap_or(0)].ty,
                _ => ValueType::Number,
            };
            let filter = match &f.filter {
                Some(src) => Some(
                    Filter::compile(src, &catalogue)
                        .map_err(|d| bad(line, format!("the filter does not check:\n{d}")))?,
                ),
                None => None,
            };
            features.push(StreamFeature {
                entity,
                name: f.name.clone(),
                agg,
                window_ms,
                field,
                ty,
                filter,
                slot: usize::MAX,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut batches = Vec::new();
        for spanned in &raw.batch {
            let line = line_of(text, spanned.span().start);
            let b = spanned.get_ref();
            let entity = entity_index(&b.entity, line)?;
            if b.tables.is_empty() {
                return Err(bad(
                    line,
                    format!("batch view `{}` names no tables", b.name),
                ));
            }
            let tables = b
                .tables
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        if p.is_absolute() {
                            p.clone()
                        } else {
                            base.join(p)
                        },
                    )
                })
                .collect();
            batches.push(BatchView {
                name: b.name.clone(),
                entity,
                key: b.key.clone(),
                sql: b.sql.clone(),
                refresh_secs: b.refresh_secs.max(1),
                tables,
            });
        }
        Ok(FeatureDefs {
            path: path.to_path_buf(),
            entities,
            features,
            batches,
        })
    }

    /// Places kind `name` as `placement` says (`local` or `shared`), over
    /// what the definitions say; an unknown kind or placement is an error
    /// that says which.
    pub fn place(&mut self, name: &str, placement: &str) -> Result<(), String> {
        let kinds: Vec<&str> = self.entities.iter().map(|e| e.name.as_str()).collect();
        let known = kinds.join(", ");
        let entity = self
            .entities
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                format!("`{name}` is not an entity kind of the definitions ({known})")
            })?;
        entity.placement = match placement {
            "local" => Placement::Local,
            "shared" => Placement::Shared,
            other => {
                return Err(format!(
                    "placement `{other}` for `{name}`: use \"local\" (kept in this process) or \"shared\" (kept in Redis)"
                ));
            }
        };
        Ok(())
    }

    /// Places every kind `local`: for a process that sees every event of
    /// the stream (a replay, an export, a backtest), where the local
    /// windows are the whole and equal the shared ones.
    pub fn place_all_local(&mut self) {
        for e in &mut self.entities {
            e.placement = Placement::Local;
        }
    }

    /// The kinds placed `shared`, by name.
    pub fn shared_kinds(&self) -> impl Iterator<Item = &str> {
        self.entities
            .iter()
            .filter(|e| e.placement == Placement::Shared)
            .map(|e| e.name.as_str())
    }

    /// Whether any entity kind is placed `shared`.
    pub fn has_shared(&self) -> bool {
        self.entities
            .iter()
            .any(|e| e.placement == Placement::Shared)
    }

    /// The longest window of any feature (entities idle longer are evicted).
    pub fn longest_window_ms(&self) -> i64 {
        self.features
            .iter()
            .map(|f| f.window_ms)
            .max()
            .unwrap_or(0)
            .max(86_400_000)
    }
}
