//! The plain-text summary the CLI prints after a run and writes as `summary.txt`.

use std::fmt::Write as _;

use super::{fmt_bytes, fmt_time, RenderOptions};
use crate::{Analysis, Site, TotalsSource};

/// The summary with the default [`RenderOptions`].
pub fn summary_text(a: &Analysis) -> String {
    render(a, &RenderOptions::default())
}

/// A frame of the Rust standard library or its vendored crates (sources under `/rustc/`
/// and `/rust/deps/` in the shipped debug info).
fn is_std(f: &crate::symbolize::Frame) -> bool {
    f.file
        .as_deref()
        .is_some_and(|p| p.starts_with("/rustc/") || p.starts_with("/rust/deps/"))
}

/// Print a site's stack from the first frame of the program's own code: the standard
/// library frames above it (Vec growth, Box::new…) are named in one "via" line.
fn site_block(out: &mut String, s: &Site, headline: String, frames: usize) {
    let _ = writeln!(out, "  {headline}");
    let own = s
        .frames
        .iter()
        .position(|f| !is_std(f))
        .filter(|&i| i > 0 && i < s.frames.len())
        .unwrap_or(0);
    if own > 0 {
        let via = &s.frames[own - 1].name;
        let _ = writeln!(out, "      (via {via}, {} std frames)", own);
    }
    for f in s.frames.iter().skip(own).take(frames) {
        let _ = writeln!(out, "      {}", f.display());
    }
    if s.frames.len() > own + frames {
        let _ = writeln!(
            out,
            "      ... {} more frames",
            s.frames.len() - own - frames
        );
    }
}

