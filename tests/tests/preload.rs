//! Programs that do not link stackheap, profiled through `LD_PRELOAD` by `stackheap
//! run`: C programs of exactly known behaviour (compiled here with `cc`), a forking one,
//! a multithreaded one, a static binary (refused in one line), and a real program
//! (`python3`) cross-checked against heaptrack.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stackheap_tests::{bin, compile_c, scratch};

/// Compile `tests/c/NAME.c` into `dir/NAME`.
fn cc(name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    compile_c(name, &dir.join(name), extra)
}

/// Run `cmd` to the end, failing the test if it takes longer than `limit` (a deadlock).
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?} (deadlock?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `stackheap run --out OUT -- PROGRAM ARGS`; returns the program's `expected:`
/// figures, its whole stdout, and summary.json's `heap`.
fn profile(
    out: &Path,
    program: &Path,
    args: &[&str],
) -> (HashMap<String, u64>, String, serde_json::Value) {
    let o = run_within(
        Command::new(bin("stackheap"))
            .args(["run", "--out"])
            .arg(out)
            .arg("--")
            .arg(program)
            .args(args),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "stackheap run {} failed: {}\n{stdout}",
        program.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let expected: HashMap<String, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("expected:"))
        .flat_map(|r| r.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect();
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("json");
    assert_eq!(j["trace"]["complete"], true, "trace incomplete: {j}");
    assert_eq!(j["trace"]["lost_events"], 0, "lost events: {}", j["trace"]);
    (expected, stdout, j["heap"].clone())
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn the_whole_malloc_family_is_counted_exactly() {
    let dir = scratch("preload-known");
    let prog = cc("known", &dir, &[]);
    let (want, stdout, heap) = profile(&dir.join("out"), &prog, &[]);
    assert!(!want.is_empty(), "no expected: line in {stdout}");
    assert_eq!(n(&heap, "total_allocs"), want["allocs"], "{heap}");
    assert_eq!(n(&heap, "total_frees"), want["frees"], "{heap}");
    assert_eq!(n(&heap, "total_bytes"), want["bytes"], "{heap}");
    assert_eq!(n(&heap, "peak_bytes"), want["peak"], "{heap}");
    assert_eq!(n(&heap, "leaked_bytes"), want["leaked_bytes"], "{heap}");
    assert_eq!(n(&heap, "leaked_blocks"), want["leaked_blocks"], "{heap}");
    assert_eq!(n(&heap, "failed_allocs"), 0, "{heap}");
    assert_eq!(n(&heap, "frees_unknown"), 0, "{heap}");
    // The in-process counters (the trailer) agree with the events.
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).unwrap()).unwrap();
    let t = &j["trailer"];
    assert_eq!(n(t, "total_allocs"), want["allocs"], "{t}");
    assert_eq!(n(t, "live_bytes"), want["leaked_bytes"], "{t}");
    assert_eq!(n(t, "peak_bytes"), want["peak"], "{t}");
    // stdout's buffer is attributed to libc's stdio.
    let folded = std::fs::read_to_string(dir.join("out/flame-leaked.folded")).unwrap();
    assert!(
        folded.lines().any(|l| l.contains("_IO_file_doallocate")),
        "stdio buffer not in the leaked flamegraph:\n{folded}"
    );
}

#[test]
fn eight_threads_are_exact_and_do_not_deadlock() {
    let dir = scratch("preload-threads");
    let prog = cc("threads", &dir, &[]);
    // What glibc allocates itself for 8 threads (their TLS vectors), measured alone.
    let (_, _, base) = profile(&dir.join("base"), &prog, &["8", "0"]);
    let per = "1000000";
    let (want, stdout, heap) = profile(&dir.join("out"), &prog, &["8", per]);
    assert!(!want.is_empty(), "no expected: line in {stdout}");
    assert_eq!(
        n(&heap, "total_allocs"),
        want["allocs"] + n(&base, "total_allocs"),
        "{heap} base {base}"
    );
    assert_eq!(
        n(&heap, "total_frees"),
        want["frees"] + n(&base, "total_frees")
    );
    assert_eq!(
        n(&heap, "total_bytes"),
        want["bytes"] + n(&base, "total_bytes")
    );
    assert_eq!(
        n(&heap, "leaked_bytes"),
        want["leaked_bytes"] + n(&base, "leaked_bytes")
    );
    assert_eq!(
        n(&heap, "leaked_blocks"),
        want["leaked_blocks"] + n(&base, "leaked_blocks")
    );
    // At any time: the leaks so far, glibc's, and at most two blocks per thread.
    let peak = n(&heap, "peak_bytes");
    assert!(peak >= want["leaked_bytes"], "peak {peak} below the leaks");
    assert!(
        peak <= want["leaked_bytes"] + n(&base, "peak_bytes") + 8 * (1039 + 8),
        "peak {peak} too high: {heap}"
    );
}

#[test]
fn a_forked_child_keeps_allocating_and_children_are_not_profiled() {
    let dir = scratch("preload-fork");
    let prog = cc("fork", &dir, &[]);
    let (want, stdout, heap) = profile(&dir.join("out"), &prog, &["300000"]);
    assert!(
        stdout.contains("child done: 300000 allocations"),
        "the forked child did not finish: {stdout}"
    );
    assert!(
        stdout.contains("env:[][]"),
        "an executed child inherited the profiler: {stdout}"
    );
    assert_eq!(n(&heap, "total_allocs"), want["allocs"], "{heap}");
    assert_eq!(n(&heap, "total_frees"), want["frees"], "{heap}");
    assert_eq!(n(&heap, "total_bytes"), want["bytes"], "{heap}");
    assert_eq!(n(&heap, "leaked_bytes"), want["leaked_bytes"], "{heap}");
    // Only the parent's trace exists.
    let traces = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".trace")
        })
        .count();
    assert_eq!(traces, 1);
}

