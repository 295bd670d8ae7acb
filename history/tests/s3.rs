//! The decision log in an S3-compatible store (moto's server, started by
//! the test): written through multipart uploads, read back by prefix and
//! by glob, and never torn by a writer killed in the middle.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStore;
use verdict_history::{ReaderOptions, WriterConfig};

const CHILD: &str = "VERDICT_HISTORY_S3_CHILD";
/// Rows per file in the kill test: about 14 MB, so two parts each.
const KILL_ROWS: u64 = 16_000;

fn config(
    location: &str,
    instance: &str,
    moto_options: &std::collections::BTreeMap<String, String>,
) -> WriterConfig {
    let mut c = WriterConfig::new(location, instance);
    c.options = moto_options.clone();
    c.queue = 50_000;
    c
}

fn objects(moto: &common::moto::Moto, prefix: &str) -> Vec<object_store::ObjectMeta> {
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_url("s3://verdict")
            .with_endpoint(&moto.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let p = object_store::path::Path::from(prefix);
    let mut v: Vec<_> = rt.block_on(store.list(Some(&p)).try_collect()).unwrap();
    v.sort_by(|a, b| a.location.cmp(&b.location));
    v
}

fn moto_options_from_env(endpoint: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Run directly: writes small files and one large enough for a multipart
/// upload, and reads them back. In the child process of the kill test
/// (with the server's endpoint in the environment), writes until killed.
#[test]
fn writes_and_reads_back_through_s3() {
    if let Some(endpoint) = std::env::var_os(CHILD) {
        let opts = moto_options_from_env(endpoint.to_str().unwrap());
        let mut c = config("s3://verdict/kill", "pod-9", &opts);
        c.file_max_rows = KILL_ROWS;
        c.row_group_rows = 2000;
        common::write_until_killed(&c, 2000);
    }
    let moto = common::moto::Moto::start("verdict");
    let opts = moto.options();

    let mut small = config("s3://verdict/log", "pod-0", &opts);
    small.file_max_rows = 1000;
    let small_recs: Vec<_> = (0..2500u64)
        .map(|i| common::record(i, i as i64 * 10, i as i64 * 10, 50))
        .collect();
    let st = common::write_all(&small, &small_recs);
    assert_eq!((st.files, st.written, st.lost), (3, 2500, 0));

    // About 12 MB of poorly compressible events: more than one 8 MiB part.
    let big = config("s3://verdict/log", "pod-1", &opts);
    let big_recs: Vec<_> = (0..12_000u64)
        .map(|i| common::record(100_000 + i, i as i64 * 2 + 1, i as i64 * 2 + 1, 2000))
        .collect();
    let st = common::write_all(&big, &big_recs);
    assert_eq!((st.files, st.written), (1, 12_000));

    let listed = objects(&moto, "log");
    assert_eq!(listed.len(), 4, "{listed:?}");
    let big_object = listed
        .iter()
        .find(|o| o.location.as_ref().contains("/pod-1-"))
        .unwrap();
    assert!(
        big_object.size > 8 << 20,
        "{} bytes: not a multipart upload",
        big_object.size
    );

    let reader_opts = ReaderOptions {
        options: opts.clone(),
        ..Default::default()
    };
    let back = common::read_all("s3://verdict/log", &reader_opts).unwrap();
    assert_eq!(back.len(), 14_500);
    assert!(
        back.windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
    );
    let by_id: HashMap<&str, &common::Record> = small_recs
        .iter()
        .chain(&big_recs)
        .map(|r| (&*r.decision.event_id, r))
        .collect();
    for b in &back {
        let r = by_id[b.event_id.as_str()];
        assert_eq!(b.event, r.event);
        assert_eq!(b.decision.as_ref(), Some(&r.decision));
    }

    let only_big = common::read_all(
        "s3://verdict/log/date=*/hour=08/pod-1-*.parquet",
        &reader_opts,
    )
    .unwrap();
    assert_eq!(only_big.len(), 12_000);
    let ranged = ReaderOptions {
        from_ms: Some(common::T0 + 1000),
        to_ms: Some(common::T0 + 2000),
        ..reader_opts.clone()
    };
    // 100 small records (every 10 ms) and 500 big ones (odd ms).
    assert_eq!(
        common::read_all("s3://verdict/log", &ranged).unwrap().len(),
        600
    );
}

#[test]
fn a_writer_killed_in_the_middle_of_an_upload_leaves_only_complete_objects() {
    let moto = common::moto::Moto::start("verdict");
    let mut child = common::spawn_self(
        "writes_and_reads_back_through_s3",
        &[(CHILD, &moto.endpoint)],
    );
    let uploads = || {
        moto.boto("print(len(s3.list_multipart_uploads(Bucket='verdict').get('Uploads', [])))")
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    // Kill it once a file is complete and the next one is half uploaded.
    common::wait_for("a complete object and an upload in progress", || {
        !objects(&moto, "kill").is_empty() && uploads() > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = objects(&moto, "kill");
    assert!(
        uploads() > 0,
        "the kill did not land in the middle of an upload"
    );
    let reader_opts = ReaderOptions {
        options: moto.options(),
        ..Default::default()
    };
    for o in &listed {
        let back = common::read_all(&format!("s3://verdict/{}", o.location), &reader_opts)
            .unwrap_or_else(|e| panic!("{} is torn: {e}", o.location));
        assert_eq!(back.len() as u64, KILL_ROWS, "{}", o.location);
    }
}
