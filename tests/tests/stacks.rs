//! Stack depth, stack overflow and crash reports, with the demos under `stackheap run`.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use stackheap_tests::{bin, scratch};

/// Run a demo under the CLI; returns its output and the report directory.
fn run(name: &str, demo: &str, args: &[&str]) -> (Output, PathBuf) {
    let out = scratch(name);
    let o = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin(demo))
        .args(args)
        .output()
        .unwrap();
    (o, out)
}

fn summary(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
        .expect("valid json")
}

fn expected(stdout: &[u8]) -> HashMap<String, u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("expected:"))
        .flat_map(|r| r.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

fn thread<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {}", s["threads"]))
}

fn check_depth(s: &Value, name: &str, want: u64) {
    let t = thread(s, name);
    let got = t["max_stack_bytes"].as_u64().unwrap();
    assert!(
        got >= want && (got as f64) <= want as f64 * 1.10,
        "thread {name}: reported max_stack_bytes {got}, the demo measured {want}"
    );
}

#[test]
fn deep_main_thread_depth_and_stack_flamegraph() {
    let (o, dir) = run("deep-main", "deep", &["--bytes", "1048576"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = expected(&o.stdout)["max_stack_bytes"];
    let s = summary(&dir);
    check_depth(&s, "deep", want);
    // The widest path of the stack flamegraph goes through the recursion.
    let folded = std::fs::read_to_string(dir.join("flame-stack.folded")).unwrap();
    let mut by_frame: HashMap<String, u64> = HashMap::new();
    for l in folded.lines().filter(|l| l.starts_with("deep (thread 1)")) {
        let (stack, n) = l.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        for f in stack.split(';').skip(1) {
            *by_frame.entry(f.to_string()).or_default() += n;
        }
    }
    let (widest, bytes) = by_frame
        .iter()
        .filter(|(f, _)| !f.starts_with('[') && !f.contains("main") && !f.contains("std::"))
        .filter(|(f, _)| !f.contains("lang_start") && !f.contains("libc") && !f.contains("core::"))
        .filter(|(f, _)| !f.contains("deep::work"))
        .max_by_key(|(_, &n)| n)
        .expect("frames");
    assert!(
        widest.starts_with("deep::descend"),
        "widest frame {widest} ({bytes} bytes) in\n{folded}"
    );
    assert!(
        *bytes as f64 >= want as f64 * 0.9,
        "descend holds {bytes} of {want}"
    );
}

#[test]
fn worker_thread_256k_stack() {
    let (o, dir) = run(
        "deep-worker",
        "deep",
        &["--bytes", "204800", "--thread-stack", "262144"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = expected(&o.stdout)["max_stack_bytes"];
    let s = summary(&dir);
    let t = thread(&s, "deep-worker");
    let limit = t["stack_limit_bytes"].as_u64().unwrap();
    assert!(
        (limit as f64 - 262144.0).abs() <= 262144.0 * 0.02,
        "limit {limit}"
    );
    check_depth(&s, "deep-worker", want);
}

fn check_overflow(name: &str, args: &[&str], thread_name: &str) {
    let (o, dir) = run(name, "stack_overflow", args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // std's own message and abort still happen, and `run` passes the signal on.
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert_eq!(
        o.status.code(),
        Some(128 + 6),
        "stackheap run exit: {:?}\n{stderr}",
        o.status
    );
    assert!(
        stderr.contains("stackheap: stack overflow in thread"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" repeats ") || stderr.contains(" repeat "),
        "no collapsed cycle on stderr:\n{stderr}"
    );
    let s = summary(&dir);
    let ov = &s["events"]["stack_overflow"];
    assert_eq!(ov.as_array().map(Vec::len), Some(1), "{ov}");
    let ov = &ov[0];
    assert_eq!(ov["thread_name"], thread_name, "{ov}");
    let cycle = &ov["cycle"];
    assert!(
        cycle["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("stack_overflow::recurse")),
        "{cycle}"
    );
    assert!(cycle["repeats"].as_u64().unwrap() > 100, "{cycle}");
    let limit = ov["limit_bytes"].as_u64().unwrap();
    let depth = ov["depth_bytes"].as_u64().unwrap();
    assert!(
        depth as f64 >= limit as f64 * 0.95,
        "depth {depth} of {limit}"
    );
    // The trace loaded and holds what the program allocated before.
    assert!(s["heap"]["total_allocs"].as_u64().unwrap() > 0);
}

#[test]
fn stack_overflow_main_thread() {
    check_overflow("so-main", &["recurse", "--frame", "256"], "stack_overflow");
}

#[test]
fn stack_overflow_worker_thread() {
    check_overflow(
        "so-thread",
        &["recurse", "--frame", "64", "--thread-stack", "262144"],
        "overflow-worker",
    );
}

#[test]
fn stack_overflow_without_profiler_dies_the_same() {
    let o = Command::new(bin("stack_overflow"))
        .args(["recurse"])
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(6), "{:?}", o.status);
}

fn crash(sub: &str) -> (Output, Value) {
    let (o, dir) = run(&format!("crash-{sub}"), "crash", &[sub, "--keep", "1000"]);
    let s = summary(&dir);
    let keep = expected(&o.stdout)["kept_allocs"];
    // Every allocation made before the crash is in the trace.
    assert!(
        s["heap"]["total_allocs"].as_u64().unwrap() >= keep,
        "{}",
        s["heap"]
    );
    (o, s)
}

#[test]
fn crash_null_write() {
    let (o, s) = crash("null");
    assert_eq!(o.status.code(), Some(128 + 11));
    let c = &s["events"]["crash"][0];
    assert_eq!(c["signal_name"], "SIGSEGV", "{c}");
    assert_eq!(c["fault_class"], "null page", "{c}");
    assert!(
        c["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("crash::null_write")),
        "{c}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("fatal signal SIGSEGV at address 0x8 (null page)"),
        "{stderr}"
    );
}

#[test]
fn crash_use_after_free() {
    let (o, s) = crash("uaf");
    assert_eq!(o.status.code(), Some(128 + 11));
    let c = &s["events"]["crash"][0];
    assert_eq!(c["fault_class"], "unmapped", "{c}");
}

#[test]
fn crash_double_free() {
    let (o, s) = crash("double-free");
    assert_eq!(o.status.code(), Some(128 + 6));
    let c = &s["events"]["crash"][0];
    assert_eq!(c["signal_name"], "SIGABRT", "{c}");
}

#[test]
fn crash_panic_is_not_a_signal() {
    let (o, s) = crash("panic");
    assert_eq!(o.status.code(), Some(101));
    assert_eq!(s["events"]["crash"].as_array().map(Vec::len), Some(0));
    let p = &s["events"]["panic"][0];
    assert_eq!(p["message"], "crash demo: a plain panic", "{p}");
    assert!(p["location"].as_str().unwrap().contains("crash.rs"), "{p}");
}

#[test]
fn segments_section() {
    let (o, dir) = run("segments", "segments", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("local array") && l.contains("stack")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("Vec of --big bytes") && l.contains("anonymous mapping")),
        "{stdout}"
    );
    let s = summary(&dir);
    let start = &s["segments"]["start"];
    for k in ["text", "data", "stacks", "shared_libraries"] {
        assert!(start[k].as_u64().unwrap() > 0, "{k} in {start}");
    }
    // The 4 MiB block is mmapped: the anonymous memory grew by at least that much.
    let peak = &s["segments"]["peak"];
    assert!(
        peak["heap_mmap_and_other_anon"].as_u64().unwrap() >= 4 << 20,
        "{peak}"
    );
}

#[test]
fn sampler_off_records_no_deepest_stack() {
    let out = scratch("deep-nosampler");
    let o = Command::new(bin("stackheap"))
        .args(["run", "--stack-hz", "0", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("deep"))
        .args(["--bytes", "262144"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = expected(&o.stdout)["max_stack_bytes"];
    // The allocation at the deepest level still carries the depth...
    check_depth(&summary(&out), "deep", want);
    // ...but without the sampler no stack was walked.
    let folded = std::fs::read_to_string(out.join("flame-stack.folded")).unwrap();
    assert!(folded.is_empty(), "{folded}");
}
