//! The test workloads under stackheap, profiled from code around the workload only (as
//! the dhat oracle measures it). Usage: `sh_workload known|threads|many|plain TRACE [N] [SAMPLE]`
//! (`plain` runs `many` without profiling).
//! Prints `own_allocs=N` (the profiler's own allocations during the run).

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: sh_workload known|threads|many TRACE [N] [SAMPLE]");
        std::process::exit(2);
    }
    let n: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let sample: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let own_before =
        stackheap::alloc::counters::OWN_ALLOCS.load(std::sync::atomic::Ordering::Relaxed);
    if args[1] == "plain" {
        // The same loop with stackheap installed but dormant: the baseline.
        stackheap_tests::workload::many(n);
        return;
    }
    let profiler = stackheap::Profiler::builder()
        .trace_path(&args[2])
        .sample_rate(sample)
        .start()
        .unwrap_or_else(|e| {
            eprintln!("sh_workload: {e}");
            std::process::exit(1)
        });
    match args[1].as_str() {
        "known" => stackheap_tests::workload::known_shape(),
        "threads" => stackheap_tests::workload::concurrent(2, n, 32),
        "many" => stackheap_tests::workload::many(n),
        other => {
            eprintln!("sh_workload: unknown workload {other}");
            std::process::exit(2);
        }
    }
    let own = stackheap::alloc::counters::OWN_ALLOCS.load(std::sync::atomic::Ordering::Relaxed)
        - own_before;
    if let Err(e) = profiler.stop() {
        eprintln!("sh_workload: {e}");
        std::process::exit(1);
    }
    println!("own_allocs={own}");
}
