//! `growth.svg` and the growth section of the summaries: the sites whose live bytes
//! keep rising, as a stacked chart of their live bytes over time beside the total.

use std::fmt::Write as _;

use super::timeline::{byte_axis, time_axis};
use super::{fmt_bytes, xml_escape};
use crate::{Analysis, GrowthSite};

const W: f64 = 1000.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 150.0;
/// Sites drawn in the chart.
pub const CHART_SITES: usize = 5;
const COLORS: [&str; CHART_SITES] = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];
const TOTAL_COLOR: &str = "#3a6fc4";

/// A short name for a site: its first frame outside the standard library and the
/// allocator, or its innermost frame.
pub fn site_name(g: &GrowthSite) -> String {
    let own = g.frames.iter().find(|f| {
        !f.file
            .as_deref()
            .is_some_and(|p| p.starts_with("/rustc/") || p.starts_with("/rust/deps/"))
    });
    own.or(g.frames.first())
        .map_or_else(|| format!("stack {}", g.stack), |f| f.name.clone())
}

/// The chart as an SVG document.
pub fn render(a: &Analysis) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<?xml version=\"1.0\" standalone=\"no\"?>");
    let _ = writeln!(
        s,
        "<svg version=\"1.1\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"Verdana, sans-serif\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"white\"/>"
    );
    let est = if a.sampled() { " (estimated)" } else { "" };
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">Growing sites: live bytes over time, stacked, beside the total{est}</text>",
        W / 2.0
    );
    let (pl, pr, pt, pb) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(
        s,
        "<rect x=\"{pl}\" y=\"{pt}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#999\"/>",
        pr - pl,
        pb - pt
    );
    let total = &a.growth_total;
    if total.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"18\" fill=\"#777\">no allocations recorded</text>",
            (pl + pr) / 2.0,
            (pt + pb) / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let top: Vec<&GrowthSite> = a.growth.iter().take(CHART_SITES).collect();
    let max_t = total.iter().map(|p| p.0).max().unwrap_or(0);
    let max_v = total.iter().map(|p| p.1).max().unwrap_or(0);
    let (yunit, yname, ystep, ytop) = byte_axis(max_v);
    let (xunit, xname, xstep, xend) = time_axis(max_t);
    let x = |t: u64| pl + (t as f64 / xend) * (pr - pl);
    let y = |v: f64| pb - (v / ytop) * (pb - pt);
    let mut v = 0.0;
    while v <= ytop * 1.000_001 {
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{pl}\" y1=\"{yy:.1}\" x2=\"{pr}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{:.4} {yname}</text>",
            pl - 6.0,
            yy + 4.0,
            (v / yunit * 1000.0).round() / 1000.0
        );
        v += ystep;
    }
    let mut t = 0.0;
    while t <= xend * 1.000_001 {
        let xx = pl + t / xend * (pr - pl);
        let _ = writeln!(
            s,
            "<text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{} {xname}</text>",
            pb + 16.0,
            (t / xunit * 1000.0).round() / 1000.0
        );
        t += xstep;
    }
    // Stacked areas: each site on top of the ones before it (all share the sample times).
    let n = total.len();
    let mut base = vec![0f64; n];
    for (i, g) in top.iter().enumerate() {
        if g.series.len() != n {
            continue;
        }
        let upper: Vec<f64> = base
            .iter()
            .zip(&g.series)
            .map(|(b, &(_, v))| b + v as f64)
            .collect();
        let mut d = String::new();
        for (j, &(t, _)) in total.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                x(t),
                y(upper[j])
            );
        }
        for j in (0..n).rev() {
            let _ = write!(d, " L{:.1},{:.1}", x(total[j].0), y(base[j]));
        }
        let _ = writeln!(
            s,
            "<path d=\"{d} Z\" fill=\"{}\" fill-opacity=\"0.6\" stroke=\"none\"><title>{}</title></path>",
            COLORS[i],
            xml_escape(&site_name(g))
        );
        base = upper;
    }
    let pts: Vec<String> = total
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v as f64)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{TOTAL_COLOR}\" stroke-width=\"1.5\"/>",
        pts.join(" ")
    );
    // Legend.
    let mut ly = pb + 40.0;
    let _ = writeln!(
        s,
        "<line x1=\"{pl}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{TOTAL_COLOR}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">total live heap</text>",
        pl + 20.0,
        pl + 28.0,
        ly + 4.0
    );
    if top.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#555\">no site grew steadily over the run</text>",
            pl + 28.0,
            ly + 22.0
        );
    }
    for (i, g) in top.iter().enumerate() {
        ly += 18.0;
        let label = format!(
            "{}: {}/s, max {}",
            site_name(g),
            fmt_bytes(g.rate_bytes_per_s.max(0.0) as u64),
            fmt_bytes(g.live_bytes_max)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{pl}\" y=\"{}\" width=\"20\" height=\"10\" fill=\"{}\" fill-opacity=\"0.6\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            ly - 5.0,
            COLORS[i],
            pl + 28.0,
            ly + 4.0,
            xml_escape(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The growth section of the text summary.
pub fn text(a: &Analysis, top: usize, frames: usize) -> String {
    let mut o = String::new();
    if a.growth.is_empty() {
        return o;
    }
    let est = if a.sampled() { " (estimated)" } else { "" };
    let _ = writeln!(
        o,
        "\ngrowing (leak suspects){est}: {} sites, fastest first",
        a.growth.len()
    );
    for g in a.growth.iter().take(top) {
        let _ = writeln!(
            o,
            "  {}/s (fit R² {:.2}), up to {}, {} live at end",
            fmt_bytes(g.rate_bytes_per_s.max(0.0) as u64),
            g.r2,
            fmt_bytes(g.live_bytes_max),
            fmt_bytes(g.live_bytes_end)
        );
        // From the first frame of the program's own code, as the other sections.
        let own = g
            .frames
            .iter()
            .position(|f| {
                !(f.name.starts_with("__rust")
                    || f.file
                        .as_deref()
                        .is_some_and(|p| p.starts_with("/rustc/") || p.starts_with("/rust/deps/")))
            })
            .unwrap_or(0);
        if own > 0 {
            let _ = writeln!(o, "      ({own} allocator and std frames)");
        }
        for f in g.frames.iter().skip(own).take(frames) {
            let _ = writeln!(o, "      {}", f.display());
        }
    }
    o
}
