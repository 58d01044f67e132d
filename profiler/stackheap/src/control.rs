//! Live attach: the profiled process serves a Unix socket that `stackheap attach PID`
//! talks to (`STACKHEAP_LIVE=1`, `stackheap run --live`, [`crate::ProfilerBuilder::live`]).
//!
//! **Where.** `$XDG_RUNTIME_DIR/stackheap-PID.sock`, or the temp dir (`$TMPDIR`, else
//! `/tmp`) when `XDG_RUNTIME_DIR` is unset. The socket is bound inside a fresh private
//! directory (mode 0700), set to mode 0600 there, listening, and only then renamed to its
//! public name: nobody can reach it before its mode is final, and no process-wide umask
//! is touched. Every connection's peer credentials (`SO_PEERCRED`) are checked: a peer of
//! another uid gets one error line and is closed. The socket is removed when the session
//! stops (at exit too); a process killed by a signal leaves it behind, and the next
//! server of the same pid replaces it.
//!
//! **Who runs it.** A thread of its own (`stackheap-ctl`), started with the session,
//! joined when it stops. It holds the reentrancy guard, so its allocations are the
//! profiler's own (never counted, never recorded), and it never takes a lock the
//! recorder or the allocator hooks take: it reads the counters and the slots' atomics,
//! and for a snapshot it waits (bounded) for the recorder's round counter.
//!
//! **Protocol.** Lines of UTF-8 ending in `\n`; every reply is one JSON object a line
//! (docs/live-attach.md has the table):
//!
//! * on connect: `{"stackheap":1,"pid":…,"trace":"/abs/path","sample_rate":…,"stack_hz":…}`
//! * `stats` → `{"stats":{…}}`: the exact counters, RSS, the complete trace length so
//!   far and each thread's deepest stack against its limit;
//! * `watch MS` → a `stats` line every MS milliseconds (at least 50) until the next request;
//! * `mark NAME` → `{"mark":"NAME"}`, after writing a mark as [`crate::mark`] does (from
//!   this thread, which then appears in the trace as `stackheap-ctl`);
//! * `snapshot` → `{"snapshot":{"trace":…,"complete_bytes":N,"time_ns":…}}` once the
//!   recorder has written two more rounds: every event recorded before the request is in
//!   the first N bytes of the trace, which end at a chunk boundary;
//! * anything else → `{"error":"…"}`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::alloc::counters;
use crate::alloc::guard::Guard;
use crate::record::{recorder, session, slots};

/// Version of the line protocol, sent in the greeting.
pub const PROTOCOL: u32 = 1;
/// Longest request line accepted.
const MAX_LINE: usize = 4096;
/// Clients served at once; more are told so and closed.
const MAX_CLIENTS: usize = 16;
/// How long a snapshot waits for the recorder.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);
/// Shortest `watch` interval.
const MIN_WATCH: Duration = Duration::from_millis(50);

/// Set to make the server thread leave.
static STOP: AtomicBool = AtomicBool::new(false);
/// An eventfd the server polls: written by [`stop`] so the thread leaves at once.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The running server: its thread and its socket's public path.
static SERVER: Mutex<Option<(u64, PathBuf)>> = Mutex::new(None);

