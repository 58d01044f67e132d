//! Out-of-memory forensics: `flame-oom.svg` (who held the heap when the first
//! allocation failed), the failing request's stack in the summaries, `events.oom` in
//! `summary.json`.

use std::fmt::Write as _;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};
use serde_json::{json, Value};

use super::{fmt_bytes, fmt_time};
use crate::select::{folded, LiveAt};
use crate::{Analysis, ReportError};

/// Folded lines of the live heap at the OOM (empty when there was none).
pub fn lines(a: &Analysis) -> Vec<String> {
    match &a.oom {
        Some(o) => folded(
            a,
            &LiveAt {
                label: String::new(),
                bytes: o.held.sites.iter().map(|(&k, &(b, _))| (k, b)).collect(),
            },
        ),
        None => Vec::new(),
    }
}

/// Render a flamegraph of folded `lines` (bytes) with `title`.
pub fn flame_svg(a: &Analysis, lines: &[String], title: &str) -> Result<Vec<u8>, ReportError> {
    flame_svg_unit(a, lines, title, "bytes")
}

/// Render a flamegraph of folded `lines` counting `unit` with `title`.
pub fn flame_svg_unit(
    a: &Analysis,
    lines: &[String],
    title: &str,
    unit: &str,
) -> Result<Vec<u8>, ReportError> {
    flame_svg_lines(lines, title, unit, a.sampled())
}

/// Render a flamegraph of folded `lines` counting `unit` (of sampled allocations when
/// `sampled`) with `title`, without an [`Analysis`] (the live view's snapshots).
pub fn flame_svg_lines(
    lines: &[String],
    title: &str,
    unit: &str,
    sampled: bool,
) -> Result<Vec<u8>, ReportError> {
    if lines.is_empty() {
        return Ok(super::flamegraph::empty_svg(title, "nothing to show").into_bytes());
    }
    let mut opts = Options::default();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    opts.title = title.to_string();
    opts.count_name = if sampled {
        format!("{unit} (of the sampled allocations)")
    } else {
        unit.to_string()
    };
    opts.deterministic = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| ReportError::Render(format!("{title}: {e}")))?;
    Ok(svg)
}

/// `events.oom` for summary.json (null when no allocation failed with an Oom record).
pub fn json(a: &Analysis) -> Value {
    match &a.oom {
        Some(o) => json!({
            "time_ns": o.time_ns,
            "thread": o.thread,
            "requested_bytes": o.requested_bytes,
            "live_bytes": o.live_bytes,
            "limit_bytes": if o.limit_bytes == 0 { Value::Null } else { o.limit_bytes.into() },
            "frames": o.frames.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            "held_bytes": o.held.live_bytes,
        }),
        None => Value::Null,
    }
}

/// The OOM section of the text summary.
pub fn text(a: &Analysis, frames: usize) -> String {
    let mut o = String::new();
    let Some(oom) = &a.oom else { return o };
    let why = if oom.limit_bytes > 0 {
        format!("over the heap limit of {}", fmt_bytes(oom.limit_bytes))
    } else {
        "the allocator returned null".to_string()
    };
    let _ = writeln!(
        o,
        "\nOUT OF MEMORY at {}: a request of {} failed ({why}) with {} live",
        fmt_time(oom.time_ns),
        fmt_bytes(oom.requested_bytes),
        fmt_bytes(oom.live_bytes.max(0) as u64)
    );
    let _ = writeln!(o, "  failing request (thread {}):", oom.thread);
    for f in oom.frames.iter().take(frames) {
        let _ = writeln!(o, "      {}", f.display());
    }
    let _ = writeln!(o, "  who held the heap then: flame-oom.svg");
    o
}
