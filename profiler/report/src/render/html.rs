//! `report.html`: the whole report in one self-contained page (no network, no external
//! scripts): the summary, the timeline with the peak marked, the flamegraphs in tabs,
//! the live heap at any of a bounded number of moments (click the timeline), and the
//! leak and thread tables.
//!
//! The page carries the data once, as JSON (a frame table, the sites as frame indices,
//! one figure per site and flamegraph, and the snapshots of [`crate::analyze::snapshots`]),
//! and a small script draws each flamegraph as SVG from it; so its size grows with the
//! number of sites and snapshots, never with the number of events.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fmt_bytes, fmt_time, timeline, xml_escape};
use crate::{Analysis, ReportError, Site};

/// Rows of the leak table.
const LEAK_ROWS: usize = 50;
/// Frames shown per stack in the leak table.
const LEAK_FRAMES: usize = 12;

/// `data-k`/`data-v` carry the exact figure (the key of `summary.json`'s `heap` object)
/// so a test or a script can read it back; the text is for people.
fn fig(s: &mut String, label: &str, key: &str, v: u64, text: String) {
    let _ = writeln!(
        s,
        "<tr><th>{}</th><td data-k=\"{key}\" data-v=\"{v}\" title=\"{v}\">{}</td></tr>",
        xml_escape(label),
        xml_escape(&text)
    );
}

fn bytes_text(b: u64) -> String {
    if b < 1024 {
        fmt_bytes(b)
    } else {
        format!("{} ({b} bytes)", fmt_bytes(b))
    }
}

fn frame_line(f: &crate::Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} at {file}:{line}", f.name),
        (Some(file), None) => format!("{} at {file}", f.name),
        _ => f.name.clone(),
    }
}

