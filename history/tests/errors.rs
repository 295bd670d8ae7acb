//! A history that does not read is an error naming the file and the row or
//! line, never a shorter history.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use verdict_history::{HistoryError, HistoryReader, OnInvalid, ReaderOptions, WriterConfig};

fn write_parquet(path: &std::path::Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn read(spec: &std::path::Path, options: &ReaderOptions) -> Result<usize, HistoryError> {
    common::read_all(spec.to_str().unwrap(), options).map(|v| v.len())
}

#[test]
fn a_bad_json_line_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("events.jsonl");
    std::fs::write(
        &f,
        "{\"event_id\":\"a\",\"timestamp\":1}\n{\"event_id\":\"b\",\"timestamp\":\"later\"}\n",
    )
    .unwrap();
    let e = read(&f, &ReaderOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HistoryError::BadLine { line: 2, .. }), "{e:?}");
    assert!(msg.starts_with(&format!("{}:2: ", f.display())), "{msg}");
    assert!(msg.contains("RFC 3339"), "{msg}");
}

#[test]
fn skipped_lines_are_counted_with_the_first_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("events.jsonl");
    std::fs::write(
        &f,
        "{\"event_id\":\"a\",\"timestamp\":1}\nnot json\n{\"event_id\":\"b\",\"timestamp\":2}\n{\"timestamp\":3}\n",
    )
    .unwrap();
    let opts = ReaderOptions {
        on_invalid: OnInvalid::Skip,
        ..Default::default()
    };
    let mut r = HistoryReader::open(f.to_str().unwrap(), &opts).unwrap();
    let mut n = 0;
    while r.next().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2);
    assert_eq!(r.stats().skipped, 2);
    let first = r.stats().first_skipped.clone().unwrap();
    assert!(
        first.starts_with(&format!("{}:2: not a JSON object", f.display())),
        "{first}"
    );
}

#[test]
fn a_truncated_parquet_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    common::write_all(
        &WriterConfig::new(log.to_str().unwrap(), "pod-0"),
        &common::records(100),
    );
    let file = log.join(&common::parquet_files(&log)[0]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = read(&log, &ReaderOptions::default()).unwrap_err();
    assert!(matches!(e, HistoryError::Parquet { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&file.display().to_string()),
        "{e}"
    );
}

#[test]
fn a_parquet_file_without_the_event_column_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.parquet");
    write_parquet(
        &f,
        vec![
            ("event_id", strings(&["a"])),
            ("timestamp", Arc::new(Int64Array::from(vec![1]))),
        ],
    );
    let e = read(&f, &ReaderOptions::default()).unwrap_err();
    assert!(matches!(e, HistoryError::Schema { .. }), "{e:?}");
    assert!(e.to_string().contains("no `event` column"), "{e}");
}

#[test]
fn an_unknown_decision_names_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.parquet");
    write_parquet(
        &f,
        vec![
            ("event_id", strings(&["a", "b", "c"])),
            ("timestamp", Arc::new(Int64Array::from(vec![1, 2, 3]))),
            ("event", strings(&["{}", "{}", "{}"])),
            ("decision", strings(&["deny", "deny", "block"])),
        ],
    );
    let e = read(&f, &ReaderOptions::default()).unwrap_err();
    assert!(matches!(e, HistoryError::BadRow { row: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("`block`"), "{e}");
}

#[test]
fn a_parquet_file_of_plain_events_from_elsewhere_reads_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.parquet");
    write_parquet(
        &f,
        vec![
            ("event_id", strings(&["c", "a", "b"])),
            ("timestamp", Arc::new(Int64Array::from(vec![30, 10, 20]))),
            ("event", strings(&["{\"n\":3}", "{\"n\":1}", "{\"n\":2}"])),
            ("extra", strings(&["x", "y", "z"])),
        ],
    );
    let back = common::read_all(f.to_str().unwrap(), &ReaderOptions::default()).unwrap();
    let got: Vec<_> = back
        .iter()
        .map(|b| (b.event_id.as_str(), b.timestamp_ms, b.decision.is_none()))
        .collect();
    assert_eq!(got, [("a", 10, true), ("b", 20, true), ("c", 30, true)]);
    assert_eq!(back[0].event, b"{\"n\":1}");
}

#[test]
fn a_path_that_does_not_exist_is_named() {
    let e = read(
        std::path::Path::new("/nonexistent/history"),
        &ReaderOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/history: "), "{e}");
}

#[test]
fn a_json_lines_file_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("events.jsonl");
    std::fs::write(&f, "{\"event_id\":\"a\",\"timestamp\":1}\n".repeat(10)).unwrap();
    let opts = ReaderOptions {
        max_jsonl_bytes: 100,
        ..Default::default()
    };
    let e = read(&f, &opts).unwrap_err();
    assert!(matches!(e, HistoryError::TooLarge { .. }), "{e:?}");
}
