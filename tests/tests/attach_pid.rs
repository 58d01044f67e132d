//! `stackheap run --pid PID`: attach to a C program that was started without stackheap
//! (`tests/c/attach.c`), record only what it allocates after the attach, count the
//! frees of its older blocks apart, and leave it running after a detach.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use stackheap_tests::{bin, compile_c, scratch};

/// What the program does after the attach (see the comment at the top of attach.c).
const ALLOCS: u64 = 14;
const BYTES: u64 = 8 * 1000 + 4 * 1000 + 4096 + 300;
const KNOWN_FREES: u64 = 10;
const PRE_ATTACH_FREES: u64 = 8;
const LEAKED_BYTES: u64 = 2 * 1000 + 4096 + 300;
const LEAKED_BLOCKS: u64 = 4;
/// The unobserved tail: 1000 malloc/free pairs after the second line.
const TAIL: u64 = 1000;

fn cc(dir: &Path) -> PathBuf {
    cc_one(dir, "attach", &[])
}

fn cc_one(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(if extra.contains(&"-shared") {
        format!("lib{name}.so")
    } else if extra.iter().any(|e| e.contains("now")) {
        format!("{name}-now")
    } else {
        name.to_string()
    });
    compile_c(name, &out, extra)
}

/// Lines of a pipe, read on a thread.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait for a line containing `want`; every line seen goes into `seen`.
fn expect_line(rx: &Receiver<String>, want: &str, seen: &mut Vec<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(want);
                seen.push(l);
                if hit {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {want:?} within {limit:?}; lines: {seen:#?}");
}

struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    pid: u32,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_target(program: &Path, args: &[&str]) -> Target {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the C program");
    let stdin = child.stdin.take();
    let out = lines(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    expect_line(&out, "ready", &mut seen, Duration::from_secs(10));
    let pid: u32 = seen[0]
        .trim_start_matches("ready ")
        .parse()
        .expect("ready PID");
    assert_eq!(pid, child.id());
    Target {
        child,
        stdin,
        out,
        pid,
    }
}

struct Profiler {
    child: Child,
    err: Receiver<String>,
    err_seen: Vec<String>,
}

impl Drop for Profiler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stackheap run --pid PID --out OUT [extra]`, once it says it attached: the route.
fn attach(pid: u32, out: &Path, extra: &[&str]) -> (Profiler, String) {
    let mut child = Command::new(bin("stackheap"))
        .args(["run", "--pid", &pid.to_string(), "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stackheap");
    let err = lines(child.stderr.take().expect("stderr"));
    // The report goes to stdout: drain it so that stackheap never blocks on it.
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink()));
    let mut p = Profiler {
        child,
        err,
        err_seen: Vec::new(),
    };
    let want = format!("attached to {pid} via ");
    expect_line(&p.err, &want, &mut p.err_seen, Duration::from_secs(120));
    let line = p.err_seen.last().cloned().unwrap_or_default();
    let route = line[line.find(&want).unwrap() + want.len()..]
        .split([';', ' '])
        .next()
        .unwrap_or_default()
        .to_string();
    (p, route)
}

/// Wait for stackheap to finish; its exit status and the rest of its stderr.
fn finish(p: &mut Profiler) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = p.child.try_wait().expect("wait") {
            while let Ok(l) = p.err.recv_timeout(Duration::from_millis(500)) {
                p.err_seen.push(l);
            }
            return (st.success(), p.err_seen.join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "stackheap did not finish: {:#?}",
            p.err_seen
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn summary(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

/// The process is blocked (not running), as when it waits in read(2) or nanosleep.
fn still_waiting(t: &Target) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", t.pid))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() == Some("S"))
        })
        .unwrap_or(false)
}

fn check_heap(s: &serde_json::Value, allocs: u64, bytes: u64, known_frees: u64) {
    let h = &s["heap"];
    assert_eq!(h["total_allocs"], allocs, "{h:#}");
    assert_eq!(h["total_bytes"], bytes, "{h:#}");
    assert_eq!(h["frees_unknown"], PRE_ATTACH_FREES, "{h:#}");
    assert_eq!(h["total_frees"], known_frees + PRE_ATTACH_FREES, "{h:#}");
    assert_eq!(h["leaked_bytes"], LEAKED_BYTES, "{h:#}");
    assert_eq!(h["leaked_blocks"], LEAKED_BLOCKS, "{h:#}");
    assert_eq!(h["peak_bytes"], 8000, "{h:#}");
    assert_eq!(s["program"]["attached"], true);
    assert_eq!(s["trace"]["complete"], true, "{:#}", s["trace"]);
    // The live heap never went negative: no warning about unmatched frees either.
    let warnings = s["warnings"].to_string();
    assert!(!warnings.contains("before profiling"), "{warnings}");
}

/// The default route (gdb, then our ptrace injector when gdb cannot make inferior calls
/// here), a target blocked in read(2), and a detach by Ctrl-C: only the later
/// allocations are counted, the read restarts, and the program keeps running.
#[test]
fn attach_by_pid_records_later_allocations_and_detaches() {
    let dir = scratch("attach-pid");
    let program = cc(&dir);
    let mut t = start_target(&program, &["read"]);
    let out = dir.join("out");
    let (mut p, route) = attach(t.pid, &out, &[]);
    assert!(route == "gdb" || route == "ptrace", "route {route:?}");
    if route == "ptrace" {
        // Auto falls back only after saying why gdb was not used.
        assert!(
            p.err_seen.last().unwrap().contains("(gdb: "),
            "{:#?}",
            p.err_seen
        );
    }
    // The interrupted read(2) was restarted, not failed: the program still waits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !still_waiting(&t) {
        assert!(Instant::now() < deadline, "the program is not waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        t.out.recv_timeout(Duration::from_millis(200)).is_err(),
        "the program went on before it was told to"
    );
    let stdin = t.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let mut seen = Vec::new();
    expect_line(&t.out, "done", &mut seen, Duration::from_secs(20));

    // Ctrl-C: stop recording, detach, write the report.
    // SAFETY: sending SIGINT to our child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) };
    let (ok, err) = finish(&mut p);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("detached from {}", t.pid)), "{err}");
    check_heap(&summary(&out), ALLOCS, BYTES, KNOWN_FREES);
    assert!(
        !out.read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".stackheap-attach")),
        "the attach's private directory was left behind"
    );

    // Detached: the program allocates through glibc again and ends normally.
    let stdin = t.stdin.as_mut().unwrap();
    stdin.write_all(b"\n").unwrap();
    expect_line(&t.out, "bye", &mut seen, Duration::from_secs(20));
    let st = t.child.wait().expect("wait");
    assert!(st.success(), "{st:?}");
}

/// The ptrace injector on a target sleeping in nanosleep (linked with full RELRO) and on
/// one spinning in user code (lazy binding); the session ends with the process, and the trace holds everything after the
/// attach (the 1000 pairs of the tail too).
#[test]
fn ptrace_attach_to_sleeping_and_spinning_programs_until_exit() {
    let dir = scratch("attach-pid-modes");
    // Lazy binding (writable .got.plt) and full RELRO (a read-only GOT made writable
    // for the rewrite).
    let lazy = cc(&dir);
    let now = cc_one(&dir, "attach", &["-Wl,-z,now,-z,relro"]);
    for (mode, program) in [("sleep", &now), ("spin", &lazy)] {
        let flag = dir.join(format!("go-{mode}"));
        let mut t = start_target(program, &[mode, flag.to_str().unwrap()]);
        let out = dir.join(format!("out-{mode}"));
        let (mut p, route) = attach(t.pid, &out, &["--inject", "ptrace"]);
        assert_eq!(route, "ptrace");
        std::fs::write(&flag, b"").unwrap();
        let mut seen = Vec::new();
        expect_line(&t.out, "done", &mut seen, Duration::from_secs(30));
        drop(t.stdin.take()); // EOF: the program runs its tail and exits
        expect_line(&t.out, "bye", &mut seen, Duration::from_secs(30));
        let st = t.child.wait().expect("wait");
        assert!(st.success(), "{mode}: {st:?}");
        let (ok, err) = finish(&mut p);
        assert!(ok, "{mode}: {err}");
        assert!(err.contains(&format!("process {} exited", t.pid)), "{err}");
        // The whole XSAVE state was put back, not only x87/SSE.
        assert!(!err.contains("XSAVE state failed"), "{err}");
        let s = summary(&out);
        let tail_bytes = (0..TAIL).map(|i| 64 + i).sum::<u64>();
        check_heap(&s, ALLOCS + TAIL, BYTES + tail_bytes, KNOWN_FREES + TAIL);
    }
}

/// A library the program loads after the attach is hooked when it is loaded: its
/// allocation is in the trace, at its own site.
#[test]
fn libraries_loaded_after_the_attach_are_hooked() {
    let dir = scratch("attach-pid-dlopen");
    let program = cc(&dir);
    let lib = cc_one(&dir, "attach_lib", &["-shared", "-fPIC", "-O0"]);
    let mut t = start_target(&program, &["read", "-", lib.to_str().unwrap()]);
    let out = dir.join("out");
    let (mut p, _) = attach(t.pid, &out, &[]);
    t.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut seen = Vec::new();
    expect_line(&t.out, "done", &mut seen, Duration::from_secs(20));
    drop(t.stdin.take());
    expect_line(&t.out, "bye", &mut seen, Duration::from_secs(20));
    assert!(t.child.wait().expect("wait").success());
    let (ok, err) = finish(&mut p);
    assert!(ok, "{err}");
    let s = summary(&out);
    let leaks = s["leaks"].as_array().expect("leaks");
    let from_lib = leaks
        .iter()
        .find(|l| l.to_string().contains("lib_alloc"))
        .unwrap_or_else(|| panic!("no leak in lib_alloc: {leaks:#?}"));
    assert_eq!(from_lib["leaked_bytes"], 777, "{from_lib:#}");
    assert_eq!(from_lib["leaked_blocks"], 1, "{from_lib:#}");
    assert_eq!(s["heap"]["frees_unknown"], PRE_ATTACH_FREES);
}

/// A pid that does not exist: one line, non-zero exit.
#[test]
fn attach_to_a_missing_pid_is_one_line() {
    let dir = scratch("attach-pid-missing");
    // Above the kernel's largest pid_max (2^22): never a process.
    let o = Command::new(bin("stackheap"))
        .args(["run", "--pid", "4194305", "--out"])
        .arg(dir.join("out"))
        .output()
        .expect("run stackheap");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no process with pid 4194305"), "{err}");
    assert!(o.stdout.is_empty());
}
