//! Selecting a point of the run — a mark's name, a time (`5s`), `peak` or `end` — and
//! the live heap there, per site, for `flamegraph --at` and `diff --from/--to`.

use std::collections::HashMap;

use crate::analyze::marks::parse_time;
use crate::Analysis;

/// Every site's live bytes at a point, by stack id, with the point's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAt {
    /// What was selected, for titles (`mark warmup at 0.12 s`).
    pub label: String,
    /// Stack id to live bytes.
    pub bytes: HashMap<u32, u64>,
}

/// A point that is not in the trace, or a selector that means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no point {0:?} in the trace (use a mark's name, a time like 5s, peak or end{1})")]
pub struct UnknownPoint(pub String, pub String);

/// The time requested by a selector, if it is a time (for
/// [`crate::AnalyzeOptions::snapshot_times`]).
pub fn time_selector(sel: &str) -> Option<u64> {
    if sel == "peak" || sel == "end" {
        return None;
    }
    parse_time(sel)
}

/// The live heap at `sel`: a mark's name first (the first mark of that name), then
/// `peak`, `end`, or a time that was requested when analyzing.
pub fn live_at(a: &Analysis, sel: &str) -> Result<LiveAt, UnknownPoint> {
    let t = super::render::fmt_time;
    if let Some(m) = a.marks.iter().find(|m| m.name == sel) {
        return Ok(LiveAt {
            label: format!("mark {sel} at {}", t(m.time_ns)),
            bytes: m.sites.iter().map(|(&k, &(b, _))| (k, b)).collect(),
        });
    }
    let from_sites = |f: fn(&crate::Site) -> u64| {
        a.sites
            .iter()
            .map(|s| (s.stack, f(s)))
            .filter(|&(_, b)| b > 0)
            .collect()
    };
    match sel {
        "peak" => Ok(LiveAt {
            label: format!("peak at {}", t(a.heap.peak_time_ns)),
            bytes: from_sites(|s| s.peak_bytes),
        }),
        "end" => Ok(LiveAt {
            label: format!("end at {}", t(a.duration_ns)),
            bytes: from_sites(|s| s.leaked_bytes),
        }),
        "oom" if a.oom.is_some() => {
            let o = a.oom.as_ref().map(|o| &o.held);
            Ok(LiveAt {
                label: format!("out of memory at {}", t(o.map_or(0, |o| o.time_ns))),
                bytes: o.map_or_else(HashMap::new, |o| {
                    o.sites.iter().map(|(&k, &(b, _))| (k, b)).collect()
                }),
            })
        }
        _ => match a.time_points.iter().find(|p| p.name == sel) {
            Some(p) => Ok(LiveAt {
                label: format!("{sel} (event at {})", t(p.time_ns)),
                bytes: p.sites.iter().map(|(&k, &(b, _))| (k, b)).collect(),
            }),
            None => {
                let names: Vec<&str> = a.marks.iter().map(|m| m.name.as_str()).collect();
                let hint = if names.is_empty() {
                    "; this trace has no marks".to_string()
                } else {
                    format!("; marks: {}", names.join(", "))
                };
                Err(UnknownPoint(sel.to_string(), hint))
            }
        },
    }
}

/// Folded lines (`root;…;leaf bytes`) of a live heap, sorted; stacks whose trimmed
/// frames are equal are merged.
pub fn folded(a: &Analysis, live: &LiveAt) -> Vec<String> {
    let mut m = std::collections::BTreeMap::<String, u64>::new();
    for (k, v) in stack_totals(a, live) {
        m.insert(k, v);
    }
    m.into_iter()
        .filter(|&(_, v)| v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

/// Folded stack text to bytes for one live heap.
pub fn stack_totals(a: &Analysis, live: &LiveAt) -> HashMap<String, u64> {
    let index: HashMap<u32, &crate::Site> = a.sites.iter().map(|s| (s.stack, s)).collect();
    let mut m: HashMap<String, u64> = HashMap::new();
    for (&id, &b) in &live.bytes {
        *m.entry(stack_text(&index, id)).or_default() += b;
    }
    m
}

/// The folded text (`root;…;leaf`) of stack `id`.
fn stack_text(index: &HashMap<u32, &crate::Site>, id: u32) -> String {
    let frames = index
        .get(&id)
        .map(|s| {
            s.frames
                .iter()
                .rev()
                .map(|f| crate::render::folded::clean_frame(&f.name))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    if frames.is_empty() {
        format!("[stack {id}]")
    } else {
        frames
    }
}
