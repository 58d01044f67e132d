//! The `events` object of `summary.json`: stack overflows, crashes and panics.

use serde_json::{json, Value};

use crate::Analysis;

/// `{"stack_overflow": [...], "crash": [...], "panic": [...]}`.
pub fn events(a: &Analysis) -> Value {
    let s = &a.stack;
    json!({
        "stack_overflow": s.overflows.iter().map(|o| json!({
            "thread": o.thread,
            "thread_name": o.thread_name,
            "os_tid": o.os_tid,
            "time_ns": o.time_ns,
            "depth_bytes": o.depth,
            "limit_bytes": o.limit,
            "previous_max_bytes": o.prev_max,
            "total_frames": o.total_frames,
            "fault_addr": format!("{:#x}", o.fault_addr),
            "frames": o.frames.iter().map(|f| json!({"function": f.name, "bytes": f.bytes})).collect::<Vec<_>>(),
            "cycle": o.cycle.as_ref().map(|c| json!({
                "first_frame": c.start,
                "frames": c.len,
                "repeats": c.repeats,
                "bytes_per_cycle": c.bytes,
                "functions": c.functions,
            })),
        })).collect::<Vec<_>>(),
        "crash": s.crashes.iter().map(|c| json!({
            "thread": c.thread,
            "thread_name": c.thread_name,
            "os_tid": c.os_tid,
            "time_ns": c.time_ns,
            "signal": c.signal,
            "signal_name": c.signal_name,
            "si_code": c.code,
            "fault_addr": format!("{:#x}", c.fault_addr),
            "fault_class": c.fault_class,
            "depth_bytes": c.depth,
            "frames": c.frames,
        })).collect::<Vec<_>>(),
        "panic": s.panics.iter().map(|p| json!({
            "thread": p.thread,
            "thread_name": p.thread_name,
            "time_ns": p.time_ns,
            "message": p.message,
            "location": p.location,
        })).collect::<Vec<_>>(),
    })
}
