//! `timeline-stack.svg`: the stack panel of the timeline. For the deepest few threads,
//! the stack high-water mark over time (a staircase: each step is a new deepest stack,
//! seen at an allocation or by the depth sampler) under the thread's limit, drawn as a
//! dashed line.

use std::fmt::Write as _;

use super::timeline::{byte_axis, time_axis};
use super::xml_escape;
use crate::Analysis;

const W: f64 = 1000.0;
const ROW: f64 = 140.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const COLOR: &str = "#8c564b";
const LIMIT_COLOR: &str = "#d62728";
/// Threads drawn, deepest first.
const MAX_THREADS: usize = 4;

/// The panel as an SVG document.
pub fn render(a: &Analysis) -> String {
    let mut threads: Vec<_> = a
        .stack
        .threads
        .iter()
        .filter(|t| a.stack.high_water.contains_key(&t.thread))
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.max_stack_bytes));
    threads.truncate(MAX_THREADS);
    let h = TOP + ROW * threads.len().max(1) as f64 + 20.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"Verdana, sans-serif\">"
    );
    let _ = writeln!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{h}\" fill=\"white\"/><text x=\"{}\" y=\"28\" font-size=\"17\" text-anchor=\"middle\">Stack high-water mark over time, per thread (dashed: the stack limit)</text>",
        W / 2.0
    );
    if threads.is_empty() {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#555\">no stack depths recorded</text>",
            W / 2.0,
            TOP + 40.0
        );
    }
    let (tu, tname, _, tend) = time_axis(a.duration_ns.max(1));
    let pw = W - LEFT - RIGHT;
    for (i, t) in threads.iter().enumerate() {
        let top = TOP + ROW * i as f64;
        let ph = ROW - 45.0;
        let max = t.stack_limit_bytes.max(t.max_stack_bytes).max(1);
        let (bu, bname, _, btop) = byte_axis(max);
        let x = |ns: u64| LEFT + ns as f64 / tend * pw;
        let y = |b: u64| top + ph - b as f64 / btop * ph;
        let name = if t.name.is_empty() { "?" } else { &t.name };
        let _ = writeln!(
            o,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"#999\"/><text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"12\">thread {} {}: deepest {:.1} {bname} of {:.1} {bname} ({:.1}%)</text>",
            top - 4.0,
            t.thread,
            xml_escape(name),
            t.max_stack_bytes as f64 / bu,
            t.stack_limit_bytes as f64 / bu,
            t.percent_used
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{:.1} {bname}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">0</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{:.1} {tname}</text>",
            LEFT - 4.0,
            top + 10.0,
            btop / bu,
            LEFT - 4.0,
            top + ph,
            LEFT + pw,
            top + ph + 14.0,
            tend / tu
        );
        if t.stack_limit_bytes > 0 {
            let ly = y(t.stack_limit_bytes);
            let _ = writeln!(
                o,
                "<line x1=\"{LEFT}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{LIMIT_COLOR}\" stroke-dasharray=\"6,4\"/>",
                LEFT + pw
            );
        }
        let mut pts = format!("{:.1},{:.1}", LEFT, y(0));
        let mut last = 0u64;
        for &(ns, d) in &a.stack.high_water[&t.thread] {
            let _ = write!(pts, " {:.1},{:.1} {:.1},{:.1}", x(ns), y(last), x(ns), y(d));
            last = d;
        }
        let _ = write!(pts, " {:.1},{:.1}", LEFT + pw, y(last));
        let _ = writeln!(
            o,
            "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{COLOR}\" stroke-width=\"2\"/>"
        );
    }
    o.push_str("</svg>\n");
    o
}
