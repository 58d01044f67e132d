//! Renderer tests: synthetic traces through `analyze_reader` into every output.

use std::fs;
use std::path::PathBuf;

use stackheap::format::reader::TraceReader;
use stackheap::format::writer::SyntheticTrace;
use stackheap::format::Header;
use stackheap_report::{
    analyze_path, analyze_reader, render_flamegraph, summary_json, summary_text, write_report,
    Analysis, AnalyzeOptions, FlameKind, RenderOptions, ReportError,
};

fn header() -> Header {
    Header {
        pid: 4242,
        sample_rate: 1,
        exe: "/opt/app/bin/leaky".into(),
        argv: vec!["leaky".into(), "10".into()],
        ..Default::default()
    }
}

fn opts() -> AnalyzeOptions {
    let mut o = AnalyzeOptions::default();
    o.symbolize = false;
    o
}

fn analyze(bytes: &[u8]) -> Analysis {
    analyze_reader(TraceReader::new(bytes).unwrap(), &opts()).unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("render-{name}"));
    let _ = fs::remove_dir_all(&d);
    d
}

/// main (0x30) -> outer (0x20) -> inner (0x10 / 0x11).
fn small_trace() -> SyntheticTrace {
    let mut t = SyntheticTrace::new(&header());
    t.thread_start(1, "main", 0x7fff_0000, 8 << 20, 0);
    t.rss(0, 1 << 20);
    t.alloc(1_000_000, 1, 0x1000, 100, &[0x10, 0x20, 0x30]);
    t.alloc(2_000_000, 1, 0x2000, 4000, &[0x11, 0x20, 0x30]);
    t.rss(2_500_000, 3 << 20);
    t.free(3_000_000, 1, 0x2000, 4000);
    t.alloc(4_000_000, 1, 0x3000, 50, &[0x10, 0x20, 0x30]);
    t
}

fn looks_like_svg(s: &str) -> bool {
    (s.starts_with("<?xml") || s.starts_with("<svg")) && s.trim_end().ends_with("</svg>")
}

#[test]
fn folded_lines_are_root_first_with_counts_from_the_input() {
    let a = analyze(&small_trace().finish(5_000_000, 0));
    let folded = |k| {
        let mut v = Vec::new();
        render_flamegraph(&a, k, true, &mut v).unwrap();
        String::from_utf8(v).unwrap()
    };
    assert_eq!(
        folded(FlameKind::AllocBytes),
        format!("0x30;0x20;0x10 {}\n0x30;0x20;0x11 {}\n", 100 + 50, 4000)
    );
    assert_eq!(
        folded(FlameKind::AllocCount),
        "0x30;0x20;0x10 2\n0x30;0x20;0x11 1\n"
    );
    // The peak (4100 bytes) was reached right after the second allocation.
    assert_eq!(
        folded(FlameKind::Peak),
        "0x30;0x20;0x10 100\n0x30;0x20;0x11 4000\n"
    );
    assert_eq!(
        folded(FlameKind::Leaked),
        format!("0x30;0x20;0x10 {}\n", 150)
    );
}

