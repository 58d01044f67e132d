//! The report in the formats other tools read, checked with those tools: report.html in
//! headless Chromium, dhat-heap.json in DHAT's own viewer (dh_view.html, from valgrind),
//! profile.pb.gz with `go tool pprof`; and the size of report.html for 1e7 events.
//!
//! Chromium, valgrind's dh_view.html and Go are system packages (`.ci/run` installs
//! them): a test whose tool is missing prints why and passes without checking.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use stackheap_tests::browser::{chromium, dump_dom, harness_output, screenshot};
use stackheap_tests::{bin, scratch};

const LEAK_FUNCTIONS: [&str; 4] = [
    "leak::leak_box_leak",
    "leak::leak_mem_forget",
    "leak::leak_rc_cycle",
    "leak::leak_unbounded_cache",
];

/// The leak demo's full report (run once per test process): (out dir, summary.json).
fn leak_report() -> &'static (PathBuf, Value) {
    static R: OnceLock<(PathBuf, Value)> = OnceLock::new();
    R.get_or_init(|| {
        let out = scratch("formats-leak");
        let o = Command::new(bin("stackheap"))
            .args(["run", "--out"])
            .arg(&out)
            .arg("--")
            .arg(bin("leak"))
            .output()
            .expect("spawn stackheap run");
        assert!(
            o.status.success(),
            "stackheap run failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        (out, j)
    })
}

/// Leaked bytes per leak function from summary.json's `leaks[]` (a site counts for
/// a function if one of its frames is that function).
fn leaked_by_function(j: &Value) -> HashMap<&'static str, u64> {
    let mut m = HashMap::new();
    for site in j["leaks"].as_array().unwrap() {
        let frames: Vec<&str> = site["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        for f in LEAK_FUNCTIONS {
            if frames.contains(&f) {
                *m.entry(f).or_insert(0) += site["leaked_bytes"].as_u64().unwrap();
            }
        }
    }
    m
}

