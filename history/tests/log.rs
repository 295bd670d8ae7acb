//! The decision log written to a folder and read back: what goes in comes
//! out, in time order, across files, row groups, instances and formats.

mod common;

use common::{T0, parquet_files, read_all, record, records, write_all};
use verdict_history::{ReaderOptions, WriterConfig, write_log_line};

fn config(dir: &std::path::Path, instance: &str) -> WriterConfig {
    let mut c = WriterConfig::new(dir.to_str().unwrap(), instance);
    c.queue = 100_000;
    c
}

#[test]
fn every_field_comes_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(500);
    let stats = write_all(&config(dir.path(), "pod-0"), &recs);
    assert_eq!(
        (stats.logged, stats.written, stats.dropped, stats.lost),
        (500, 500, 0, 0)
    );
    assert_eq!(stats.files, 1);
    let back = read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(back.len(), 500);
    for (r, b) in recs.iter().zip(&back) {
        assert_eq!(b.event_id, &*r.decision.event_id);
        assert_eq!(b.timestamp_ms, r.timestamp_ms);
        assert_eq!(b.event, r.event);
        assert_eq!(b.decision.as_ref(), Some(&r.decision));
        assert_eq!(b.instance.as_deref(), Some("pod-0"));
        assert_eq!(b.position.as_ref(), Some(&r.position));
    }
}

#[test]
fn files_roll_by_rows_and_by_hour_and_are_named_by_hour_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "pod-1");
    cfg.file_max_rows = 100;
    cfg.row_group_rows = 30;
    // 250 records decided in hour 08, then 50 in hour 09.
    let mut recs: Vec<_> = (0..250)
        .map(|i| record(i, i as i64 * 10, i as i64 * 10, 10))
        .collect();
    recs.extend((250..300).map(|i| record(i, 3_600_000 + i as i64, 3_600_000 + i as i64, 10)));
    let stats = write_all(&cfg, &recs);
    assert_eq!(stats.written, 300);
    let files = parquet_files(dir.path());
    let in_08 = files
        .iter()
        .filter(|f| f.starts_with("date=2026-11-24/hour=08/pod-1-"))
        .count();
    let in_09 = files
        .iter()
        .filter(|f| f.starts_with("date=2026-11-24/hour=09/pod-1-"))
        .count();
    assert_eq!((in_08, in_09, files.len()), (3, 1, 4), "{files:?}");
    let back = read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    let ids: Vec<_> = back.iter().map(|b| b.event_id.clone()).collect();
    let want: Vec<_> = recs
        .iter()
        .map(|r| r.decision.event_id.to_string())
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn events_come_out_in_time_order_across_instances_with_ties_broken_by_file() {
    let dir = tempfile::tempdir().unwrap();
    // Instance a: even seconds, out of order within the batch; instance b:
    // odd seconds and some equal to a's.
    let a: Vec<_> = [4, 0, 2, 6, 8]
        .iter()
        .map(|&s| record(s, s as i64 * 1000, 0, 5))
        .collect();
    let b: Vec<_> = [1, 3, 5, 7, 9]
        .iter()
        .map(|&s| record(100 + s, s as i64 * 1000, 0, 5))
        .chain([record(200, 4000, 0, 5)])
        .collect();
    let mut ca = config(dir.path(), "a");
    ca.row_group_rows = 2;
    write_all(&ca, &a);
    write_all(&config(dir.path(), "b"), &b);
    let back = read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    let got: Vec<(i64, &str)> = back
        .iter()
        .map(|b| ((b.timestamp_ms - T0) / 1000, b.event_id.as_str()))
        .collect();
    // Row groups of 2 each sorted: [0,4], [2,6], [8]; the merge orders them.
    assert_eq!(
        got,
        [
            (0, "e-00000000"),
            (1, "e-00000101"),
            (2, "e-00000002"),
            (3, "e-00000103"),
            (4, "e-00000004"),
            (4, "e-00000200"),
            (5, "e-00000105"),
            (6, "e-00000006"),
            (7, "e-00000107"),
            (8, "e-00000008"),
            (9, "e-00000109"),
        ]
    );
}

