//! Flamegraphs through inferno, from the folded lines of [`super::folded`].

use std::io::Write;

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::{folded, xml_escape, FlameKind};
use crate::{Analysis, ReportError};

/// Title and unit of each kind.
fn labels(kind: FlameKind, sampled: bool) -> (&'static str, &'static str) {
    let (title, unit) = match kind {
        FlameKind::AllocBytes => ("Heap allocated, by call stack (bytes)", "bytes"),
        FlameKind::AllocCount => ("Heap allocations, by call stack (count)", "allocations"),
        FlameKind::Peak => ("Live heap at its peak, by call stack (bytes)", "bytes"),
        FlameKind::Leaked => (
            "Heap never freed (live at exit), by call stack (bytes)",
            "bytes",
        ),
    };
    if sampled {
        (
            title,
            if unit == "bytes" {
                "bytes (estimated)"
            } else {
                "allocations (estimated)"
            },
        )
    } else {
        (title, unit)
    }
}

/// A small valid SVG saying there is nothing to draw (inferno refuses empty input).
pub fn empty_svg(title: &str, message: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"600\" height=\"120\" viewBox=\"0 0 600 120\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">\n",
            "<rect x=\"0\" y=\"0\" width=\"600\" height=\"120\" fill=\"#eef2ee\"/>\n",
            "<text x=\"300\" y=\"40\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"17\">{}</text>\n",
            "<text x=\"300\" y=\"80\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"14\" fill=\"#555\">{}</text>\n",
            "</svg>\n"
        ),
        xml_escape(title),
        xml_escape(message)
    )
}

/// Write one flamegraph of `a` to `out`: the folded lines when `folded`, else the SVG.
pub fn render_flamegraph(
    a: &Analysis,
    kind: FlameKind,
    folded: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    render_flamegraph_lines(a, kind, folded::lines(a, kind), folded, out)
}

/// Like [`render_flamegraph`], with every stack prefixed by its tracing span path
/// (`--spans`); only for the allocation kinds (`alloc-bytes`, `alloc-count`).
pub fn render_flamegraph_spans(
    a: &Analysis,
    kind: FlameKind,
    folded: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let lines = folded::lines_with_spans(a, kind).ok_or_else(|| {
        ReportError::Render(format!(
            "the {kind} flamegraph with spans: spans are recorded for alloc-bytes and alloc-count only"
        ))
    })?;
    render_flamegraph_lines(a, kind, lines, folded, out)
}

fn render_flamegraph_lines(
    a: &Analysis,
    kind: FlameKind,
    lines: Vec<String>,
    folded: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    if folded {
        let mut text = String::new();
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        return out.write_all(text.as_bytes()).map_err(ReportError::Output);
    }
    let (title, unit) = labels(kind, a.sampled());
    if lines.is_empty() {
        let msg = match kind {
            FlameKind::Leaked => "no allocations: nothing was live at exit",
            FlameKind::Peak => "no allocations live at the peak",
            _ => "no allocations",
        };
        return out
            .write_all(empty_svg(title, msg).as_bytes())
            .map_err(ReportError::Output);
    }
    let mut opts = Options::default();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    opts.title = title.to_string();
    opts.count_name = unit.to_string();
    opts.deterministic = true;
    let exe = a.program.exe.rsplit('/').next().unwrap_or("");
    let mut sub = format!("{exe} (pid {})", a.program.pid);
    if a.sampled() {
        sub.push_str(&format!(
            ", sampled every {} bytes on average: figures are estimates",
            a.sample_rate
        ));
    }
    opts.subtitle = Some(sub);
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| ReportError::Render(format!("the {kind} flamegraph: {e}")))?;
    out.write_all(&svg).map_err(ReportError::Output)
}
