//! Deterministic workloads with a known shape. Each allocates the same blocks in the
//! same order under any global allocator.

use std::collections::BTreeMap;
use std::hint::black_box;

/// A mix of what real programs do: growing vectors (reallocs), boxes, strings, a map,
/// blocks freed in another order than allocated, a peak in the middle, and a leak.
#[inline(never)]
pub fn known_shape() {
    // Vec growth: one alloc then reallocs.
    let mut v: Vec<u64> = Vec::new();
    for i in 0..10_000u64 {
        v.push(i);
    }
    // Many boxes of varying size, half kept until later.
    let mut kept = Vec::with_capacity(500);
    for i in 0..1_000usize {
        let b = vec![i as u8; 8 + (i * 37) % 2000].into_boxed_slice();
        if i % 2 == 0 {
            kept.push(b);
        }
    }
    // A peak: one big block while everything above is live.
    let big = vec![7u8; 3 << 20];
    black_box(&big);
    drop(big);
    // Strings in a map.
    let mut m = BTreeMap::new();
    for i in 0..2_000u32 {
        m.insert(i, format!("value number {i}"));
    }
    drop(v);
    // Free in reverse order.
    while let Some(b) = kept.pop() {
        black_box(&b);
    }
    drop(m);
    // Shrink a vector (realloc down).
    let mut s: Vec<u8> = Vec::with_capacity(4096);
    s.extend_from_slice(&[1u8; 100]);
    s.shrink_to_fit();
    black_box(&s);
    // Leak two blocks.
    let leaked: &'static mut [u8] = Box::leak(vec![1u8; 12_345].into_boxed_slice());
    black_box(leaked);
    std::mem::forget(vec![0u32; 1_000]);
}

/// `threads` threads each making `per_thread` allocations of `size` bytes and freeing
/// them all, while the main thread (which allocated alone until then) makes as many of
/// `size + 16` bytes: the profiler's switch from one allocating thread to several
/// happens in the middle of the main thread's loop.
pub fn concurrent(threads: usize, per_thread: usize, size: usize) {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    let b = vec![0u8; size].into_boxed_slice();
                    black_box(&b);
                }
            })
        })
        .collect();
    for _ in 0..per_thread {
        let b = vec![0u8; size + 16].into_boxed_slice();
        black_box(&b);
    }
    for h in handles {
        h.join().expect("worker");
    }
}

/// `n` small allocations freed at once: the hot path and nothing else.
#[inline(never)]
pub fn many(n: usize) {
    for i in 0..n {
        let b = Box::new([i as u8; 24]);
        black_box(&b);
    }
}
