//! `stack_overflow`: a stack that runs out. Unbounded recursion (`recurse`, each call a
//! frame of `--frame` bytes) or one huge array on the stack (`array --kib N`), on the
//! main thread or, with `--thread-stack BYTES`, on a thread with that stack size.
//!
//! Rust stops it with "thread '…' has overflowed its stack" and SIGABRT, but names no
//! function; under `stackheap run` the profiler's report names the frames that ate the
//! stack, collapses the repeated recursion cycle and says how deep it went.
//!
//! Usage: `stack_overflow recurse [--frame 64|256|1024] [--thread-stack BYTES]`,
//! `stack_overflow array [--kib 1024|4096|16384|65536] [--thread-stack BYTES]`.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::hint::black_box;

use stackheap_demos::{Args, Flag};

/// One level of the unbounded recursion: a frame of at least `N` bytes.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse<const N: usize>(level: u64) -> u64 {
    let mut buf = [0u8; N];
    buf[0] = level as u8;
    black_box(&mut buf);
    // The result is used after the call: no tail call.
    recurse::<N>(level + 1).wrapping_add(buf[N - 1] as u64)
}

/// An array of `N` bytes on the stack.
#[inline(never)]
fn big_array<const N: usize>() -> u64 {
    let mut buf = [0u8; N];
    black_box(&mut buf);
    buf[N / 2] as u64
}

fn usage() -> ! {
    eprintln!(
        "usage: stack_overflow recurse [--frame 64|256|1024] [--thread-stack BYTES]\n       \
         stack_overflow array [--kib 1024|4096|16384|65536] [--thread-stack BYTES]"
    );
    std::process::exit(2)
}

fn run(mode: &str, frame: u64, kib: u64) -> u64 {
    // Allocate first, so the thread is registered with the profiler.
    let b = black_box(Box::new(7u64));
    let r = match (mode, frame, kib) {
        ("recurse", 64, _) => recurse::<64>(0),
        ("recurse", 256, _) => recurse::<256>(0),
        ("recurse", 1024, _) => recurse::<1024>(0),
        ("array", _, 1024) => big_array::<{ 1024 << 10 }>(),
        ("array", _, 4096) => big_array::<{ 4096 << 10 }>(),
        ("array", _, 16384) => big_array::<{ 16384 << 10 }>(),
        ("array", _, 65536) => big_array::<{ 65536 << 10 }>(),
        _ => usage(),
    };
    r + *b
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "frame",
        default: 256,
        help: "bytes of each recursive frame: 64, 256 or 1024 (recurse)",
    },
    Flag {
        name: "kib",
        default: 16384,
        help: "size of the stack array in KiB: 1024, 4096, 16384 or 65536 (array)",
    },
    Flag {
        name: "thread-stack",
        default: 0,
        help: "run on a thread with a stack of this size (0 = main thread)",
    },
];

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first().cloned() else {
        usage()
    };
    // The subcommand first, then the numeric flags the demos' parser reads.
    let args = match Args::parse_from(&argv[1..], FLAGS) {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => usage(),
    };
    let (frame, kib, thread_stack) = (args.get("frame"), args.get("kib"), args.get("thread-stack"));
    println!(
        "stack_overflow: {mode} (frame {frame} bytes, array {kib} KiB) on {}",
        if thread_stack > 0 {
            format!("a thread with a {thread_stack}-byte stack")
        } else {
            "the main thread".to_string()
        }
    );
    let r = if thread_stack > 0 {
        std::thread::Builder::new()
            .name("overflow-worker".into())
            .stack_size(thread_stack as usize)
            .spawn(move || run(&mode, frame, kib))
            .expect("spawn")
            .join()
            .unwrap_or(0)
    } else {
        run(&mode, frame, kib)
    };
    println!("not reached: {r}");
}
