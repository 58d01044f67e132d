//! The heap limit (simulated out-of-memory) and OOM forensics.
//!
//! With a limit set (`STACKHEAP_LIMIT=256MiB`, `stackheap run --limit`, or
//! [`crate::ProfilerBuilder::limit`]), an allocation that would take the live heap
//! (`counters::live_bytes`: the global total plus every thread's pending change)
//! over the limit gets null *before* the
//! inner allocator is asked, exactly as a real out-of-memory: `try_reserve` sees an
//! error and an infallible allocation aborts through `handle_alloc_error`.
//!
//! The first failed allocation of a session, real or simulated, writes an `Oom` record
//! (requested size, live heap, limit, stack) and then waits — bounded — until the
//! recorder has completed two rounds, so the record and everything before it are in
//! the trace file before the null is returned and the program (most likely) aborts.
//! If the recorder cannot run (stopped, a forked child, or stuck), the wait ends after
//! [`FLUSH_WAIT`] and the null is returned anyway: the program is never held forever.
//!
//! Cost when no limit is set: one relaxed load of `LIMIT`, and only on the awake path.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use super::counters;
use super::guard::Guard;
use super::hooks;
use crate::format::encode::MAX_EVENT_RECORD;
use crate::record::session;
use crate::record::slots::Slot;

/// The heap limit in bytes; 0 = no limit.
pub(crate) static LIMIT: AtomicU64 = AtomicU64::new(0);
/// Set once the session's `Oom` record has been written.
static OOM_WRITTEN: AtomicBool = AtomicBool::new(false);
/// Rounds the recorder has completed (written to the file) since the process started.
pub(crate) static ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Longest the failing thread waits for the recorder to write the `Oom` record.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Session start: set the limit (0 = none) and re-arm the OOM record.
pub(crate) fn reset(limit: u64) {
    LIMIT.store(limit, Relaxed);
    OOM_WRITTEN.store(false, Relaxed);
}

/// The limit in force, bytes (0 = none).
pub fn limit() -> u64 {
    LIMIT.load(Relaxed)
}

/// True if an allocation of `size` more bytes must be refused. Call only when awake;
/// one relaxed load when no limit is set.
#[inline(always)]
pub(crate) fn exceeds(size: usize) -> bool {
    let l = LIMIT.load(Relaxed);
    l != 0 && exceeds_slow(l, size)
}

#[cold]
#[inline(never)]
fn exceeds_slow(limit: u64, size: usize) -> bool {
    // The profiler's own allocations (guard held) are never refused, and nothing is
    // refused when the session is not recording.
    if session::STATE.load(Relaxed) != session::ACTIVE || Guard::is_held() {
        return false;
    }
    let live = counters::live_bytes().max(0) as u64;
    live.saturating_add(size as u64) > limit
}

/// A failed allocation of `size` bytes (guard held). Returns true if it was the
/// session's first: then the `Oom` record was written (instead of an `AllocFailed`)
/// and the trace flushed.
#[cold]
#[inline(never)]
pub(crate) fn first_failure(slot: &'static Slot, size: usize) -> bool {
    if OOM_WRITTEN.swap(true, Relaxed) {
        return false;
    }
    let Some(seq) = slot.begin() else {
        return true;
    };
    // SAFETY: this thread's slot; no other &mut Owner alive in this call.
    let owner = unsafe { slot.owner() };
    let id = if hooks::rate() == 0 {
        0
    } else {
        hooks::stack_id(slot, owner)
    };
    let d = hooks::depth(owner.bounds);
    let live = counters::live_bytes();
    let limit = LIMIT.load(Relaxed);
    slot.record(MAX_EVENT_RECORD, |w| {
        owner.stream.oom(w, seq, size as u64, id, d, live, limit)
    });
    slot.end();
    wait_for_flush();
    true
}

/// Wait until the recorder has finished two more rounds (the first may have begun
/// before our record was published), at most [`FLUSH_WAIT`]. Sleeps a little between
/// checks: no allocation, no lock.
fn wait_for_flush() {
    let start_round = ROUNDS.load(Acquire);
    let deadline = Instant::now() + FLUSH_WAIT;
    while ROUNDS.load(Acquire) < start_round + 2 {
        if session::STATE.load(Relaxed) != session::ACTIVE || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Called by the recorder after each round has been written out.
pub(crate) fn round_written() {
    ROUNDS.fetch_add(1, Release);
}
