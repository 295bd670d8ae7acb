//! `try_log` allocates nothing once the slots' buffers have grown: the
//! deciding thread only copies into reused buffers.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use verdict_history::{HistoryWriter, WriterConfig};

/// Counts the allocations made by threads that ask for it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            COUNT.with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            COUNT.with(|n| n.set(n.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(|n| n.get())
}

#[test]
fn try_log_allocates_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WriterConfig::new(dir.path().to_str().unwrap(), "pod-0");
    cfg.queue = 64;
    let w = HistoryWriter::start(&cfg).unwrap();
    let logger = w.logger();
    let recs = common::records(2000);
    // Warm up on the very records measured below, several times round the
    // queue, so that every slot has held a record as large as any of them
    // (ids grow a digit at e-1000: warming on the first thousand alone
    // would leave slots to grow, depending on how far the writer lags).
    for r in recs[1000..].iter().cycle().take(4000) {
        while !logger.try_log(&r.entry()) {
            std::thread::yield_now();
        }
    }
    let mut accepted = 0;
    let n = allocations(|| {
        for r in &recs[1000..] {
            if logger.try_log(&r.entry()) {
                accepted += 1;
            }
        }
    });
    assert!(accepted > 0);
    assert_eq!(n, 0, "try_log allocated {n} times for {accepted} records");
    w.close(Duration::from_secs(30)).unwrap();
}
