//! The `segments` section: text, data, bss, heap (brk and mmapped), thread stacks and
//! shared libraries, at the start and when the most memory was mapped.

use std::fmt::Write as _;

use serde_json::{json, Value};
use stackheap::stack::segments::Segments;

use super::fmt_bytes;
use crate::Analysis;

fn one(s: &Segments) -> Value {
    json!({
        "time_ns": s.time_ns,
        "text": s.text,
        "data": s.data,
        "bss": s.bss,
        "heap_brk": s.heap_brk,
        "heap_mmap_and_other_anon": s.anon,
        "stacks": s.stacks,
        "shared_libraries": s.libs,
    })
}

/// `{"start": {...}, "peak": {...}}` (nulls when the trace has no snapshot).
pub fn json(a: &Analysis) -> Value {
    json!({
        "start": a.stack.segments_start.as_ref().map(one),
        "peak": a.stack.segments_peak.as_ref().map(one),
    })
}

/// The text table.
pub fn text(o: &mut String, a: &Analysis) {
    let (Some(s0), Some(s1)) = (&a.stack.segments_start, &a.stack.segments_peak) else {
        return;
    };
    let _ = writeln!(o, "\nsegments (start → most mapped)");
    for (name, x, y) in [
        ("text", s0.text, s1.text),
        ("data", s0.data, s1.data),
        ("bss", s0.bss, s1.bss),
        ("heap (brk)", s0.heap_brk, s1.heap_brk),
        ("heap (mmap) + anon", s0.anon, s1.anon),
        ("thread stacks", s0.stacks, s1.stacks),
        ("shared libraries", s0.libs, s1.libs),
    ] {
        let _ = writeln!(
            o,
            "  {name:<20} {:>12} → {:>12}",
            fmt_bytes(x),
            fmt_bytes(y)
        );
    }
}
