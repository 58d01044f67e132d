//! Growth detection: leak suspects in a program that has not exited.
//!
//! During the pass, every site's live bytes are sampled at regular times (the interval
//! doubles, and the series are halved, whenever they reach their bound). Afterwards a
//! site is a growth suspect when its live bytes rose steadily over most of the run:
//!
//! * its growth window — from the first sample to the first time it reached its
//!   maximum — covers at least [`MIN_SPAN`] of the sampled run;
//! * inside the window it rarely went down: the sum of its drops is at most
//!   [`MAX_DROP`] of the sum of its rises (churn goes up and down as much);
//! * a straight line fits the window (R² ≥ [`MIN_R2`]), so one burst is not a trend.
//!
//! Suspects are ranked by the slope of that line, in bytes per second.

use rustc_hash::FxHashMap as HashMap;

use super::sites::SiteTable;

/// Smallest share of the run the growth window must cover.
pub const MIN_SPAN: f64 = 0.5;
/// Largest ratio of drops to rises inside the window.
pub const MAX_DROP: f64 = 0.1;
/// Smallest coefficient of determination of the linear fit.
pub const MIN_R2: f64 = 0.8;
/// Fewest samples in the window.
pub const MIN_SAMPLES: usize = 5;

/// Per-site live bytes sampled over time.
#[derive(Debug, Clone)]
pub struct GrowthTracker {
    interval_ns: u64,
    next_ns: u64,
    max_samples: usize,
    /// Sample times, ns since start.
    pub times: Vec<u64>,
    /// Sequence number at each sample (for mapping seq to time).
    pub seqs: Vec<u64>,
    /// Total live bytes at each sample.
    pub totals: Vec<u64>,
    /// Stack id to live bytes at each sample (aligned with `times`).
    pub series: HashMap<u32, Vec<u64>>,
}

impl Default for GrowthTracker {
    fn default() -> Self {
        GrowthTracker::new(1_000_000, 512)
    }
}

impl GrowthTracker {
    /// Sample every `interval_ns` at first; keep at most `max_samples` (≥ 8).
    pub fn new(interval_ns: u64, max_samples: usize) -> Self {
        GrowthTracker {
            interval_ns: interval_ns.max(1),
            next_ns: 0,
            max_samples: max_samples.max(8),
            times: Vec::new(),
            seqs: Vec::new(),
            totals: Vec::new(),
            series: HashMap::default(),
        }
    }

    /// After an event at `time_ns`: take a sample if one is due.
    pub fn tick(&mut self, time_ns: u64, seq: u64, sites: &SiteTable, sampled: bool, total: u64) {
        if time_ns < self.next_ns && !self.times.is_empty() {
            return;
        }
        self.sample(time_ns, seq, sites, sampled, total);
        self.next_ns = time_ns - time_ns % self.interval_ns + self.interval_ns;
    }

    /// Take a sample now (also used for the final state).
    pub fn sample(&mut self, time_ns: u64, seq: u64, sites: &SiteTable, sampled: bool, total: u64) {
        let n = self.times.len();
        self.times.push(time_ns);
        self.seqs.push(seq);
        self.totals.push(total);
        for (id, s) in sites.iter() {
            let v = s.curr.value(sampled).0;
            let e = self.series.entry(id).or_insert_with(|| vec![0; n]);
            e.push(v);
        }
        for v in self.series.values_mut() {
            if v.len() < n + 1 {
                v.resize(n + 1, 0);
            }
        }
        if self.times.len() >= self.max_samples {
            self.halve();
        }
    }

    fn halve(&mut self) {
        fn keep_even<T: Copy>(v: &mut Vec<T>) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        keep_even(&mut self.times);
        keep_even(&mut self.seqs);
        keep_even(&mut self.totals);
        for v in self.series.values_mut() {
            keep_even(v);
        }
        self.interval_ns *= 2;
    }

    /// Time of an event with sequence number `seq`, interpolated between samples.
    pub fn time_of_seq(&self, seq: u64) -> u64 {
        let i = self.seqs.partition_point(|&s| s <= seq);
        match (i.checked_sub(1), self.seqs.get(i)) {
            (Some(j), Some(&s1)) if s1 > self.seqs[j] => {
                let (s0, t0, t1) = (self.seqs[j], self.times[j], self.times[i]);
                t0 + ((t1 - t0) as u128 * (seq - s0) as u128 / (s1 - s0) as u128) as u64
            }
            (Some(j), _) => self.times[j],
            (None, _) => self.times.first().copied().unwrap_or(0),
        }
    }
}

