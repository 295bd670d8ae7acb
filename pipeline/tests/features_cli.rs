//! `verdict features export` writes the point-in-time features of every
//! event with its label; `verdict features check` lists the features.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn verdict(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn numbers(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let c = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no {column}"));
    c.as_primitive::<Float64Type>().iter().collect()
}

#[test]
fn export_writes_what_each_event_saw_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // Three applications from one device by three users within minutes (a
    // device burst), then a payment by the first user; one malformed line.
    std::fs::write(
        &events,
        [
            r#"{"event_id":"a","event_type":"loan_application","timestamp":"2026-11-24T08:00:00Z","user_id":"u_000001","device_id":"dev-9","ip":"10.0.0.1","amount":500,"label":"device_burst"}"#,
            r#"{"event_id":"b","event_type":"loan_application","timestamp":"2026-11-24T08:01:00Z","user_id":"u_000002","device_id":"dev-9","ip":"10.0.0.1","amount":700,"label":"device_burst"}"#,
            r#"{"event_id":"c""#,
            r#"{"event_id":"d","event_type":"loan_application","timestamp":"2026-11-24T08:02:00Z","user_id":"u_000003","device_id":"dev-9","ip":"10.0.0.2","amount":900,"label":"device_burst"}"#,
            r#"{"event_id":"e","event_type":"payment","timestamp":"2026-11-24T08:30:00Z","user_id":"u_000001","device_id":"dev-1","ip":"10.0.0.1","amount":40,"label":"legit"}"#,
            r#"{"event_id":"f","event_type":"payment","timestamp":"2026-11-24T08:31:00Z","user_id":"u_000001","amount":60}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.path().join("training.parquet");
    let run = verdict(&[
        "features",
        "export",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("6 lines: 5 rows + 1 rejected"),
        "the summary accounts for every line: {stderr}"
    );
    assert!(stderr.contains("1 rows have no `label`"), "{stderr}");

    let t = read(&out);
    assert_eq!(t.num_rows(), 5);
    let ids: Vec<&str> = t
        .column_by_name("event_id")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(ids, ["a", "b", "d", "e", "f"]);
    let ts = t
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(ts.value(0), 1_795_507_200_000);
    let fraud: Vec<Option<bool>> = t
        .column_by_name("is_fraud")
        .unwrap()
        .as_boolean()
        .iter()
        .collect();
    assert_eq!(
        fraud,
        [Some(true), Some(true), Some(true), Some(false), None]
    );

    // Point in time: each row holds what the events before it add up to.
    assert_eq!(
        numbers(&t, "feature.device.account_count_7d"),
        [Some(0.0), Some(1.0), Some(2.0), Some(0.0), Some(0.0)]
    );
    assert_eq!(
        numbers(&t, "feature.ip.account_count_24h"),
        [Some(0.0), Some(1.0), Some(0.0), Some(2.0), Some(0.0)]
    );
    assert_eq!(
        numbers(&t, "feature.user.amount_sum_24h"),
        [Some(0.0), Some(0.0), Some(0.0), Some(500.0), Some(540.0)]
    );
    assert_eq!(
        numbers(&t, "feature.user.secs_since_last"),
        [None, None, None, Some(1800.0), Some(60.0)]
    );
    assert_eq!(
        numbers(&t, "feature.user.txn_count_1h"),
        [Some(0.0), Some(0.0), Some(0.0), Some(0.0), Some(1.0)]
    );
    // The event's own fields, and the batch profile of its user.
    assert_eq!(
        numbers(&t, "event.amount"),
        [
            Some(500.0),
            Some(700.0),
            Some(900.0),
            Some(40.0),
            Some(60.0)
        ]
    );
    let limits = numbers(&t, "feature.user.credit_limit");
    assert!(limits.iter().all(Option::is_some), "{limits:?}");
    // The ip column of the last event is missing: null.
    let ips = t.column_by_name("event.ip").unwrap();
    assert!(ips.is_null(4));
}

#[test]
fn export_without_feature_definitions_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("verdict.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nschema = \"{}\"\n",
            root().join("examples/schema.toml").display()
        ),
    )
    .unwrap();
    let run = verdict(&[
        "features",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--events",
        "-",
        "--out",
        dir.path().join("t.parquet").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("names no feature definitions"), "{stderr}");
}

#[test]
fn check_lists_the_features_and_their_memory() {
    let run = verdict(&["features", "check"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("feature.device.account_count_7d"),
        "{stdout}"
    );
    assert!(stdout.contains("feature.user.credit_limit"), "{stdout}");
    assert!(
        stdout.contains("bytes of window state per entity"),
        "{stdout}"
    );
}
