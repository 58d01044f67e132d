//! `oom`: heap exhaustion — a structure grows until the allocator says no.
//!
//! It keeps `--chunk-kib` KiB buffers in a `Vec` (its capacity reserved up front, so every
//! request after that is one chunk) until an allocation fails, or until `--max-mib` MiB
//! are held (a safety stop when no limit is set). Run it under a heap limit, e.g.
//! `stackheap run --limit 64MiB -- target/release/oom`, to see a quick and safe OOM:
//!
//! * `--graceful 0` (default): the chunk is a plain `vec![..; n]`. When the allocation
//!   fails Rust calls `handle_alloc_error`, which prints `memory allocation of N bytes
//!   failed` and aborts the process — no unwinding, no destructors, no exit handlers.
//!   The profiler wrote its `Oom` record and flushed the trace before the null came back,
//!   so the report still shows who held the heap.
//! * `--graceful 1`: the chunk is reserved with `Vec::try_reserve_exact`, which returns
//!   an error instead: the program reports it, frees everything and exits 0.
//!
//! The `expected:` line comes first (the abort leaves no chance to print later):
//! `request_bytes` is the size of the request that will fail.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::io::Write;

use stackheap_demos::{Args, Expected, Flag};

const PROGRAM: &str = "oom";
const ABOUT: &str =
    "grow a structure chunk by chunk until an allocation fails: abort, or try_reserve's error";
const FLAGS: &[Flag] = &[
    Flag {
        name: "chunk-kib",
        default: 64,
        help: "KiB of each chunk (each one allocation)",
    },
    Flag {
        name: "max-mib",
        default: 1024,
        help: "stop after holding this many MiB without a failure (safety stop)",
    },
    Flag {
        name: "graceful",
        default: 0,
        help: "1: reserve with try_reserve_exact and exit 0 at the failure; 0: abort",
    },
];

/// One chunk through `try_reserve_exact`: `Err` instead of an abort.
#[inline(never)]
fn try_chunk(bytes: usize, fill: u8) -> Result<Vec<u8>, std::collections::TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes)?;
    v.resize(bytes, fill);
    Ok(v)
}

/// One chunk the plain way: an allocation failure aborts the process.
#[inline(never)]
fn grow_chunk(bytes: usize, fill: u8) -> Vec<u8> {
    vec![fill; bytes]
}

fn main() {
    let args = Args::parse_or_exit(PROGRAM, ABOUT, FLAGS);
    args.require_range(PROGRAM, "chunk-kib", 1, 1 << 20);
    args.require_range(PROGRAM, "max-mib", 1, 1 << 20);
    args.require_range(PROGRAM, "graceful", 0, 1);
    let chunk = args.get_usize("chunk-kib") << 10;
    let max_chunks = (args.get_usize("max-mib") << 20) / chunk;
    let graceful = args.get("graceful") == 1;
    drop(args);

    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(max_chunks.max(1));
    println!(
        "{}",
        Expected::new()
            .add("request_bytes", chunk as u64)
            .add("graceful", graceful as u64)
            .line()
    );
    let _ = std::io::stdout().flush();
    for i in 0..max_chunks {
        if graceful {
            match try_chunk(chunk, i as u8) {
                Ok(v) => chunks.push(v),
                Err(e) => {
                    let held: u64 = chunks.iter().map(|c| c.capacity() as u64).sum();
                    println!(
                        "try_reserve_exact({chunk}) failed after {} chunks ({held} bytes held): {e}",
                        chunks.len()
                    );
                    println!(
                        "{}",
                        Expected::new()
                            .add("failed_request_bytes", chunk as u64)
                            .add("held_bytes", held)
                            .line()
                    );
                    return;
                }
            }
        } else {
            chunks.push(grow_chunk(chunk, i as u8));
        }
    }
    let held: u64 = chunks.iter().map(|c| c.capacity() as u64).sum();
    println!(
        "held {held} bytes in {} chunks without running out of memory (no limit?)",
        chunks.len()
    );
}
