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
    /// The last thread looked up and its entry, mirrored: consecutive events of one
    /// thread (the common case) skip the hash map.
    cached: Option<(u32, Option<(u64, u32)>)>,
    /// Temporary allocations per stack id.
    pub per_site: HashMap<u32, u64>,
    /// All temporary allocations recorded.
    pub total: u64,
}

impl TemporaryTracker {
    /// `thread` allocated `addr` at `stack` (a realloc counts with its new address).
    pub fn alloc(&mut self, thread: u32, addr: u64, stack: u32) {
        self.flush(thread);
        self.cached = Some((thread, Some((addr, stack))));
    }

    /// Make `thread` the cached one, writing the previous one back to the map.
    fn flush(&mut self, thread: u32) {
        match self.cached {
            Some((t, _)) if t == thread => {}
            Some((t, v)) => {
                match v {
                    Some(v) => self.last.insert(t, v),
                    None => self.last.remove(&t),
                };
                self.cached = Some((thread, self.last.get(&thread).copied()));
            }
            None => self.cached = Some((thread, self.last.get(&thread).copied())),
        }
    }

    /// `thread` freed `addr`.
    pub fn free(&mut self, thread: u32, addr: u64) {
        self.flush(thread);
        if let Some((_, entry)) = &mut self.cached {
            if let Some((a, stack)) = *entry {
                if a == addr {
                    *entry = None;
                    *self.per_site.entry(stack).or_default() += 1;
                    self.total += 1;
                }
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
