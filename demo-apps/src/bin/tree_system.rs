//! `tree_system`: the `tree` workload with the system allocator and no profiler (the
//! "plain" baseline of `scripts/bench.sh`).

use stackheap_demos::{tree, tree_args, tree_expected};

fn main() {
    let (items, rounds) = tree_args(
        "tree_system",
        "a BTreeMap of formatted strings built, probed, thinned and dropped (no profiler)",
    );
    let checksum = std::hint::black_box(tree(items, rounds));
    println!("tree_system: checksum {checksum}");
    println!("{}", tree_expected(items, rounds));
}
