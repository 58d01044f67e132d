//! `timeline.svg`: live heap (area) and RSS (line) over time, hand-written SVG.
//! The peak is marked with a dot and a label; axes have round ticks in binary byte
//! units and in s, ms or µs.

use std::fmt::Write as _;

use super::{fmt_bytes, fmt_time, xml_escape};
use crate::Analysis;

const W: f64 = 1000.0;
const H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 75.0;
const BOTTOM: f64 = 50.0;
const HEAP_COLOR: &str = "#3a6fc4";
const RSS_COLOR: &str = "#e08a1e";
const PEAK_COLOR: &str = "#d62728";

/// 1, 2 or 5 times a power of ten, the smallest not below `x`.
fn nice_step(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= x * 0.999_999 {
            return m * p;
        }
    }
    10.0 * p
}

/// A number without useless decimals: `2`, `0.5`, `1.25`.
fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Y axis: (unit size, unit name, step in bytes, top in bytes).
pub fn byte_axis(max: u64) -> (f64, &'static str, f64, f64) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let max = (max as f64).max(1.0);
    let mut k = 0;
    while k + 1 < UNITS.len() && 1024f64.powi(k as i32 + 1) <= max {
        k += 1;
    }
    let unit = 1024f64.powi(k as i32);
    let mut step = nice_step(max / unit / 5.0);
    if k == 0 {
        step = step.max(1.0);
    }
    let step = step * unit;
    let top = (max / step).ceil().max(1.0) * step;
    (unit, UNITS[k], step, top)
}

/// X axis: (unit size in ns, unit name, step in ns, end in ns).
pub fn time_axis(max_ns: u64) -> (f64, &'static str, f64, f64) {
    let max = (max_ns as f64).max(1.0);
    let (unit, name) = if max >= 2e9 {
        (1e9, "s")
    } else if max >= 2e6 {
        (1e6, "ms")
    } else if max >= 2e3 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    };
    let mut step = nice_step(max / unit / 8.0);
    if unit == 1.0 {
        step = step.max(1.0);
    }
    let step = step * unit;
    let end = (max / step).ceil().max(1.0) * step;
    (unit, name, step, end)
}

