//! The allocator's hot path: one alloc+free pair through `StackHeap`, in each mode.
//!
//! `cargo bench -p stackheap --bench hot_path` (add `-- --quick` for a fast run). The
//! bench binary installs `StackHeap` as its global allocator and, for every mode but
//! dormant, starts a session writing into a temporary file (deleted afterwards):
//!
//! * `dormant`: installed, no session — one relaxed load per call;
//! * `counters`: `sample_rate(0)` — exact counters, no stacks;
//! * `sampled`: `sample_rate(512 KiB)` — counters plus the byte countdown;
//! * `full`: `sample_rate(1)` — every allocation with its stack (frame-pointer walk,
//!   stack-id probe, record into the thread's ring).
//!
//! The pair goes through `GlobalAlloc` on the installed allocator directly, so nothing
//! but the allocator is timed; the size cycles over 16..=256 bytes like `churn`.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

/// A fresh trace path in the temporary directory (the file must not exist).
fn trace_path(mode: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "stackheap-bench-hot-path-{}-{mode}.trace",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Runs one alloc+free pair per iteration on the installed allocator.
fn pairs(c: &mut Criterion, name: &str) {
    let layouts: Vec<Layout> = (16..=256usize)
        .map(|n| Layout::from_size_align(n, 8).expect("layout"))
        .collect();
    let mut i = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            let layout = layouts[i % layouts.len()];
            i = i.wrapping_add(1);
            // SAFETY: a non-zero-sized layout; the block is written within its size and
            // freed once with the same layout.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null());
                p.write(i as u8);
                black_box(p);
                GLOBAL.dealloc(p, layout);
            }
        })
    });
}

/// `pairs` under a session with this sample rate (`None` = dormant, no session).
fn mode(c: &mut Criterion, name: &str, sample_rate: Option<u64>) {
    let Some(rate) = sample_rate else {
        pairs(c, name);
        return;
    };
    let path = trace_path(&name.replace('/', "-"));
    let profiler = stackheap::Profiler::builder()
        .trace_path(&path)
        .sample_rate(rate)
        .start()
        .expect("start a profiling session");
    pairs(c, name);
    let written = profiler.stop().expect("stop the session");
    let _ = std::fs::remove_file(written);
}

fn hot_path(c: &mut Criterion) {
    mode(c, "alloc_free/dormant", None);
    mode(c, "alloc_free/counters", Some(0));
    mode(c, "alloc_free/sampled_512k", Some(512 << 10));
    mode(c, "alloc_free/full", Some(1));
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
