//! The live map: every block allocated and not yet freed, by address.

use std::collections::HashMap;

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
}

/// Live blocks by address, with the running total.
#[derive(Debug, Default)]
pub struct LiveMap {
    blocks: HashMap<u64, Block>,
    tally: Tally,
}

impl LiveMap {
    /// Add a block; returns the block that was still live at that address, if any
    /// (a missed free), after retiring it.
    pub fn insert(&mut self, addr: u64, b: Block) -> Option<Block> {
        let old = self.blocks.insert(addr, b);
        if let Some(o) = &old {
            self.tally.sub(o);
        }
        self.tally.add(&b);
        old
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
    fn reuse_of_a_live_address_retires_the_old_block() {
        let mut m = LiveMap::default();
        m.insert(0x10, b(5));
        let old = m.insert(0x10, b(9));
        assert_eq!(old.map(|b| b.size), Some(5));
        assert_eq!((m.tally().bytes, m.tally().blocks), (9, 1));
    }
}
