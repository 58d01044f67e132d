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

/// All sites by stack id.
#[derive(Debug, Clone, Default)]
pub struct SiteTable {
    sites: HashMap<u32, SiteStats>,
}

impl SiteTable {
    /// A block was allocated at its site by event `seq`.
    pub fn alloc(&mut self, b: &Block, seq: u64, peak_seq: Option<u64>) {
        let s = self.sites.entry(b.stack).or_default();
        s.settle(peak_seq);
        s.alloc.add(b);
        s.curr.add(b);
        s.last_change_seq = seq;
    }

    /// A block allocated at its site was freed (or reallocated away) by event `seq`.
    pub fn free(&mut self, b: &Block, seq: u64, peak_seq: Option<u64>) {
        let s = self.sites.entry(b.stack).or_default();
        s.settle(peak_seq);
        s.curr.sub(b);
        s.last_change_seq = seq;
    }

    /// End of the pass: settle every site's share of the peak.
    pub fn finish(&mut self, peak_seq: Option<u64>) {
        for s in self.sites.values_mut() {
            s.settle(peak_seq);
        }
    }

    /// One site.
    pub fn get(&self, stack: u32) -> Option<&SiteStats> {
        self.sites.get(&stack)
    }

    /// Every site, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &SiteStats)> {
        self.sites.iter().map(|(&k, v)| (k, v))
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// True when no allocation was seen.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}
