//! A session started by attaching to a running process (`stackheap run --pid`): the
//! blocks allocated before the attach are unknown, so their frees cannot be counted
//! against the live heap. The injected library counts them here instead, and the
//! recorder writes the count in `Attached` records (see the format table), so the
//! report shows them apart and the live heap never goes negative.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ATTACHED: AtomicBool = AtomicBool::new(false);
static FREES_UNKNOWN: AtomicU64 = AtomicU64::new(0);

/// Mark the next session as attached (call before `session::start`) and zero the count.
pub fn set_attached(on: bool) {
    FREES_UNKNOWN.store(0, Ordering::Relaxed);
    ATTACHED.store(on, Ordering::Release);
}

/// True if the session was started by an attach.
pub fn is_attached() -> bool {
    ATTACHED.load(Ordering::Acquire)
}

/// One free (or realloc) of a block allocated before the attach.
#[inline]
pub fn count_unknown_free() {
    FREES_UNKNOWN.fetch_add(1, Ordering::Relaxed);
}

/// Frees of blocks allocated before the attach, so far.
pub fn frees_unknown() -> u64 {
    FREES_UNKNOWN.load(Ordering::Relaxed)
}
