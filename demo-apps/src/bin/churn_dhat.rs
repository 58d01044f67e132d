//! `churn_dhat`: the `churn` workload under `dhat::Alloc` instead of stackheap — the dhat-rs
//! baseline of `scripts/bench.sh`. Built only with `--features dhat-heap`.
//!
//! dhat writes `dhat-heap.json` into the current directory when the profiler is dropped, so
//! run it in a scratch directory.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use stackheap_demos::{churn, churn_args, churn_expected};

fn main() {
    let (iters, threads, size) = churn_args(
        "churn_dhat",
        "the churn workload under dhat-rs (writes dhat-heap.json into the current directory)",
    );
    let profiler = dhat::Profiler::new_heap();
    let checksum = churn(iters, threads, size);
    drop(profiler); // writes dhat-heap.json
    println!("churn_dhat: checksum {checksum}");
    println!("{}", churn_expected(iters, threads, size));
}
