//! Live attach end to end: `stackheap run --live` makes the program serve a socket;
//! `stackheap attach PID --snapshot DIR` writes the live heap of the running program as
//! a flamegraph (twice in a row, the growth demo's cache the widest site) and leaves it
//! running; the socket is mode 0600, ours, and refuses another uid; a pid without a
//! socket, counters-only mode and a non-terminal live view each get one error line.
//!
//! Every test runs the program with `XDG_RUNTIME_DIR` set to a scratch directory of its
//! own, so the socket is found there and nowhere else.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackheap_tests::{bin, scratch};

const NO_SOCKET: &str =
    "does not serve a stackheap socket; start it with stackheap run --live or STACKHEAP_LIVE=1";

/// A program running under `stackheap run --live`, its socket in `runtime`.
struct Live {
    run: Child,
    runtime: PathBuf,
    out: PathBuf,
    pid: u32,
    socket: PathBuf,
}

impl Live {
    /// Start `program args` under `stackheap run --live EXTRA` and wait (bounded) for
    /// its socket to appear: the readiness signal.
    fn start(name: &str, extra: &[&str], program: &Path, args: &[&str]) -> Live {
        let dir = scratch(name);
        let runtime = dir.join("runtime");
        let out = dir.join("out");
        std::fs::create_dir_all(&runtime).unwrap();
        // Reachable by anyone, so that the socket's own mode is what keeps others out.
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(dir.join("run.stderr")).unwrap();
        let stdout = std::fs::File::create(dir.join("run.stdout")).unwrap();
        let mut run = Command::new(bin("stackheap"))
            .arg("run")
            .arg("--live")
            .args(extra)
            .arg("--out")
            .arg(&out)
            .arg("--")
            .arg(program)
            .args(args)
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn stackheap run");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = std::fs::read_dir(&runtime)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find_map(|p| {
                    let n = p.file_name()?.to_str()?;
                    let pid = n.strip_prefix("stackheap-")?.strip_suffix(".sock")?;
                    Some((pid.parse::<u32>().ok()?, p.clone()))
                });
            if let Some((pid, socket)) = found {
                return Live {
                    run,
                    runtime,
                    out,
                    pid,
                    socket,
                };
            }
            if let Some(st) = run.try_wait().unwrap() {
                panic!(
                    "stackheap run ended ({st}) before serving a socket: {}",
                    std::fs::read_to_string(dir.join("run.stderr")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no socket in {} after 60 s",
                runtime.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `stackheap attach` with our runtime dir.
    fn attach(&self, args: &[&str]) -> Output {
        Command::new(bin("stackheap"))
            .arg("attach")
            .arg(self.pid.to_string())
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .stdin(Stdio::null())
            .output()
            .expect("spawn stackheap attach")
    }

    /// One request on a fresh connection (after the greeting).
    fn request(&self, line: &str) -> Value {
        let s = UnixStream::connect(&self.socket).expect("connect to the socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut hello = String::new();
        r.read_line(&mut hello).unwrap();
        let hello: Value = serde_json::from_str(&hello).expect("greeting is JSON");
        assert_eq!(hello["pid"].as_u64(), Some(self.pid as u64), "{hello}");
        (&s).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        r.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
    }

    /// Wait for `stackheap run` to finish (bounded); its output.
    fn finish(mut self, close_stdin: bool) -> (std::process::ExitStatus, PathBuf, PathBuf) {
        if close_stdin {
            drop(self.run.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(st) = self.run.try_wait().unwrap() {
                return (st, self.out.clone(), self.socket.clone());
            }
            if Instant::now() > deadline {
                let _ = self.run.kill();
                panic!("stackheap run did not finish within 180 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: read its state, not only whether the pid exists.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

/// The folded lines of a snapshot, widest first.
fn folded(dir: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(dir.join("live.folded")).expect("live.folded");
    let mut v: Vec<(String, u64)> = text
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("folded line");
            (stack.to_string(), n.parse().expect("count"))
        })
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    v
}

const CACHE: &str = "growth::Service::remember_response";

#[test]
fn snapshots_of_a_running_growth_demo_show_the_cache_and_leave_it_running() {
    // 1500 ticks of at least 10 ms: the demo runs for 15 s or more.
    let live = Live::start(
        "attach-growth",
        &[],
        &bin("growth"),
        &["--ticks", "1500", "--tick-ms", "10", "--requests", "10"],
    );
    // Wait until the cache holds 1 MiB (64 entries): from then on it is the biggest site.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = live.request("stats");
        if s["stats"]["live_bytes"].as_i64().unwrap_or(0) >= 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the heap never reached 1 MiB: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut last_live = 0;
    for round in 1..=2 {
        let dir = live.out.parent().unwrap().join(format!("snap{round}"));
        let o = live.attach(&["--snapshot", dir.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "snapshot {round}: {stderr}");
        assert!(
            stdout.contains(&format!("snapshot of process {}", live.pid)),
            "{stdout}"
        );
        assert!(
            stdout.contains(CACHE),
            "the summary line names the cache: {stdout}"
        );
        let svg = std::fs::read_to_string(dir.join("live.svg")).expect("live.svg");
        assert!(
            svg.contains("<svg") && svg.contains("remember_response"),
            "snapshot {round}: svg"
        );
        let lines = folded(&dir);
        assert!(!lines.is_empty(), "snapshot {round}: empty live.folded");
        assert!(
            lines[0].0.contains(CACHE),
            "snapshot {round}: the widest site is not the cache: {:?}",
            &lines[..lines.len().min(3)]
        );
        let total: u64 = lines.iter().map(|l| l.1).sum();
        let cache: u64 = lines
            .iter()
            .filter(|l| l.0.contains(CACHE))
            .map(|l| l.1)
            .sum();
        assert!(cache * 2 > total, "cache {cache} of {total} live bytes");
        assert_eq!(cache % 16384, 0, "whole 16 KiB entries: {cache}");
        let summary: Value =
            serde_json::from_slice(&std::fs::read(dir.join("live.json")).unwrap()).unwrap();
        let live_bytes = summary["live_bytes"].as_u64().unwrap();
        assert_eq!(live_bytes, total, "live.json and live.folded agree");
        assert!(
            live_bytes > last_live,
            "the heap grew between snapshots: {live_bytes} after {last_live}"
        );
        last_live = live_bytes;
        assert!(alive(live.pid), "the demo died after snapshot {round}");
    }

    // Detaching left it running: it serves more requests and finishes on its own.
    assert!(live.request("stats")["stats"]["active"].as_bool().unwrap());
    let pid = live.pid;
    let (status, out, socket) = live.finish(false);
    assert!(status.success(), "stackheap run: {status}");
    let stdout = std::fs::read_to_string(out.parent().unwrap().join("run.stdout")).unwrap();
    assert!(
        stdout.contains("expected: ticks=1500 cache_entries=1500"),
        "{stdout}"
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .unwrap();
    assert_eq!(
        summary["trace"]["complete"],
        Value::Bool(true),
        "{}",
        summary["trace"]
    );
    assert_eq!(summary["program"]["pid"].as_u64(), Some(pid as u64));
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// Connect to `socket` as uid/gid 65534 (nobody) from a forked child; the child's exit
/// code says what happened: 0 refused with the error line, 1 connect denied (EACCES),
/// 2 connected and not refused, 3 could not become nobody, 4 other failure.
fn connect_as_nobody(socket: &Path) -> i32 {
    let path = CString::new(socket.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied in with room for the NUL.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let want = b"{\"error\":\"refused";
    // SAFETY: fork; the child only calls async-signal-safe functions (setgroups, setgid,
    // setuid, socket, connect, read, _exit) on memory prepared before the fork.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork failed");
        if child == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(3);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(4);
            }
            if libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) != 0
            {
                let e = *libc::__errno_location();
                libc::_exit(if e == libc::EACCES { 1 } else { 4 });
            }
            let mut buf = [0u8; 256];
            let mut n = 0usize;
            while n < want.len() {
                let r = libc::read(fd, buf.as_mut_ptr().add(n).cast(), buf.len() - n);
                if r <= 0 {
                    break;
                }
                n += r as usize;
            }
            let mut refused = n >= want.len();
            let mut i = 0;
            while refused && i < want.len() {
                refused = buf[i] == want[i];
                i += 1;
            }
            libc::_exit(if refused { 0 } else { 2 });
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

#[test]
fn the_socket_is_private_refuses_other_users_and_works_through_ld_preload() {
    // `cat` does not link stackheap: it is profiled through LD_PRELOAD and serves the
    // socket from there; it runs until its standard input closes.
    let live = Live::start("attach-private", &[], Path::new("/bin/cat"), &[]);
    let meta = std::fs::symlink_metadata(&live.socket).unwrap();
    assert!(meta.file_type().is_socket(), "{:?}", meta.file_type());
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode() & 0o777);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(meta.uid(), me, "the socket is ours");
    assert_eq!(
        std::fs::read_dir(&live.runtime).unwrap().count(),
        1,
        "nothing but the socket is left in the runtime dir"
    );

    if me == 0 {
        // The mode alone keeps nobody out.
        assert_eq!(
            connect_as_nobody(&live.socket),
            1,
            "nobody could connect to a 0600 socket"
        );
        // With the mode opened up, the credential check refuses nobody.
        std::fs::set_permissions(&live.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let code = connect_as_nobody(&live.socket);
        std::fs::set_permissions(&live.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            code, 0,
            "the server did not refuse uid 65534 with an error line (child code {code})"
        );
    } else {
        eprintln!("not root: the other-uid connection is not tried (mode and owner checked)");
    }

    // The server still serves us, and the live view refuses a non-terminal at once.
    let s = live.request("stats");
    assert_eq!(s["stats"]["active"], Value::Bool(true), "{s}");
    let o = live.attach(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("--snapshot DIR"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A snapshot of a program profiled through LD_PRELOAD.
    let dir = live.out.parent().unwrap().join("snap");
    let o = live.attach(&["--snapshot", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["live.svg", "live.folded", "live.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(alive(live.pid));

    let (status, _, socket) = live.finish(true);
    assert!(status.success(), "cat under stackheap run: {status}");
    assert!(!socket.exists(), "the socket is removed when cat exits");
}

#[test]
fn counters_only_mode_has_no_snapshot() {
    let live = Live::start(
        "attach-counters",
        &["--sample", "0", "--no-report"],
        Path::new("/bin/cat"),
        &[],
    );
    let dir = live.out.parent().unwrap().join("snap");
    let o = live.attach(&["--snapshot", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("counters only"), "{stderr}");
    assert!(!dir.join("live.svg").exists());
    // The counters are still served.
    assert!(live.request("stats")["stats"]["total_allocs"].is_u64());
    let (status, _, _) = live.finish(true);
    assert!(status.success());
}

#[test]
fn a_pid_without_a_socket_gets_one_error_line() {
    let runtime = scratch("attach-none");
    // This test process (alive, no socket) and a process that has exited.
    let mut done = Command::new("true").spawn().unwrap();
    let dead = done.id();
    done.wait().unwrap();
    for pid in [std::process::id(), dead] {
        let o = Command::new(bin("stackheap"))
            .args(["attach", &pid.to_string(), "--snapshot"])
            .arg(runtime.join("snap"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("stackheap: error: process {pid} {NO_SOCKET}")
        );
    }
    // Not a pid at all: clap's one line.
    let o = Command::new(bin("stackheap"))
        .args(["attach", "twelve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The live terminal view, driven through a pseudo-terminal (`script`, util-linux): it
/// draws the growth demo's cache among the top sites, `s` writes a snapshot whose widest
/// site is the cache, `q` quits and the demo keeps running.
#[test]
fn the_live_view_draws_snapshots_and_quits_leaving_the_program_running() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed to give the live view a terminal");
    }
    let live = Live::start(
        "attach-tui",
        &[],
        &bin("growth"),
        &["--ticks", "1500", "--tick-ms", "10", "--requests", "10"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while live.request("stats")["stats"]["live_bytes"]
        .as_i64()
        .unwrap_or(0)
        < 1 << 20
    {
        assert!(Instant::now() < deadline, "the heap never reached 1 MiB");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cwd = live.out.parent().unwrap().join("tui");
    std::fs::create_dir_all(&cwd).unwrap();
    let screen = cwd.join("screen.out");
    let command = format!(
        "stty cols 160 rows 45; exec {} attach {}",
        bin("stackheap").display(),
        live.pid
    );
    let mut tui = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(&cwd)
        .env("XDG_RUNTIME_DIR", &live.runtime)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&screen).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn script");
    let mut keys = tui.stdin.take().unwrap();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "no {what} after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("site table on the screen", &|| {
        std::fs::read_to_string(&screen).is_ok_and(|s| s.contains("remember_response"))
    });
    keys.write_all(b"s").unwrap();
    keys.flush().unwrap();
    let snap = cwd
        .join("stackheap-out")
        .join(format!("attach-{}", live.pid))
        .join("snapshot-1");
    wait_for("snapshot", &|| snap.join("live.json").is_file());
    let lines = folded(&snap);
    assert!(
        lines.first().is_some_and(|l| l.0.contains(CACHE)),
        "the widest site is not the cache: {:?}",
        &lines[..lines.len().min(3)]
    );
    keys.write_all(b"q").unwrap();
    keys.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = tui.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = tui.kill();
            panic!("the live view did not quit on q");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "stackheap attach under script: {status}");
    assert!(alive(live.pid), "the demo died when the view quit");
    assert!(live.request("stats")["stats"]["active"].as_bool().unwrap());
    let (status, _, _) = live.finish(false);
    assert!(status.success(), "stackheap run: {status}");
}