/// The summary text.
pub fn render(a: &Analysis, opts: &RenderOptions) -> String {
    let mut o = String::new();
    let h = &a.heap;
    let est = if a.sampled() { " (estimated)" } else { "" };
    let _ = writeln!(
        o,
        "stackheap report: {} (pid {})",
        a.program.exe, a.program.pid
    );
    if !a.program.argv.is_empty() {
        let _ = writeln!(o, "command: {}", a.program.argv.join(" "));
    }
    if a.program.attached {
        let _ = writeln!(
            o,
            "attached to the running process: what it allocated before is unknown (its frees are counted apart)"
        );
    }
    let _ = writeln!(o, "duration: {}", fmt_time(a.duration_ns));
    if a.sampled() {
        let src = match h.source {
            TotalsSource::Trailer => "exact, from the final counters",
            TotalsSource::Counters => "exact, from the last counters record before the trace ended",
            TotalsSource::Estimated => "estimated from the samples: no counters record",
            TotalsSource::Events => "from the events",
        };
        let _ = writeln!(
            o,
            "sampling: one allocation per {} bytes on average; totals {src}; figures per site are estimates",
            a.sample_rate
        );
    } else {
        let _ = writeln!(o, "sampling: every allocation recorded (exact)");
    }

    let _ = writeln!(o, "\nheap");
    let _ = writeln!(
        o,
        "  allocations: {} ({}), frees: {}",
        h.total_allocs,
        fmt_bytes(h.total_bytes),
        h.total_frees
    );
    let _ = writeln!(
        o,
        "  peak heap:   {}{} in {} blocks, at {}",
        fmt_bytes(h.peak_bytes),
        if h.peak_bytes_within > 0 {
            format!(" (± {})", fmt_bytes(h.peak_bytes_within))
        } else {
            String::new()
        },
        h.peak_blocks,
        fmt_time(h.peak_time_ns)
    );
    if h.peak_bytes_within > 0 {
        let _ = writeln!(
            o,
            "               (several threads: the process counts live bytes in batches per thread; --sample 1 gives the exact peak)"
        );
    }
    let _ = writeln!(
        o,
        "  live at end: {} in {} blocks{}",
        fmt_bytes(h.leaked_bytes),
        h.leaked_blocks,
        if h.leaked_bytes > 0 {
            " (leaked: never freed)"
        } else {
            ""
        }
    );
    if h.failed_allocs > 0 {
        let _ = writeln!(o, "  failed allocations: {}", h.failed_allocs);
    }
    if h.frees_unknown > 0 && (!a.sampled() || a.program.attached) {
        let _ = writeln!(
            o,
            "  frees of blocks allocated before {}: {}",
            if a.program.attached {
                "the attach"
            } else {
                "profiling"
            },
            h.frees_unknown
        );
    }
    if a.rss_peak_bytes > 0 {
        let _ = writeln!(o, "  peak RSS:    {}", fmt_bytes(a.rss_peak_bytes));
    }

    super::stack_text::render(&mut o, a);

    let _ = writeln!(o, "\ntrace");
    match a.trace.truncated_at {
        Some(n) => {
            let _ = writeln!(
                o,
                "  trace truncated at byte {n}: the program did not finish writing; everything before it is used"
            );
        }
        None => {
            let _ = writeln!(o, "  {} bytes read, no damage", a.trace.valid_bytes);
        }
    }
    if a.trace.complete {
        let _ = writeln!(o, "  the process ended cleanly (trailer present)");
    } else {
        let _ = writeln!(
            o,
            "  the process did not end cleanly (no trailer): it was killed or crashed"
        );
    }
    if a.trace.lost_events > 0 {
        let _ = writeln!(
            o,
            "  {} events could not be recorded (lost): figures are incomplete",
            a.trace.lost_events
        );
    }
    if a.trace.late_events > 0 {
        let _ = writeln!(
            o,
            "  {} events arrived late and were used slightly out of order",
            a.trace.late_events
        );
    }
    for w in &a.warnings {
        let _ = writeln!(o, "  warning: {w}");
    }

    let leaks = a.leaks();
    if !leaks.is_empty() {
        let _ = writeln!(
            o,
            "\nlive at end (leaked){est}: top {} of {} sites",
            leaks.len().min(opts.top_sites),
            leaks.len()
        );
        for s in leaks.iter().take(opts.top_sites) {
            let head = format!(
                "{} in {} blocks",
                fmt_bytes(s.leaked_bytes),
                s.leaked_blocks
            );
            site_block(&mut o, s, head, opts.frames_per_site);
        }
    }

    if a.temporary_allocs > 0 {
        let _ = writeln!(
            o,
            "\ntemporary allocations{}: {} (freed before their thread's next allocation; flame-temporary.svg)",
            if a.sampled() { " (among the sampled ones)" } else { "" },
            a.temporary_allocs
        );
    }
    o.push_str(&super::oom::text(a, opts.frames_per_site));
    o.push_str(&super::growth::text(
        a,
        opts.top_sites,
        opts.frames_per_site,
    ));

    let mut peak: Vec<&Site> = a.sites.iter().filter(|s| s.peak_bytes > 0).collect();
    peak.sort_by(|x, y| y.peak_bytes.cmp(&x.peak_bytes).then(x.stack.cmp(&y.stack)));
    if !peak.is_empty() {
        let _ = writeln!(
            o,
            "\nlive at the peak{est}: top {} of {} sites",
            peak.len().min(opts.top_sites),
            peak.len()
        );
        for s in peak.iter().take(opts.top_sites) {
            let head = format!("{} in {} blocks", fmt_bytes(s.peak_bytes), s.peak_blocks);
            site_block(&mut o, s, head, opts.frames_per_site);
        }
    }

    let alloc: Vec<&Site> = a.sites.iter().filter(|s| s.alloc_bytes > 0).collect();
    if !alloc.is_empty() {
        let _ = writeln!(
            o,
            "\nallocated{est}: top {} of {} sites",
            alloc.len().min(opts.top_sites),
            alloc.len()
        );
        for s in alloc.iter().take(opts.top_sites) {
            let head = format!(
                "{} in {} allocations",
                fmt_bytes(s.alloc_bytes),
                s.alloc_count
            );
            site_block(&mut o, s, head, opts.frames_per_site);
        }
    } else {
        let _ = writeln!(o, "\nno allocations recorded");
    }
    o
}
