//! The HTML, DHAT and pprof renderers on a synthetic trace: their figures are the
//! trace's, and their structure is what the readers of those formats expect.

use std::io::Read;

use stackheap::format::reader::TraceReader;
use stackheap::format::writer::SyntheticTrace;
use stackheap::format::Header;
use stackheap_report::render::{dhat_json, html, pprof};
use stackheap_report::{analyze_reader, Analysis, AnalyzeOptions};

fn analysis(t: SyntheticTrace, end_ns: u64) -> Analysis {
    let mut o = AnalyzeOptions::default();
    o.symbolize = false;
    let bytes = t.finish(end_ns, 0);
    analyze_reader(TraceReader::new(&bytes[..]).unwrap(), &o).unwrap()
}

/// Site A (frames 0x10, 0x20) leaks 100 bytes at 1 ms; site B (0x11, 0x20) holds 4000
/// bytes from 2 to 3 ms, then 300 allocations of 7 bytes at site C, all freed.
fn trace() -> SyntheticTrace {
    let mut t = SyntheticTrace::new(&Header {
        pid: 77,
        sample_rate: 1,
        exe: "/bin/app".into(),
        argv: vec!["app".into(), "<script>".into()],
        ..Default::default()
    });
    t.thread_start(1, "main", 0x7fff_0000, 8 << 20, 0);
    t.alloc(1_000_000, 1, 0x1000, 100, &[0x10, 0x20]);
    t.alloc(2_000_000, 1, 0x2000, 4000, &[0x11, 0x20]);
    t.free(3_000_000, 1, 0x2000, 4000);
    for i in 0..300u64 {
        t.alloc(
            4_000_000 + i * 10_000,
            1,
            0x10_000 + i * 16,
            7,
            &[0x12, 0x20],
        );
    }
    for i in 0..300u64 {
        t.free(8_000_000 + i * 10_000, 1, 0x10_000 + i * 16, 7);
    }
    t
}

#[test]
fn html_carries_the_figures_and_bounded_snapshots() {
    let a = analysis(trace(), 20_000_000);
    let page = html::render(&a).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    // The argv "<script>" is escaped, and nothing but the page's own scripts remain.
    assert_eq!(page.matches("<script").count(), 2, "{page}");
    assert!(!page.contains("https://") && !page.contains("src="));
    for (k, v) in [
        ("total_bytes", a.heap.total_bytes),
        ("peak_bytes", a.heap.peak_bytes),
        ("leaked_bytes", a.heap.leaked_bytes),
        ("total_allocs", a.heap.total_allocs),
    ] {
        assert!(
            page.contains(&format!("data-k=\"{k}\" data-v=\"{v}\"")),
            "{k} = {v}"
        );
    }
    assert_eq!(a.heap.leaked_bytes, 100);
    // Snapshots: bounded, in time order, and the last is the end state (the leak).
    assert!(!a.snapshots.is_empty() && a.snapshots.len() <= 65);
    assert!(a.snapshots.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    let last = a.snapshots.last().unwrap();
    assert_eq!(last.sites.iter().map(|s| s.1).sum::<u64>(), 100);
    // Each snapshot's total is the live heap of the trace at that moment.
    for s in &a.snapshots {
        let t = s.time_ns;
        let mut live = 0u64;
        if t >= 1_000_000 {
            live += 100;
        }
        if (2_000_000..3_000_000).contains(&t) {
            live += 4000;
        }
        let allocated = (0..300u64).filter(|i| 4_000_000 + i * 10_000 <= t).count() as u64;
        let freed = (0..300u64).filter(|i| 8_000_000 + i * 10_000 <= t).count() as u64;
        live += 7 * (allocated - freed);
        assert_eq!(s.sites.iter().map(|s| s.1).sum::<u64>(), live, "at {t}");
    }
    // One clickable band per snapshot on the timeline.
    assert_eq!(page.matches("class=\"snap\"").count(), a.snapshots.len());
}

#[test]
fn dhat_json_has_the_viewers_fields_and_the_trace_figures() {
    let a = analysis(trace(), 20_000_000);
    let j = dhat_json::render(&a);
    assert_eq!(j["dhatFileVersion"], 2);
    assert_eq!(j["mode"], "rust-heap");
    assert_eq!(j["bklt"], true);
    assert_eq!(j["te"], a.duration_ns / 1000);
    assert_eq!(j["tg"], a.heap.peak_time_ns / 1000);
    let ftbl = j["ftbl"].as_array().unwrap();
    assert_eq!(ftbl[0], "[root]");
    let pps = j["pps"].as_array().unwrap();
    assert_eq!(pps.len(), 3);
    let sum = |k: &str| pps.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("tb"), a.heap.total_bytes);
    assert_eq!(sum("tbk"), a.heap.total_allocs);
    assert_eq!(sum("gb"), a.heap.peak_bytes);
    assert_eq!(sum("eb"), a.heap.leaked_bytes);
    for p in pps {
        for k in [
            "tb", "tbk", "tl", "mb", "mbk", "gb", "gbk", "eb", "ebk", "fs",
        ] {
            assert!(p.get(k).is_some(), "{k} missing in {p}");
        }
        for f in p["fs"].as_array().unwrap() {
            let i = f.as_u64().unwrap() as usize;
            assert!(i > 0 && i < ftbl.len());
        }
    }
}

