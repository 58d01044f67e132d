//! `deepstack_dhat`: the `deepstack` workload under `dhat::Alloc` (the dhat-rs baseline of
//! `scripts/bench.sh`). Built only with `--features dhat-heap`; writes `dhat-heap.json`
//! into the current directory.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use stackheap_demos::{deepstack, deepstack_args, deepstack_expected};

fn main() {
    let (iters, depth, allocs) = deepstack_args(
        "deepstack_dhat",
        "alloc+free pairs at the bottom of a 100+ frame recursion (under dhat-rs)",
    );
    let profiler = dhat::Profiler::new_heap();
    let checksum = std::hint::black_box(deepstack(iters, depth, allocs));
    drop(profiler); // writes dhat-heap.json
    println!("deepstack_dhat: checksum {checksum}");
    println!("{}", deepstack_expected(iters, depth, allocs));
}