/// A site whose live bytes keep rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspect {
    /// Stack id.
    pub stack: u32,
    /// Slope of the fitted line, bytes per second.
    pub rate_bytes_per_s: f64,
    /// Coefficient of determination of the fit.
    pub r2: f64,
    /// Start and end of the growth window, ns since start.
    pub window_ns: (u64, u64),
    /// Highest live bytes sampled.
    pub max_bytes: u64,
}

/// Least-squares slope (per ns) and R² of `ys` over `xs`.
fn fit(xs: &[u64], ys: &[u64]) -> Option<(f64, f64)> {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return None;
    }
    let mx = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let my = ys.iter().map(|&y| y as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&x, &y) in xs.iter().zip(ys) {
        let (dx, dy) = (x as f64 - mx, y as f64 - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / sxx, sxy * sxy / (sxx * syy)))
}

/// The growth suspects, fastest first (ties by stack id).
pub fn suspects(g: &GrowthTracker) -> Vec<Suspect> {
    let (Some(&t_first), Some(&t_last)) = (g.times.first(), g.times.last()) else {
        return Vec::new();
    };
    let run = (t_last - t_first) as f64;
    if run <= 0.0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (&stack, v) in &g.series {
        let Some(&max) = v.iter().max() else { continue };
        if max == 0 {
            continue;
        }
        let imax = v.iter().position(|&x| x == max).unwrap_or(0);
        if imax + 1 < MIN_SAMPLES {
            continue;
        }
        let span = (g.times[imax] - t_first) as f64;
        if span < MIN_SPAN * run {
            continue;
        }
        let w = &v[..=imax];
        let (mut up, mut down) = (0u64, 0u64);
        for p in w.windows(2) {
            if p[1] >= p[0] {
                up += p[1] - p[0];
            } else {
                down += p[0] - p[1];
            }
        }
        if up == 0 || down as f64 > MAX_DROP * up as f64 {
            continue;
        }
        let Some((slope, r2)) = fit(&g.times[..=imax], w) else {
            continue;
        };
        if slope <= 0.0 || r2 < MIN_R2 {
            continue;
        }
        out.push(Suspect {
            stack,
            rate_bytes_per_s: slope * 1e9,
            r2,
            window_ns: (t_first, g.times[imax]),
            max_bytes: max,
        });
    }
    out.sort_by(|a, b| {
        b.rate_bytes_per_s
            .total_cmp(&a.rate_bytes_per_s)
            .then(a.stack.cmp(&b.stack))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(series: &[(u32, Vec<u64>)]) -> GrowthTracker {
        let n = series[0].1.len();
        let mut g = GrowthTracker::new(1, 10_000);
        g.times = (0..n as u64).map(|i| i * 10_000_000).collect();
        g.seqs = (0..n as u64).collect();
        g.totals = vec![0; n];
        g.series = series.iter().cloned().collect();
        g
    }

    #[test]
    fn steady_growth_is_found_churn_and_bursts_are_not() {
        let n = 50u64;
        // Grows 1000 bytes a sample (every 10 ms: 100 000 B/s), freed at the very end.
        let mut cache: Vec<u64> = (0..n).map(|i| i * 1000).collect();
        *cache.last_mut().unwrap() = 0;
        // Slower growth, 100 B a sample.
        let slow: Vec<u64> = (0..n).map(|i| i * 100).collect();
        // Churn: up and down.
        let churn: Vec<u64> = (0..n).map(|i| if i % 2 == 0 { 0 } else { 900 }).collect();
        // A burst in the first quarter, then freed.
        let burst: Vec<u64> = (0..n).map(|i| if i < 12 { i * 5000 } else { 0 }).collect();
        // Flat after a short warm-up (a bounded buffer).
        let flat: Vec<u64> = (0..n).map(|i| i.min(5) * 256).collect();
        let g = tracker(&[(1, cache), (2, slow), (3, churn), (4, burst), (5, flat)]);
        let s = suspects(&g);
        let ids: Vec<u32> = s.iter().map(|s| s.stack).collect();
        assert_eq!(ids, vec![1, 2]);
        assert!((s[0].rate_bytes_per_s - 100_000.0).abs() < 1.0, "{s:?}");
        assert!((s[1].rate_bytes_per_s - 10_000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn halving_keeps_alignment_and_seq_maps_to_time() {
        let mut g = GrowthTracker::new(10, 8);
        let sites = SiteTable::default();
        for i in 0..20u64 {
            g.tick(i * 10, i * 2, &sites, false, i);
        }
        assert!(g.times.len() < 8);
        assert_eq!(g.times.len(), g.seqs.len());
        assert_eq!(g.times.len(), g.totals.len());
        // seq is 2 × time / 10, so time = seq × 5 between samples.
        let t = g.time_of_seq(g.seqs[1] + 2);
        assert!(t > g.times[1] && t <= g.times[2], "{t} {:?}", g.times);
    }
}