/// A minimal protobuf reader: (field, varint value or bytes) of one message.
fn fields(mut b: &[u8]) -> Vec<(u64, Result<u64, Vec<u8>>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let x = b[0];
            *b = &b[1..];
            v |= u64::from(x & 0x7f) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => out.push((key >> 3, Ok(varint(&mut b)))),
            2 => {
                let n = varint(&mut b) as usize;
                out.push((key >> 3, Err(b[..n].to_vec())));
                b = &b[n..];
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

fn packed(b: &[u8]) -> Vec<u64> {
    let mut v = Vec::new();
    let mut cur = 0u64;
    let mut shift = 0;
    for &x in b {
        cur |= u64::from(x & 0x7f) << shift;
        shift += 7;
        if x < 0x80 {
            v.push(cur);
            cur = 0;
            shift = 0;
        }
    }
    v
}

#[test]
fn pprof_is_gzipped_protobuf_with_go_heap_sample_types() {
    let a = analysis(trace(), 20_000_000);
    let gz = pprof::render(&a).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw, pprof::encode(&a));
    let top = fields(&raw);
    let strings: Vec<String> = top
        .iter()
        .filter(|f| f.0 == 6)
        .map(|f| String::from_utf8(f.1.clone().unwrap_err()).unwrap())
        .collect();
    assert_eq!(strings[0], "");
    let types: Vec<(String, String)> = top
        .iter()
        .filter(|f| f.0 == 1)
        .map(|f| {
            let vt = fields(f.1.as_ref().unwrap_err());
            let s = |i: usize| strings[*vt[i].1.as_ref().unwrap() as usize].clone();
            (s(0), s(1))
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(types, want);
    // Sample values summed per type are the run's totals.
    let mut sums = [0u64; 4];
    let mut samples = 0;
    for f in top.iter().filter(|f| f.0 == 2) {
        samples += 1;
        for (n, v) in fields(f.1.as_ref().unwrap_err()) {
            if n == 2 {
                for (i, x) in packed(&v.unwrap_err()).into_iter().enumerate() {
                    sums[i] += x;
                }
            }
        }
    }
    assert_eq!(samples, 3);
    assert_eq!(
        sums,
        [
            a.heap.total_allocs,
            a.heap.total_bytes,
            a.heap.leaked_blocks,
            a.heap.leaked_bytes
        ]
    );
    // Period 1 (every allocation recorded); one function and location per frame
    // address (0x10, 0x11, 0x12, 0x20), shared between the sites.
    assert!(top.iter().any(|f| f.0 == 12 && f.1 == Ok(1)));
    assert_eq!(top.iter().filter(|f| f.0 == 5).count(), 4);
    assert_eq!(top.iter().filter(|f| f.0 == 4).count(), 4);
}
