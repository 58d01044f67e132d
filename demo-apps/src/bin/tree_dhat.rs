//! `tree_dhat`: the `tree` workload under `dhat::Alloc` (the dhat-rs baseline of
//! `scripts/bench.sh`). Built only with `--features dhat-heap`; writes `dhat-heap.json`
//! into the current directory.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

use stackheap_demos::{tree, tree_args, tree_expected};

fn main() {
    let (items, rounds) = tree_args(
        "tree_dhat",
        "a BTreeMap of formatted strings built, probed, thinned and dropped (under dhat-rs)",
    );
    let profiler = dhat::Profiler::new_heap();
    let checksum = std::hint::black_box(tree(items, rounds));
    drop(profiler); // writes dhat-heap.json
    println!("tree_dhat: checksum {checksum}");
    println!("{}", tree_expected(items, rounds));
}