#[test]
fn full_report_is_written_and_readable() {
    let t = small_trace();
    let c = t.counters();
    let a = analyze(&t.finish(5_000_000, 0));
    let dir = out_dir("full");
    let files = write_report(&a, &dir.join("nested"), &RenderOptions::default()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for k in ["alloc-bytes", "alloc-count", "peak", "leaked"] {
        assert!(names.contains(&format!("flame-{k}.svg")), "{names:?}");
        assert!(names.contains(&format!("flame-{k}.folded")), "{names:?}");
    }
    for f in ["summary.txt", "summary.json", "timeline.svg"] {
        assert!(names.contains(&f.to_string()));
    }
    let leftovers: Vec<_> = fs::read_dir(dir.join("nested"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    let svg = fs::read_to_string(dir.join("nested/flame-alloc-bytes.svg")).unwrap();
    assert!(looks_like_svg(&svg));
    assert!(svg.contains("Heap allocated, by call stack (bytes)"));
    assert!(svg.contains("0x20"));

    let timeline = fs::read_to_string(dir.join("nested/timeline.svg")).unwrap();
    assert!(looks_like_svg(&timeline));
    let label = format!(
        "peak {} at {}",
        stackheap_report::render::fmt_bytes(c.peak_bytes),
        stackheap_report::render::fmt_time(c.peak_time_ns)
    );
    assert!(timeline.contains(&label), "{label}");
    assert!(timeline.contains("RSS"));

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("nested/summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["heap"]["total_allocs"], c.total_allocs);
    assert_eq!(json["heap"]["total_bytes"], c.total_bytes);
    assert_eq!(json["heap"]["peak_bytes"], c.peak_bytes);
    assert_eq!(json["heap"]["peak_blocks"], c.peak_blocks);
    assert_eq!(json["heap"]["peak_time_ns"], c.peak_time_ns);
    assert_eq!(json["heap"]["leaked_bytes"], c.live_bytes);
    assert_eq!(json["heap"]["leaked_blocks"], c.live_blocks);
    assert_eq!(json["heap"]["frees_unknown"], 0);
    assert_eq!(json["rss"]["peak_bytes"], 3u64 << 20);
    assert_eq!(json["sampling"]["rate_bytes"], 1);
    assert_eq!(json["sampling"]["estimated"], false);
    assert_eq!(json["trace"]["truncated"], false);
    assert!(json["trace"]["truncated_at"].is_null());
    assert_eq!(json["trace"]["complete"], true);
    assert_eq!(json["trace"]["lost_events"], 0);
    assert_eq!(json["duration_ns"], 5_000_000);
    assert_eq!(json["program"]["pid"], 4242);
    assert_eq!(json["program"]["argv"][1], "10");
    assert_eq!(json["threads"][0]["name"], "main");
    assert_eq!(json["threads"][0]["stack_size"], 8u64 << 20);
    assert_eq!(json["top_sites"][0]["alloc_bytes"], 4000);
    assert_eq!(json["top_sites"][0]["frames"][0], "0x11");
    assert_eq!(json["leaks"].as_array().unwrap().len(), 1);
    assert_eq!(json["leaks"][0]["leaked_bytes"], 150);
    assert_eq!(json["leaks"][0]["leaked_blocks"], 2);

    let text = fs::read_to_string(dir.join("nested/summary.txt")).unwrap();
    assert_eq!(text, summary_text(&a));
    assert!(text.contains("ended cleanly"));
    assert!(text.contains("every allocation recorded"));
    assert!(text.contains("live at end (leaked)"));
}

#[test]
fn empty_trace_renders_valid_no_allocation_pictures() {
    let t = SyntheticTrace::new(&header());
    let a = analyze(&t.finish(0, 0));
    let dir = out_dir("empty");
    write_report(&a, &dir, &RenderOptions::default()).unwrap();
    for k in FlameKind::ALL {
        let svg = fs::read_to_string(dir.join(format!("flame-{k}.svg"))).unwrap();
        assert!(looks_like_svg(&svg), "{k}");
        assert!(svg.contains("no allocations"), "{k}");
        assert_eq!(
            fs::read_to_string(dir.join(format!("flame-{k}.folded"))).unwrap(),
            ""
        );
    }
    let timeline = fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(looks_like_svg(&timeline));
    assert!(timeline.contains("no data"));
    let json = summary_json(&a);
    assert_eq!(json["heap"]["total_allocs"], 0);
    assert!(json["top_sites"].as_array().unwrap().is_empty());
    assert!(summary_text(&a).contains("no allocations recorded"));
}

#[test]
fn truncated_trace_is_reported() {
    let t = small_trace();
    let full = t.finish(5_000_000, 0);
    let cut = &full[..full.len() - 5];
    let a = analyze(cut);
    let json = summary_json(&a);
    assert_eq!(json["trace"]["truncated"], true);
    let at = json["trace"]["truncated_at"].as_u64().unwrap();
    assert!(at > 0 && at < cut.len() as u64);
    assert_eq!(json["trace"]["complete"], false);
    let text = summary_text(&a);
    assert!(text.contains(&format!(
        "trace truncated at byte {at}: the program did not finish writing; everything before it is used"
    )));
    assert!(text.contains("did not end cleanly"));
    // Everything before the cut is used.
    assert_eq!(json["heap"]["total_allocs"], 3);
}

#[test]
fn sampled_report_says_estimated() {
    let mut h = header();
    h.sample_rate = 4096;
    let mut t = SyntheticTrace::new(&h);
    t.thread_start(1, "main", 0, 0, 0);
    t.alloc(10, 1, 0x10, 4096, &[0x1, 0x2]);
    let a = analyze(&t.finish(20, 0));
    let json = summary_json(&a);
    assert_eq!(json["sampling"]["estimated"], true);
    assert_eq!(json["sampling"]["rate_bytes"], 4096);
    let text = summary_text(&a);
    assert!(text.contains("estimate"));
    let mut svg = Vec::new();
    render_flamegraph(&a, FlameKind::AllocBytes, false, &mut svg).unwrap();
    assert!(String::from_utf8(svg).unwrap().contains("estimated"));
    // One sampled 4096-byte block at mean 4096 stands for 4096 / (1 - e^-1) bytes.
    let p = 1.0 - (-1f64).exp();
    assert_eq!(a.sites[0].alloc_bytes, (4096.0 / p).round() as u64);
}

#[test]
fn unwritable_output_dir_is_an_io_error_with_the_path() {
    let dir = out_dir("unwritable");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    fs::write(&file, b"x").unwrap();
    let a = analyze(&small_trace().finish(1, 0));
    match write_report(&a, &file.join("sub"), &RenderOptions::default()) {
        Err(ReportError::Io { path, .. }) => assert_eq!(path, file.join("sub")),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn missing_or_bad_trace_files_are_errors_naming_the_file() {
    let dir = out_dir("bad-trace");
    fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.trace");
    let e = analyze_path(&missing, &opts()).unwrap_err();
    assert!(e.to_string().contains("missing.trace"), "{e}");
    let bad = dir.join("bad.trace");
    fs::write(&bad, b"definitely not a trace").unwrap();
    let e = analyze_path(&bad, &opts()).unwrap_err();
    assert!(matches!(e, ReportError::Trace { .. }), "{e:?}");
    let full = dir.join("ok.trace");
    fs::write(&full, small_trace().finish(5, 0)).unwrap();
    let a = analyze_path(&full, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.heap.total_allocs, 3);
}
