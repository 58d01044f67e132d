//! Per-site figures; a site is a stack id (0 = allocations recorded without a stack).

use rustc_hash::FxHashMap as HashMap;

use super::live::Block;
use super::Tally;

/// What one call stack allocated, holds now, held at the peak.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SiteStats {
    /// Everything allocated here (reallocs count with their new size).
    pub alloc: Tally,
    /// Live now (at the end of the pass: leaked).
    pub curr: Tally,
    /// Live at the moment of the global peak (final after [`SiteTable::finish`]).
    pub at_peak: Tally,
    /// Seq of the last event that changed `curr`.
    pub last_change_seq: u64,
}

impl SiteStats {
    /// Before `curr` changes: if nothing changed this site since the event that set
    /// the global peak, `curr` is still its value at the peak.
    fn settle(&mut self, peak_seq: Option<u64>) {
        if let Some(p) = peak_seq {
            if p >= self.last_change_seq {
                self.at_peak = self.curr;
            }
        }
    }
}

/// All sites by stack id. The reader numbers stacks densely from 1, so a vector
/// indexed by the id replaces a hash lookup per allocation and free; ids beyond
/// `DENSE_IDS` (never made by the reader) go to a map, so no id can blow up the vector.
#[derive(Debug, Clone, Default)]
pub struct SiteTable {
    sites: Vec<Option<SiteStats>>,
    far: HashMap<u32, SiteStats>,
    len: usize,
}

/// Stack ids below this are kept in the vector.
const DENSE_IDS: u32 = 1 << 22;

impl SiteTable {
    fn entry(&mut self, stack: u32) -> &mut SiteStats {
        if stack >= DENSE_IDS {
            let len = &mut self.len;
            return self.far.entry(stack).or_insert_with(|| {
                *len += 1;
                SiteStats::default()
            });
        }
        let i = stack as usize;
        if self.sites.len() <= i {
            self.sites.resize(i + 1, None);
        }
        let slot = &mut self.sites[i];
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(SiteStats::default)
    }

    /// A block was allocated at its site by event `seq`.
    pub fn alloc(&mut self, b: &Block, seq: u64, peak_seq: Option<u64>) {
        let s = self.entry(b.stack);
        s.settle(peak_seq);
        s.alloc.add(b);
        s.curr.add(b);
        s.last_change_seq = seq;
    }

    /// A block allocated at its site was freed (or reallocated away) by event `seq`.
    pub fn free(&mut self, b: &Block, seq: u64, peak_seq: Option<u64>) {
        let s = self.entry(b.stack);
        s.settle(peak_seq);
        s.curr.sub(b);
        s.last_change_seq = seq;
    }

    /// End of the pass: settle every site's share of the peak.
    pub fn finish(&mut self, peak_seq: Option<u64>) {
        for s in self.sites.iter_mut().flatten().chain(self.far.values_mut()) {
            s.settle(peak_seq);
        }
    }

    /// One site.
    pub fn get(&self, stack: u32) -> Option<&SiteStats> {
        if stack >= DENSE_IDS {
            return self.far.get(&stack);
        }
        self.sites.get(stack as usize)?.as_ref()
    }

    /// Every site, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &SiteStats)> {
        self.sites
            .iter()
            .enumerate()
            .filter_map(|(k, v)| Some((k as u32, v.as_ref()?)))
            .chain(self.far.iter().map(|(&k, v)| (k, v)))
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no allocation was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(stack: u32, size: u64) -> Block {
        Block {
            size,
            stack,
            weight: 1.0,
            seq: 0,
        }
    }

    #[test]
    fn dense_and_far_ids_both_count() {
        let mut t = SiteTable::default();
        assert!(t.is_empty());
        t.alloc(&block(5, 10), 1, None);
        t.alloc(&block(u32::MAX, 20), 2, None);
        t.alloc(&block(5, 1), 3, None);
        t.free(&block(u32::MAX, 20), 4, None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(5).map(|s| s.curr.bytes), Some(11));
        assert_eq!(
            t.get(u32::MAX).map(|s| (s.alloc.bytes, s.curr.bytes)),
            Some((20, 0))
        );
        assert!(t.get(6).is_none());
        let mut ids: Vec<u32> = t.iter().map(|(k, _)| k).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![5, u32::MAX]);
    }
}