#[test]
fn a_static_binary_is_refused_in_one_line() {
    let dir = scratch("preload-static");
    let src = dir.join("s.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let prog = dir.join("s");
    let ok = Command::new("cc")
        .arg("-static")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("no static libc here: cannot build a static binary; skipped");
        return;
    }
    let o = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(dir.join("out"))
        .arg("--")
        .arg(&prog)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("statically linked"), "{err}");
}

/// `N`, `N.NK`, `N.NNM`, … from heaptrack_print (SI units: heaptrack divides by 1000).
fn heaptrack_bytes(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        Some('B') => (&s[..s.len() - 1], 1.0),
        _ => (s, 1.0),
    };
    num.parse::<f64>().expect("heaptrack number") * mult
}

#[test]
fn python_agrees_with_heaptrack() {
    let python = Path::new("/usr/bin/python3");
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !python.exists() || !have("heaptrack") || !have("heaptrack_print") {
        eprintln!("python3 or heaptrack not installed; skipped");
        return;
    }
    let dir = scratch("preload-python");
    let script = "d = {i: str(i) * 3 for i in range(200000)}\n\
                  l = [bytes(100) for _ in range(50000)]\n\
                  del d\n\
                  print(len(l))";
    let (_, stdout, heap) = profile(&dir.join("out"), python, &["-c", script]);
    assert!(stdout.starts_with("50000"), "{stdout}");

    let ht = dir.join("ht");
    let o = Command::new("heaptrack")
        .arg("-o")
        .arg(&ht)
        .arg(python)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ht."))
        .expect("heaptrack's data file");
    let o = Command::new("heaptrack_print").arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in heaptrack_print output"))
            .trim()
            .to_string()
    };
    let ht_calls: f64 = field("calls to allocation functions:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ht_peak = heaptrack_bytes(&field("peak heap memory consumption:"));
    let calls = n(&heap, "total_allocs") as f64;
    let peak = n(&heap, "peak_bytes") as f64;
    eprintln!("stackheap: {calls} calls, peak {peak}; heaptrack: {ht_calls} calls, peak {ht_peak}");
    assert!(
        (calls - ht_calls).abs() / ht_calls <= 0.02,
        "calls {calls} vs heaptrack {ht_calls}"
    );
    assert!(
        (peak - ht_peak).abs() / ht_peak <= 0.02,
        "peak {peak} vs heaptrack {ht_peak}"
    );
}