/// Whether `STACKHEAP_LIVE` asks for the server: `1`, `true`, `yes` or `on`.
pub fn env_enabled(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A path from the environment, read with `getenv` (no lock of std's: this runs at
/// session start, possibly inside the program's first allocation).
fn env_path(name: &std::ffi::CStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: getenv reads the environment; the string is copied at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    let bytes = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
    path.is_absolute().then_some(path)
}

/// The directory sockets go in for this process's environment: `$XDG_RUNTIME_DIR` if
/// it is set to a directory, else the temp dir (`$TMPDIR`, else `/tmp`).
pub fn socket_dir() -> PathBuf {
    env_path(c"XDG_RUNTIME_DIR")
        .filter(|d| d.is_dir())
        .or_else(|| env_path(c"TMPDIR"))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The socket of process `pid` inside `dir`.
pub fn socket_path_in(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("stackheap-{pid}.sock"))
}

/// The socket of this process, if a server runs.
pub fn socket_path() -> Option<PathBuf> {
    SERVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(_, p)| p.clone())
}

/// What the server tells every client at connect.
struct Info {
    trace: String,
    sample_rate: u64,
    stack_hz: u32,
}

/// Start the server for the session writing `trace` (the caller holds the reentrancy
/// guard: session start). Returns the socket's path.
pub(crate) fn start(trace: &Path, sample_rate: u64, stack_hz: u32) -> io::Result<PathBuf> {
    let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if server.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a live-attach server already runs",
        ));
    }
    let trace = if trace.is_absolute() {
        trace.to_path_buf()
    } else {
        std::env::current_dir()?.join(trace)
    };
    let pid = std::process::id();
    let dir = socket_dir();
    let public = socket_path_in(&dir, pid);
    let listener = bind_private(&dir, &public, pid)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", public.display())))?;
    listener.set_nonblocking(true)?;
    STOP.store(false, Ordering::Release);
    if WAKE.load(Ordering::Acquire) < 0 {
        // SAFETY: eventfd has no preconditions; the fd is kept for the process's life.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        WAKE.store(fd, Ordering::Release);
    } else {
        // Reset the counter a previous session's stop left set.
        let mut b = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local from our non-blocking eventfd.
        unsafe { libc::read(WAKE.load(Ordering::Acquire), b.as_mut_ptr().cast(), b.len()) };
    }
    let start = Box::new(Server {
        listener,
        path: public.clone(),
        info: Info {
            trace: trace.to_string_lossy().into_owned(),
            sample_rate,
            stack_hz,
        },
        clients: Vec::new(),
    });
    let arg = Box::into_raw(start);
    let mut thread: libc::pthread_t = 0;
    // SAFETY: server_main has the pthread start signature and takes ownership of `arg`.
    let rc =
        unsafe { libc::pthread_create(&mut thread, std::ptr::null(), server_main, arg.cast()) };
    if rc != 0 {
        // SAFETY: the thread was not created, so `arg` is still ours.
        let s = unsafe { Box::from_raw(arg) };
        let _ = std::fs::remove_file(&s.path);
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: valid thread handle and a NUL-terminated name under 16 bytes.
    unsafe { libc::pthread_setname_np(thread, c"stackheap-ctl".as_ptr()) };
    *server = Some((thread as u64, public.clone()));
    Ok(public)
}

/// Stop the server (if one runs): close every connection, wait for its thread, remove
/// the socket. Called at session stop, before the recorder finishes.
pub(crate) fn stop() {
    let Some((thread, path)) = SERVER.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    STOP.store(true, Ordering::Release);
    let wake = WAKE.load(Ordering::Acquire);
    if wake >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes of a live local to our eventfd.
        unsafe { libc::write(wake, one.as_ptr().cast(), one.len()) };
    }
    // SAFETY: joining the thread we created, once (the handle was taken out above).
    unsafe { libc::pthread_join(thread as libc::pthread_t, std::ptr::null_mut()) };
    // The thread removes it too; this covers a thread that could not.
    let _ = std::fs::remove_file(path);
}

/// Bind, chmod 0600 and listen inside a fresh 0700 directory beside `public`, then move
/// the socket to `public` (replacing a stale socket of a dead process of the same pid).
fn bind_private(dir: &Path, public: &Path, pid: u32) -> io::Result<UnixListener> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let private = dir.join(format!(".stackheap-{pid}-{nonce:08x}"));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inner = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, public)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    result
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    /// `watch`: interval and when the next line is due.
    watch: Option<(Duration, Instant)>,
    closed: bool,
}

struct Server {
    listener: UnixListener,
    path: PathBuf,
    info: Info,
    clients: Vec<Client>,
}

extern "C" fn server_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // Everything this thread allocates is the profiler's own, except while it writes a
    // mark (see `Server::request`), which allocates nothing of its own.
    let mut guard = Guard::enter();
    // SAFETY: `arg` is the Box<Server> leaked by `start`, handed to this thread alone.
    let mut server = unsafe { Box::from_raw(arg as *mut Server) };
    server.run(&mut guard);
    let _ = std::fs::remove_file(&server.path);
    drop(server);
    drop(guard);
    std::ptr::null_mut()
}

