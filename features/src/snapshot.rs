//! Snapshots: the whole store in one Arrow IPC file, with the source
//! positions it covers, so a restarted instance resumes with the same
//! features (and replays only the events after those positions).
//!
//! One row per entity: its kind, its key, its states encoded as bytes, and
//! a checksum of the three. The file's metadata holds the positions, the
//! event-time watermark, a fingerprint of the definitions (a snapshot taken
//! with other definitions is refused rather than misread) and a checksum of
//! them. A damaged file — a flipped bit that would still decode, a file cut
//! short, malformed Arrow data — is refused whole, before the store changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{
    Array, AsArray, BinaryBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt32Type, UInt64Type};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::FeatureError;
use crate::codec::{decode_states, encode_states};
use crate::defs::{BUCKETS, Placement};
use crate::entity::Entity;
use crate::store::FeatureStore;

const ROWS_PER_BATCH: usize = 65_536;

/// A checksum of `parts`, each length-prefixed so that bytes cannot move
/// from one part to the next unnoticed.
fn checksum(parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0);
    for part in parts {
        h.write_u64(part.len() as u64);
        h.write(part);
    }
    h.finish()
}

/// The checksum of one row: its entity kind, key and encoded states.
fn row_check(entity: u32, key: &str, state: &[u8]) -> u64 {
    checksum(&[&entity.to_le_bytes(), key.as_bytes(), state])
}

/// The checksum of the metadata Verdict reads back.
fn metadata_check(definitions: &str, positions: &str, watermark: &str) -> String {
    let sum = checksum(&[
        definitions.as_bytes(),
        positions.as_bytes(),
        watermark.as_bytes(),
    ]);
    format!("{sum:016x}")
}

impl FeatureStore {
    /// A fingerprint of the streaming definitions a snapshot is valid for.
    fn fingerprint(&self) -> String {
        // The encoding's version: 2 since the sketch's ranks were fixed.
        let defs = &self.inner.defs;
        let mut s = format!("format=2;buckets={BUCKETS};");
        for f in &defs.features {
            s += &format!(
                "{}.{}:{:?}:{}:{:?}:{};",
                defs.entities[f.entity].name,
                f.name,
                f.agg,
                f.window_ms,
                f.field,
                f.filter.as_ref().map_or("", |x| x.text())
            );
        }
        // Shared kinds are not in a snapshot: one taken while a kind was
        // local does not restore once it is shared, nor the other way.
        for e in defs
            .entities
            .iter()
            .filter(|e| e.placement == Placement::Shared)
        {
            s += &format!("shared={};", e.name);
        }
        s
    }

    /// Every entity's state as a snapshot encodes it, ordered by kind and
    /// key: two stores hold the same features exactly when these are equal.
    pub fn encoded_entities(&self) -> BTreeMap<(usize, Box<str>), Vec<u8>> {
        let mut out = BTreeMap::new();
        for (e, map) in self.inner.maps.iter().enumerate() {
            let layout = &self.inner.layouts[e];
            map.for_each(|entity| {
                let mut buf = Vec::new();
                encode_states(entity.last_seen, &entity.export(layout), &mut buf);
                out.insert((e, entity.key().into_boxed_str()), buf);
            });
        }
        out
    }