#[test]
fn a_thread_that_never_allocates_is_seen_by_the_stack_sampler() {
    let dir = scratch("preload-deep-thread");
    let prog = cc("deep_thread", &dir, &["-O0"]);
    let (want, stdout, _) = profile(&dir.join("out"), &prog, &[]);
    let min = want
        .get("min_depth")
        .copied()
        .unwrap_or_else(|| panic!("no expected: line in {stdout}"));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).unwrap()).unwrap();
    let threads = j["threads"].as_array().unwrap();
    // Only the program's two threads: the profiler's own are not listed. The deep
    // thread allocates only once, in pthread_exit, at a shallow depth: the depth seen
    // can only come from the sampler, which sees it because it registered at creation.
    assert_eq!(threads.len(), 2, "{threads:?}");
    let deep = threads
        .iter()
        .find(|t| n(t, "max_stack_bytes") >= min)
        .unwrap_or_else(|| panic!("the deep thread was not sampled: {threads:?}"));
    assert!(n(deep, "max_stack_bytes") < 2 * min, "{deep}");
}

#[test]
fn the_heap_limit_refuses_malloc_as_an_oom_would() {
    let dir = scratch("preload-limit");
    let prog = cc("limit", &dir, &[]);
    let o = run_within(
        Command::new(bin("stackheap"))
            .args(["run", "--limit", "10MiB", "--out"])
            .arg(dir.join("out"))
            .arg("--")
            .arg(&prog),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("got=10\n"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(n(&j["heap"], "failed_allocs"), 1, "{}", j["heap"]);
    assert_eq!(n(&j["heap"], "peak_bytes"), 10 << 20, "{}", j["heap"]);
}

#[test]
fn a_program_leaving_by_exit_underscore_is_flushed() {
    let dir = scratch("preload-quick-exit");
    let prog = cc("quick_exit", &dir, &[]);
    // `profile` checks that the trace is complete (trailer written).
    let (want, stdout, heap) = profile(&dir.join("out"), &prog, &[]);
    assert!(!want.is_empty(), "no expected: line in {stdout}");
    assert_eq!(n(&heap, "total_allocs"), want["allocs"], "{heap}");
    assert_eq!(n(&heap, "leaked_bytes"), want["leaked_bytes"], "{heap}");
}

/// A `stackheap` binary alone in a directory (as `cargo install` leaves it) still
/// profiles a program through LD_PRELOAD: it writes the library it carries to the
/// cache directory once and preloads it from there.
#[test]
fn an_installed_binary_alone_uses_the_library_it_carries() {
    let dir = scratch("preload-installed");
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let alone = bin_dir.join("stackheap");
    std::fs::copy(bin("stackheap"), &alone).expect("copy stackheap");
    let cache = dir.join("cache");
    let program = cc("known", &dir, &[]);
    let out = dir.join("out");
    let o = run_within(
        Command::new(&alone)
            .env_remove("CARGO")
            .env_remove("STACKHEAP_PRELOAD")
            .env("XDG_CACHE_HOME", &cache)
            .args(["run", "--out"])
            .arg(&out)
            .arg("--")
            .arg(&program),
        Duration::from_secs(300),
    );
    assert!(
        o.status.success(),
        "installed stackheap failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let written: Vec<PathBuf> = std::fs::read_dir(cache.join("stackheap"))
        .expect("the cache directory was created")
        .flatten()
        .map(|e| e.path().join("libstackheap_preload.so"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(written.len(), 1, "one library in {}", cache.display());
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("json");
    assert_eq!(j["trace"]["complete"], true);
    assert!(n(&j["heap"], "total_allocs") > 0, "{}", j["heap"]);
    // A second run reuses the file instead of writing another.
    let before = std::fs::metadata(&written[0]).unwrap().modified().unwrap();
    let o = run_within(
        Command::new(&alone)
            .env_remove("CARGO")
            .env("XDG_CACHE_HOME", &cache)
            .args(["run", "--no-report", "--out"])
            .arg(dir.join("out2"))
            .arg("--")
            .arg(&program),
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = std::fs::metadata(&written[0]).unwrap().modified().unwrap();
    assert_eq!(before, after, "the cached library was rewritten");
}
