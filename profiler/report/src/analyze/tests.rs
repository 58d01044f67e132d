//! Aggregator tests: synthetic traces in, figures compared with what the input implies.

use std::collections::HashMap;

use stackheap::format::encode::global;
use stackheap::format::reader::TraceReader;
use stackheap::format::writer::{frame_chunk, SyntheticTrace};
use stackheap::format::{Counters, Event, Header};

use super::*;
use crate::{analyze_reader, Analysis, AnalyzeOptions, TotalsSource};

/// A small seeded generator (SplitMix64) so random traces are reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn header(rate: u64) -> Header {
    Header {
        pid: 42,
        sample_rate: rate,
        exe: "/usr/bin/synthetic".into(),
        argv: vec!["synthetic".into(), "--flag".into()],
        ..Default::default()
    }
}

fn no_symbols() -> AnalyzeOptions {
    AnalyzeOptions {
        symbolize: false,
        ..Default::default()
    }
}

fn analyze(bytes: &[u8]) -> Analysis {
    analyze_reader(TraceReader::new(bytes).unwrap(), &no_symbols()).unwrap()
}

const STACKS: [&[u64]; 4] = [
    &[0x1010, 0x2000, 0x3000],
    &[0x1020, 0x2000, 0x3000],
    &[0x1030, 0x2100, 0x3000],
    &[],
];

/// A random full-mode trace: allocs, frees and reallocs over a few stacks and threads.
fn random_trace(seed: u64, n: usize) -> SyntheticTrace {
    let mut rng = Rng::new(seed);
    let mut t = SyntheticTrace::new(&header(1));
    t.thread_start(1, "main", 0x7fff_0000, 8 << 20, 0);
    t.thread_start(2, "worker", 0x7ffe_0000, 2 << 20, 0);
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut next_addr = 0x10_000u64;
    for i in 0..n {
        let time = 1000 * (i as u64 + 1);
        let thread = 1 + rng.below(2) as u32;
        let r = rng.below(10);
        if r < 5 || live.is_empty() {
            let size = 1 + rng.below(5000);
            let stack = STACKS[rng.below(4) as usize];
            t.alloc(time, thread, next_addr, size, stack);
            live.push((next_addr, size));
            next_addr += 0x10_000;
        } else if r < 8 {
            let (addr, size) = live.swap_remove(rng.below(live.len() as u64) as usize);
            t.free(time, thread, addr, size);
        } else {
            let k = rng.below(live.len() as u64) as usize;
            let (old, old_size) = live[k];
            let new_size = 1 + rng.below(8000);
            let stack = STACKS[rng.below(4) as usize];
            t.realloc(time, thread, old, old_size, next_addr, new_size, stack);
            live[k] = (next_addr, new_size);
            next_addr += 0x10_000;
        }
    }
    t
}

#[test]
fn counters_from_events_equal_the_synthetic_counters() {
    for seed in 0..5 {
        let t = random_trace(seed, 400);
        let expected = t.counters();
        let a = analyze(&t.finish(10_000_000, 0));
        assert_eq!(a.events.as_counters(), expected, "seed {seed}");
        assert_eq!(a.heap.source, TotalsSource::Events);
        assert_eq!(a.heap.total_allocs, expected.total_allocs);
        assert_eq!(a.heap.total_frees, expected.total_frees);
        assert_eq!(a.heap.total_bytes, expected.total_bytes);
        assert_eq!(a.heap.peak_bytes, expected.peak_bytes);
        assert_eq!(a.heap.peak_blocks, expected.peak_blocks);
        assert_eq!(a.heap.peak_time_ns, expected.peak_time_ns);
        assert_eq!(a.heap.leaked_bytes, expected.live_bytes as u64);
        assert_eq!(a.heap.leaked_blocks, expected.live_blocks as u64);
        assert_eq!(
            a.trailer,
            Some(Counters {
                time_ns: 10_000_000,
                ..expected
            })
        );
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert!(a.trace.complete);
        // Per-site figures add up to the totals.
        let sum = |f: fn(&crate::Site) -> u64| a.sites.iter().map(f).sum::<u64>();
        assert_eq!(sum(|s| s.alloc_bytes), expected.total_bytes);
        assert_eq!(sum(|s| s.alloc_count), expected.total_allocs);
        assert_eq!(sum(|s| s.leaked_bytes), expected.live_bytes as u64);
        assert_eq!(sum(|s| s.peak_bytes), expected.peak_bytes);
        assert_eq!(sum(|s| s.peak_blocks), expected.peak_blocks);
        assert_eq!(a.threads.len(), 2);
        assert_eq!(
            a.threads.iter().map(|t| t.allocs).sum::<u64>(),
            expected.total_allocs
        );
    }
}