impl Server {
    fn run(&mut self, guard: &mut Option<Guard>) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CLIENTS + 1);
        while !STOP.load(Ordering::Acquire) {
            let now = Instant::now();
            let mut timeout = Duration::from_millis(100);
            for c in &self.clients {
                if let Some((_, due)) = c.watch {
                    timeout = timeout.min(due.saturating_duration_since(now));
                }
            }
            fds.clear();
            fds.push(libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: WAKE.load(Ordering::Acquire),
                events: libc::POLLIN,
                revents: 0,
            });
            for c in &self.clients {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
            let n = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    timeout.as_millis().max(1) as libc::c_int,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if STOP.load(Ordering::Acquire) {
                break;
            }
            for (i, fd) in fds.iter().enumerate().skip(2) {
                if fd.revents != 0 {
                    self.read_client(i - 2, guard);
                }
            }
            let now = Instant::now();
            for i in 0..self.clients.len() {
                if let Some((every, due)) = self.clients[i].watch {
                    if now >= due {
                        self.clients[i].watch = Some((every, now + every));
                        let line = stats_json();
                        self.send(i, &line);
                    }
                }
            }
            self.clients.retain(|c| !c.closed);
            if fds[0].revents != 0 {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            // A client that stops reading must not stall the server for long.
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let mut c = Client {
                stream,
                input: Vec::new(),
                watch: None,
                closed: false,
            };
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            match peer_credentials(&c.stream).map(|(_, uid)| uid) {
                Some(uid) if uid == me => {}
                Some(uid) => {
                    let _ = c.stream.write_all(
                        error_json(&format!(
                            "refused: this socket serves uid {me} only, the connection is from uid {uid}"
                        ))
                        .as_bytes(),
                    );
                    continue;
                }
                None => {
                    let _ = c.stream.write_all(
                        error_json("refused: cannot read the peer's credentials").as_bytes(),
                    );
                    continue;
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                let _ = c
                    .stream
                    .write_all(error_json("refused: too many clients").as_bytes());
                continue;
            }
            let greeting = self.greeting();
            if c.stream.write_all(greeting.as_bytes()).is_err() {
                c.closed = true;
            }
            self.clients.push(c);
        }
    }

    fn greeting(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "{{\"stackheap\":{PROTOCOL},\"pid\":{},\"trace\":",
            std::process::id()
        );
        json_str(&mut s, &self.info.trace);
        let _ = writeln!(
            s,
            ",\"sample_rate\":{},\"stack_hz\":{}}}",
            self.info.sample_rate, self.info.stack_hz
        );
        s
    }

    fn read_client(&mut self, i: usize, guard: &mut Option<Guard>) {
        let mut buf = [0u8; 1024];
        let n = match self.clients[i].stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.clients[i].closed = true;
                return;
            }
            Ok(n) => n,
        };
        self.clients[i].input.extend_from_slice(&buf[..n]);
        while let Some(end) = self.clients[i].input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.clients[i].input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if !line.is_empty() {
                let reply = self.request(i, &line, guard);
                self.send(i, &reply);
            }
        }
        if self.clients[i].input.len() > MAX_LINE {
            self.send(i, &error_json("request line too long"));
            self.clients[i].closed = true;
        }
    }

    fn send(&mut self, i: usize, line: &str) {
        if self.clients[i].stream.write_all(line.as_bytes()).is_err() {
            self.clients[i].closed = true;
        }
    }

    fn request(&mut self, i: usize, line: &str, guard: &mut Option<Guard>) -> String {
        let (cmd, arg) = match line.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (line, ""),
        };
        if cmd != "watch" {
            self.clients[i].watch = None;
        }
        match cmd {
            "stats" => stats_json(),
            "watch" => match arg.parse::<u64>() {
                Ok(ms) => {
                    let every = Duration::from_millis(ms).max(MIN_WATCH);
                    self.clients[i].watch = Some((every, Instant::now() + every));
                    stats_json()
                }
                Err(_) => error_json("watch wants a number of milliseconds, e.g. watch 500"),
            },
            "mark" if arg.is_empty() => error_json("mark wants a name, e.g. mark warmup"),
            "mark" => {
                if !session::is_active() {
                    return error_json("profiling has stopped");
                }
                // `mark` takes the guard itself and writes from this thread's slot; it
                // allocates nothing of ours while the guard is released.
                drop(guard.take());
                crate::mark(arg);
                *guard = Guard::enter();
                let mut s = String::from("{\"mark\":");
                json_str(&mut s, arg);
                s.push_str("}\n");
                s
            }
            "snapshot" => self.snapshot(),
            _ => error_json(&format!(
                "unknown request {cmd:?} (stats, watch MS, mark NAME, snapshot)"
            )),
        }
    }

    fn snapshot(&self) -> String {
        let start = crate::alloc::limit::ROUNDS.load(Ordering::Acquire);
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        while crate::alloc::limit::ROUNDS.load(Ordering::Acquire) < start + 2 {
            if !session::is_active() {
                return error_json("profiling has stopped");
            }
            if Instant::now() >= deadline {
                return error_json("the recorder did not write the trace within 2 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let bytes = recorder::COMPLETE_BYTES.load(Ordering::Acquire);
        let mut s = String::from("{\"snapshot\":{\"trace\":");
        json_str(&mut s, &self.info.trace);
        let _ = writeln!(
            s,
            ",\"complete_bytes\":{bytes},\"time_ns\":{}}}}}",
            counters::snapshot().time_ns
        );
        s
    }
}

/// The peer's pid and uid (`SO_PEERCRED`) of a connected Unix socket.
pub fn peer_credentials(s: &UnixStream) -> Option<(i32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some((cred.pid, cred.uid))
}

fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    s.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |p| p * page)
}

