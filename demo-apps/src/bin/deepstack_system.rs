//! `deepstack_system`: the `deepstack` workload with the system allocator and no profiler (the
//! "plain" baseline of `scripts/bench.sh`).

use stackheap_demos::{deepstack, deepstack_args, deepstack_expected};

fn main() {
    let (iters, depth, allocs) = deepstack_args(
        "deepstack_system",
        "alloc+free pairs at the bottom of a 100+ frame recursion (no profiler)",
    );
    let checksum = std::hint::black_box(deepstack(iters, depth, allocs));
    println!("deepstack_system: checksum {checksum}");
    println!("{}", deepstack_expected(iters, depth, allocs));
}