/// Events straight into the analyzer: `(stack, kind)`.
enum Op {
    Alloc(u64, u64, u32),
    Free(u64),
    Realloc(u64, u64, u64, u32),
}

fn feed(ops: &[Op]) -> Aggregates {
    let mut an = Analyzer::new(1, 2000);
    for (seq, op) in ops.iter().enumerate() {
        let seq = seq as u64;
        let time_ns = seq * 10;
        let e = match *op {
            Op::Alloc(addr, size, stack) => Event::Alloc {
                seq,
                time_ns,
                thread: 1,
                addr,
                size,
                stack,
                depth: 0,
            },
            Op::Free(addr) => Event::Free {
                seq,
                time_ns,
                thread: 1,
                addr,
            },
            Op::Realloc(old_addr, new_addr, new_size, stack) => Event::Realloc {
                seq,
                free_seq: seq,
                time_ns,
                thread: 1,
                old_addr,
                old_size: 0,
                new_addr,
                new_size,
                stack,
                depth: 0,
            },
        };
        an.event(&e);
    }
    an.finish()
}

/// Replays `ops`, copying the per-site live set at every new maximum.
fn brute_force_peak(ops: &[Op]) -> (u64, HashMap<u32, (u64, u64)>) {
    let mut live: HashMap<u64, (u64, u32)> = HashMap::new();
    let mut best = 0u64;
    let mut at_peak = HashMap::new();
    for op in ops {
        match *op {
            Op::Alloc(addr, size, stack) => {
                live.insert(addr, (size, stack));
            }
            Op::Free(addr) => {
                live.remove(&addr);
            }
            Op::Realloc(old, new, size, stack) => {
                live.remove(&old);
                live.insert(new, (size, stack));
            }
        }
        let total: u64 = live.values().map(|v| v.0).sum();
        if total > best {
            best = total;
            at_peak = HashMap::new();
            for &(size, stack) in live.values() {
                let e: &mut (u64, u64) = at_peak.entry(stack).or_default();
                e.0 += size;
                e.1 += 1;
            }
        }
    }
    (best, at_peak)
}

#[test]
fn peak_attribution_matches_brute_force() {
    for seed in 0..50 {
        let mut rng = Rng::new(1000 + seed);
        let mut ops = Vec::new();
        let mut live: Vec<u64> = Vec::new();
        let mut next = 1u64;
        for _ in 0..300 {
            let r = rng.below(10);
            let stack = rng.below(6) as u32;
            if r < 5 || live.is_empty() {
                ops.push(Op::Alloc(next, 1 + rng.below(1000), stack));
                live.push(next);
                next += 1;
            } else if r < 8 {
                let a = live.swap_remove(rng.below(live.len() as u64) as usize);
                ops.push(Op::Free(a));
            } else if r < 9 {
                let k = rng.below(live.len() as u64) as usize;
                ops.push(Op::Realloc(live[k], next, 1 + rng.below(3000), stack));
                live[k] = next;
                next += 1;
            } else {
                // A free of a block never seen allocated must not disturb anything.
                ops.push(Op::Free(1 << 40));
            }
        }
        let agg = feed(&ops);
        let (best, at_peak) = brute_force_peak(&ops);
        assert_eq!(agg.events.peak_bytes, best, "seed {seed}");
        for (id, s) in agg.sites.iter() {
            let want = at_peak.get(&id).copied().unwrap_or_default();
            assert_eq!(
                (s.at_peak.bytes, s.at_peak.blocks),
                want,
                "seed {seed} site {id}"
            );
        }
    }
}

