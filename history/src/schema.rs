//! The decision log's columns, and the builder that turns rows into one
//! sorted Arrow batch (what a Parquet row group holds).
//!
//! The columns are specified in `docs/contracts.md` ("The decision log");
//! this module is their one definition in code.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListArray,
    PrimitiveBuilder, RecordBatch, StringBuilder, StructArray, UInt32Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    DataType, Field, Fields, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use verdict_core::{Action, Hit, Position};

/// The format version written to every file's key-value metadata under
/// [`META_VERSION`]. Columns may be added without changing it; a reader
/// ignores columns it does not know.
pub const FORMAT_VERSION: &str = "1";
/// Key-value metadata key: the format version.
pub const META_VERSION: &str = "verdict.history.version";
/// Key-value metadata key: the instance that wrote the file.
pub const META_INSTANCE: &str = "verdict.history.instance";

pub(crate) const C_EVENT_ID: &str = "event_id";
pub(crate) const C_TIMESTAMP: &str = "timestamp";
pub(crate) const C_EVENT: &str = "event";
pub(crate) const C_DECISION: &str = "decision";
pub(crate) const C_HITS: &str = "hits";
pub(crate) const C_SHADOW_HITS: &str = "shadow_hits";
pub(crate) const C_SCORES: &str = "scores";
pub(crate) const C_RULESET_VERSION: &str = "ruleset_version";
pub(crate) const C_MODEL_VERSION: &str = "model_version";
pub(crate) const C_DEGRADED: &str = "degraded";
pub(crate) const C_LATENCY_US: &str = "latency_us";
pub(crate) const C_DECIDED_AT: &str = "decided_at";
pub(crate) const C_INSTANCE: &str = "instance";
pub(crate) const C_SOURCE_TOPIC: &str = "source_topic";
pub(crate) const C_SOURCE_PARTITION: &str = "source_partition";
pub(crate) const C_SOURCE_OFFSET: &str = "source_offset";
pub(crate) const C_SOURCE_FILE: &str = "source_file";
pub(crate) const C_SOURCE_LINE: &str = "source_line";
pub(crate) const C_SOURCE_HTTP: &str = "source_http";

/// Column indices in [`schema`], in order.
pub(crate) mod col {
    pub const EVENT_ID: usize = 0;
    pub const TIMESTAMP: usize = 1;
    pub const EVENT: usize = 2;
    pub const DECISION: usize = 3;
    pub const HITS: usize = 4;
    pub const SHADOW_HITS: usize = 5;
    pub const SCORES: usize = 6;
    pub const RULESET_VERSION: usize = 7;
    pub const MODEL_VERSION: usize = 8;
    pub const DEGRADED: usize = 9;
    pub const LATENCY_US: usize = 10;
    pub const DECIDED_AT: usize = 11;
    pub const INSTANCE: usize = 12;
    pub const SOURCE_TOPIC: usize = 13;
    pub const SOURCE_PARTITION: usize = 14;
    pub const SOURCE_OFFSET: usize = 15;
    pub const SOURCE_FILE: usize = 16;
    pub const SOURCE_LINE: usize = 17;
    pub const SOURCE_HTTP: usize = 18;
    pub const COUNT: usize = 19;
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub(crate) fn hit_fields() -> Fields {
    Fields::from(vec![
        Field::new("rule", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ])
}

pub(crate) fn score_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}

fn hits_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(hit_fields()),
        false,
    )))
}

fn scores_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(score_fields()),
        false,
    )))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(C_EVENT_ID, DataType::Utf8, false),
        Field::new(C_TIMESTAMP, ts_type(), false),
        Field::new(C_EVENT, DataType::Binary, false),
        Field::new(C_DECISION, DataType::Utf8, true),
        Field::new(C_HITS, hits_type(), true),
        Field::new(C_SHADOW_HITS, hits_type(), true),
        Field::new(C_SCORES, scores_type(), true),
        Field::new(C_RULESET_VERSION, DataType::Utf8, true),
        Field::new(C_MODEL_VERSION, DataType::Utf8, true),
        Field::new(C_DEGRADED, DataType::Boolean, true),
        Field::new(C_LATENCY_US, DataType::Int64, true),
        Field::new(C_DECIDED_AT, ts_type(), true),
        Field::new(C_INSTANCE, DataType::Utf8, true),
        Field::new(C_SOURCE_TOPIC, DataType::Utf8, true),
        Field::new(C_SOURCE_PARTITION, DataType::Int32, true),
        Field::new(C_SOURCE_OFFSET, DataType::Int64, true),
        Field::new(C_SOURCE_FILE, DataType::Utf8, true),
        Field::new(C_SOURCE_LINE, DataType::Int64, true),
        Field::new(C_SOURCE_HTTP, DataType::Utf8, true),
    ]))
});

