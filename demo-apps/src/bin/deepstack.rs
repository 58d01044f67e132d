//! `deepstack`: benchmark workload of `scripts/bench.sh` under stackheap — alloc+free pairs at the bottom of a 100+ frame recursion
//! (see `stackheap_demos::deepstack`). `deepstack_system` is the same without stackheap, `deepstack_dhat`
//! the same under dhat-rs.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use stackheap_demos::{deepstack, deepstack_args, deepstack_expected};

fn main() {
    let (iters, depth, allocs) = deepstack_args(
        "deepstack",
        "alloc+free pairs at the bottom of a 100+ frame recursion",
    );
    let checksum = std::hint::black_box(deepstack(iters, depth, allocs));
    println!("deepstack: checksum {checksum}");
    println!("{}", deepstack_expected(iters, depth, allocs));
}