fn skip(test: &str, why: &str) {
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

/// Injected first into a copy of report.html: records errors and console.error calls,
/// then after `load` reads the summary figures, clicks every tab and every timeline
/// band, and writes what it saw as JSON into `<pre id="test-out">`.
const HTML_HARNESS: &str = r##"<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
(function () {
  const ce = console.error;
  console.error = function () { window.__errors.push("console.error: " + Array.from(arguments).join(" ")); ce.apply(console, arguments); };
})();
window.addEventListener("load", function () {
  const out = { figs: {}, tabs: {}, live: [] };
  try {
    document.querySelectorAll("td[data-k]").forEach(function (td) { out.figs[td.dataset.k] = Number(td.dataset.v); });
    const f = document.getElementById("flame");
    out.initial = f.dataset.view;
    document.querySelectorAll("#tabs button").forEach(function (b) {
      b.click();
      out.tabs[b.dataset.id] = { view: f.dataset.view, rects: f.querySelectorAll("svg rect").length, empty: !!f.querySelector(".empty") };
    });
    document.querySelectorAll("#timeline rect.snap").forEach(function (r) {
      r.dispatchEvent(new MouseEvent("click", { bubbles: true, view: window }));
      out.live.push({ view: f.dataset.view, total: Number(f.dataset.total), rects: f.querySelectorAll("svg rect").length, svg: f.innerHTML.length, names: Array.from(f.querySelectorAll("svg title")).map(function (t) { return t.textContent; }).join("|") });
    });
  } catch (e) { window.__errors.push("harness: " + e); }
  out.errors = window.__errors;
  const pre = document.createElement("pre"); pre.id = "test-out"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"##;

#[test]
fn report_html_in_chromium() {
    let Some(chromium) = chromium() else {
        return skip("report_html_in_chromium", "chromium is not installed");
    };
    let (out, j) = leak_report();
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    // Offline: no external resource of any kind.
    for needle in ["http://", "https://", "src=\"", "href=\""] {
        let hits: Vec<_> = page
            .match_indices(needle)
            .map(|(i, _)| &page[i.saturating_sub(40)..(i + 60).min(page.len())])
            .filter(|ctx| !ctx.contains("http://www.w3.org/2000/svg"))
            .collect();
        assert!(hits.is_empty(), "report.html refers to {needle}: {hits:?}");
    }
    let dir = scratch("formats-html");
    let harnessed = page.replacen("<head>", &format!("<head>{HTML_HARNESS}"), 1);
    assert_ne!(harnessed, page, "no <head> in report.html");
    let test_page = dir.join("test.html");
    std::fs::write(&test_page, harnessed).unwrap();
    let (dom, stderr) = dump_dom(&chromium, &test_page, &dir.join("profile"));
    let r = harness_output(&dom);
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "page errors; chromium said: {stderr}"
    );
    assert!(!stderr.contains("Uncaught"), "chromium: {stderr}");

    // The summary figures are summary.json's.
    let figs = r["figs"].as_object().unwrap();
    assert!(figs.len() >= 8, "{figs:?}");
    for (k, v) in figs {
        assert_eq!(Some(v), j["heap"].get(k), "summary figure {k}");
    }

    // Every flamegraph tab draws its flamegraph; leaked and alloc-bytes are not empty
    // for the leak demo.
    assert_eq!(r["initial"], "alloc-bytes");
    let tabs = r["tabs"].as_object().unwrap();
    for id in ["alloc-bytes", "alloc-count", "peak", "leaked", "live"] {
        assert!(tabs.contains_key(id), "no {id} tab: {tabs:?}");
    }
    // Every tab the page offers (also temporary, growth, oom when the run has them).
    for (id, t) in tabs {
        assert!(
            t["view"].as_str().unwrap().starts_with(id.as_str()),
            "{id}: {t}"
        );
        assert!(t["rects"].as_u64().unwrap() >= 2, "{id} drew nothing: {t}");
    }

    // Clicking the timeline shows the live heap at that moment: each band its own
    // snapshot, the views differ over the run, and the last (the end) holds exactly
    // the leaked bytes.
    let live = r["live"].as_array().unwrap();
    assert!(live.len() >= 2, "{} timeline snapshots", live.len());
    for (i, l) in live.iter().enumerate() {
        assert_eq!(l["view"], format!("live:{i}"));
    }
    let distinct: std::collections::HashSet<&str> =
        live.iter().map(|l| l["names"].as_str().unwrap()).collect();
    assert!(
        distinct.len() >= 2,
        "every snapshot shows the same flamegraph"
    );
    assert_eq!(
        live.last().unwrap()["total"].as_u64(),
        j["heap"]["leaked_bytes"].as_u64(),
        "the live heap at the end is the leaked heap"
    );
}

/// The stack view of report.html: the `deep` demo's deepest stack, widths in stack
/// bytes, drawn through its recursive function.
#[test]
fn report_html_stack_tab() {
    let Some(chromium) = chromium() else {
        return skip("report_html_stack_tab", "chromium is not installed");
    };
    let out = scratch("formats-deep");
    let o = Command::new(bin("stackheap"))
        .args(["run", "--stack-hz", "1000", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("deep"))
        .args(["--bytes", "524288"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    let harnessed = page.replacen("<head>", &format!("<head>{HTML_HARNESS}"), 1);
    let test_page = out.join("test.html");
    std::fs::write(&test_page, harnessed).unwrap();
    let (dom, stderr) = dump_dom(&chromium, &test_page, &out.join("profile"));
    let r = harness_output(&dom);
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "page errors; chromium said: {stderr}"
    );
    let t = &r["tabs"]["stack"];
    assert!(
        t["view"].as_str().is_some_and(|v| v == "stack"),
        "no stack tab: {}",
        r["tabs"]
    );
    assert!(
        t["rects"].as_u64().unwrap() >= 3,
        "the stack view drew nothing: {t}"
    );
    assert!(
        page.contains("deep::descend"),
        "the recursion is in the page's frame table"
    );
}

#[test]
fn dhat_json_opens_in_dh_view() {
    let viewer = Path::new("/usr/libexec/valgrind");
    if !viewer.join("dh_view.html").is_file() {
        return skip(
            "dhat_json_opens_in_dh_view",
            "valgrind's dh_view.html is not installed",
        );
    }
    let Some(chromium) = chromium() else {
        return skip("dhat_json_opens_in_dh_view", "chromium is not installed");
    };
    let (out, j) = leak_report();
    let text = std::fs::read_to_string(out.join("dhat-heap.json")).unwrap();
    let dhat: Value = serde_json::from_str(&text).unwrap();
    let eb: u64 = dhat["pps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pp| pp["eb"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(eb), j["heap"]["leaked_bytes"].as_u64());

    // The viewer's own code loads the file: the same calls as its "Load…" button
    // (JSON.parse, buildTree, displayTree), run from a copy of dh_view.html.
    let dir = scratch("formats-dhview");
    for f in ["dh_view.html", "dh_view.js", "dh_view.css"] {
        std::fs::copy(viewer.join(f), dir.join(f)).unwrap();
    }
    let data_js = format!(
        r#"const DATA_TEXT = {};
function runTest() {{
  const out = {{}};
  try {{
    gFilename = "dhat-heap.json";
    gData = JSON.parse(DATA_TEXT);
    // Sort by "At t-end (bytes)", as a user looking for leaks would.
    for (const o of gSelect.options) {{ if (o.textContent === "At t-end (bytes)") o.selected = true; }}
    buildTree();
    displayTree();
    out.t_end_bytes = gRoot._atTEndBytes;
    out.total_bytes = gRoot._totalBytes;
  }} catch (e) {{ window.__errors.push(String(e)); }}
  out.errors = window.__errors;
  out.error_divs = document.querySelectorAll(".error").length;
  out.text = document.body.innerText;
  const pre = document.createElement("pre"); pre.id = "test-out"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}}
"#,
        serde_json::to_string(&text).unwrap()
    );
    std::fs::write(dir.join("data.js"), data_js).unwrap();
    let page = std::fs::read_to_string(dir.join("dh_view.html")).unwrap();
    let page = page
        .replacen(
            "<script src=\"dh_view.js\"></script>",
            "<script>window.__errors = []; window.addEventListener(\"error\", function (e) { window.__errors.push(e.message); });</script>\n<script src=\"dh_view.js\"></script><script src=\"data.js\"></script>",
            1,
        )
        .replacen("onload=\"onLoad()\"", "onload=\"onLoad(); runTest()\"", 1);
    assert!(
        page.contains("runTest()") && page.contains("data.js"),
        "dh_view.html changed: {page}"
    );
    let test_page = dir.join("test.html");
    std::fs::write(&test_page, page).unwrap();
    let (dom, stderr) = dump_dom(&chromium, &test_page, &dir.join("profile"));
    let r = harness_output(&dom);
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "dh_view errors; chromium: {stderr}"
    );
    assert_eq!(r["error_divs"], 0, "dh_view shows an error: {}", r["text"]);
    assert_eq!(
        r["t_end_bytes"].as_u64(),
        j["heap"]["leaked_bytes"].as_u64()
    );
    assert_eq!(r["total_bytes"].as_u64(), j["heap"]["total_bytes"].as_u64());
    let shown = r["text"].as_str().unwrap();
    assert!(shown.contains("At t-end:"), "{shown:.2000}");
    assert!(shown.contains("Sort metric"), "{shown:.2000}");
    // Sorted by t-end bytes, dh_view shows the functions holding a large share of the
    // t-end bytes (it folds tree nodes under 1% of them into "insignificant" lines, and
    // a small leak spread over several call paths can fall under that).
    let leaked = leaked_by_function(j);
    let total = j["heap"]["leaked_bytes"].as_u64().unwrap();
    let mut checked = 0;
    for (f, bytes) in leaked {
        if bytes * 10 >= total {
            assert!(
                shown.contains(&format!("{f} (")),
                "dh_view does not show {f} ({bytes} bytes at t-end)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} leak functions above 10%");
}

/// `go tool pprof` with `args` on `profile`; None when Go is not installed.
fn pprof(profile: &Path, args: &[&str]) -> Option<String> {
    let go = ["/usr/bin/go", "/usr/lib/go/bin/go", "/usr/local/go/bin/go"]
        .into_iter()
        .find(|p| Path::new(p).is_file())?;
    let home = scratch("formats-gohome");
    let o = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(profile)
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("spawn go tool pprof");
    assert!(
        o.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `flat` and `cum` columns (bytes) of `go tool pprof -top -unit=B` per function name.
fn top_rows(top: &str) -> HashMap<String, (u64, u64)> {
    let num = |s: &str| s.trim_end_matches('B').parse::<u64>().ok();
    top.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 6 {
                return None;
            }
            Some((cols[5..].join(" "), (num(cols[0])?, num(cols[3])?)))
        })
        .collect()
}

#[test]
fn pprof_profile_reads_in_go_tool_pprof() {
    let (out, j) = leak_report();
    let profile = out.join("profile.pb.gz");
    let Some(inuse) = pprof(
        &profile,
        &[
            "-top",
            "-cum",
            "-nodecount=100000",
            "-nodefraction=0",
            "-edgefraction=0",
            "-unit=B",
            "-sample_index=inuse_space",
        ],
    ) else {
        return skip(
            "pprof_profile_reads_in_go_tool_pprof",
            "go is not installed",
        );
    };
    let rows = top_rows(&inuse);
    let want = leaked_by_function(j);
    assert_eq!(want.len(), LEAK_FUNCTIONS.len(), "{want:?}");
    for f in LEAK_FUNCTIONS {
        let (_, cum) = rows
            .get(f)
            .unwrap_or_else(|| panic!("{f} not in go tool pprof -top:\n{inuse}"));
        assert_eq!(*cum, want[f], "{f} in-use bytes:\n{inuse}");
    }
    // The header line of -top: "Showing nodes accounting for X, Y% of TOTAL total".
    let total = |text: &str| -> u64 {
        let l = text
            .lines()
            .find(|l| l.contains(" total"))
            .unwrap_or_else(|| panic!("no total in {text}"));
        let t = l.split(" of ").nth(1).unwrap().trim_end_matches(" total");
        t.trim_end_matches('B').parse().unwrap()
    };
    assert_eq!(Some(total(&inuse)), j["heap"]["leaked_bytes"].as_u64());
    let alloc = pprof(&profile, &["-top", "-unit=B", "-sample_index=alloc_space"]).unwrap();
    assert_eq!(
        Some(total(&alloc)),
        j["heap"]["total_bytes"].as_u64(),
        "{alloc}"
    );
    let objects = pprof(&profile, &["-top", "-sample_index=alloc_objects"]).unwrap();
    assert!(objects.contains("Type: alloc_objects"), "{objects}");
}

/// `stackheap report --format dhat|pprof|html` writes just that file.
#[test]
fn report_format_flag_writes_one_file() {
    let (out, _) = leak_report();
    let trace = stackheap_tests::trace_in(out);
    for (format, file) in [
        ("dhat", "dhat-heap.json"),
        ("pprof", "profile.pb.gz"),
        ("html", "report.html"),
    ] {
        let dir = scratch(&format!("formats-flag-{format}"));
        let o = Command::new(bin("stackheap"))
            .args(["report", "--format", format, "--out"])
            .arg(&dir)
            .arg(&trace)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![file.to_string()], "--format {format}");
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap().len(),
            std::fs::read(out.join(file)).unwrap().len(),
            "--format {format} writes what the full report writes"
        );
    }
}

/// A churn run of at least 1e7 events gives a report.html under 10 MiB.
#[test]
fn html_of_ten_million_events_is_small() {
    let out = scratch("formats-big");
    // Each churn iteration allocates and frees at least once: 5e6 iterations are
    // more than 1e7 events; the count is checked below from summary.json.
    let o = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("churn"))
        .args(["--iters", "5000000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let events =
        j["heap"]["total_allocs"].as_u64().unwrap() + j["heap"]["total_frees"].as_u64().unwrap();
    assert!(events >= 10_000_000, "only {events} events");
    let size = std::fs::metadata(out.join("report.html")).unwrap().len();
    println!("report.html of {events} events: {size} bytes");
    assert!(
        size < 10 << 20,
        "report.html of {events} events is {size} bytes"
    );

    // Reading this (large) trace again: a progress bar on a terminal, nothing on a pipe.
    let trace = stackheap_tests::trace_in(&out);
    let piped = Command::new(bin("stackheap"))
        .args(["report", "--format", "html", "--out"])
        .arg(out.join("piped"))
        .arg(&trace)
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    if !Path::new("/usr/bin/script").is_file() {
        return skip("progress bar on a terminal", "script(1) is not installed");
    }
    // script(1) runs the command on a pseudo-terminal and copies what it shows.
    let cmd = format!(
        "'{}' report --format html --out '{}' '{}'",
        bin("stackheap").display(),
        out.join("tty").display(),
        trace.display()
    );
    let tty = Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("reading") && shown.contains("iB"),
        "no progress bar on a terminal: {shown:.500}"
    );
}

/// `SCREENSHOT=path cargo test -p stackheap-tests --test report_formats readme_screenshot`
/// writes a screenshot of the leak demo's report.html (for the README).
#[test]
fn readme_screenshot() {
    let Some(png) = std::env::var_os("SCREENSHOT") else {
        return;
    };
    let Some(chromium) = chromium() else {
        return skip("screenshot", "chromium is not installed");
    };
    let (out, _) = leak_report();
    let dir = scratch("formats-shot");
    screenshot(
        &chromium,
        &out.join("report.html"),
        &dir.join("profile"),
        Path::new(&png),
        (1280, 1600),
    );
}