/// The Arrow schema of the decision log: what every file holds, and what
/// every batch the reader works on holds (JSON-lines files are converted
/// to it, with the decision columns null for plain events).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Where a decided event came from, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionRef<'a> {
    /// No position known.
    None,
    Kafka {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    File {
        file: &'a str,
        line: u64,
    },
    Http {
        http: &'a str,
    },
}

impl<'a> From<&'a Position> for PositionRef<'a> {
    fn from(p: &'a Position) -> PositionRef<'a> {
        match p {
            Position::Kafka {
                topic,
                partition,
                offset,
            } => PositionRef::Kafka {
                topic,
                partition: *partition,
                offset: *offset,
            },
            Position::File { file, line } => PositionRef::File { file, line: *line },
            Position::Http { http } => PositionRef::Http { http },
        }
    }
}

impl PositionRef<'_> {
    /// The owned position, `None` when unknown.
    pub fn to_position(self) -> Option<Position> {
        match self {
            PositionRef::None => None,
            PositionRef::Kafka {
                topic,
                partition,
                offset,
            } => Some(Position::Kafka {
                topic: topic.to_owned(),
                partition,
                offset,
            }),
            PositionRef::File { file, line } => Some(Position::File {
                file: file.to_owned(),
                line,
            }),
            PositionRef::Http { http } => Some(Position::Http {
                http: http.to_owned(),
            }),
        }
    }
}

/// One decided row to append, borrowed from wherever it is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecidedRow<'a> {
    pub event_id: &'a str,
    pub timestamp_ms: i64,
    pub event: &'a [u8],
    pub decision: Action,
    pub hits: &'a [Hit],
    pub shadow_hits: &'a [Hit],
    pub scores: &'a [(Arc<str>, f64)],
    pub ruleset_version: &'a str,
    pub model_version: Option<&'a str>,
    pub degraded: bool,
    pub latency_us: u64,
    pub decided_at_ms: i64,
    pub instance: &'a str,
    pub position: PositionRef<'a>,
}

/// A `List<Struct<…>>` column built from its parts.
#[derive(Debug, Default)]
struct ListParts {
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl ListParts {
    fn new() -> ListParts {
        ListParts {
            offsets: vec![0],
            valid: Vec::new(),
        }
    }

    fn close(&mut self, children: usize, valid: bool) {
        // A row group holds far fewer than 2^31 hits; the builder flushes
        // by rows and bytes long before.
        self.offsets.push(children as i32);
        self.valid.push(valid);
    }

    fn finish(&mut self, fields: Fields, columns: Vec<ArrayRef>) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let valid = std::mem::take(&mut self.valid);
        let nulls = if valid.iter().all(|v| *v) {
            None
        } else {
            Some(NullBuffer::from(valid))
        };
        let values = StructArray::new(fields.clone(), columns, None);
        let item = Arc::new(Field::new("item", DataType::Struct(fields), false));
        Arc::new(ListArray::new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(values),
            nulls,
        ))
    }
}

#[derive(Debug)]
struct HitsBuilder {
    list: ListParts,
    rule: StringBuilder,
    action: StringBuilder,
    reason: StringBuilder,
    len: usize,
}

impl HitsBuilder {
    fn new() -> HitsBuilder {
        HitsBuilder {
            list: ListParts::new(),
            rule: StringBuilder::new(),
            action: StringBuilder::new(),
            reason: StringBuilder::new(),
            len: 0,
        }
    }

    fn push(&mut self, hits: &[Hit]) {
        for h in hits {
            self.rule.append_value(&*h.rule);
            self.action.append_value(h.action.as_str());
            self.reason.append_value(&*h.reason);
        }
        self.len += hits.len();
        self.list.close(self.len, true);
    }

    fn push_null(&mut self) {
        self.list.close(self.len, false);
    }

