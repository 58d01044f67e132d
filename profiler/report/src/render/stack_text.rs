//! The stack part of `summary.txt`: per-thread depth against the limit, overflows,
//! crashes and panics.

use std::fmt::Write as _;

use super::{fmt_bytes, fmt_time};
use crate::Analysis;

/// Append the `stacks` section (and the fatal events, if any) to `o`.
pub fn render(o: &mut String, a: &Analysis) {
    super::segments::text(o, a);
    let s = &a.stack;
    if s.threads.is_empty() && s.overflows.is_empty() && s.crashes.is_empty() {
        return;
    }
    let _ = writeln!(o, "\nstacks (deepest seen / limit)");
    for t in &s.threads {
        let name = if t.name.is_empty() { "?" } else { &t.name };
        let _ = writeln!(
            o,
            "  thread {} {name} (tid {}): {} of {} ({:.1}%) at {}",
            t.thread,
            t.os_tid,
            fmt_bytes(t.max_stack_bytes),
            fmt_bytes(t.stack_limit_bytes),
            t.percent_used,
            fmt_time(t.max_stack_time_ns)
        );
    }
    for ov in &s.overflows {
        let _ = writeln!(
            o,
            "\nSTACK OVERFLOW in thread {} {} at depth {} of {}, {} frames",
            ov.thread,
            ov.thread_name,
            fmt_bytes(ov.depth),
            fmt_bytes(ov.limit),
            ov.total_frames
        );
        for (i, f) in ov.frames.iter().take(6).enumerate() {
            let _ = writeln!(o, "  #{i} {} ({} bytes)", f.name, f.bytes);
        }
        if let Some(c) = &ov.cycle {
            let _ = writeln!(
                o,
                "  frames {}-{} repeat {} times, {} bytes per cycle: {}",
                c.start,
                c.start + c.len - 1,
                c.repeats,
                c.bytes,
                c.functions.join(" → ")
            );
        }
        if ov.prev_max > 0 {
            let _ = writeln!(
                o,
                "  previous high-water mark {} ({} further)",
                fmt_bytes(ov.prev_max),
                fmt_bytes(ov.depth.saturating_sub(ov.prev_max))
            );
        }
    }
    for c in &s.crashes {
        let _ = writeln!(
            o,
            "\nCRASH: {} in thread {} {} at address {:#x} ({})",
            c.signal_name, c.thread, c.thread_name, c.fault_addr, c.fault_class
        );
        for (i, f) in c.frames.iter().take(8).enumerate() {
            let _ = writeln!(o, "  #{i} {f}");
        }
    }
    for p in &s.panics {
        let _ = writeln!(
            o,
            "\nPANIC in thread '{}' at {}: {}",
            p.thread_name, p.location, p.message
        );
    }
}
