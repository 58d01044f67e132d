//! Named marks: `stackheap::mark("warmup")` writes a point in the trace that reports
//! select by name (a live-heap flamegraph at the mark, a diff between two marks).

use crate::alloc::guard::Guard;
use crate::format::encode::MAX_MARK_RECORD;
use crate::record::{session, slots};

/// Write a mark named `name` (cut to 64 bytes) into the trace, ordered with this
/// thread's allocations. Does nothing when profiling is off. Does not allocate.
pub fn mark(name: &str) {
    if !session::is_active() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let Some(slot) = slots::current() else { return };
    let Some(seq) = slot.begin() else { return };
    // SAFETY: this thread's slot, and the guard keeps the allocator hooks of this
    // thread from using its owner state at the same time.
    let owner = unsafe { slot.owner() };
    slot.record(MAX_MARK_RECORD, |w| {
        owner.stream.mark(w, seq, name.as_bytes())
    });
    slot.end();
}
