//! Points in time a report can select: named marks (`stackheap::mark`), requested
//! times (`5s`), and the moment of the out-of-memory. Each keeps every site's live
//! bytes and blocks at that point, so a live-heap flamegraph or a diff can be drawn.

use rustc_hash::FxHashMap as HashMap;

use super::sites::SiteTable;

/// Every site's live heap at one point of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The mark's name, or the requested time as written (`5s`), or `oom`.
    pub name: String,
    /// When, ns since start.
    pub time_ns: u64,
    /// Sequence number of the event it follows.
    pub seq: u64,
    /// Live bytes (recorded, or estimated when sampled) at that point.
    pub live_bytes: u64,
    /// Stack id to (live bytes, live blocks); sites with nothing live are left out.
    pub sites: HashMap<u32, (u64, u64)>,
}

impl Snapshot {
    /// Copy the live figures of every site.
    pub fn take(
        sites: &SiteTable,
        sampled: bool,
        name: String,
        time_ns: u64,
        seq: u64,
        live_bytes: u64,
    ) -> Snapshot {
        let sites = sites
            .iter()
            .map(|(id, s)| (id, s.curr.value(sampled)))
            .filter(|&(_, (b, n))| b > 0 || n > 0)
            .collect();
        Snapshot {
            name,
            time_ns,
            seq,
            live_bytes,
            sites,
        }
    }
}

/// The first failed allocation, as recorded by the `Oom` record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OomEvent {
    /// When, ns since start.
    pub time_ns: u64,
    /// Sequence number.
    pub seq: u64,
    /// Thread index of the failing request.
    pub thread: u32,
    /// Requested bytes.
    pub requested_bytes: u64,
    /// Stack id of the failing request (0 = none).
    pub stack: u32,
    /// Exact live heap in the process at that moment (in-process counter).
    pub live_bytes: i64,
    /// The heap limit, bytes (0 = no limit: the allocator itself failed).
    pub limit_bytes: u64,
    /// Who held the heap then.
    pub held: Snapshot,
}

/// A time written as `5s`, `250ms`, `100us`, `20ns` or a plain number of seconds, in ns.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" | "µs" => 1e3,
        "ns" => 1.0,
        _ => return None,
    };
    let ns = v * mult;
    (ns.is_finite() && ns >= 0.0).then_some(ns.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::analyze::Analyzer;
    use stackheap::format::Event;

    fn alloc(seq: u64, addr: u64, size: u64, stack: u32) -> Event {
        Event::Alloc {
            seq,
            time_ns: seq * 1000,
            thread: 1,
            addr,
            size,
            stack,
            depth: 0,
        }
    }

    #[test]
    fn marks_times_and_oom_keep_the_live_heap_of_their_moment() {
        let mut an = Analyzer::new(1, 100).snapshot_at(vec![(2500, "2.5us".into())]);
        an.event(&alloc(1, 0x10, 100, 1));
        an.event(&Event::Mark {
            seq: 2,
            time_ns: 2000,
            thread: 1,
            name: "warmup".into(),
        });
        an.event(&alloc(3, 0x20, 50, 2));
        an.event(&alloc(4, 0x30, 70, 1));
        an.event(&Event::Free {
            seq: 5,
            time_ns: 5000,
            thread: 1,
            addr: 0x10,
        });
        an.event(&Event::Oom {
            seq: 6,
            time_ns: 6000,
            thread: 1,
            size: 4096,
            stack: 3,
            depth: 0,
            live_bytes: 120,
            limit_bytes: 200,
        });
        let agg = an.finish();
        assert_eq!(agg.marks.len(), 1);
        assert_eq!(agg.marks[0].live_bytes, 100);
        assert_eq!(agg.marks[0].sites.get(&1), Some(&(100, 1)));
        assert_eq!(agg.marks[0].sites.get(&2), None);
        // The first event at or after 2.5 µs is the allocation at 3 µs.
        assert_eq!(agg.time_points[0].name, "2.5us");
        assert_eq!(agg.time_points[0].live_bytes, 150);
        let oom = agg.oom.expect("oom");
        assert_eq!(oom.requested_bytes, 4096);
        assert_eq!(oom.limit_bytes, 200);
        assert_eq!(oom.held.live_bytes, 120);
        assert_eq!(oom.held.sites.get(&1), Some(&(70, 1)));
        assert_eq!(oom.held.sites.get(&2), Some(&(50, 1)));
        assert_eq!(agg.events.failed_allocs, 1);
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("5s"), Some(5_000_000_000));
        assert_eq!(parse_time("1.5"), Some(1_500_000_000));
        assert_eq!(parse_time("250ms"), Some(250_000_000));
        assert_eq!(parse_time("warmup"), None);
        assert_eq!(parse_time("5x"), None);
    }
}
