//! Two threads allocating at the same time lose nothing: every allocation and free is
//! in the trace, and the totals are exact.

use stackheap::format::reader::TraceReader;
use stackheap::format::Event;
use stackheap_tests::{scratch, sh_workload};

#[test]
fn two_threads_totals_exact() {
    let per_thread = 200_000u64;
    let dir = scratch("threads");
    let trace = dir.join("t.trace");
    sh_workload("threads", &trace, &[&per_thread.to_string()]);

    let mut r = TraceReader::open(&trace).unwrap();
    let mut per_thread_32 = std::collections::HashMap::<u32, u64>::new();
    let (mut allocs, mut frees, mut reallocs) = (0u64, 0u64, 0u64);
    let mut last_seq = None;
    let mut trailer = None;
    let mut live = std::collections::HashMap::<u64, u64>::new();
    while let Some(e) = r.next_event().unwrap() {
        let seq = match e {
            Event::Alloc {
                seq, thread, size, ..
            } => {
                allocs += 1;
                if size == 32 {
                    *per_thread_32.entry(thread).or_default() += 1;
                }
                Some(seq)
            }
            Event::Free { seq, addr, .. } => {
                live.remove(&addr);
                frees += 1;
                Some(seq)
            }
            Event::Realloc {
                seq,
                old_addr,
                new_addr,
                new_size,
                ..
            } => {
                live.remove(&old_addr);
                live.insert(new_addr, new_size);
                reallocs += 1;
                Some(seq)
            }
            Event::Trailer { counters, lost } => {
                trailer = Some((counters, lost));
                None
            }
            _ => None,
        };
        if let Some(s) = seq {
            assert!(last_seq < Some(s), "events come in global order");
            last_seq = Some(s);
        }
    }
    let (c, lost) = trailer.expect("trailer");
    assert_eq!(lost, 0, "no event lost");
    assert_eq!(r.status().late_events, 0);
    // The counters and the event stream agree exactly.
    assert_eq!(c.total_allocs, allocs + reallocs);
    assert_eq!(c.total_frees, frees + reallocs);
    // Each worker's 32-byte allocations are all there, on two distinct threads.
    let mut counts: Vec<u64> = per_thread_32
        .values()
        .copied()
        .filter(|&n| n >= per_thread)
        .collect();
    counts.sort();
    assert_eq!(counts, vec![per_thread, per_thread], "{per_thread_32:?}");
    // The live total kept in-process (plain stores while only the main thread allocated,
    // atomic adds once the workers registered) equals the one rebuilt from the events.
    assert_eq!(c.live_bytes, live.values().sum::<u64>() as i64);
    assert_eq!(c.live_blocks, live.len() as i64);
}

/// Run the churn demo under the CLI and return summary.json.
fn churn_summary(name: &str, sample: &str, threads: &str) -> serde_json::Value {
    let dir = scratch(name);
    let o = std::process::Command::new(stackheap_tests::bin("stackheap"))
        .args(["run", "--sample", sample, "--out"])
        .arg(&dir)
        .arg("--")
        .arg(stackheap_tests::bin("churn"))
        .args(["--threads", threads, "--iters", "50000"])
        .output()
        .expect("run stackheap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
        .expect("json")
}

/// With several threads the in-process peak is counted in batches: the report says how
/// far it may be off (and that it is exact with one thread, and in full mode).
#[test]
fn the_batched_peak_says_its_bound() {
    let batch = stackheap::alloc::counters::BATCH as u64;
    let two = churn_summary("peak-bound-2", "64KiB", "2");
    assert_eq!(two["heap"]["source"], "trailer", "{}", two["heap"]);
    let threads = two["threads"].as_array().unwrap().len() as u64;
    assert!(threads >= 2, "{}", two["threads"]);
    assert_eq!(two["heap"]["peak_bytes_within"], threads * batch);
    let one = churn_summary("peak-bound-1", "64KiB", "1");
    assert_eq!(one["heap"]["source"], "trailer");
    assert_eq!(one["heap"]["peak_bytes_within"], 0, "{}", one["heap"]);
    let full = churn_summary("peak-bound-full", "1", "2");
    assert_eq!(full["heap"]["source"], "events");
    assert_eq!(full["heap"]["peak_bytes_within"], 0, "{}", full["heap"]);
}
