//! Span attribution: allocations made inside `info_span!("a")` are charged to `a`
//! (nested spans to `a;b`), a TRACE event with target `stackheap::mark` is a mark, and
//! without the layer every allocation is still recorded.

use std::hint::black_box;

use stackheap_report::{analyze_path, Analysis, AnalyzeOptions};
use stackheap_tests::scratch;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

/// Three allocations: 3 × 24 + 1000 + 2345 bytes.
#[inline(never)]
fn work_a() -> Vec<Vec<u8>> {
    let mut v = Vec::with_capacity(3);
    v.push(black_box(vec![1u8; 1000]));
    v.push(black_box(vec![2u8; 2345]));
    v
}

/// One allocation of 777 bytes.
#[inline(never)]
fn work_b() -> Vec<u8> {
    black_box(vec![3u8; 777])
}

fn site_bytes(a: &Analysis, func: &str) -> (u64, u64) {
    a.sites
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.name == func))
        .fold((0, 0), |(b, n), s| (b + s.alloc_bytes, n + s.alloc_count))
}

fn profile(name: &str, with_layer: bool) -> Analysis {
    let dir = scratch(name);
    let path = dir.join("t.trace");
    let p = stackheap::Profiler::builder()
        .trace_path(&path)
        .start()
        .unwrap();
    let body = || {
        let a = tracing::info_span!("a");
        let g = a.enter();
        let kept = work_a();
        let b = tracing::info_span!("b");
        let gb = b.enter();
        let kept_b = work_b();
        tracing::trace!(target: "stackheap::mark", "inside-b");
        drop(gb);
        drop(g);
        (kept, kept_b)
    };
    let kept = if with_layer {
        let sub = tracing_subscriber::registry().with(stackheap::SpanLayer::new());
        tracing::subscriber::with_default(sub, body)
    } else {
        body()
    };
    let path = p.stop().unwrap();
    drop(kept);
    analyze_path(&path, &AnalyzeOptions::default()).unwrap()
}

#[test]
fn allocations_are_charged_to_their_span_and_none_is_lost_without_the_layer() {
    let with = profile("spans-with", true);
    let spans: std::collections::HashMap<&str, (u64, u64)> = with
        .spans
        .iter()
        .map(|(p, b, n)| (p.as_str(), (*b, *n)))
        .collect();
    assert_eq!(
        spans.get("a"),
        Some(&(3 * 24 + 1000 + 2345, 3)),
        "{spans:?}"
    );
    assert_eq!(spans.get("a;b"), Some(&(777, 1)), "{spans:?}");
    assert!(
        with.marks.iter().any(|m| m.name == "inside-b"),
        "mark from the tracing event missing: {:?}",
        with.marks.iter().map(|m| &m.name).collect::<Vec<_>>()
    );

    // Stacks prefixed by their span: work_b's allocation under a;b.
    let mut folded = Vec::new();
    stackheap_report::render::flamegraph::render_flamegraph_spans(
        &with,
        stackheap_report::FlameKind::AllocBytes,
        true,
        &mut folded,
    )
    .unwrap();
    let folded = String::from_utf8(folded).unwrap();
    let b_line = folded
        .lines()
        .find(|l| l.contains("spans::work_b"))
        .unwrap_or_default();
    assert!(b_line.starts_with("a;b;"), "{folded}");
    assert!(b_line.ends_with(" 777"), "{b_line}");

    let without = profile("spans-without", false);
    assert!(without.spans.is_empty());
    for a in [&with, &without] {
        assert_eq!(site_bytes(a, "spans::work_a"), (3 * 24 + 1000 + 2345, 3));
        assert_eq!(site_bytes(a, "spans::work_b"), (777, 1));
    }
}
