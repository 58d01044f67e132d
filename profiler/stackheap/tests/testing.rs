//! `stackheap::testing` under cargo's parallel test threads: each scope sees only the
//! allocations of its own thread, with exact counts, and a leak fails with the site.

use std::hint::black_box;

use stackheap::testing::HeapScope;

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

/// Allocate `n` vectors of `len` u64 and free them; other threads allocate meanwhile.
#[inline(never)]
fn churn(n: usize, len: usize) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        let v: Vec<u64> = black_box(vec![i as u64; len]);
        sum += v[len - 1];
    }
    sum
}

/// Another thread allocating all the time while the scope is open.
fn noisy_neighbour() -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            black_box(vec![0u8; 100]);
        }
    });
    (stop, h)
}

#[test]
fn first_test_sees_only_its_own_allocations() {
    let (stop, h) = noisy_neighbour();
    let scope = HeapScope::new();
    black_box(churn(1000, 4));
    let s = scope.stats();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().unwrap();
    assert_eq!(s.allocs, 1000);
    assert_eq!(s.bytes, 1000 * 32);
    assert_eq!(s.peak_bytes, 32);
    assert_eq!(s.live_bytes, 0);
    scope.assert_max_allocs(1000);
    scope.assert_max_peak(32);
    scope.assert_no_leaks();
}

#[test]
fn second_test_sees_only_its_own_allocations() {
    let scope = HeapScope::new();
    black_box(churn(700, 16));
    let kept: Vec<u8> = black_box(Vec::with_capacity(500));
    let s = scope.stats();
    assert_eq!(s.allocs, 701);
    assert_eq!(s.bytes, 700 * 128 + 500);
    assert_eq!(s.peak_bytes, 500); // the churn blocks (128 B) were freed before
    assert_eq!(s.live_bytes, 500);
    assert_eq!(s.live_blocks, 1);
    scope.assert_max_live(500);
    drop(kept);
    scope.assert_no_leaks();
}

#[inline(never)]
fn leaky_function() {
    std::mem::forget(black_box(vec![7u8; 4096]));
}

#[test]
fn a_leak_fails_naming_the_site() {
    let scope = HeapScope::new();
    leaky_function();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scope.assert_no_leaks()))
        .expect_err("the leak was not caught");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("4096 bytes in 1 blocks still live"), "{msg}");
    assert!(msg.contains("leaky_function"), "{msg}");
}

#[test]
fn realloc_growth_is_counted_once_per_block() {
    let scope = HeapScope::new();
    let mut v: Vec<u8> = Vec::with_capacity(8);
    for i in 0..100u8 {
        v.push(i);
    }
    let cap = v.capacity() as i64;
    let s = scope.stats();
    assert_eq!(s.live_blocks, 1);
    assert_eq!(s.live_bytes, cap);
    drop(v);
    scope.assert_no_leaks();
    assert!(scope.stats().allocs > 1, "the reallocs are allocations too");
}