fn summary(a: &Analysis, s: &mut String) {
    let h = &a.heap;
    s.push_str("<section id=\"summary\"><h2>Summary</h2><table class=\"figs\">\n");
    fig(
        s,
        "allocated",
        "total_bytes",
        h.total_bytes,
        bytes_text(h.total_bytes),
    );
    fig(
        s,
        "allocations",
        "total_allocs",
        h.total_allocs,
        h.total_allocs.to_string(),
    );
    fig(
        s,
        "frees",
        "total_frees",
        h.total_frees,
        h.total_frees.to_string(),
    );
    fig(
        s,
        "peak live heap",
        "peak_bytes",
        h.peak_bytes,
        if h.peak_bytes_within > 0 {
            format!(
                "{} ± {}",
                bytes_text(h.peak_bytes),
                bytes_text(h.peak_bytes_within)
            )
        } else {
            bytes_text(h.peak_bytes)
        },
    );
    fig(
        s,
        "live blocks at the peak",
        "peak_blocks",
        h.peak_blocks,
        h.peak_blocks.to_string(),
    );
    fig(
        s,
        "peak at",
        "peak_time_ns",
        h.peak_time_ns,
        fmt_time(h.peak_time_ns),
    );
    fig(
        s,
        "leaked (live at exit)",
        "leaked_bytes",
        h.leaked_bytes,
        bytes_text(h.leaked_bytes),
    );
    fig(
        s,
        "leaked blocks",
        "leaked_blocks",
        h.leaked_blocks,
        h.leaked_blocks.to_string(),
    );
    fig(
        s,
        "failed allocations (out of memory)",
        "failed_allocs",
        h.failed_allocs,
        h.failed_allocs.to_string(),
    );
    fig(
        s,
        "frees of blocks allocated before profiling",
        "frees_unknown",
        h.frees_unknown,
        h.frees_unknown.to_string(),
    );
    let _ = writeln!(
        s,
        "<tr><th>peak RSS</th><td>{}</td></tr><tr><th>duration</th><td>{}</td></tr>",
        xml_escape(&bytes_text(a.rss_peak_bytes)),
        xml_escape(&fmt_time(a.duration_ns))
    );
    let sampling = if a.sampled() {
        format!(
            "sampled every {} bytes on average: per-site figures are estimates",
            a.sample_rate
        )
    } else {
        "every allocation recorded: figures are exact".into()
    };
    let _ = writeln!(
        s,
        "<tr><th>sampling</th><td>{}</td></tr>",
        xml_escape(&sampling)
    );
    let end = match (a.trace.truncated_at, a.trace.complete) {
        (Some(at), _) => {
            format!("trace truncated at byte {at} (the program crashed or was killed?)")
        }
        (None, false) => "no trailer: the program did not stop profiling cleanly".into(),
        (None, true) => "complete".into(),
    };
    let _ = writeln!(
        s,
        "<tr><th>trace</th><td id=\"trace-end\">{}</td></tr>",
        xml_escape(&end)
    );
    if a.trace.lost_events > 0 {
        let _ = writeln!(
            s,
            "<tr><th>lost events</th><td class=\"warn\">{}</td></tr>",
            a.trace.lost_events
        );
    }
    s.push_str("</table>\n");
    if !a.warnings.is_empty() {
        s.push_str("<ul class=\"warn\">");
        for w in &a.warnings {
            let _ = write!(s, "<li>{}</li>", xml_escape(w));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</section>\n");
}

/// The timeline of [`timeline::render`] with one clickable band per snapshot.
fn timeline_svg(a: &Analysis) -> String {
    let svg = timeline::render(a);
    let svg = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => &svg,
    };
    let Some(close) = svg.rfind("</svg>") else {
        return svg.to_string();
    };
    if a.snapshots.is_empty() || (a.timeline.heap.is_empty() && a.timeline.rss.is_empty()) {
        return svg.to_string();
    }
    // The plot's x mapping, as timeline::render computes it.
    let (pl, pr) = (80.0, 1000.0 - 30.0);
    let (pt, pb) = (75.0, 400.0 - 50.0);
    let max_t = a
        .timeline
        .heap
        .iter()
        .chain(a.timeline.rss.iter())
        .map(|p| p.0)
        .max()
        .unwrap_or(0)
        .max(a.duration_ns)
        .max(a.heap.peak_time_ns);
    let (_, _, _, xend) = timeline::time_axis(max_t);
    let x = |t: u64| pl + (t as f64 / xend) * (pr - pl);
    let xs: Vec<f64> = a.snapshots.iter().map(|s| x(s.time_ns)).collect();
    let mut o = String::from("<g id=\"snaps\">\n");
    for (i, &cx) in xs.iter().enumerate() {
        let left = if i == 0 { pl } else { (xs[i - 1] + cx) / 2.0 };
        let right = if i + 1 == xs.len() {
            pr
        } else {
            (cx + xs[i + 1]) / 2.0
        };
        let _ = writeln!(
            o,
            "<rect class=\"snap\" data-i=\"{i}\" x=\"{left:.1}\" y=\"{pt}\" width=\"{:.1}\" height=\"{}\" fill=\"transparent\"><title>live heap at {}</title></rect><circle class=\"tick\" cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#888\" pointer-events=\"none\"/>",
            (right - left).max(0.5),
            pb - pt,
            xml_escape(&fmt_time(a.snapshots[i].time_ns)),
            pb + 6.0
        );
    }
    let _ = writeln!(
        o,
        "<line id=\"cursor\" x1=\"0\" y1=\"{pt}\" x2=\"0\" y2=\"{pb}\" stroke=\"#2a9d3a\" stroke-width=\"2\" visibility=\"hidden\" pointer-events=\"none\"/></g>"
    );
    format!("{}{o}{}", &svg[..close], &svg[close..])
}

/// The page's data: frames, sites, figures per flamegraph, snapshots.
fn data(a: &Analysis) -> Value {
    let mut frames: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let sites: Vec<&Site> = a.sites.iter().filter(|s| s.alloc_count > 0).collect();
    let mut site_index = HashMap::new();
    let stacks: Vec<Vec<usize>> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            site_index.insert(s.stack, i);
            s.frames
                .iter()
                .map(|f| {
                    // By function name, as the SVG flamegraphs (folded lines) do.
                    let t = f.name.clone();
                    *index.entry(t.clone()).or_insert_with(|| {
                        frames.push(t);
                        frames.len() - 1
                    })
                })
                .collect()
        })
        .collect();
    let col = |f: fn(&Site) -> u64| sites.iter().map(|s| f(s)).collect::<Vec<u64>>();
    let unit = if a.sampled() { " (estimated)" } else { "" };
    let snaps: Vec<Value> = a
        .snapshots
        .iter()
        .map(|s| {
            json!({
                "t": s.time_ns,
                "label": fmt_time(s.time_ns),
                "s": s.sites.iter().filter_map(|(id, b)| site_index.get(id).map(|&i| [i as u64, *b])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut kinds = vec![
        json!({"id": "alloc-bytes", "title": "allocated bytes", "unit": format!("bytes{unit}"), "v": col(|s| s.alloc_bytes)}),
        json!({"id": "alloc-count", "title": "allocations", "unit": format!("allocations{unit}"), "v": col(|s| s.alloc_count)}),
        json!({"id": "peak", "title": "live at the peak", "unit": format!("bytes{unit}"), "v": col(|s| s.peak_bytes)}),
        json!({"id": "leaked", "title": "leaked (live at exit)", "unit": format!("bytes{unit}"), "v": col(|s| s.leaked_bytes)}),
    ];
    // The views the run has beyond those four: per site, in the same site order.
    let per_site =
        |get: &dyn Fn(u32) -> u64| sites.iter().map(|s| get(s.stack)).collect::<Vec<u64>>();
    if a.temporary_allocs > 0 {
        let v = per_site(&|id| a.temporary_sites.get(&id).copied().unwrap_or(0));
        kinds.push(json!({"id": "temporary", "title": "temporary allocations", "unit": "allocations", "v": v}));
    }
    if !a.growth.is_empty() {
        let v = per_site(&|id| {
            a.growth
                .iter()
                .find(|g| g.stack == id)
                .map_or(0, |g| g.rate_bytes_per_s.max(0.0).round() as u64)
        });
        kinds.push(
            json!({"id": "growth", "title": "growing (leak suspects)", "unit": "bytes/s", "v": v}),
        );
    }
    if let Some(oom) = &a.oom {
        let v = per_site(&|id| oom.held.sites.get(&id).map_or(0, |&(b, _)| b));
        kinds.push(json!({"id": "oom", "title": "held at out-of-memory", "unit": format!("bytes{unit}"), "v": v}));
    }
    // Views whose stacks are not allocation sites come as folded lines (root first):
    // the deepest thread stacks by stack bytes, and allocations by tracing span.
    let mut folded_kind = |id: &str, title: &str, unit: &str, text: &str| {
        let mut own_stacks: Vec<Vec<usize>> = Vec::new();
        let mut values: Vec<u64> = Vec::new();
        for line in text.lines() {
            let Some((path, n)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(n) = n.trim().parse::<u64>() else {
                continue;
            };
            let st = path
                .split(';')
                .rev()
                .map(|f| {
                    *index.entry(f.to_string()).or_insert_with(|| {
                        frames.push(f.to_string());
                        frames.len() - 1
                    })
                })
                .collect();
            own_stacks.push(st);
            values.push(n);
        }
        if values.iter().any(|&v| v > 0) {
            kinds.push(
                json!({"id": id, "title": title, "unit": unit, "v": values, "stacks": own_stacks}),
            );
        }
    };
    folded_kind(
        "stack",
        "stack bytes (deepest stacks)",
        "bytes of stack",
        &super::stack_flame::folded(a),
    );
    if !a.spans.is_empty() {
        let mut lines: Vec<String> = a
            .spans
            .iter()
            .filter(|s| s.1 > 0)
            .map(|(p, b, _)| format!("{p} {b}"))
            .collect();
        if a.outside_spans.0 > 0 {
            lines.push(format!("[no span] {}", a.outside_spans.0));
        }
        folded_kind(
            "spans",
            "by tracing span",
            &format!("bytes{unit}"),
            &lines.join("\n"),
        );
    }
    json!({
        "frames": frames,
        "stacks": stacks,
        "kinds": kinds,
        "snaps": snaps,
    })
}

fn leak_table(a: &Analysis, s: &mut String) {
    let leaks = a.leaks();
    let _ = writeln!(
        s,
        "<section id=\"leaks\"><h2>Leaks: still live at exit ({} sites{})</h2>",
        leaks.len(),
        if leaks.len() > LEAK_ROWS {
            format!(", the largest {LEAK_ROWS} shown")
        } else {
            String::new()
        }
    );
    if leaks.is_empty() {
        s.push_str("<p>Nothing was live at exit.</p></section>\n");
        return;
    }
    s.push_str("<table class=\"rows\"><tr><th>bytes</th><th>blocks</th><th>allocated at (innermost first)</th></tr>\n");
    for l in leaks.iter().take(LEAK_ROWS) {
        let mut stack = String::new();
        for f in l.frames.iter().take(LEAK_FRAMES) {
            let _ = write!(stack, "{}<br>", xml_escape(&frame_line(f)));
        }
        if l.frames.len() > LEAK_FRAMES {
            let _ = write!(stack, "… {} more", l.frames.len() - LEAK_FRAMES);
        }
        let _ = writeln!(
            s,
            "<tr><td class=\"n\" data-v=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"stack\">{stack}</td></tr>",
            l.leaked_bytes,
            xml_escape(&fmt_bytes(l.leaked_bytes)),
            l.leaked_blocks
        );
    }
    s.push_str("</table></section>\n");
}

fn thread_table(a: &Analysis, s: &mut String) {
    let _ = writeln!(
        s,
        "<section id=\"threads\"><h2>Threads ({})</h2>",
        a.threads.len()
    );
    s.push_str("<table class=\"rows\"><tr><th>thread</th><th>name</th><th>OS tid</th><th>started</th><th>ended</th><th>allocations</th><th>deepest stack</th><th>stack size</th></tr>\n");
    for t in &a.threads {
        let _ = writeln!(
            s,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.info.thread,
            xml_escape(&t.info.name),
            t.info.os_tid,
            xml_escape(&fmt_time(t.info.time_ns)),
            t.end_ns.map_or_else(|| "running at the end".into(), |e| xml_escape(&fmt_time(e))),
            t.allocs,
            xml_escape(&fmt_bytes(t.max_depth)),
            xml_escape(&fmt_bytes(t.info.stack_size)),
        );
    }
    s.push_str("</table></section>\n");
}

/// The page.
pub fn render(a: &Analysis) -> Result<String, ReportError> {
    let data = serde_json::to_string(&data(a))
        .map_err(|e| ReportError::Render(format!("report.html: {e}")))?
        // Never `</script>` inside the script element.
        .replace('<', "\\u003c");
    let exe = a.program.exe.rsplit('/').next().unwrap_or("");
    let mut s = String::with_capacity(64 * 1024 + data.len());
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width\">\n<title>stackheap: {}</title>\n<style>{CSS}</style></head><body>",
        xml_escape(exe)
    );
    let _ = writeln!(
        s,
        "<h1>stackheap report: {}</h1><p class=\"sub\">{} (pid {})</p>",
        xml_escape(exe),
        xml_escape(&a.program.argv.join(" ")),
        a.program.pid
    );
    summary(a, &mut s);
    let _ = writeln!(
        s,
        "<section id=\"timeline\"><h2>Timeline</h2><p class=\"hint\">Click the chart to see the live heap at that moment (one of {} precomputed moments).</p>{}</section>",
        a.snapshots.len(),
        timeline_svg(a)
    );
    s.push_str("<section id=\"flames\"><h2>Flamegraphs</h2><div id=\"tabs\"></div><p id=\"flame-title\"></p><div id=\"flame\"></div><p class=\"hint\">Hover a frame for its figures; click it to zoom, click the bottom bar to zoom out.</p></section>\n");
    leak_table(a, &mut s);
    thread_table(a, &mut s);
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"data\">{data}</script>\n<script>{JS}</script>\n</body></html>"
    );
    Ok(s)
}

const CSS: &str = r##"
body{font-family:system-ui,Verdana,sans-serif;margin:1.5em;color:#222;max-width:1300px}
h1{font-size:1.4em;margin-bottom:0}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
.sub,.hint{color:#666;font-size:.9em}
table.figs th{text-align:left;font-weight:normal;color:#555;padding-right:1.5em}
table.rows{border-collapse:collapse;font-size:.9em}table.rows td,table.rows th{border-bottom:1px solid #e5e5e5;padding:3px 8px;vertical-align:top;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.stack{font-family:monospace;font-size:.9em}
.warn{color:#b00}
#tabs button{font:inherit;padding:4px 10px;margin-right:4px;border:1px solid #aaa;background:#f4f4f4;border-radius:4px 4px 0 0;cursor:pointer}
#tabs button.on{background:#fff;border-bottom-color:#fff;font-weight:bold}
#flame svg{display:block;border:1px solid #ddd}#flame text{font:11px Verdana,sans-serif;pointer-events:none}
#flame rect{stroke:#fff;stroke-width:.5;cursor:pointer}#flame rect:hover{stroke:#000}
#timeline svg{max-width:100%;height:auto}rect.snap{cursor:crosshair}rect.snap:hover{fill:rgba(42,157,58,.12)}
"##;

const JS: &str = r##"
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const W = 1200, ROW = 17;
  const tabs = document.getElementById("tabs"), box = document.getElementById("flame");
  const titleEl = document.getElementById("flame-title");
  let view = null, zoom = null;

  function fmt(v, unit) {
    if (unit.indexOf("bytes") !== 0) return v.toLocaleString("en") + " " + unit;
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let x = v, i = 0;
    while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return (i ? x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2) : x) + " " + u[i] + (unit.length > 5 ? unit.slice(5) : "");
  }
  // Values per site -> tree, root first (stacks are innermost first).
  function tree(values, stacks) {
    const root = { name: "all", v: 0, kids: new Map() };
    values.forEach(function (v, i) {
      if (!v) return;
      root.v += v; let n = root; const st = stacks[i];
      for (let j = st.length - 1; j >= 0; j--) {
        const f = D.frames[st[j]]; let k = n.kids.get(f);
        if (!k) { k = { name: f, v: 0, kids: new Map() }; n.kids.set(f, k); }
        k.v += v; n = k;
      }
    });
    return root;
  }
  function depth(n) { let d = 0; n.kids.forEach(function (k) { d = Math.max(d, depth(k)); }); return d + 1; }
  function color(name) {
    let h = 0; for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 60) + "," + (55 + h % 30) + "%," + (60 + (h >> 8) % 15) + "%)";
  }
  function draw(values, unit, label, stacks) {
    const full = tree(values, stacks || D.stacks);
    let root = full;
    if (zoom) { const path = zoom; for (const p of path) { const k = root.kids.get(p); if (!k) { root = full; zoom = null; break; } root = k; } }
    box.textContent = "";
    if (!full.v) { const p = document.createElement("p"); p.className = "empty"; p.textContent = "Nothing to show: " + label + " is zero everywhere."; box.appendChild(p); return; }
    const rows = depth(root), H = rows * ROW + 4;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    function node(n, x, d, path) {
      const w = n.v / root.v * W; if (w < 0.3) return;
      const y = H - (d + 1) * ROW - 2;
      const g = document.createElementNS(NS, "g");
      const r = document.createElementNS(NS, "rect");
      r.setAttribute("x", x.toFixed(2)); r.setAttribute("y", y); r.setAttribute("width", w.toFixed(2)); r.setAttribute("height", ROW - 1);
      r.setAttribute("fill", d === 0 ? "#ccc" : color(n.name));
      const t = document.createElementNS(NS, "title");
      t.textContent = n.name + ": " + fmt(n.v, unit) + " (" + (n.v / full.v * 100).toFixed(2) + "%)";
      r.appendChild(t); g.appendChild(r);
      r.addEventListener("click", function () { zoom = d === 0 && zoom ? zoom.slice(0, -1) : path; if (d === 0 && zoom && !zoom.length) zoom = null; show(view); });
      if (w > 30) {
        const tx = document.createElementNS(NS, "text");
        tx.setAttribute("x", (x + 3).toFixed(2)); tx.setAttribute("y", y + ROW - 5);
        const chars = Math.floor((w - 6) / 7);
        tx.textContent = n.name.length > chars ? n.name.slice(0, Math.max(0, chars - 2)) + ".." : n.name;
        g.appendChild(tx);
      }
      svg.appendChild(g);
      let cx = x;
      Array.from(n.kids.values()).sort(function (a, b) { return a.name < b.name ? -1 : 1; }).forEach(function (k) {
        node(k, cx, d + 1, path.concat([k.name])); cx += k.v / root.v * W;
      });
    }
    node(root, 0, 0, zoom || []);
    box.appendChild(svg);
  }
  function show(v) {
    if (view !== v) zoom = (view && view.id === v.id && view.snap === v.snap) ? zoom : null;
    view = v;
    Array.from(tabs.children).forEach(function (b) { b.classList.toggle("on", b.dataset.id === v.id); });
    const cursor = document.getElementById("cursor");
    if (v.id === "live") {
      const s = D.snaps[v.snap], vals = new Array(D.stacks.length).fill(0);
      s.s.forEach(function (p) { vals[p[0]] = p[1]; });
      const label = "live heap at " + s.label;
      const total = vals.reduce(function (a, b) { return a + b; }, 0);
      titleEl.textContent = label + ": " + fmt(total, "bytes");
      box.dataset.view = "live:" + v.snap;
      box.dataset.total = String(total);
      draw(vals, "bytes", label);
      const band = document.querySelector("rect.snap[data-i=\"" + v.snap + "\"]"), tick = band && band.nextElementSibling;
      if (cursor && tick) { cursor.setAttribute("x1", tick.getAttribute("cx")); cursor.setAttribute("x2", tick.getAttribute("cx")); cursor.setAttribute("visibility", "visible"); }
    } else {
      const k = D.kinds.find(function (k) { return k.id === v.id; });
      titleEl.textContent = k.title + ", by call stack (" + k.unit + ")";
      box.dataset.view = k.id;
      draw(k.v, k.unit, k.title, k.stacks);
      if (cursor) cursor.setAttribute("visibility", "hidden");
    }
  }
  D.kinds.forEach(function (k) {
    const b = document.createElement("button"); b.textContent = k.title; b.dataset.id = k.id;
    b.addEventListener("click", function () { show({ id: k.id }); }); tabs.appendChild(b);
  });
  if (D.snaps.length) {
    const b = document.createElement("button"); b.dataset.id = "live"; b.textContent = "live heap at a moment";
    b.addEventListener("click", function () { show({ id: "live", snap: view && view.snap !== undefined ? view.snap : D.snaps.length - 1 }); });
    tabs.appendChild(b);
  }
  document.querySelectorAll("rect.snap").forEach(function (r) {
    r.addEventListener("click", function () { show({ id: "live", snap: Number(r.dataset.i) }); });
  });
  show({ id: "alloc-bytes" });
})();
"##;
