//! A trace cut at any byte still loads: every complete chunk before the cut is used,
//! the cut is reported, and nothing panics. Garbage and empty files give one-line errors.

use std::process::Command;

use stackheap::format::reader::TraceReader;
use stackheap_tests::{bin, scratch};

fn count_events(bytes: &[u8]) -> Result<(u64, Option<u64>), String> {
    let mut r = TraceReader::new(bytes).map_err(|e| e.to_string())?;
    let mut n = 0;
    while r.next_event().map_err(|e| e.to_string())?.is_some() {
        n += 1;
    }
    Ok((n, r.status().truncated_at))
}

#[test]
fn cut_at_twenty_offsets() {
    let dir = scratch("trunc");
    let trace = dir.join("t.trace");
    let out = Command::new(bin("sh_workload"))
        .arg("known")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&trace).unwrap();
    let (full, cut) = count_events(&bytes).unwrap();
    assert_eq!(cut, None);
    let header = 16 + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize + 4;
    let mut last = 0;
    let mut truncated_seen = 0;
    for i in 0..20 {
        let at = header + (bytes.len() - header) * i / 20 + i * 7 % 13;
        let part = &bytes[..at.min(bytes.len() - 1)];
        let (n, cut) = count_events(part).unwrap_or_else(|e| panic!("cut at {at}: {e}"));
        assert!(n >= last, "event count went down at cut {at}: {n} < {last}");
        assert!(n <= full);
        last = n;
        if let Some(c) = cut {
            assert!(c as usize <= part.len());
            truncated_seen += 1;
        }
        // The report reads it too, and says it is truncated or incomplete.
        let p = dir.join(format!("cut-{i}.trace"));
        std::fs::write(&p, part).unwrap();
        let a = stackheap_report::analyze_path(&p, &Default::default())
            .unwrap_or_else(|e| panic!("cut at {at}: {e}"));
        let j = stackheap_report::summary_json(&a);
        assert_eq!(
            j.pointer("/trace/complete").and_then(|v| v.as_bool()),
            Some(false),
            "cut at {at}"
        );
        assert_eq!(
            j.pointer("/trace/truncated").and_then(|v| v.as_bool()),
            Some(cut.is_some()),
            "cut at {at}"
        );
    }
    assert!(
        truncated_seen >= 15,
        "most cuts fall inside a chunk: {truncated_seen}"
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("stackheap")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, _out, err) = cli(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} does not mention {needle:?}",
        lines[0]
    );
}

#[test]
fn garbage_and_empty_files_give_one_line_errors() {
    let dir = scratch("garbage");
    let empty = dir.join("empty.trace");
    std::fs::write(&empty, b"").unwrap();
    let garbage = dir.join("garbage.trace");
    std::fs::write(&garbage, b"this is not a trace at all, just text\n").unwrap();
    for cmd in ["report", "dump"] {
        assert_one_line_error(&[cmd, empty.to_str().unwrap()], "empty");
        assert_one_line_error(&[cmd, garbage.to_str().unwrap()], "not a stackheap trace");
    }
    assert_one_line_error(
        &["report", dir.join("missing.trace").to_str().unwrap()],
        "missing.trace",
    );
}

#[test]
fn bad_command_lines_give_one_line_errors() {
    let dir = scratch("badcli");
    let out = dir.join("out");
    assert_one_line_error(
        &[
            "run",
            "--out",
            out.to_str().unwrap(),
            "--",
            "/definitely/not/a/program",
        ],
        "no such program",
    );
    assert_one_line_error(
        &["run", "--out", "/proc/forbidden-out", "--", "true"],
        "/proc/forbidden-out",
    );
    assert_one_line_error(&["run", "--sample", "12XB", "--", "true"], "12XB");
    // A program that does not link stackheap is profiled through LD_PRELOAD: it runs
    // and leaves a trace to report (tests/tests/preload.rs checks the figures).
    let (code, stdout, err) = cli(&["run", "--out", out.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("trace: "), "{stdout}");
}
