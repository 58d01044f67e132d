//! The oracle side of the exactness test: the `known` workload under `dhat::Alloc`, in
//! a process of its own (one thread: nothing else allocates while dhat counts).
//! Prints `total_blocks=… total_bytes=… max_blocks=… max_bytes=… curr_blocks=… curr_bytes=…`.

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn main() {
    let stats = {
        let _p = dhat::Profiler::builder().testing().build();
        stackheap_tests::workload::known_shape();
        dhat::HeapStats::get()
    };
    println!(
        "total_blocks={} total_bytes={} max_blocks={} max_bytes={} curr_blocks={} curr_bytes={}",
        stats.total_blocks,
        stats.total_bytes,
        stats.max_blocks,
        stats.max_bytes,
        stats.curr_blocks,
        stats.curr_bytes
    );
}
