//! `tree`: benchmark workload of `scripts/bench.sh` under stackheap — a BTreeMap of formatted strings built, probed, thinned and dropped
//! (see `stackheap_demos::tree`). `tree_system` is the same without stackheap, `tree_dhat`
//! the same under dhat-rs.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use stackheap_demos::{tree, tree_args, tree_expected};

fn main() {
    let (items, rounds) = tree_args(
        "tree",
        "a BTreeMap of formatted strings built, probed, thinned and dropped",
    );
    let checksum = std::hint::black_box(tree(items, rounds));
    println!("tree: checksum {checksum}");
    println!("{}", tree_expected(items, rounds));
}
