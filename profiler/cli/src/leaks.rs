//! `stackheap leaks TRACE`: the sites still live at the end, grouped by call stack, with
//! bytes, blocks, when their blocks were allocated, and one symbolized stack each.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use stackheap_report::render::fmt_bytes;
use stackheap_report::Analysis;

/// The leak report as text.
pub fn text(a: &Analysis, top: usize, frames: usize) -> String {
    let mut o = String::new();
    let leaks = a.leaks();
    let est = if a.sampled() {
        format!(
            " (estimated: sampled every {} bytes on average)",
            a.sample_rate
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "live at end{est}: {} in {} blocks, {} sites",
        fmt_bytes(a.heap.leaked_bytes),
        a.heap.leaked_blocks,
        leaks.len()
    );
    if !a.trace.complete {
        let _ = writeln!(
            o,
            "note: the program did not stop cleanly; \"end\" is the last recorded event"
        );
    }
    for (i, s) in leaks.iter().take(top).enumerate() {
        let ages = a.leak_ages.get(&s.stack).copied().unwrap_or_default();
        let _ = writeln!(
            o,
            "\n#{} {} in {} blocks; allocated in run quarters 1-4: {} / {} / {} / {} blocks",
            i + 1,
            fmt_bytes(s.leaked_bytes),
            s.leaked_blocks,
            ages[0],
            ages[1],
            ages[2],
            ages[3]
        );
        // The allocator and standard-library frames on top are summed up in one line.
        let own = s
            .frames
            .iter()
            .position(|f| {
                !(f.name.starts_with("__rust")
                    || f.file
                        .as_deref()
                        .is_some_and(|p| p.starts_with("/rustc/") || p.starts_with("/rust/deps/")))
            })
            .filter(|&i| i < s.frames.len())
            .unwrap_or(0);
        if own > 0 {
            let _ = writeln!(o, "      ({own} allocator and std frames)");
        }
        for f in s.frames.iter().skip(own).take(frames) {
            let _ = writeln!(o, "      {}", f.display());
        }
        if s.frames.len() > own + frames {
            let _ = writeln!(o, "      ... {} more frames", s.frames.len() - own - frames);
        }
    }
    if leaks.len() > top {
        let _ = writeln!(o, "\n... {} more sites (--top)", leaks.len() - top);
    }
    o
}

/// `stackheap leaks`.
pub fn leaks(trace: &Path, top: usize, frames: usize) -> Result<ExitCode> {
    let a = crate::analyze(trace)?;
    print!("{}", text(&a, top, frames));
    Ok(ExitCode::SUCCESS)
}
