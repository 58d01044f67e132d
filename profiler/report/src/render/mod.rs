//! Renderers, one file per output. Each takes an [`Analysis`] and produces bytes;
//! [`write_report`] writes them all to a directory, each file through a temporary
//! name and a rename, so a half-written file never looks complete.

pub mod dhat_json;
pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod growth;
pub mod html;
pub mod oom;
pub mod pprof;
pub mod segments;
pub mod stack_flame;
pub mod stack_json;
pub mod stack_text;
pub mod stack_timeline;
pub mod summary_json;
pub mod summary_text;
pub mod timeline;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{Analysis, ReportError};

pub use flamegraph::render_flamegraph;

/// Which figure a flamegraph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlameKind {
    /// Bytes allocated over the run.
    AllocBytes,
    /// Number of allocations over the run.
    AllocCount,
    /// Bytes live at the moment of the global peak.
    Peak,
    /// Bytes still live at the end (leaked).
    Leaked,
}

impl FlameKind {
    /// Every kind, in the order the report writes them.
    pub const ALL: [FlameKind; 4] = [
        FlameKind::AllocBytes,
        FlameKind::AllocCount,
        FlameKind::Peak,
        FlameKind::Leaked,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            FlameKind::AllocBytes => "alloc-bytes",
            FlameKind::AllocCount => "alloc-count",
            FlameKind::Peak => "peak",
            FlameKind::Leaked => "leaked",
        }
    }
}

impl fmt::Display for FlameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown flamegraph kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flamegraph kind {0:?} (expected alloc-bytes, alloc-count, peak or leaked)")]
pub struct UnknownFlameKind(pub String);

impl FromStr for FlameKind {
    type Err = UnknownFlameKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FlameKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownFlameKind(s.to_string()))
    }
}

/// How to render; the CLI shares these defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RenderOptions {
    /// Sites listed in each ranking of the text summary (default 10).
    pub top_sites: usize,
    /// Frames shown per site in the text summary (default 6).
    pub frames_per_site: usize,
    /// Sites listed in `top_sites` and `leaks` of the JSON summary (default 50).
    pub json_sites: usize,
    /// Write the flamegraphs (default true).
    pub flamegraphs: bool,
    /// Write the timeline chart (default true).
    pub timeline: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            top_sites: 10,
            frames_per_site: 6,
            json_sites: 50,
            flamegraphs: true,
            timeline: true,
        }
    }
}

/// Write `bytes` to `dir/name` through `dir/name.tmp` and a rename. The temporary is
/// created with `O_EXCL` (a stale one is removed first), so it never follows a symlink.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(path)
}

/// Write the whole report into `out_dir` (created if missing): `summary.txt`,
/// `summary.json`, `flame-<kind>.svg` and `.folded` for every [`FlameKind`], and
/// `timeline.svg`, then `report.html`, `dhat-heap.json` and `profile.pb.gz`.
/// Returns the files written.
pub fn write_report(
    a: &Analysis,
    out_dir: &Path,
    opts: &RenderOptions,
) -> Result<Vec<PathBuf>, ReportError> {
    fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let text = summary_text::render(a, opts);
    written.push(write_atomic(out_dir, "summary.txt", text.as_bytes())?);
    let json = summary_json::render(a, opts);
    let json = serde_json::to_vec_pretty(&json)
        .map_err(|e| ReportError::Render(format!("summary.json: {e}")))?;
    written.push(write_atomic(out_dir, "summary.json", &json)?);
    if opts.flamegraphs {
        for kind in FlameKind::ALL {
            let mut folded = Vec::new();
            render_flamegraph(a, kind, true, &mut folded)?;
            written.push(write_atomic(
                out_dir,
                &format!("flame-{kind}.folded"),
                &folded,
            )?);
            let mut svg = Vec::new();
            render_flamegraph(a, kind, false, &mut svg)?;
            written.push(write_atomic(out_dir, &format!("flame-{kind}.svg"), &svg)?);
        }
        let folded = stack_flame::folded(a);
        written.push(write_atomic(
            out_dir,
            "flame-stack.folded",
            folded.as_bytes(),
        )?);
        written.push(write_atomic(
            out_dir,
            "flame-stack.svg",
            &stack_flame::svg(a)?,
        )?);
    }
    if opts.flamegraphs {
        let live = crate::select::LiveAt {
            label: String::new(),
            bytes: a.temporary_sites.clone(),
        };
        let lines = crate::select::folded(a, &live);
        let mut folded = lines.join("\n");
        folded.push('\n');
        written.push(write_atomic(
            out_dir,
            "flame-temporary.folded",
            folded.as_bytes(),
        )?);
        let svg = oom::flame_svg_unit(
            a,
            &lines,
            "Temporary allocations (freed before the thread's next allocation), by call stack",
            "allocations",
        )?;
        written.push(write_atomic(out_dir, "flame-temporary.svg", &svg)?);
    }
    if opts.flamegraphs && !a.spans.is_empty() {
        let mut lines: Vec<String> = a
            .spans
            .iter()
            .filter(|s| s.1 > 0)
            .map(|(p, b, _)| format!("{p} {b}"))
            .collect();
        if a.outside_spans.0 > 0 {
            lines.push(format!("[no span] {}", a.outside_spans.0));
        }
        lines.sort();
        let mut text = lines.join("\n");
        text.push('\n');
        written.push(write_atomic(
            out_dir,
            "flame-spans.folded",
            text.as_bytes(),
        )?);
        let svg = oom::flame_svg(a, &lines, "Heap allocated, by tracing span (bytes)")?;
        written.push(write_atomic(out_dir, "flame-spans.svg", &svg)?);
    }
    if opts.flamegraphs && a.oom.is_some() {
        let lines = oom::lines(a);
        let mut folded = lines.join("\n");
        folded.push('\n');
        written.push(write_atomic(
            out_dir,
            "flame-oom.folded",
            folded.as_bytes(),
        )?);
        let svg = oom::flame_svg(a, &lines, "Live heap at the out-of-memory, by call stack")?;
        written.push(write_atomic(out_dir, "flame-oom.svg", &svg)?);
    }
    if opts.timeline {
        let svg = timeline::render(a);
        written.push(write_atomic(out_dir, "timeline.svg", svg.as_bytes())?);
        let svg = growth::render(a);
        written.push(write_atomic(out_dir, "growth.svg", svg.as_bytes())?);
        let svg = stack_timeline::render(a);
        written.push(write_atomic(out_dir, "timeline-stack.svg", svg.as_bytes())?);
    }
    let page = html::render(a)?;
    written.push(write_atomic(out_dir, "report.html", page.as_bytes())?);
    let dhat = dhat_json::render_bytes(a)?;
    written.push(write_atomic(out_dir, "dhat-heap.json", &dhat)?);
    let pb = pprof::render(a)?;
    written.push(write_atomic(out_dir, "profile.pb.gz", &pb)?);
    Ok(written)
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `12.3 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A time since start in seconds: `1.20 s`, or `3.4 ms` when short.
pub fn fmt_time(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Escape text for SVG/XML.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in FlameKind::ALL {
            assert_eq!(k.to_string().parse::<FlameKind>(), Ok(k));
        }
        assert!("bytes".parse::<FlameKind>().is_err());
    }

    #[test]
    fn byte_and_time_formats() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.50 KiB");
        assert_eq!(fmt_bytes(12 << 20), "12.0 MiB");
        assert_eq!(fmt_time(1_200_000_000), "1.20 s");
        assert_eq!(fmt_time(3_400_000), "3.4 ms");
    }
}
