//! `churn`: many short-lived allocations — the heap as a busy, flat workspace.
//!
//! Most allocations in a real program live for microseconds: a temporary `Vec`, a formatted
//! `String`, a boxed closure. They never show up in "who holds the heap" (live bytes stay
//! flat, near zero), but they dominate "who allocates the most" and cost time in the
//! allocator — and in a profiler, which is why this loop is also the benchmark workload of
//! `scripts/bench.sh`.
//!
//! Per thread, `--iters` times: allocate a `Vec<u8>` of a cycling size (16, 17, ...,
//! `--size`, 16, ...), touch it, free it. Exactly one allocation and one free per iteration.
//!
//! The last line of stdout is `expected: ...`. Its counts cover ONLY the churn loop
//! (`stackheap_demos::churn_thread`), computed in closed form from the arguments: argument
//! parsing, thread spawning and stdout's buffer allocate too, and are not counted.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::time::Instant;

use stackheap_demos::{churn, churn_args, churn_expected};

fn main() {
    let (iters, threads, size) = churn_args(
        "churn",
        "many short-lived allocations (allocate, touch, free) on one or more threads",
    );
    let start = Instant::now();
    let checksum = churn(iters, threads, size);
    let elapsed = start.elapsed();
    println!(
        "churn: {threads} thread(s) x {iters} alloc+free pairs, sizes 16..={size} bytes, \
         {:.3} s, checksum {checksum}",
        elapsed.as_secs_f64()
    );
    println!("{}", churn_expected(iters, threads, size));
}
