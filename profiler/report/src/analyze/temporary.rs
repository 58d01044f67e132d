//! Temporary allocations, as heaptrack defines them: a block freed by the thread that
//! allocated it before that thread allocated anything else. They hold no memory but
//! cost allocator time: the churn a flamegraph of `flame-temporary.svg` shows.

use rustc_hash::FxHashMap as HashMap;

/// Counts temporary allocations per site during the pass.
#[derive(Debug, Clone, Default)]
pub struct TemporaryTracker {
    /// Per thread, the address and stack of its latest allocation, until it allocates
    /// again or frees it.
    last: HashMap<u32, (u64, u32)>,
    /// Temporary allocations per stack id.
    pub per_site: HashMap<u32, u64>,
    /// All temporary allocations recorded.
    pub total: u64,
}

impl TemporaryTracker {
    /// `thread` allocated `addr` at `stack` (a realloc counts with its new address).
    pub fn alloc(&mut self, thread: u32, addr: u64, stack: u32) {
        self.last.insert(thread, (addr, stack));
    }

    /// `thread` freed `addr`.
    pub fn free(&mut self, thread: u32, addr: u64) {
        if let Some(&(a, stack)) = self.last.get(&thread) {
            if a == addr {
                self.last.remove(&thread);
                *self.per_site.entry(stack).or_default() += 1;
                self.total += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_before_the_next_allocation_of_the_thread() {
        let mut t = TemporaryTracker::default();
        t.alloc(1, 0x10, 7);
        t.free(1, 0x10); // temporary
        t.alloc(1, 0x20, 8);
        t.alloc(1, 0x30, 9);
        t.free(1, 0x20); // not: another allocation came between
        t.alloc(2, 0x40, 9);
        t.alloc(1, 0x50, 9);
        t.free(1, 0x40); // not: thread 1 did not allocate 0x40
        t.free(2, 0x40); // temporary for thread 2, even though thread 1 allocated since
        t.free(1, 0x50); // temporary
        assert_eq!(t.total, 3);
        assert_eq!(t.per_site.get(&7), Some(&1));
        assert_eq!(t.per_site.get(&9), Some(&2));
        assert_eq!(t.per_site.get(&8), None);
    }
}
