//! `stackheap run --pid PID`: profile a process that is already running and was not
//! started by stackheap, from now on, as `heaptrack -p` does.
//!
//! The CLI writes the session's configuration to a file in a private directory beside
//! the output (`OUT/.stackheap-attach-PID/`: `config`, the `control` FIFO, `status`),
//! loads libstackheap_preload.so into the process and calls its
//! `stackheap_inject_start(config)` (see `inject`: gdb, else our ptrace injector). The
//! library rewrites the process's bindings of the malloc family to its shims and
//! records into the trace until the process exits — or until stackheap is stopped
//! (Ctrl-C, SIGTERM, or stackheap itself killed: the control FIFO closes). Then the
//! library restores the bindings, finishes the trace and leaves the process running,
//! and the report is written as for `run`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::inject::{self, Choice};
use crate::run::RunArgs;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// How the process's session ended.
enum End {
    /// The process exited (the library finished the trace at its exit).
    Exited,
    /// stackheap was stopped: the library detached and finished the trace.
    Detached,
    /// Stopped, but the library did not confirm in time.
    NoAnswer,
}

/// `stackheap run --pid PID`.
pub fn run(pid: u32, args: &RunArgs) -> Result<ExitCode> {
    let pid_i = i32::try_from(pid).map_err(|_| anyhow!("invalid pid {pid}"))?;
    if pid_i <= 0 {
        bail!("invalid pid {pid}");
    }
    if pid == std::process::id() {
        bail!("cannot attach to stackheap itself");
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no process with pid {pid}");
    }
    let choice = match args.inject.as_deref().unwrap_or("auto") {
        "gdb" => Choice::Gdb,
        "ptrace" => Choice::Ptrace,
        _ => Choice::Auto,
    };
    let lib = crate::preload::library()?;
    crate::run::prepare_out(&args.out)?;
    let out = std::fs::canonicalize(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let trace_pattern = args
        .trace
        .clone()
        .unwrap_or_else(|| out.join("stackheap-%p.trace"));
    let trace = PathBuf::from(
        trace_pattern
            .to_string_lossy()
            .replace("%p", &pid.to_string()),
    );
    let trace = if trace.is_absolute() {
        trace
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(trace)
    };
    if trace.symlink_metadata().is_ok() {
        bail!(
            "{} already exists (remove it or choose another --trace)",
            trace.display()
        );
    }

    let dir = Workdir::create(&out, pid)?;
    let config = dir.path.join("config");
    let control = dir.path.join("control");
    let status = dir.path.join("status");
    let c_control = CString::new(control.as_os_str().as_bytes())?;
    // SAFETY: mkfifo with a NUL-terminated path in our fresh private directory.
    if unsafe { libc::mkfifo(c_control.as_ptr(), 0o600) } != 0 {
        bail!(
            "cannot create {}: {}",
            control.display(),
            std::io::Error::last_os_error()
        );
    }
    // Held open read-write: never blocks, and the library's reads end when we close
    // it — also when stackheap is killed.
    // SAFETY: open by a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(c_control.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        bail!(
            "cannot open {}: {}",
            control.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a fresh descriptor we own.
    let control_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut lines = vec![
        ("trace", trace.to_string_lossy().into_owned()),
        ("sample", args.sample.to_string()),
        ("stack_hz", args.stack_hz.to_string()),
        ("control", control.to_string_lossy().into_owned()),
        ("status", status.to_string_lossy().into_owned()),
    ];
    if let Some(limit) = args.limit {
        lines.push(("limit", limit.to_string()));
    }
    inject::write_config(&config, &lines)?;

    // Ctrl-C and SIGTERM are for us now: stop recording, keep the process.
    // SAFETY: installing a handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let injected = inject::inject(pid_i, &lib, &config, choice)?;
    if injected.code != 0 {
        let why = std::fs::read_to_string(&status)
            .ok()
            .map(|s| s.trim().trim_start_matches("error: ").to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("its start returned code {}", injected.code));
        bail!(
            "loaded into {pid} via {} but could not start recording: {why}",
            injected.route
        );
    }
    match &injected.gdb_failure {
        Some(why) => eprintln!(
            "stackheap: attached to {pid} via {} (gdb: {why}); recording to {} — Ctrl-C stops recording and leaves the process running",
            injected.route,
            trace.display()
        ),
        None => eprintln!(
            "stackheap: attached to {pid} via {}; recording to {} — Ctrl-C stops recording and leaves the process running",
            injected.route,
            trace.display()
        ),
    }

    let end = wait(pid_i, control_fd, &status)?;
    match end {
        End::Exited => eprintln!("stackheap: process {pid} exited"),
        End::Detached => eprintln!("stackheap: detached from {pid}; it keeps running"),
        End::NoAnswer => eprintln!(
            "stackheap: process {pid} did not confirm the detach in time; the trace may be incomplete"
        ),
    }
    drop(dir);
    if !trace.exists() {
        bail!("process {pid} wrote no trace at {}", trace.display());
    }
    if !args.no_report {
        let analysis = crate::analyze(&trace)?;
        let files = crate::write_report(&analysis, &args.out)?;
        print!("{}", stackheap_report::summary_text(&analysis));
        println!("\ntrace: {}", trace.display());
        crate::print_files(&files);
    } else {
        println!("trace: {}", trace.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Wait for the process to exit or for a stop request; on a stop, tell the library and
/// wait for its status.
fn wait(pid: i32, control: OwnedFd, status: &Path) -> Result<End> {
    // SAFETY: pidfd_open takes a pid and flags; -1 on error (then /proc is polled).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh descriptor we own (when valid).
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    let exited = |timeout_ms: i32| -> bool {
        match &pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polling one descriptor of ours.
                let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
                n > 0 && p.revents != 0
            }
            None => {
                std::thread::sleep(Duration::from_millis(timeout_ms as u64));
                !alive(pid)
            }
        }
    };
    loop {
        if exited(200) {
            return Ok(End::Exited);
        }
        if STOP.load(Ordering::SeqCst) {
            break;
        }
    }
    // SAFETY: writing one byte to our FIFO descriptor.
    unsafe { libc::write(control.as_raw_fd(), b"q".as_ptr().cast(), 1) };
    drop(control);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(status) {
            let s = s.trim();
            if s == "ok" {
                return Ok(End::Detached);
            }
            return Err(anyhow!(
                "detaching from {pid}: {}",
                s.trim_start_matches("error: ")
            ));
        }
        if exited(50) {
            return Ok(End::Exited);
        }
    }
    Ok(End::NoAnswer)
}

/// The process exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The private directory of one attach, removed when dropped.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn create(out: &Path, pid: u32) -> Result<Workdir> {
        let path = out.join(format!(".stackheap-attach-{pid}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Workdir { path })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