#[test]
fn a_time_range_keeps_the_events_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "pod-0");
    cfg.row_group_rows = 100;
    write_all(&cfg, &records(1000));
    let opts = ReaderOptions {
        from_ms: Some(T0 + 250_000),
        to_ms: Some(T0 + 260_000),
        ..Default::default()
    };
    let back = read_all(dir.path().to_str().unwrap(), &opts).unwrap();
    let ids: Vec<_> = back.iter().map(|b| b.event_id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(ids[0], "e-00000250");
    assert_eq!(ids[9], "e-00000259");
    let opts = ReaderOptions {
        from_ms: Some(T0 + 5_000),
        to_ms: Some(T0 + 5_000),
        ..Default::default()
    };
    let e = read_all(dir.path().to_str().unwrap(), &opts).unwrap_err();
    assert!(e.to_string().contains("is not before"), "{e}");
}

#[test]
fn the_json_lines_log_and_plain_event_files_read_like_the_parquet_log() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(300);
    let log_dir = dir.path().join("log");
    write_all(&config(&log_dir, "pod-0"), &recs);
    let from_parquet = read_all(log_dir.to_str().unwrap(), &ReaderOptions::default()).unwrap();

    let mut text = Vec::new();
    for r in &recs {
        write_log_line(&mut text, &r.event, &r.decision, "pod-0", Some(&r.position)).unwrap();
    }
    let jsonl = dir.path().join("log.jsonl");
    std::fs::write(&jsonl, &text).unwrap();
    let from_jsonl = read_all(jsonl.to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(from_jsonl, from_parquet);

    let mut plain = Vec::new();
    for r in recs.iter().rev() {
        plain.extend_from_slice(&r.event);
        plain.push(b'\n');
    }
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, &plain).unwrap();
    let from_events = read_all(events.to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(from_events.len(), 300);
    for (a, b) in from_events.iter().zip(&from_parquet) {
        assert_eq!(
            (&a.event_id, a.timestamp_ms, &a.event),
            (&b.event_id, b.timestamp_ms, &b.event)
        );
        assert_eq!(a.decision, None);
    }
}

#[test]
fn a_glob_picks_files_and_hidden_files_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(20);
    let line = |r: &common::Record| {
        let mut v = r.event.clone();
        v.push(b'\n');
        v
    };
    std::fs::write(
        dir.path().join("a.jsonl"),
        recs[..10].iter().flat_map(line).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.jsonl"),
        recs[10..].iter().flat_map(line).collect::<Vec<_>>(),
    )
    .unwrap();
    // What a writer leaves behind when killed: never listed.
    std::fs::write(dir.path().join(".x.parquet.inprogress"), b"PAR1 torn").unwrap();
    std::fs::write(dir.path().join(".hidden.parquet"), b"PAR1 torn").unwrap();
    let only_a = read_all(
        &format!("{}/a*.jsonl", dir.path().display()),
        &ReaderOptions::default(),
    )
    .unwrap();
    assert_eq!(only_a.len(), 10);
    let all = read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(all.len(), 20);
    let e = read_all(
        &format!("{}/c*.jsonl", dir.path().display()),
        &ReaderOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no decision-log"), "{e}");
}

#[test]
fn a_large_history_is_read_through_several_runs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "pod-0");
    cfg.row_group_rows = 1000;
    cfg.file_max_rows = 7000;
    // Event times jitter against decision order, so row groups overlap.
    let recs: Vec<_> = (0..20_000u64)
        .map(|i| {
            record(
                i,
                (i as i64 * 50) + ((i * 7919) % 2000) as i64,
                i as i64 * 50,
                20,
            )
        })
        .collect();
    write_all(&cfg, &recs);
    let back = read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(back.len(), 20_000);
    assert!(
        back.windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
    );
    let mut want: Vec<_> = recs
        .iter()
        .map(|r| r.decision.event_id.to_string())
        .collect();
    let mut got: Vec<_> = back.iter().map(|b| b.event_id.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
