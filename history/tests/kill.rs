//! A writer killed in the middle of a file leaves only complete files: the
//! file in progress is under a hidden name until it is complete.

mod common;

use verdict_history::{ReaderOptions, WriterConfig};

const CHILD: &str = "VERDICT_HISTORY_KILL_CHILD";
const ROWS: u64 = 1000;

fn config(dir: &str) -> WriterConfig {
    let mut c = WriterConfig::new(dir, "pod-0");
    c.row_group_rows = 250;
    c.file_max_rows = ROWS;
    c
}

/// In the child process of the test below, writes until killed. Run
/// directly, it writes three files' worth and closes: every file complete.
#[test]
fn writer_child() {
    if let Some(dir) = std::env::var_os(CHILD) {
        common::write_until_killed(&config(dir.to_str().unwrap()), 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<_> = (0..3 * ROWS)
        .map(|i| common::record(i, i as i64, i as i64, 200))
        .collect();
    let st = common::write_all(&config(dir.path().to_str().unwrap()), &recs);
    assert_eq!((st.files, st.written), (3, 3 * ROWS));
    assert_eq!(common::parquet_files(dir.path()).len(), 3);
}

#[test]
fn a_writer_killed_in_the_middle_leaves_only_complete_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let mut child = common::spawn_self("writer_child", &[(CHILD, &path)]);
    common::wait_for("three complete files", || {
        common::parquet_files(dir.path()).len() >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let files = common::parquet_files(dir.path());
    // Every file that is there reads whole, and holds a whole file's rows.
    for f in &files {
        let back = common::read_all(
            dir.path().join(f).to_str().unwrap(),
            &ReaderOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{f} is torn: {e}"));
        assert_eq!(back.len() as u64, ROWS, "{f}");
    }
    let all = common::read_all(&path, &ReaderOptions::default()).unwrap();
    assert_eq!(all.len() as u64, ROWS * files.len() as u64);
}
