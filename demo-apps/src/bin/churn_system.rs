//! `churn_system`: the `churn` workload with the system allocator and no profiler at all —
//! the "plain" baseline of `scripts/bench.sh`, against which the dormant cost of having
//! `stackheap::StackHeap` installed is measured.

use stackheap_demos::{churn, churn_args, churn_expected};

fn main() {
    let (iters, threads, size) = churn_args(
        "churn_system",
        "the churn workload without stackheap (benchmark baseline)",
    );
    let checksum = churn(iters, threads, size);
    println!("churn_system: checksum {checksum}");
    println!("{}", churn_expected(iters, threads, size));
}