/// The chart as an SVG document.
pub fn render(a: &Analysis) -> String {
    let heap = &a.timeline.heap;
    let rss = &a.timeline.rss;
    let mut s = String::new();
    let exe = a.program.exe.rsplit('/').next().unwrap_or("");
    let _ = writeln!(s, "<?xml version=\"1.0\" standalone=\"no\"?>");
    let _ = writeln!(
        s,
        "<svg version=\"1.1\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"Verdana, sans-serif\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">Heap and RSS over time: {} (pid {})</text>",
        W / 2.0,
        xml_escape(exe),
        a.program.pid
    );
    let mut notes = Vec::new();
    if a.sampled() {
        notes.push("live heap from the exact in-process counters (sampled trace)".to_string());
    }
    if let Some(n) = a.trace.truncated_at {
        notes.push(format!("trace truncated at byte {n}"));
    } else if !a.trace.complete {
        notes.push("no trailer: the process did not end cleanly".into());
    }
    if !notes.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"44\" text-anchor=\"middle\" font-size=\"12\" fill=\"#555\">{}</text>",
            W / 2.0,
            xml_escape(&notes.join("; "))
        );
    }
    let (pl, pr, pt, pb) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(
        s,
        "<rect x=\"{pl}\" y=\"{pt}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#999\"/>",
        pr - pl,
        pb - pt
    );
    if heap.is_empty() && rss.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"20\" fill=\"#777\">no data: no allocations or RSS samples in the trace</text>",
            (pl + pr) / 2.0,
            (pt + pb) / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }

    let peak = (a.heap.peak_time_ns, a.heap.peak_bytes);
    let max_t = heap
        .iter()
        .chain(rss.iter())
        .map(|p| p.0)
        .max()
        .unwrap_or(0)
        .max(a.duration_ns)
        .max(peak.0);
    let max_v = heap
        .iter()
        .chain(rss.iter())
        .map(|p| p.1)
        .max()
        .unwrap_or(0)
        .max(peak.1);
    let (yunit, yname, ystep, ytop) = byte_axis(max_v);
    let (xunit, xname, xstep, xend) = time_axis(max_t);
    let x = |t: u64| pl + (t as f64 / xend) * (pr - pl);
    let y = |v: u64| pb - (v as f64 / ytop) * (pb - pt);

    // Grid and ticks.
    let mut v = 0.0;
    while v <= ytop * 1.000_001 {
        let yy = pb - v / ytop * (pb - pt);
        let _ = writeln!(
            s,
            "<line x1=\"{pl}\" y1=\"{yy:.1}\" x2=\"{pr}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{} {yname}</text>",
            pl - 6.0,
            yy + 4.0,
            trim_num(v / yunit)
        );
        v += ystep;
    }
    let mut t = 0.0;
    while t <= xend * 1.000_001 {
        let xx = pl + t / xend * (pr - pl);
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{pb}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"#999\"/>",
            pb + 5.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{} {xname}</text>",
            pb + 18.0,
            trim_num(t / xunit)
        );
        t += xstep;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">time since start</text>",
        (pl + pr) / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 16 {})\">memory</text>",
        (pt + pb) / 2.0,
        (pt + pb) / 2.0
    );

    // Live heap: a step function, drawn as a filled area from zero.
    if !heap.is_empty() {
        let mut d = format!("M{:.1},{:.1}", x(0), y(0));
        let mut prev = 0u64;
        for &(t, v) in heap {
            let _ = write!(d, " L{:.1},{:.1} L{:.1},{:.1}", x(t), y(prev), x(t), y(v));
            prev = v;
        }
        let end = max_t.max(heap.last().map_or(0, |p| p.0));
        let _ = write!(d, " L{:.1},{:.1}", x(end), y(prev));
        let _ = writeln!(
            s,
            "<path d=\"{d} L{:.1},{:.1} Z\" fill=\"{HEAP_COLOR}\" fill-opacity=\"0.25\" stroke=\"none\"/>",
            x(end),
            y(0)
        );
        let _ = writeln!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{HEAP_COLOR}\" stroke-width=\"1.5\"/>"
        );
    }
    if !rss.is_empty() {
        let pts: Vec<String> = rss
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{RSS_COLOR}\" stroke-width=\"1.5\" stroke-dasharray=\"6 3\"/>",
            pts.join(" ")
        );
    }
    if let Some(o) = &a.oom {
        let ox = x(o.time_ns);
        let _ = writeln!(
            s,
            "<line x1=\"{ox:.1}\" y1=\"{pt}\" x2=\"{ox:.1}\" y2=\"{pb}\" stroke=\"{PEAK_COLOR}\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\" fill=\"{PEAK_COLOR}\">OOM: {} requested</text>",
            ox - 4.0,
            pt + 28.0,
            xml_escape(&fmt_bytes(o.requested_bytes))
        );
    }
    for m in &a.marks {
        let mx = x(m.time_ns);
        let _ = writeln!(
            s,
            "<line x1=\"{mx:.1}\" y1=\"{pt}\" x2=\"{mx:.1}\" y2=\"{pb}\" stroke=\"#2ca02c\" stroke-dasharray=\"2 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#2ca02c\">{}</text>",
            mx + 3.0,
            pt + 12.0,
            xml_escape(&m.name)
        );
    }
    if peak.1 > 0 {
        let (px, py) = (x(peak.0), y(peak.1));
        let label = format!("peak {} at {}", fmt_bytes(peak.1), fmt_time(peak.0));
        let (anchor, lx) = if px > (pl + pr) / 2.0 {
            ("end", px - 8.0)
        } else {
            ("start", px + 8.0)
        };
        let _ = writeln!(
            s,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4.5\" fill=\"{PEAK_COLOR}\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" font-size=\"12\" fill=\"{PEAK_COLOR}\">{}</text>",
            (py - 8.0).max(pt + 12.0),
            xml_escape(&label)
        );
    }

    // Legend: one row above the plot, right-aligned.
    let ly = pt - 10.0;
    let lx = pr - 400.0;
    let _ = writeln!(
        s,
        "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"18\" height=\"10\" fill=\"{HEAP_COLOR}\" fill-opacity=\"0.4\" stroke=\"{HEAP_COLOR}\"/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\">live heap</text>",
        ly - 9.0,
        lx + 24.0
    );
    let lx = lx + 100.0;
    let _ = writeln!(
        s,
        "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{RSS_COLOR}\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\">RSS (resident memory)</text>",
        ly - 4.0,
        lx + 18.0,
        ly - 4.0,
        lx + 24.0
    );
    let lx = lx + 180.0;
    let _ = writeln!(
        s,
        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{PEAK_COLOR}\"/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\">heap peak</text>",
        lx + 9.0,
        ly - 4.0,
        lx + 24.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round_and_cover_the_data() {
        for max in [1u64, 7, 1000, 1536, 5 << 20, 12_900_000, 3 << 30] {
            let (unit, _, step, top) = byte_axis(max);
            assert!(top >= max as f64, "{max}");
            let steps = top / step;
            assert!((1.0..=10.0).contains(&steps.round()), "{max}: {steps}");
            let m = step / unit;
            let p = 10f64.powf(m.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|k| ((m / p) - k).abs() < 1e-9),
                "{max}: {m}"
            );
        }
        let (unit, name, step, end) = time_axis(1_200_000_000);
        assert_eq!((unit, name), (1e6, "ms"));
        assert!(end >= 1.2e9 && step > 0.0);
        assert_eq!(time_axis(5_000_000_000).1, "s");
    }
}
