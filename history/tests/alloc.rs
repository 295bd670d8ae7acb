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
    // Warm up on the very records measured below, in a scrambled order:
    // the slots go round in a fixed cycle (64 of them), so records taken in
    // order would give each slot the same `i % 4` every time, and a slot
    // that never held a record with a shadow hit would grow on its first.
    // Scrambled, every slot holds every shape of record before measuring.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let warm = std::iter::repeat_with(|| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        &recs[1000 + (state >> 33) as usize % 1000]
    });
    for r in warm.take(20_000) {
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
