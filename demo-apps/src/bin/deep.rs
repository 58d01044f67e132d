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
//! Usage: `deep [--bytes 1MiB] [--frame 512] [--hold-ms 50] [--thread-stack BYTES]`.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::hint::black_box;
use std::time::{Duration, Instant};

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

fn usage() -> ! {
    eprintln!("usage: deep [--bytes 1MiB] [--hold-ms 50] [--thread-stack BYTES]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut bytes = 1u64 << 20;
    let mut hold_ms = 50;
    let mut thread_stack = 0u64;
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .and_then(|v| stackheap_demos::parse_number(v).ok())
            .unwrap_or_else(|| usage());
        match args[i].as_str() {
            "--bytes" => bytes = v,
            "--hold-ms" => hold_ms = v,
            "--thread-stack" => thread_stack = v,
            _ => usage(),
        }
        i += 2;
    }
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