    fn finish(&mut self) -> ArrayRef {
        self.len = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.rule.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.reason.finish()),
        ];
        self.list.finish(hit_fields(), cols)
    }
}

#[derive(Debug)]
struct ScoresBuilder {
    list: ListParts,
    name: StringBuilder,
    value: Float64Builder,
    len: usize,
}

impl ScoresBuilder {
    fn new() -> ScoresBuilder {
        ScoresBuilder {
            list: ListParts::new(),
            name: StringBuilder::new(),
            value: Float64Builder::new(),
            len: 0,
        }
    }

    fn push(&mut self, scores: &[(Arc<str>, f64)]) {
        for (n, v) in scores {
            self.name.append_value(&**n);
            self.value.append_value(*v);
        }
        self.len += scores.len();
        self.list.close(self.len, true);
    }

    fn push_null(&mut self) {
        self.list.close(self.len, false);
    }

    fn finish(&mut self) -> ArrayRef {
        self.len = 0;
        let cols: Vec<ArrayRef> = vec![Arc::new(self.name.finish()), Arc::new(self.value.finish())];
        self.list.finish(score_fields(), cols)
    }
}

/// Rows appended one by one, in arrival order, finished into one Arrow
/// batch sorted by event time (ties in arrival order). The writer holds
/// one of these per row group; the JSON-lines reader one per file.
#[derive(Debug)]
pub(crate) struct RowsBuilder {
    rows: usize,
    bytes: usize,
    timestamps: Vec<i64>,
    event_id: StringBuilder,
    event: BinaryBuilder,
    decision: StringBuilder,
    hits: HitsBuilder,
    shadow_hits: HitsBuilder,
    scores: ScoresBuilder,
    ruleset_version: StringBuilder,
    model_version: StringBuilder,
    degraded: BooleanBuilder,
    latency_us: Int64Builder,
    decided_at: PrimitiveBuilder<TimestampMillisecondType>,
    instance: StringBuilder,
    source_topic: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    source_file: StringBuilder,
    source_line: Int64Builder,
    source_http: StringBuilder,
}

impl Default for RowsBuilder {
    fn default() -> Self {
        RowsBuilder::new()
    }
}

impl RowsBuilder {
    pub fn new() -> RowsBuilder {
        RowsBuilder {
            rows: 0,
            bytes: 0,
            timestamps: Vec::new(),
            event_id: StringBuilder::new(),
            event: BinaryBuilder::new(),
            decision: StringBuilder::new(),
            hits: HitsBuilder::new(),
            shadow_hits: HitsBuilder::new(),
            scores: ScoresBuilder::new(),
            ruleset_version: StringBuilder::new(),
            model_version: StringBuilder::new(),
            degraded: BooleanBuilder::new(),
            latency_us: Int64Builder::new(),
            decided_at: PrimitiveBuilder::new(),
            instance: StringBuilder::new(),
            source_topic: StringBuilder::new(),
            source_partition: Int32Builder::new(),
            source_offset: Int64Builder::new(),
            source_file: StringBuilder::new(),
            source_line: Int64Builder::new(),
            source_http: StringBuilder::new(),
        }
    }

