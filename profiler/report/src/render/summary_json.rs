//! `summary.json`: the same facts as the text summary, for scripts. Every field is
//! described in `docs/summary-json.md`.

use serde_json::{json, Value};

use super::RenderOptions;
use crate::{Analysis, Site};

/// The summary with the default [`RenderOptions`].
pub fn summary_json(a: &Analysis) -> Value {
    render(a, &RenderOptions::default())
}

fn stack_of(a: &Analysis, thread: u32) -> Option<&crate::analyze::stacks::ThreadStack> {
    a.stack.threads.iter().find(|s| s.thread == thread)
}

fn site(s: &Site) -> Value {
    json!({
        "stack_id": s.stack,
        "frames": s.frames.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        "locations": s.frames.iter().map(|f| match (&f.file, f.line) {
            (Some(file), Some(line)) => Value::String(format!("{file}:{line}")),
            (Some(file), None) => Value::String(file.clone()),
            _ => Value::Null,
        }).collect::<Vec<_>>(),
        "alloc_bytes": s.alloc_bytes,
        "alloc_count": s.alloc_count,
        "peak_bytes": s.peak_bytes,
        "peak_blocks": s.peak_blocks,
        "leaked_bytes": s.leaked_bytes,
        "leaked_blocks": s.leaked_blocks,
    })
}

/// The summary as a JSON value.
pub fn render(a: &Analysis, opts: &RenderOptions) -> Value {
    let h = &a.heap;
    let counters = |c: &stackheap::format::Counters| {
        json!({
            "time_ns": c.time_ns,
            "total_allocs": c.total_allocs,
            "total_frees": c.total_frees,
            "total_bytes": c.total_bytes,
            "live_bytes": c.live_bytes,
            "live_blocks": c.live_blocks,
            "peak_bytes": c.peak_bytes,
            "peak_blocks": c.peak_blocks,
            "peak_time_ns": c.peak_time_ns,
            "failed_allocs": c.failed_allocs,
        })
    };
    // Both issues' events under one key: stack overflows, crashes and panics, and the OOM.
    let mut events = super::stack_json::events(a);
    events["oom"] = super::oom::json(a);
    json!({
        "program": {
            "pid": a.program.pid,
            "exe": a.program.exe,
            "argv": a.program.argv,
            "start_unix_ns": a.program.start_unix_ns,
            "attached": a.program.attached,
        },
        "duration_ns": a.duration_ns,
        "heap": {
            "total_allocs": h.total_allocs,
            "total_frees": h.total_frees,
            "total_bytes": h.total_bytes,
            "peak_bytes": h.peak_bytes,
            "peak_blocks": h.peak_blocks,
            "peak_time_ns": h.peak_time_ns,
            "peak_bytes_within": h.peak_bytes_within,
            "leaked_bytes": h.leaked_bytes,
            "leaked_blocks": h.leaked_blocks,
            "frees_unknown": h.frees_unknown,
            "failed_allocs": h.failed_allocs,
            "source": h.source,
        },
        "rss": { "peak_bytes": a.rss_peak_bytes },
        "sampling": {
            "rate_bytes": a.sample_rate,
            "estimated": a.sampled(),
        },
        "trace": {
            "truncated": a.trace.truncated_at.is_some(),
            "truncated_at": a.trace.truncated_at,
            "valid_bytes": a.trace.valid_bytes,
            "complete": a.trace.complete,
            "lost_events": a.trace.lost_events,
            "late_events": a.trace.late_events,
        },
        "trailer": a.trailer.as_ref().map(counters),
        "warnings": a.warnings,
        "threads": a.threads.iter().map(|t| json!({
            "thread": t.info.thread,
            "os_tid": t.info.os_tid,
            "name": t.info.name,
            "stack_size": t.info.stack_size,
            "start_ns": t.info.time_ns,
            "end_ns": t.end_ns,
            "allocs": t.allocs,
            "max_stack_depth": t.max_depth,
            "stack_limit_bytes": t.info.stack_size,
            "max_stack_bytes": stack_of(a, t.info.thread).map_or(t.max_depth, |s| s.max_stack_bytes),
            "max_stack_time_ns": stack_of(a, t.info.thread).map_or(0, |s| s.max_stack_time_ns),
            "stack_percent_used": stack_of(a, t.info.thread).map_or(0.0, |s| s.percent_used),
        })).collect::<Vec<_>>(),
        "events": events,
        "segments": super::segments::json(a),
        "top_sites": a.sites.iter().filter(|s| s.alloc_bytes > 0 || s.alloc_count > 0)
            .take(opts.json_sites).map(site).collect::<Vec<_>>(),
        "leaks": a.leaks().into_iter().take(opts.json_sites).map(site).collect::<Vec<_>>(),
        "growth": a.growth.iter().take(opts.json_sites).map(|g| json!({
            "stack_id": g.stack,
            "frames": g.frames.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            "rate_bytes_per_s": g.rate_bytes_per_s,
            "r2": g.r2,
            "live_bytes_end": g.live_bytes_end,
            "live_bytes_max": g.live_bytes_max,
        })).collect::<Vec<_>>(),
        "marks": a.marks.iter().map(|m| json!({
            "name": m.name,
            "time_ns": m.time_ns,
            "live_bytes": m.live_bytes,
        })).collect::<Vec<_>>(),
        "spans": a.spans.iter().map(|(p, b, n)| json!({
            "path": p,
            "alloc_bytes": b,
            "alloc_count": n,
        })).collect::<Vec<_>>(),
        "temporary": {
            "allocs": a.temporary_allocs,
            "sampled_only": a.sampled(),
        },
    })
}
