//! `crash`: four ways to die, to see a panic beside a fatal signal. Before dying it
//! allocates `--keep` boxes and keeps them (the trace must hold them all).
//!
//! * `null`: a write through a null pointer (plus 8): SIGSEGV in the null page.
//! * `uaf`: a write into a 1 MiB block after freeing it (glibc returned it to the
//!   kernel): SIGSEGV at an unmapped address.
//! * `double-free`: the same block freed twice via unsafe: glibc aborts (SIGABRT).
//! * `panic`: a plain panic: no signal, the process exits with code 101.
//!
//! Usage: `crash null|uaf|double-free|panic [--keep N]`. Prints
//! `expected: kept_allocs=N` before dying.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::hint::black_box;

#[inline(never)]
fn null_write() {
    let p = black_box(8usize) as *mut u64;
    // SAFETY: not safe at all: this is the crash the demo is about.
    unsafe { std::ptr::write_volatile(p, 1) };
}

#[inline(never)]
fn use_after_free() {
    let v = vec![1u8; 1 << 20];
    let p = black_box(v.as_ptr() as *mut u8);
    drop(v);
    // SAFETY: not safe: the block was freed (and unmapped) just above.
    unsafe { std::ptr::write_volatile(p.add(4096), 2) };
}

#[inline(never)]
fn double_free() {
    let b = Box::new([3u64; 8]);
    let p = Box::into_raw(b);
    // SAFETY: the first free is fine, the second is the bug.
    unsafe {
        drop(Box::from_raw(black_box(p)));
        drop(Box::from_raw(black_box(p)));
    }
}

#[inline(never)]
fn plain_panic() {
    panic!("crash demo: a plain panic");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    let keep = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--keep"), Some(n)) => stackheap_demos::parse_number(n).unwrap_or(100),
        _ => 100,
    };
    let kept: Vec<Box<u64>> = (0..keep).map(Box::new).collect();
    println!("crash: {mode}, {keep} boxes kept");
    println!("expected: kept_allocs={keep}");
    match mode.as_str() {
        "null" => null_write(),
        "uaf" => use_after_free(),
        "double-free" => double_free(),
        "panic" => plain_panic(),
        _ => {
            eprintln!("usage: crash null|uaf|double-free|panic [--keep N]");
            std::process::exit(2);
        }
    }
    println!("survived: {}", kept.len());
}
