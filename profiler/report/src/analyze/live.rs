//! The live map: every block allocated and not yet freed, by address.

use rustc_hash::FxHashMap as HashMap;

use super::Tally;

/// A live block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    /// Requested size, bytes.
    pub size: u64,
    /// Stack id of the allocation (0 = no stack).
    pub stack: u32,
    /// How many allocations of the program it stands for (1 in full mode).
    pub weight: f64,
    /// Sequence number of the allocation.
    pub seq: u64,
}

/// Live blocks by address, with the running total.
///
/// One address can briefly hold two live blocks: a realloc on one thread retires its
/// old block inside the allocator, another thread is handed that address and records
/// its allocation, and only then does the realloc record (ordered by its second
/// sequence number) arrive. The older block waits in `displaced`, still live, until
/// the realloc claims it.
#[derive(Debug, Default)]
pub struct LiveMap {
    blocks: HashMap<u64, Block>,
    displaced: HashMap<u64, Block>,
    tally: Tally,
}

impl LiveMap {
    /// Add a block. If a block was still live at that address it is kept aside (still
    /// live) for a realloc to claim; returns true then.
    pub fn insert(&mut self, addr: u64, b: Block) -> bool {
        let old = self.blocks.insert(addr, b);
        self.tally.add(&b);
        match old {
            Some(o) => {
                if let Some(older) = self.displaced.insert(addr, o) {
                    // A third block at one address: the oldest really missed its free.
                    self.tally.sub(&older);
                }
                true
            }
            None => false,
        }
    }

    /// Retire the old block of a realloc that was retired after `free_seq`: the live
    /// block at `addr` if it is older than that, else the one kept aside.
    pub fn remove_for_realloc(&mut self, addr: u64, free_seq: u64) -> Option<Block> {
        match self.blocks.get(&addr) {
            Some(b) if b.seq < free_seq => self.remove(addr),
            _ => {
                let b = self.displaced.remove(&addr)?;
                self.tally.sub(&b);
                Some(b)
            }
        }
    }

    /// Blocks kept aside that no realloc claimed (a free was lost): retire them.
    pub fn drain_displaced(&mut self) -> Vec<Block> {
        let v: Vec<Block> = self.displaced.drain().map(|(_, b)| b).collect();
        for b in &v {
            self.tally.sub(b);
        }
        v
    }

    /// Retire the block at `addr`; `None` if no block is live there (allocated before
    /// profiling started, or never sampled).
    pub fn remove(&mut self, addr: u64) -> Option<Block> {
        let b = self.blocks.remove(&addr)?;
        self.tally.sub(&b);
        Some(b)
    }

    /// Live bytes and blocks now.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Every live block, in no particular order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values().chain(self.displaced.values())
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when nothing is live.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(size: u64) -> Block {
        Block {
            size,
            stack: 1,
            weight: 1.0,
            seq: 0,
        }
    }

    #[test]
    fn unknown_free_never_goes_negative() {
        let mut m = LiveMap::default();
        assert!(m.remove(0x10).is_none());
        assert_eq!(m.tally().bytes, 0);
        m.insert(0x10, b(5));
        m.insert(0x20, b(7));
        assert_eq!(m.remove(0x10).map(|b| b.size), Some(5));
        assert_eq!((m.tally().bytes, m.tally().blocks, m.len()), (7, 1, 1));
    }

    #[test]
    fn reuse_during_a_realloc_keeps_both_blocks_until_the_realloc() {
        let mut m = LiveMap::default();
        // Thread A allocated 5 bytes at 0x10 (seq 1), then reallocs it: free side seq 10.
        m.insert(0x10, Block { seq: 1, ..b(5) });
        // Thread B is handed 0x10 at seq 11, before A's realloc record (seq 12).
        assert!(m.insert(0x10, Block { seq: 11, ..b(9) }));
        assert_eq!((m.tally().bytes, m.tally().blocks), (14, 2));
        // A's realloc retires its own old block, not B's.
        assert_eq!(m.remove_for_realloc(0x10, 10).map(|b| b.size), Some(5));
        assert_eq!((m.tally().bytes, m.tally().blocks), (9, 1));
        assert_eq!(m.remove(0x10).map(|b| b.size), Some(9));
        assert!(m.drain_displaced().is_empty());
    }

    #[test]
    fn an_unclaimed_displaced_block_is_drained() {
        let mut m = LiveMap::default();
        m.insert(0x10, Block { seq: 1, ..b(5) });
        assert!(m.insert(0x10, Block { seq: 2, ..b(9) }));
        assert_eq!(m.drain_displaced().len(), 1);
        assert_eq!((m.tally().bytes, m.tally().blocks), (9, 1));
    }
}
