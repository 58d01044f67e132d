//! The hot path allocates nothing: the profiler's own allocations during a run of a
//! million allocations stay bounded and do not grow with the number of events.

use stackheap_tests::{scratch, sh_workload};

fn own_allocs(n: usize) -> u64 {
    let dir = scratch(&format!("hot-{n}"));
    let s = sh_workload("many", &dir.join("t.trace"), &[&n.to_string()]);
    s.trim()
        .strip_prefix("own_allocs=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad output {s:?}"))
}

#[test]
fn profiler_allocations_do_not_scale_with_events() {
    let small = own_allocs(10_000);
    let large = own_allocs(1_000_000);
    // 2 million events (alloc + free) recorded; the profiler's own allocations are a
    // small start-up cost, not one per event, per round of the recorder, or per buffer.
    assert!(
        large < 200,
        "profiler made {large} allocations of its own for 2e6 events"
    );
    assert!(
        large <= small + 20,
        "own allocations grew with events: {small} for 2e4 events, {large} for 2e6"
    );
}