#[test]
fn realloc_moves_the_block_to_the_new_site() {
    let agg = feed(&[
        Op::Alloc(0x10, 100, 1),
        Op::Realloc(0x10, 0x20, 300, 2),
        Op::Alloc(0x30, 5, 1),
    ]);
    let s1 = agg.sites.get(1).unwrap();
    let s2 = agg.sites.get(2).unwrap();
    assert_eq!((s1.alloc.bytes, s1.alloc.blocks), (105, 2));
    assert_eq!((s1.curr.bytes, s1.curr.blocks), (5, 1));
    assert_eq!((s2.alloc.bytes, s2.alloc.blocks), (300, 1));
    assert_eq!((s2.curr.bytes, s2.curr.blocks), (300, 1));
    assert_eq!(agg.events.total_allocs, 3);
    assert_eq!(agg.events.total_frees, 1);
    assert_eq!(agg.events.total_bytes, 405);
    assert_eq!(agg.events.peak_bytes, 305);
    assert_eq!(agg.events.peak_time_ns, 20);
}

#[test]
fn unknown_frees_are_counted_apart_and_flagged_against_the_trailer() {
    let mut t = SyntheticTrace::new(&header(1));
    t.thread_start(1, "main", 0, 0, 0);
    t.alloc(10, 1, 0x100, 64, &[0x1]);
    // Allocated before profiling started: the in-process counters still subtract it.
    t.free(20, 1, 0x999, 1000);
    let a = analyze(&t.finish(30, 0));
    assert_eq!(a.heap.frees_unknown, 1);
    assert_eq!(a.heap.total_frees, 1);
    assert_eq!(a.heap.leaked_bytes, 64);
    assert_eq!(a.heap.peak_bytes, 64);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("trailer") && w.contains("live_bytes")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn attached_sessions_count_pre_attach_frees_apart_from_the_live_heap() {
    let mut t = SyntheticTrace::new(&header(1));
    t.attached(0, 0);
    t.thread_start(1, "main", 0, 0, 0);
    t.alloc(10, 1, 0x100, 64, &[0x1]);
    t.alloc(11, 1, 0x200, 32, &[0x1]);
    t.free(12, 1, 0x200, 32);
    // Three frees of blocks older than the attach, counted in the process only.
    t.attached(20, 3);
    let a = analyze(&t.finish(30, 0));
    assert!(a.program.attached);
    assert_eq!(a.heap.frees_unknown, 3);
    assert_eq!(a.heap.total_frees, 1 + 3);
    assert_eq!(a.heap.total_allocs, 2);
    assert_eq!(a.heap.leaked_bytes, 64);
    assert_eq!(a.heap.peak_bytes, 96);
    // The trailer and the events agree: the pre-attach frees are in neither.
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let text = crate::summary_text(&a);
    assert!(text.contains("attached to the running process"), "{text}");
    assert!(
        text.contains("frees of blocks allocated before the attach: 3"),
        "{text}"
    );
    // A trace without the record is not attached.
    let mut t = SyntheticTrace::new(&header(1));
    t.thread_start(1, "main", 0, 0, 0);
    t.alloc(10, 1, 0x100, 64, &[0x1]);
    assert!(!analyze(&t.finish(30, 0)).program.attached);
}

#[test]
fn sample_weight_is_the_inverse_probability() {
    assert_eq!(sample_weight(100, 1), 1.0);
    let w = sample_weight(4096, 4096);
    assert!((w - 1.0 / (1.0 - (-1f64).exp())).abs() < 1e-12);
    // Huge allocations are always sampled.
    assert!((sample_weight(1 << 40, 4096) - 1.0).abs() < 1e-12);
}

/// Append a global chunk (counters record or trailer) to raw trace bytes.
fn append_global(bytes: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    f(&mut body);
    frame_chunk(bytes, 0, &[&body]);
}

struct TrueSite {
    bytes: u64,
    count: u64,
    live_bytes: u64,
    /// Variances of the estimators of bytes and count (sum over allocations).
    var_bytes: f64,
    var_count: f64,
    var_live: f64,
}

#[test]
fn sampled_estimates_are_close_to_the_truth() {
    const RATE: u64 = 8192;
    let mut rng = Rng::new(7);
    let mut t = SyntheticTrace::new(&header(RATE));
    t.thread_start(1, "main", 0, 0, 0);
    let stacks: [&[u64]; 3] = [&[0x11, 0x99], &[0x22, 0x99], &[0x33, 0x99]];
    let mut truth: Vec<TrueSite> = (0..3)
        .map(|_| TrueSite {
            bytes: 0,
            count: 0,
            live_bytes: 0,
            var_bytes: 0.0,
            var_count: 0.0,
            var_live: 0.0,
        })
        .collect();
    let mut c = Counters::default();
    let mut live: Vec<(u64, u64, bool)> = Vec::new();
    let mut addr = 0x1000u64;
    for i in 0..60_000u64 {
        let time = i * 100;
        let site = rng.below(3) as usize;
        if rng.below(3) == 0 && !live.is_empty() {
            let (a, size, sampled) = live.swap_remove(rng.below(live.len() as u64) as usize);
            if sampled {
                t.free(time, 1, a, size);
            }
            c.total_frees += 1;
            c.live_bytes -= size as i64;
            c.live_blocks -= 1;
            continue;
        }
        // Sizes of three very different scales per site.
        let size = match site {
            0 => 64 + rng.below(448),
            1 => 512 + rng.below(4096),
            _ => 20_000 + rng.below(100_000),
        };
        let p = 1.0 - (-(size as f64) / RATE as f64).exp();
        let sampled = rng.unit() < p;
        if sampled {
            t.alloc(time, 1, addr, size, stacks[site]);
        }
        let leaks = site == 2 || i % 2 == 0;
        if !leaks {
            live.push((addr, size, sampled));
        }
        let ts = &mut truth[site];
        ts.bytes += size;
        ts.count += 1;
        let s = size as f64;
        ts.var_bytes += s * s * (1.0 - p) / p;
        ts.var_count += (1.0 - p) / p;
        if leaks {
            ts.live_bytes += size;
            ts.var_live += s * s * (1.0 - p) / p;
        }
        c.total_allocs += 1;
        c.total_bytes += size;
        c.live_bytes += size as i64;
        c.live_blocks += 1;
        if c.live_bytes as u64 > c.peak_bytes {
            c.peak_bytes = c.live_bytes as u64;
            c.peak_blocks = c.live_blocks as u64;
            c.peak_time_ns = time;
        }
        c.time_ns = time;
        addr += 0x100;
    }
    let mut bytes = t.bytes().to_vec();
    // Without a trailer the last counters record is the truth.
    let mut early = c;
    early.total_allocs -= 1;
    append_global(&mut bytes, |b| global::counters(b, &early));
    let a = analyze(&bytes);
    assert_eq!(a.heap.source, TotalsSource::Counters);
    assert_eq!(a.heap.total_allocs, early.total_allocs);
    append_global(&mut bytes, |b| global::trailer(b, &c, 0));

    let a = analyze(&bytes);
    assert!(a.sampled());
    assert_eq!(a.heap.source, TotalsSource::Trailer);
    assert_eq!(a.heap.total_allocs, c.total_allocs);
    assert_eq!(a.heap.total_bytes, c.total_bytes);
    assert_eq!(a.heap.peak_bytes, c.peak_bytes);
    assert_eq!(a.heap.leaked_bytes, c.live_bytes as u64);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // Each estimate within 4 standard deviations of the truth (the deviation follows
    // from the true allocations and their sampling probabilities).
    for (i, ts) in truth.iter().enumerate() {
        let site = a
            .sites
            .iter()
            .find(|s| {
                s.frames.first().map(|f| f.name.as_str()) == Some(&format!("{:#x}", stacks[i][0]))
            })
            .unwrap();
        let close = |est: u64, truth: u64, var: f64, what: &str| {
            let tol = 4.0 * var.sqrt() + 1.0;
            assert!(
                (est as f64 - truth as f64).abs() <= tol,
                "site {i} {what}: estimated {est}, true {truth}, tolerance {tol}"
            );
        };
        close(site.alloc_bytes, ts.bytes, ts.var_bytes, "bytes");
        close(site.alloc_count, ts.count, ts.var_count, "count");
        close(site.leaked_bytes, ts.live_bytes, ts.var_live, "leaked");
        // The tolerance is meaningful: well under the figure itself.
        assert!(
            4.0 * ts.var_bytes.sqrt() < 0.2 * ts.bytes as f64,
            "site {i}"
        );
    }
}

#[test]
fn rss_and_timeline_are_bounded_and_keep_the_peak() {
    let t = random_trace(3, 3000);
    let expected = t.counters();
    let mut an = Analyzer::new(1, 100);
    let bytes = t.finish(5_000_000, 0);
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    while let Some(e) = r.next_event().unwrap() {
        an.event(&e);
    }
    let agg = an.finish();
    assert!(agg.heap_series.buckets().len() <= 100);
    assert_eq!(
        agg.heap_series.max(),
        Some((expected.peak_time_ns, expected.peak_bytes))
    );
}
