//! Exactness against an oracle: the same workload under `dhat::Alloc` (the
//! `dhat_workload` binary) and under stackheap (the `sh_workload` binary) must give
//! identical counters.

use stackheap::format::reader::TraceReader;
use stackheap::format::Event;
use stackheap_tests::{run_ok, scratch, sh_workload};

struct Dhat {
    total_blocks: u64,
    total_bytes: u64,
    max_blocks: u64,
    max_bytes: u64,
    curr_blocks: u64,
    curr_bytes: u64,
}

/// dhat's figures for the workload, from its own process.
fn dhat_stats() -> std::collections::HashMap<String, u64> {
    let out = run_ok("dhat_workload", &[]);
    out.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

#[test]
fn counters_equal_dhat_heap_stats() {
    // The oracle.
    let d = dhat_stats();
    let dhat_stats = Dhat {
        total_blocks: d["total_blocks"],
        total_bytes: d["total_bytes"],
        max_blocks: d["max_blocks"],
        max_bytes: d["max_bytes"],
        curr_blocks: d["curr_blocks"],
        curr_bytes: d["curr_bytes"],
    };

    // stackheap on the same workload.
    let dir = scratch("dhat");
    let trace = dir.join("known.trace");
    sh_workload("known", &trace, &[]);

    // 1. The exact in-process counters (trailer).
    let mut r = TraceReader::open(&trace).unwrap();
    let mut trailer = None;
    while let Some(e) = r.next_event().unwrap() {
        if let Event::Trailer { counters, lost } = e {
            trailer = Some((counters, lost));
        }
    }
    let (c, lost) = trailer.expect("trailer");
    assert_eq!(lost, 0);
    assert_eq!(c.total_allocs, dhat_stats.total_blocks, "total blocks");
    assert_eq!(c.total_bytes, dhat_stats.total_bytes, "total bytes");
    assert_eq!(c.peak_bytes, dhat_stats.max_bytes, "peak bytes");
    assert_eq!(c.peak_blocks, dhat_stats.max_blocks, "peak blocks");
    assert_eq!(c.live_bytes, dhat_stats.curr_bytes as i64, "leaked bytes");
    assert_eq!(
        c.live_blocks, dhat_stats.curr_blocks as i64,
        "leaked blocks"
    );

    // 2. The report, computed from the events alone.
    let a = stackheap_report::analyze_path(&trace, &Default::default()).unwrap();
    let j = stackheap_report::summary_json(&a);
    let get = |p: &str| {
        j.pointer(p)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("{p} missing in {j}"))
    };
    assert_eq!(get("/heap/total_allocs"), dhat_stats.total_blocks);
    assert_eq!(get("/heap/total_bytes"), dhat_stats.total_bytes);
    assert_eq!(get("/heap/peak_bytes"), dhat_stats.max_bytes);
    assert_eq!(get("/heap/peak_blocks"), dhat_stats.max_blocks);
    assert_eq!(get("/heap/leaked_bytes"), dhat_stats.curr_bytes);
    assert_eq!(get("/heap/leaked_blocks"), dhat_stats.curr_blocks);
    assert_eq!(get("/heap/total_frees"), c.total_frees);
}
