//! The heap limit from code: `try_reserve` sees an error exactly when the live heap
//! would go over the limit, the first failure is an `Oom` record with the live heap and
//! the request, later ones are plain failed allocations, and marks are in the trace in
//! order. One test in this file: a limit applies to every thread of the process.

use stackheap::format::reader::TraceReader;
use stackheap::format::Event;

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

const LIMIT: u64 = 4 << 20;
const CHUNK: usize = 64 << 10;

#[inline(never)]
fn try_chunk() -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(CHUNK).ok()?;
    v.resize(CHUNK, 7);
    Some(v)
}

#[test]
fn limit_fails_like_oom_and_records_it() {
    let dir = std::env::temp_dir().join(format!("stackheap-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.trace");
    let _ = std::fs::remove_file(&path);
    let p = stackheap::Profiler::builder()
        .trace_path(&path)
        .limit(LIMIT)
        .start()
        .unwrap();
    stackheap::mark("before");
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(1024);
    let mut failures = 0;
    for _ in 0..1024 {
        match try_chunk() {
            Some(v) => held.push(v),
            None => {
                failures += 1;
                if failures == 2 {
                    break;
                }
            }
        }
    }
    let live_at_failure = stackheap::counters().live_bytes;
    stackheap::mark("after");
    let n = held.len();
    drop(held);
    let path = p.stop().unwrap();
    assert_eq!(failures, 2, "the limit never refused an allocation");
    // The refusal came when one more chunk would have crossed the limit.
    assert!(live_at_failure as u64 <= LIMIT);
    assert!(
        live_at_failure as u64 + CHUNK as u64 > LIMIT,
        "refused at {live_at_failure} live, limit {LIMIT}"
    );
    // Without a session there is no limit.
    let big = vec![1u8; 2 * LIMIT as usize];
    assert_eq!(big.len(), 2 * LIMIT as usize);
    drop(big);

    let events: Vec<Event> = TraceReader::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ooms: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Oom { .. }))
        .collect();
    assert_eq!(ooms.len(), 1, "exactly one Oom record");
    match ooms[0] {
        Event::Oom {
            size,
            live_bytes,
            limit_bytes,
            stack,
            ..
        } => {
            assert_eq!(*size, CHUNK as u64);
            assert_eq!(*limit_bytes, LIMIT);
            assert_eq!(*live_bytes, live_at_failure);
            assert_ne!(*stack, 0, "the failing request has a stack");
        }
        _ => unreachable!(),
    }
    let failed = events
        .iter()
        .filter(|e| matches!(e, Event::AllocFailed { size, .. } if *size == CHUNK as u64))
        .count();
    assert_eq!(failed, 1, "the second failure is a plain AllocFailed");
    let marks: Vec<(&str, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Mark { name, seq, .. } => Some((name.as_str(), *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(
        marks.iter().map(|m| m.0).collect::<Vec<_>>(),
        ["before", "after"]
    );
    // Every chunk allocation lies between the two marks.
    let chunk_seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Alloc { size, seq, .. } if *size == CHUNK as u64 => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(chunk_seqs.len(), n);
    assert!(chunk_seqs.iter().all(|&s| s > marks[0].1 && s < marks[1].1));
}
