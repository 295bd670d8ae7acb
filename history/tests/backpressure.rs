//! The writer never makes its caller wait: when the store holds uploads
//! back, records past the queue are dropped and counted, and closing gives
//! up within its bound without leaving a torn file.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::Semaphore;
use verdict_history::{
    HistoryError, HistoryReader, HistoryWriter, Location, ReaderOptions, WriterConfig,
};

/// An in-memory store whose uploads wait for a permit.
#[derive(Debug)]
struct Gated {
    inner: InMemory,
    gate: Arc<Semaphore>,
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gated")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.gate.acquire().await.expect("open").forget();
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.gate.acquire().await.expect("open").forget();
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn gated() -> (Arc<Gated>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    (
        Arc::new(Gated {
            inner: InMemory::new(),
            gate: gate.clone(),
        }),
        gate,
    )
}

fn one_record_per_file(queue: usize) -> WriterConfig {
    let mut cfg = WriterConfig::new("unused", "pod-0");
    cfg.queue = queue;
    cfg.row_group_rows = 1;
    cfg.file_max_rows = 1;
    cfg
}

fn stored_files(store: &Arc<Gated>) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let all: Vec<ObjectMeta> = rt
        .block_on(futures::TryStreamExt::try_collect(store.inner.list(None)))
        .unwrap();
    all.len()
}

#[test]
fn a_writer_that_falls_behind_drops_and_counts_instead_of_waiting() {
    let (store, gate) = gated();
    let location = Location::object_store(store.clone(), "log", "memory://gated/log");
    let w = HistoryWriter::start_at(&one_record_per_file(8), location).unwrap();
    let recs = common::records(1000);
    // The store accepts nothing, so the writer is stuck on its first file:
    // every call must still return, and exactly the queue's worth is kept.
    let accepted = recs.iter().filter(|r| w.try_log(&r.entry())).count();
    let st = w.stats();
    assert_eq!((accepted, st.logged, st.dropped), (8, 8, 992));
    gate.add_permits(1000);
    let st = w.close(Duration::from_secs(30)).unwrap();
    assert_eq!((st.written, st.files, st.lost), (8, 8, 0));
    assert_eq!(stored_files(&store), 8);
    // What was kept is the first eight records, in order.
    let location = Location::object_store(store.clone(), "log", "memory://gated/log");
    let mut r = HistoryReader::open_at(&location, None, &ReaderOptions::default()).unwrap();
    let mut ids = Vec::new();
    while let Some(e) = r.next().unwrap() {
        ids.push(e.event_id.to_owned());
    }
    let want: Vec<_> = recs[..8]
        .iter()
        .map(|r| r.decision.event_id.to_string())
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn closing_gives_up_in_time_and_leaves_no_file() {
    let (store, _gate) = gated();
    let location = Location::object_store(store.clone(), "log", "memory://gated/log");
    let w = HistoryWriter::start_at(&one_record_per_file(64), location).unwrap();
    let recs = common::records(10);
    for r in &recs {
        assert!(w.try_log(&r.entry()));
    }
    match w.close(Duration::from_millis(200)) {
        Err(HistoryError::CloseTimeout { unwritten, .. }) => assert_eq!(unwritten, 10),
        other => panic!("expected a close timeout, got {other:?}"),
    }
    assert_eq!(stored_files(&store), 0);
}

#[test]
fn records_after_close_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let w =
        HistoryWriter::start(&WriterConfig::new(dir.path().to_str().unwrap(), "pod-0")).unwrap();
    let logger = w.logger();
    let recs = common::records(3);
    assert!(logger.try_log(&recs[0].entry()));
    let st = w.close(Duration::from_secs(30)).unwrap();
    assert_eq!(st.written, 1);
    assert!(!logger.try_log(&recs[1].entry()));
    assert_eq!(logger.stats().dropped, 1);
    let back = common::read_all(dir.path().to_str().unwrap(), &ReaderOptions::default()).unwrap();
    assert_eq!(back.len(), 1);
}
