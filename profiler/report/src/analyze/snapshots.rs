//! Live heap by site at a bounded number of moments, for the HTML report's "live heap
//! at time t" flamegraph. Snapshots are taken on a time grid whose step doubles
//! (dropping every other snapshot) whenever more than `max` would be kept, so memory
//! stays bounded without knowing the duration in advance. A snapshot stores only the
//! sites with live bytes.

use super::sites::SiteTable;

/// The live heap at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When, ns since start.
    pub time_ns: u64,
    /// `(stack id, live bytes)` of every site with live bytes, by stack id.
    pub sites: Vec<(u32, u64)>,
}

/// Takes snapshots on a doubling time grid.
#[derive(Debug, Clone)]
pub struct Snapshots {
    step_ns: u64,
    max: usize,
    next_ns: u64,
    snaps: Vec<Snapshot>,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::new(64)
    }
}

impl Snapshots {
    /// At most `max` snapshots (at least 2) are kept.
    pub fn new(max: usize) -> Self {
        Snapshots {
            step_ns: 10_000,
            max: max.max(2),
            next_ns: 0,
            snaps: Vec::new(),
        }
    }

    /// Called after every change of the live heap at `time_ns`; snapshots `sites`
    /// when a grid point was passed.
    pub fn after_change(&mut self, time_ns: u64, sites: &SiteTable, sampled: bool) {
        if time_ns < self.next_ns {
            return;
        }
        self.take(time_ns, sites, sampled);
        while self.snaps.len() > self.max {
            self.step_ns = self.step_ns.saturating_mul(2);
            let step = self.step_ns;
            // Keep the first snapshot in each cell of the coarser grid.
            let mut last_cell = None;
            self.snaps.retain(|s| {
                let cell = s.time_ns / step;
                let keep = last_cell != Some(cell);
                last_cell = Some(cell);
                keep
            });
        }
        self.next_ns = (time_ns / self.step_ns + 1).saturating_mul(self.step_ns);
    }

    fn take(&mut self, time_ns: u64, sites: &SiteTable, sampled: bool) {
        let mut v: Vec<(u32, u64)> = sites
            .iter()
            .map(|(id, s)| (id, s.curr.value(sampled).0))
            .filter(|&(_, b)| b > 0)
            .collect();
        v.sort_unstable();
        self.snaps.push(Snapshot { time_ns, sites: v });
    }

    /// End of the pass: one last snapshot of the end state, then all of them in time
    /// order.
    pub fn finish(mut self, time_ns: u64, sites: &SiteTable, sampled: bool) -> Vec<Snapshot> {
        if self.snaps.last().map(|s| s.time_ns) != Some(time_ns) || self.snaps.is_empty() {
            self.take(time_ns, sites, sampled);
        } else if let Some(last) = self.snaps.pop() {
            // Same moment: replace it with the settled end state.
            self.take(last.time_ns, sites, sampled);
        }
        self.snaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::live::Block;

    fn block(size: u64, stack: u32) -> Block {
        Block {
            size,
            stack,
            weight: 1.0,
            seq: 0,
        }
    }

    #[test]
    fn bounded_and_in_time_order_with_live_sites_only() {
        let mut sites = SiteTable::default();
        let mut s = Snapshots::new(8);
        // One allocation of 10 bytes per ms at site 1, freed 1 ms later; site 2 grows.
        for i in 0..1000u64 {
            let t = i * 1_000_000;
            sites.alloc(&block(10, 1), 2 * i, None);
            sites.alloc(&block(3, 2), 2 * i, None);
            s.after_change(t, &sites, false);
            sites.free(&block(10, 1), 2 * i + 1, None);
            s.after_change(t + 500_000, &sites, false);
        }
        let snaps = s.finish(1_000_000_000, &sites, false);
        assert!(snaps.len() <= 9, "{} snapshots", snaps.len());
        assert!(snaps.len() >= 4, "{} snapshots", snaps.len());
        assert!(snaps.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
        let end = snaps.last().unwrap();
        // At the end only site 2 holds memory: 1000 blocks of 3 bytes.
        assert_eq!(end.sites, vec![(2, 3000)]);
        // A snapshot taken right after an allocation (at i ms) holds site 1's 10 bytes
        // and site 2's growth so far; one taken after the free (at i.5 ms), site 2's.
        for snap in &snaps[..snaps.len() - 1] {
            let i = snap.time_ns / 1_000_000;
            let want = if snap.time_ns % 1_000_000 == 0 {
                vec![(1, 10), (2, 3 * (i + 1))]
            } else {
                vec![(2, 3 * (i + 1))]
            };
            assert_eq!(snap.sites, want, "{snap:?}");
        }
    }
}
