//! Bounded time series: values over time in at most `max_points` buckets of equal
//! width. The width doubles (merging neighbours) whenever a time falls past the last
//! bucket, so memory stays bounded without knowing the duration in advance. Each
//! bucket keeps its maximum (so a peak is never lost) and its last value (so a step
//! down is drawn where it happened).

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Highest value in the bucket.
    pub max: u64,
    /// When it was reached, ns since start.
    pub max_t: u64,
    /// Value after the bucket's last sample.
    pub last: u64,
    /// When, ns since start.
    pub last_t: u64,
}

impl Bucket {
    fn merge(a: Bucket, b: Bucket) -> Bucket {
        let (max, max_t) = if b.max > a.max {
            (b.max, b.max_t)
        } else {
            (a.max, a.max_t)
        };
        let (last, last_t) = if b.last_t >= a.last_t {
            (b.last, b.last_t)
        } else {
            (a.last, a.last_t)
        };
        Bucket {
            max,
            max_t,
            last,
            last_t,
        }
    }
}

/// A downsampled series of `(time_ns, value)` samples.
#[derive(Debug, Clone, Default)]
pub struct Series {
    width: u64,
    max_points: usize,
    buckets: Vec<Option<Bucket>>,
    samples: u64,
}

impl Series {
    /// An empty series of at most `max_points` buckets (at least 2).
    pub fn new(max_points: usize) -> Self {
        Series {
            width: 1,
            max_points: max_points.max(2),
            buckets: Vec::new(),
            samples: 0,
        }
    }

    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        self.width = self.width.saturating_mul(2);
        self.buckets = old
            .chunks(2)
            .map(|c| match (c[0], c.get(1).copied().flatten()) {
                (Some(a), Some(b)) => Some(Bucket::merge(a, b)),
                (a, b) => a.or(b),
            })
            .collect();
    }

    /// Add a sample.
    pub fn push(&mut self, t: u64, v: u64) {
        if self.max_points == 0 {
            self.max_points = 2;
            self.width = 1;
        }
        let mut idx = t / self.width;
        while idx >= self.max_points as u64 {
            self.coarsen();
            idx = t / self.width;
        }
        let idx = idx as usize;
        if self.buckets.len() <= idx {
            self.buckets.resize(idx + 1, None);
        }
        let s = Bucket {
            max: v,
            max_t: t,
            last: v,
            last_t: t,
        };
        let b = &mut self.buckets[idx];
        *b = Some(match *b {
            Some(old) => Bucket::merge(old, s),
            None => s,
        });
        self.samples += 1;
    }

    /// Number of samples pushed.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Width of a bucket, ns.
    pub fn bucket_ns(&self) -> u64 {
        self.width
    }

    /// The non-empty buckets in time order.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.buckets.iter().flatten().copied().collect()
    }

    /// Points to draw, in time order: each bucket's maximum and, if later and
    /// different, its last value.
    pub fn points(&self) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for b in self.buckets.iter().flatten() {
            v.push((b.max_t, b.max));
            if b.last_t > b.max_t && b.last != b.max {
                v.push((b.last_t, b.last));
            }
        }
        v
    }

    /// Highest value and when.
    pub fn max(&self) -> Option<(u64, u64)> {
        self.buckets
            .iter()
            .flatten()
            .fold(None, |acc: Option<(u64, u64)>, b| match acc {
                Some((t, m)) if m >= b.max => Some((t, m)),
                _ => Some((b.max_t, b.max)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_the_peak() {
        let mut s = Series::new(100);
        let mut peak = (0, 0);
        let mut x: u64 = 12345;
        for t in 0..100_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 40) % 1_000_000;
            if v > peak.1 {
                peak = (t * 1000, v);
            }
            s.push(t * 1000, v);
        }
        assert!(s.buckets().len() <= 100);
        assert_eq!(s.max(), Some(peak));
        assert!(s.points().contains(&peak));
        assert_eq!(s.samples(), 100_000);
        let pts = s.points();
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
    }

    #[test]
    fn empty_series_has_no_points() {
        let s = Series::new(2000);
        assert!(s.points().is_empty());
        assert_eq!(s.max(), None);
    }
}
