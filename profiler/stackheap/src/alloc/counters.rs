//! Exact counters, shared by all threads: atomics only, no lock.
//!
//! Totals are plain `fetch_add`s. The peak is a `fetch_max` taken only when the new live
//! total reaches the last known peak; `peak_blocks` and `peak_time_ns` are stored beside
//! it and are exact when one thread allocates (with several threads they belong to a
//! peak within a few instructions of the true one).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::format::Counters;

pub(crate) static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static TOTAL_FREES: AtomicU64 = AtomicU64::new(0);
pub(crate) static TOTAL_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
pub(crate) static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);
pub(crate) static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static PEAK_BLOCKS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PEAK_TIME_NS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAILED: AtomicU64 = AtomicU64::new(0);
/// Events that could not be recorded (buffer hand-off failed, too many threads).
pub(crate) static LOST: AtomicU64 = AtomicU64::new(0);
/// Allocations the profiler itself made while profiling (not counted above).
pub static OWN_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds since the session start, refreshed by the recorder every round; the hot
/// path reads it instead of calling the clock.
pub(crate) static NOW_NS: AtomicU64 = AtomicU64::new(0);

/// Reset all counters (session start; no allocation is being counted concurrently).
pub(crate) fn reset() {
    for c in [
        &TOTAL_ALLOCS,
        &TOTAL_FREES,
        &TOTAL_BYTES,
        &PEAK_BYTES,
        &PEAK_BLOCKS,
        &PEAK_TIME_NS,
        &FAILED,
        &LOST,
        &NOW_NS,
    ] {
        c.store(0, Relaxed);
    }
    LIVE_BYTES.store(0, Relaxed);
    LIVE_BLOCKS.store(0, Relaxed);
}

#[inline(always)]
fn live_change(bytes: i64, blocks: i64) {
    let live = LIVE_BYTES.fetch_add(bytes, Relaxed) + bytes;
    let blocks_now = LIVE_BLOCKS.fetch_add(blocks, Relaxed) + blocks;
    // `>=` as dhat: of equal peaks the latest counts.
    if bytes >= 0 && live >= 0 && live as u64 >= PEAK_BYTES.load(Relaxed) {
        PEAK_BYTES.fetch_max(live as u64, Relaxed);
        PEAK_BLOCKS.store(blocks_now.max(0) as u64, Relaxed);
        PEAK_TIME_NS.store(NOW_NS.load(Relaxed), Relaxed);
    }
}

/// Count an allocation of `size` bytes.
#[inline(always)]
pub(crate) fn on_alloc(size: usize) {
    TOTAL_ALLOCS.fetch_add(1, Relaxed);
    TOTAL_BYTES.fetch_add(size as u64, Relaxed);
    live_change(size as i64, 1);
}

/// Count a free of `size` bytes.
#[inline(always)]
pub(crate) fn on_free(size: usize) {
    TOTAL_FREES.fetch_add(1, Relaxed);
    live_change(-(size as i64), -1);
}

/// Count a realloc: one block retired, one created.
#[inline(always)]
pub(crate) fn on_realloc(old_size: usize, new_size: usize) {
    TOTAL_ALLOCS.fetch_add(1, Relaxed);
    TOTAL_FREES.fetch_add(1, Relaxed);
    TOTAL_BYTES.fetch_add(new_size as u64, Relaxed);
    live_change(new_size as i64 - old_size as i64, 0);
}

/// Count an allocation the inner allocator refused.
#[inline(always)]
pub(crate) fn on_failed() {
    FAILED.fetch_add(1, Relaxed);
}

/// A snapshot of every counter.
pub fn snapshot() -> Counters {
    Counters {
        time_ns: NOW_NS.load(Relaxed),
        total_allocs: TOTAL_ALLOCS.load(Relaxed),
        total_frees: TOTAL_FREES.load(Relaxed),
        total_bytes: TOTAL_BYTES.load(Relaxed),
        live_bytes: LIVE_BYTES.load(Relaxed),
        live_blocks: LIVE_BLOCKS.load(Relaxed),
        peak_bytes: PEAK_BYTES.load(Relaxed),
        peak_blocks: PEAK_BLOCKS.load(Relaxed),
        peak_time_ns: PEAK_TIME_NS.load(Relaxed),
        failed_allocs: FAILED.load(Relaxed),
    }
}
