//! `deep`: a recursion that goes deep and comes back, so the stack's high-water mark is
//! known. Each level (`descend`) has a frame of about `--frame` bytes; it recurses until
//! its own stack pointer is `--bytes` below the one at the start of the thread's work,
//! holds the deepest point for `--hold-ms` (so the depth sampler sees it) and allocates
//! there (so an allocation record carries the depth too).
//!
//! The last line is `expected: max_stack_bytes=N levels=L thread_stack=S`, where N is the
//! depth it measured itself: the stack pointer at the start of the work minus the one at
//! the deepest level (a lower bound of what a profiler must report: the real stack top
//! lies a little above the first).
//!
//! Usage: `deep [--bytes 1m] [--hold-ms 50] [--thread-stack BYTES]`.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::hint::black_box;
use std::time::{Duration, Instant};

use stackheap_demos::{Args, Flag};

#[inline(always)]
fn sp() -> usize {
    let marker = 0u8;
    black_box(&marker) as *const u8 as usize
}

struct Walk {
    top: usize,
    target: usize,
    hold: Duration,
    deepest: usize,
    levels: u64,
}

/// One level: a 512-byte frame, then deeper until the target depth.
#[inline(never)]
fn descend(w: &mut Walk, level: u64) -> u64 {
    let mut buf = [0u8; 512];
    buf[0] = level as u8;
    black_box(&mut buf);
    let here = sp();
    let depth = w.top - here;
    if level < 4 || level.is_power_of_two() {
        println!("level {level}: depth {depth} bytes");
    }
    let r = if depth < w.target {
        descend(w, level + 1)
    } else {
        w.levels = level + 1;
        w.deepest = here;
        // Hold the deepest point (busy, so the stack pointer stays here) and allocate.
        let start = Instant::now();
        let mut v = 0u64;
        while start.elapsed() < w.hold {
            v = v.wrapping_add(black_box(1));
        }
        let b = black_box(Box::new([level; 4]));
        v.wrapping_add(b[0])
    };
    r.wrapping_add(buf[511] as u64)
}

fn work(target: usize, hold: Duration) -> (usize, u64) {
    // Allocate first so this thread is registered (and sampled) before the descent.
    let warm = black_box(vec![1u8; 64]);
    std::thread::sleep(Duration::from_millis(20));
    let mut w = Walk {
        top: sp(),
        target,
        hold,
        deepest: 0,
        levels: 0,
    };
    let r = descend(&mut w, 0);
    black_box(r + warm[0] as u64);
    (w.top - w.deepest, w.levels)
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "bytes",
        default: 1 << 20,
        help: "how deep to recurse, in bytes of stack",
    },
    Flag {
        name: "hold-ms",
        default: 50,
        help: "how long to stay at the deepest point (for the sampler)",
    },
    Flag {
        name: "thread-stack",
        default: 0,
        help: "run on a thread with a stack of this size (0 = main thread)",
    },
];

fn main() {
    let args = Args::parse_or_exit(
        "deep",
        "a recursion that goes deep and returns: the stack's high-water mark",
        FLAGS,
    );
    let (bytes, hold_ms, thread_stack) = (
        args.get("bytes"),
        args.get("hold-ms"),
        args.get("thread-stack"),
    );
    let hold = Duration::from_millis(hold_ms);
    let (depth, levels) = if thread_stack > 0 {
        std::thread::Builder::new()
            .name("deep-worker".into())
            .stack_size(thread_stack as usize)
            .spawn(move || work(bytes as usize, hold))
            .expect("spawn")
            .join()
            .expect("worker")
    } else {
        work(bytes as usize, hold)
    };
    println!(
        "deep: {levels} levels of `descend`, {} bytes per level on average",
        depth as u64 / levels.max(1)
    );
    println!("expected: max_stack_bytes={depth} levels={levels} thread_stack={thread_stack}");
}