    /// Writes the whole store and the source `positions` it covers to
    /// `path` (atomically: a temporary file renamed into place).
    pub fn snapshot(
        &self,
        path: &Path,
        positions: &BTreeMap<String, i64>,
    ) -> Result<usize, FeatureError> {
        let fail = |message: String| FeatureError::Snapshot {
            path: path.to_path_buf(),
            message,
        };
        let definitions = self.fingerprint();
        let positions = serde_json::to_string(positions).map_err(|e| fail(e.to_string()))?;
        let watermark = self.inner.watermark.load(Ordering::Acquire).to_string();
        let mut metadata = std::collections::HashMap::new();
        metadata.insert(
            "verdict.check".to_owned(),
            metadata_check(&definitions, &positions, &watermark),
        );
        metadata.insert("verdict.definitions".to_owned(), definitions);
        metadata.insert("verdict.positions".to_owned(), positions);
        metadata.insert("verdict.watermark".to_owned(), watermark);
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("entity", DataType::UInt32, false),
                Field::new("key", DataType::Utf8, false),
                Field::new("state", DataType::Binary, false),
                Field::new("check", DataType::UInt64, false),
            ])
            .with_metadata(metadata),
        );
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let file = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
        let mut writer = FileWriter::try_new(std::io::BufWriter::new(file), &schema)
            .map_err(|e| fail(e.to_string()))?;
        let mut rows = 0;
        let mut content = twox_hash::XxHash64::with_seed(0);
        let mut buf = Vec::new();
        for (e, map) in self.inner.maps.iter().enumerate() {
            let layout = &self.inner.layouts[e];
            let mut entity = UInt32Builder::new();
            let mut keys = StringBuilder::new();
            let mut states = BinaryBuilder::new();
            let mut checks = UInt64Builder::new();
            let mut n = 0;
            let mut flush = |entity: &mut UInt32Builder,
                             keys: &mut StringBuilder,
                             states: &mut BinaryBuilder,
                             checks: &mut UInt64Builder| {
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(entity.finish()),
                        Arc::new(keys.finish()),
                        Arc::new(states.finish()),
                        Arc::new(checks.finish()),
                    ],
                )
                .map_err(|e| fail(e.to_string()))?;
                writer.write(&batch).map_err(|e| fail(e.to_string()))
            };
            let mut failed = None;
            map.for_each(|item| {
                if failed.is_some() {
                    return;
                }
                let key = item.key();
                buf.clear();
                encode_states(item.last_seen, &item.export(layout), &mut buf);
                entity.append_value(e as u32);
                keys.append_value(&key);
                states.append_value(&buf);
                let check = row_check(e as u32, &key, &buf);
                checks.append_value(check);
                std::hash::Hasher::write_u64(&mut content, check);
                n += 1;
                rows += 1;
                if n == ROWS_PER_BATCH {
                    if let Err(err) = flush(&mut entity, &mut keys, &mut states, &mut checks) {
                        failed = Some(err);
                    }
                    n = 0;
                }
            });
            if let Some(err) = failed {
                return Err(err);
            }
            if n > 0 {
                flush(&mut entity, &mut keys, &mut states, &mut checks)?;
            }
        }
        // In the footer, written last: how many rows, and a checksum of
        // their checksums in order, so a lost batch is noticed too.
        writer.write_metadata("verdict.rows", rows.to_string());
        writer.write_metadata(
            "verdict.content",
            format!("{:016x}", std::hash::Hasher::finish(&content)),
        );
        writer.finish().map_err(|e| fail(e.to_string()))?;
        drop(writer);
        std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
        tracing::info!(path = %path.display(), entities = rows, "feature snapshot written");
        Ok(rows)
    }

    /// Replaces the store's state with a snapshot's; returns the positions
    /// it covers. Refuses a snapshot of other definitions, or a damaged one,
    /// leaving the store as it was.
    pub fn restore(&self, path: &Path) -> Result<BTreeMap<String, i64>, FeatureError> {
        let fail = |message: String| FeatureError::Snapshot {
            path: path.to_path_buf(),
            message,
        };
        // Arrow's reader panics on some malformed files rather than erring:
        // contained here, a damaged file is an error like any other.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(path)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("malformed data");
                Err(format!("it is damaged ({what})"))
            });
        let Read {
            positions,
            watermark,
            rows,
        } = read.map_err(|m| {
            fail(format!(
                "{m}; delete it to start empty (the features rebuild from the events)"
            ))
        })?;
        for map in &self.inner.maps {
            map.clear();
        }
        let mut grown = 0;
        let entities = rows.len();
        for (e, entity) in rows {
            grown += entity.heap_bytes() + entity.key_bytes();
            self.inner.maps[e].insert(entity);
        }
        self.inner.grown.store(grown as i64, Ordering::Relaxed);
        self.inner.watermark.store(watermark, Ordering::Release);
        tracing::info!(path = %path.display(), entities, "feature snapshot restored");
        Ok(positions)
    }

    /// Reads and checks a whole snapshot without touching the store.
    fn read(&self, path: &Path) -> Result<Read, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let reader = FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| format!("not an Arrow IPC file: {e}"))?;
        let meta = reader.schema().metadata().clone();
        let get = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
        if get("verdict.check")
            != metadata_check(
                get("verdict.definitions"),
                get("verdict.positions"),
                get("verdict.watermark"),
            )
        {
            return Err("it is damaged (its metadata does not match its checksum)".into());
        }
        if get("verdict.definitions") != self.fingerprint() {
            return Err("it was taken with other feature definitions".into());
        }
        let positions: BTreeMap<String, i64> = serde_json::from_str(get("verdict.positions"))
            .map_err(|_| "it has no source positions".to_owned())?;
        let watermark: i64 = get("verdict.watermark")
            .parse()
            .map_err(|_| "it has no watermark".to_owned())?;
        let footer = reader.custom_metadata().clone();
        let mut content = twox_hash::XxHash64::with_seed(0);
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| format!("it is damaged ({e})"))?;
            if batch.num_columns() != 4 {
                return Err("unexpected columns".into());
            }
            let entity = batch
                .column(0)
                .as_primitive_opt::<UInt32Type>()
                .ok_or("bad entity column")?;
            let keys = batch
                .column(1)
                .as_string_opt::<i32>()
                .ok_or("bad key column")?;
            let states = batch
                .column(2)
                .as_binary_opt::<i32>()
                .ok_or("bad state column")?;
            let checks = batch
                .column(3)
                .as_primitive_opt::<UInt64Type>()
                .ok_or("bad check column")?;
            for r in 0..batch.num_rows() {
                if keys.is_null(r) || states.is_null(r) || entity.is_null(r) || checks.is_null(r) {
                    return Err("null key or state".into());
                }
                let (kind, key, bytes) = (entity.value(r), keys.value(r), states.value(r));
                std::hash::Hasher::write_u64(&mut content, checks.value(r));
                if checks.value(r) != row_check(kind, key, bytes) {
                    return Err(format!(
                        "it is damaged (the row of `{key}` does not match its checksum)"
                    ));
                }
                let e = kind as usize;
                let layout = self
                    .inner
                    .layouts
                    .get(e)
                    .filter(|_| self.inner.defs.entities[e].placement == Placement::Local)
                    .ok_or_else(|| format!("unknown entity kind {e}"))?;
                let corrupt = || format!("the state of `{key}` is corrupt");
                let state = decode_states(bytes, layout.places.len()).ok_or_else(corrupt)?;
                let hash = self.inner.keys.hash_one(key);
                let entity = Entity::import(layout, hash, key, state.last_seen, state.states)
                    .ok_or_else(corrupt)?;
                rows.push((e, entity));
            }
        }
        let content = format!("{:016x}", std::hash::Hasher::finish(&content));
        if footer.get("verdict.rows") != Some(&rows.len().to_string())
            || footer.get("verdict.content") != Some(&content)
        {
            return Err(
                "it is damaged (its rows do not match the count and checksum at its end)".into(),
            );
        }
        Ok(Read {
            positions,
            watermark,
            rows,
        })
    }
}

/// A snapshot read and checked, not yet applied.
struct Read {
    positions: BTreeMap<String, i64>,
    watermark: i64,
    rows: Vec<(usize, Entity)>,
}
