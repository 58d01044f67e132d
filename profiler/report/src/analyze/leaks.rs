//! What is still live at the end, and rankings of sites.

use super::sites::SiteTable;

/// Which figure to rank sites by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// Bytes allocated over the run.
    AllocBytes,
    /// Bytes live at the peak.
    PeakBytes,
    /// Bytes live at the end.
    LeakedBytes,
}

/// Stack ids of the sites with a non-zero figure, largest first (ties by stack id so
/// the order is deterministic).
pub fn rank(sites: &SiteTable, by: RankBy, sampled: bool) -> Vec<u32> {
    let mut v: Vec<(u64, u32)> = sites
        .iter()
        .map(|(id, s)| {
            let t = match by {
                RankBy::AllocBytes => s.alloc,
                RankBy::PeakBytes => s.at_peak,
                RankBy::LeakedBytes => s.curr,
            };
            (t.value(sampled).0, id)
        })
        .filter(|&(b, _)| b > 0)
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().map(|(_, id)| id).collect()
}

/// Stack ids of the sites that still hold memory at the end, by leaked bytes.
pub fn leaking_sites(sites: &SiteTable, sampled: bool) -> Vec<u32> {
    rank(sites, RankBy::LeakedBytes, sampled)
}