    /// Rows appended since the last [`RowsBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// A rough count of the bytes held, for flushing by size.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn push_key(&mut self, event_id: &str, timestamp_ms: i64, event: &[u8]) {
        self.rows += 1;
        self.bytes += event_id.len() + event.len() + 64;
        self.timestamps.push(timestamp_ms);
        self.event_id.append_value(event_id);
        self.event.append_value(event);
    }

    /// Appends an event with no recorded decision (a plain event file).
    pub fn push_plain(&mut self, event_id: &str, timestamp_ms: i64, event: &[u8]) {
        self.push_key(event_id, timestamp_ms, event);
        self.decision.append_null();
        self.hits.push_null();
        self.shadow_hits.push_null();
        self.scores.push_null();
        self.ruleset_version.append_null();
        self.model_version.append_null();
        self.degraded.append_null();
        self.latency_us.append_null();
        self.decided_at.append_null();
        self.instance.append_null();
        self.push_position(PositionRef::None);
    }

    /// Appends a decided event.
    pub fn push_decided(&mut self, row: &DecidedRow<'_>) {
        self.push_key(row.event_id, row.timestamp_ms, row.event);
        self.bytes += row
            .hits
            .iter()
            .chain(row.shadow_hits)
            .map(|h| h.rule.len() + h.reason.len() + 8)
            .sum::<usize>()
            + row.scores.len() * 16;
        self.decision.append_value(row.decision.as_str());
        self.hits.push(row.hits);
        self.shadow_hits.push(row.shadow_hits);
        self.scores.push(row.scores);
        self.ruleset_version.append_value(row.ruleset_version);
        self.model_version.append_option(row.model_version);
        self.degraded.append_value(row.degraded);
        self.latency_us
            .append_value(i64::try_from(row.latency_us).unwrap_or(i64::MAX));
        self.decided_at.append_value(row.decided_at_ms);
        self.instance.append_value(row.instance);
        self.push_position(row.position);
    }

    fn push_position(&mut self, p: PositionRef<'_>) {
        let (topic, partition, offset, file, line, http) = match p {
            PositionRef::None => (None, None, None, None, None, None),
            PositionRef::Kafka {
                topic,
                partition,
                offset,
            } => (Some(topic), Some(partition), Some(offset), None, None, None),
            PositionRef::File { file, line } => (
                None,
                None,
                None,
                Some(file),
                Some(i64::try_from(line).unwrap_or(i64::MAX)),
                None,
            ),
            PositionRef::Http { http } => (None, None, None, None, None, Some(http)),
        };
        self.source_topic.append_option(topic);
        self.source_partition.append_option(partition);
        self.source_offset.append_option(offset);
        self.source_file.append_option(file);
        self.source_line.append_option(line);
        self.source_http.append_option(http);
    }

    /// The rows appended so far as one batch sorted by event time, ties in
    /// the order they were appended; the builder is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        sort_by_time(self.finish_unsorted()).0
    }

    /// The rows appended so far, in the order they were appended.
    pub fn finish_unsorted(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(std::mem::take(&mut self.timestamps))
                    .with_timezone("UTC"),
            ),
            Arc::new(self.event.finish()),
            Arc::new(self.decision.finish()),
            self.hits.finish(),
            self.shadow_hits.finish(),
            self.scores.finish(),
            Arc::new(self.ruleset_version.finish()),
            Arc::new(self.model_version.finish()),
            Arc::new(self.degraded.finish()),
            Arc::new(self.latency_us.finish()),
            Arc::new(self.decided_at.finish().with_timezone("UTC")),
            Arc::new(self.instance.finish()),
            Arc::new(self.source_topic.finish()),
            Arc::new(self.source_partition.finish()),
            Arc::new(self.source_offset.finish()),
            Arc::new(self.source_file.finish()),
            Arc::new(self.source_line.finish()),
            Arc::new(self.source_http.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema(), columns)
            .expect("the builder's columns match the log's schema")
    }
}

/// `batch` reordered by event time, ties kept in their order (a stable
/// sort), with the order taken (row `i` of the result is row `order[i]` of
/// `batch`); returned as is, without an order, when already sorted.
pub(crate) fn sort_by_time(batch: RecordBatch) -> (RecordBatch, Option<Vec<u32>>) {
    let ts = batch
        .column(col::TIMESTAMP)
        .as_any()
        .downcast_ref::<arrow::array::TimestampMillisecondArray>()
        .expect("the timestamp column is a millisecond timestamp")
        .values()
        .clone();
    if ts.windows(2).all(|w| w[0] <= w[1]) {
        return (batch, None);
    }
    let mut order: Vec<u32> = (0..ts.len() as u32).collect();
    order.sort_by_key(|&i| ts[i as usize]);
    let indices = UInt32Array::from(order.clone());
    let sorted = arrow::compute::take_record_batch(&batch, &indices)
        .expect("taking rows of a batch by in-range indices cannot fail");
    (sorted, Some(order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_out_sorted_by_time_with_ties_in_arrival_order() {
        let mut b = RowsBuilder::new();
        for (id, ts) in [("a", 30), ("b", 10), ("c", 30), ("d", 20), ("e", 10)] {
            b.push_plain(id, ts, b"{}");
        }
        let batch = b.finish();
        let ids = batch
            .column(col::EVENT_ID)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let got: Vec<&str> = ids.iter().map(|s| s.unwrap()).collect();
        assert_eq!(got, ["b", "e", "d", "a", "c"]);
        assert_eq!(b.len(), 0);
        assert_eq!(batch.schema(), schema());
    }
}