fn thread_name(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// One `stats` line: the exact counters, RSS, the trace's complete length so far and
/// every registered thread's deepest stack against its size.
fn stats_json() -> String {
    let c = counters::snapshot();
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "{{\"stats\":{{\"time_ns\":{},\"live_bytes\":{},\"live_blocks\":{},\"total_allocs\":{},\
         \"total_frees\":{},\"total_bytes\":{},\"peak_bytes\":{},\"peak_time_ns\":{},\
         \"failed_allocs\":{},\"rss_bytes\":{},\"trace_bytes\":{},\"active\":{},\"threads\":[",
        c.time_ns,
        c.live_bytes,
        c.live_blocks,
        c.total_allocs,
        c.total_frees,
        c.total_bytes,
        c.peak_bytes,
        c.peak_time_ns,
        c.failed_allocs,
        rss_bytes(),
        recorder::COMPLETE_BYTES.load(Ordering::Acquire),
        session::is_active(),
    );
    let own = crate::stack::bounds::os_tid();
    let mut first = true;
    for i in 0..slots::HWM.load(Ordering::Acquire) {
        let slot = slots::slot(i);
        if slot.state.load(Ordering::Acquire) != slots::ACTIVE {
            continue;
        }
        let tid = slot.stack.tid.load(Ordering::Acquire);
        if tid == 0 || tid == own {
            continue;
        }
        let limit = slot.stack.bounds().map_or(0, |b| b.size() as u64);
        if !first {
            s.push(',');
        }
        first = false;
        let _ = write!(
            s,
            "{{\"thread\":{},\"tid\":{tid},\"name\":",
            slot.thread.load(Ordering::Acquire)
        );
        json_str(&mut s, &thread_name(tid));
        let _ = write!(
            s,
            ",\"max_depth\":{},\"limit\":{limit}}}",
            slot.stack.max_depth.load(Ordering::Acquire)
        );
    }
    s.push_str("]}}\n");
    s
}

fn error_json(msg: &str) -> String {
    let mut s = String::from("{\"error\":");
    json_str(&mut s, msg);
    s.push_str("}\n");
    s
}

/// Append `v` as a JSON string.
fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn env_values() {
        for v in ["1", "true", "YES", "on "] {
            assert!(env_enabled(v), "{v}");
        }
        for v in ["0", "", "no", "2"] {
            assert!(!env_enabled(v), "{v}");
        }
    }

    #[test]
    fn stats_line_is_one_json_object() {
        let line = stats_json();
        assert!(
            line.starts_with("{\"stats\":{") && line.ends_with("]}}\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }
}
