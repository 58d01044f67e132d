//! The global peak of the live heap, found in one pass.
//!
//! Each site's share of the peak is settled lazily (dhat's trick): the tracker only
//! remembers the `seq` of the event that set the current maximum; [`super::sites`]
//! snapshots a site's live figures just before it changes if it has not changed since
//! that event, and once more for every site at the end. No copy of the live set is made
//! at each new maximum.

use super::Tally;

/// The live heap at its highest point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peak {
    /// Live bytes and blocks at the peak (recorded and estimated).
    pub tally: Tally,
    /// When, ns since start.
    pub time_ns: u64,
    /// Sequence number of the event that reached it; `None` if the heap never grew.
    pub seq: Option<u64>,
}

/// Tracks the highest live heap: exact bytes in full mode, estimated bytes when sampled.
#[derive(Debug, Default)]
pub struct PeakTracker {
    sampled: bool,
    peak: Peak,
}

impl PeakTracker {
    /// A tracker comparing estimated bytes when `sampled`, recorded bytes otherwise.
    pub fn new(sampled: bool) -> Self {
        PeakTracker {
            sampled,
            peak: Peak::default(),
        }
    }

    fn measure(&self, t: &Tally) -> f64 {
        if self.sampled {
            t.est_bytes
        } else {
            t.bytes as f64
        }
    }

    /// After event `seq` changed the live heap to `live`: a strictly higher value is a
    /// new peak (so the first time a maximum is reached is the one kept).
    pub fn update(&mut self, live: &Tally, seq: u64, time_ns: u64) -> bool {
        let higher = if self.sampled {
            self.measure(live) > self.measure(&self.peak.tally)
        } else {
            live.bytes > self.peak.tally.bytes
        };
        if higher {
            self.peak = Peak {
                tally: *live,
                time_ns,
                seq: Some(seq),
            };
        }
        higher
    }

    /// Seq of the event that set the current maximum.
    pub fn peak_seq(&self) -> Option<u64> {
        self.peak.seq
    }

    /// The peak so far.
    pub fn peak(&self) -> Peak {
        self.peak
    }
}
