//! Load the preload library into a running process and call its start function, as
//! `heaptrack -p` does: with gdb first (`call dlopen(…)`), and when gdb is missing or
//! cannot make inferior calls on this machine, with a small ptrace injector of our own.
//!
//! The ptrace route (x86-64 Linux): seize the process's main thread and interrupt it;
//! save its general registers and its whole extended FPU state (`NT_X86_XSTATE`, of the
//! size the kernel reports: gdb 13's fixed-size buffer is refused on CPUs with AMX,
//! "Couldn't write extended state status: Bad address"); write the argument string
//! below the red zone of its stack, push a return address of 0 and jump to the
//! function (`dlopen`, then `stackheap_inject_start`); the return faults at address 0,
//! which stops the thread again with SIGSEGV, and `rax` is the result. Then every
//! register is put back and the thread detached. A thread interrupted inside a system
//! call (`nanosleep`, `read`) had `rax` = -ERESTART… and `orig_rax` = the call: the
//! injected call runs with `orig_rax` = -1 (no restart), and restoring the saved
//! registers before detaching lets the kernel restart the interrupted call as if
//! nothing had happened.
//!
//! Function addresses come from the target's own mappings (`/proc/PID/maps`) and the
//! dynamic symbol tables of the mapped files (glibc ≥ 2.34 has `dlopen` in libc.so.6).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol};

/// How the library got into the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// gdb's inferior calls.
    Gdb,
    /// Our own ptrace injector.
    Ptrace,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Gdb => "gdb",
            Route::Ptrace => "ptrace",
        })
    }
}

/// Which routes to try (`--inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// gdb, then ptrace if gdb is missing or fails.
    Auto,
    /// gdb only.
    Gdb,
    /// ptrace only.
    Ptrace,
}

/// What a route returned: the start function's result code.
pub struct Injected {
    /// The route that worked.
    pub route: Route,
    /// `stackheap_inject_start`'s return value (0 = recording).
    pub code: i64,
    /// Why gdb was not used, when ptrace was (one line).
    pub gdb_failure: Option<String>,
}

/// RTLD_NOW.
const RTLD_NOW: i64 = 2;
/// How long a remote call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Load `lib` into `pid` and call `stackheap_inject_start(config)` there.
pub fn inject(pid: i32, lib: &Path, config: &Path, choice: Choice) -> Result<Injected> {
    let mut gdb_failure = None;
    if choice == Choice::Auto {
        // A failed inferior call is not harmless (the interrupted system call of the
        // target returns EINTR instead of restarting): try gdb on a scratch process
        // first, and on the target only if it works.
        if let Err(why) = gdb_probe() {
            tracing::info!(%why, "gdb cannot make inferior calls here, using ptrace");
            gdb_failure = Some(why);
        }
    }
    if choice != Choice::Ptrace && gdb_failure.is_none() {
        match gdb(pid, lib, config) {
            Ok(code) => {
                return Ok(Injected {
                    route: Route::Gdb,
                    code,
                    gdb_failure: None,
                })
            }
            Err(GdbError::Fatal(e)) => return Err(e),
            Err(GdbError::Unusable(why)) => {
                if choice == Choice::Gdb {
                    bail!("cannot attach to {pid} with gdb: {why}");
                }
                tracing::info!(%why, "gdb route unusable, trying ptrace");
                gdb_failure = Some(why);
            }
        }
    }
    let code = ptrace_inject(pid, lib, config).map_err(|e| match &gdb_failure {
        Some(g) => anyhow!("{e:#} (gdb: {g})"),
        None => e,
    })?;
    Ok(Injected {
        route: Route::Ptrace,
        code,
        gdb_failure,
    })
}

// ---------------------------------------------------------------------------------
// gdb

enum GdbError {
    /// gdb could not do it (missing, no inferior calls here): try ptrace.
    Unusable(String),
    /// gdb loaded the library but its start failed: do not try again.
    Fatal(anyhow::Error),
}

/// Run gdb with `commands` on `pid`; its stdout and stderr.
fn run_gdb(pid: i32, commands: &[String]) -> Result<(String, String), String> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-p", &pid.to_string(), "-batch", "-nx", "-q"])
        .args(["-ex", "set confirm off"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("gdb is not installed".into())
        }
        Err(e) => return Err(format!("cannot run gdb: {e}")),
    };
    let deadline = Instant::now() + CALL_TIMEOUT * 2;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("gdb did not finish in time".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for gdb: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading gdb's output: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    tracing::debug!(%stdout, %stderr, "gdb");
    Ok((stdout, stderr))
}

/// gdb's complaint, in one line.
fn gdb_complaint(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| {
            l.contains("Couldn't")
                || l.contains("ptrace")
                || l.contains("No symbol")
                || l.starts_with("warning: process")
                || l.contains("not permitted")
        })
        .or_else(|| stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("no result from its inferior calls")
        .to_string()
}

/// Can gdb make an inferior call here? Tried on a scratch process of ours.
fn gdb_probe() -> Result<(), String> {
    let mut scratch = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a scratch process to probe gdb: {e}"))?;
    let pid = scratch.id() as i32;
    // Wait until it runs sleep (not the fork's copy of stackheap).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = run_gdb(pid, &["print (long)getpid()".to_string()]);
    let _ = scratch.kill();
    let _ = scratch.wait();
    let (stdout, stderr) = r?;
    let want = format!("= {pid}");
    if stdout
        .lines()
        .any(|l| l.starts_with('$') && l.trim_end().ends_with(&want))
    {
        Ok(())
    } else {
        Err(gdb_complaint(&stderr))
    }
}

fn gdb(pid: i32, lib: &Path, config: &Path) -> Result<i64, GdbError> {
    let (Some(lib_s), Some(cfg_s)) = (lib.to_str(), config.to_str()) else {
        return Err(GdbError::Unusable("paths are not UTF-8".into()));
    };
    if lib_s.contains(['"', '\\']) || cfg_s.contains(['"', '\\']) {
        return Err(GdbError::Unusable("paths contain quotes".into()));
    }
    let (stdout, stderr) = run_gdb(
        pid,
        &[
            format!("call (void*)dlopen(\"{lib_s}\", {RTLD_NOW})"),
            // Through dlsym on the handle: gdb need not have read the new library's
            // symbols yet.
            format!("call (int)((int (*)(const char *))dlsym($1, \"stackheap_inject_start\"))(\"{cfg_s}\")"),
        ],
    )
    .map_err(GdbError::Unusable)?;
    // `$1 = (void *) 0x7f…` then `$2 = 0`.
    let values: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix('$'))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v))
        .collect();
    let handle_ok = values
        .first()
        .is_some_and(|v| v.contains("0x") && !v.ends_with(" 0x0"));
    match (handle_ok, values.get(1)) {
        (true, Some(v)) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| GdbError::Fatal(anyhow!("gdb printed {v:?} for the start call"))),
        _ => {
            let why = gdb_complaint(&stderr);
            if handle_ok {
                return Err(GdbError::Fatal(anyhow!(
                    "gdb loaded the library but could not call its start: {why}"
                )));
            }
            Err(GdbError::Unusable(why))
        }
    }
}

// ---------------------------------------------------------------------------------
// ptrace

/// NT_X86_XSTATE: the whole XSAVE area (x87, SSE, AVX, AVX-512, AMX…).
const NT_X86_XSTATE: libc::c_int = 0x202;

/// The main thread of `pid`, seized; detached when dropped.
struct Tracee {
    tid: i32,
    attached: bool,
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if self.attached {
            // SAFETY: detaching a thread we seized; no memory is passed.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0usize, 0usize) };
        }
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Wait for the next stop of the tracee (with a deadline): `Ok(status)`.
fn wait_stop(tid: i32, deadline: Instant) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a thread we trace, writing into our own int.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == tid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                bail!("the process ended while stackheap was attaching");
            }
            return Ok(status);
        }
        if r < 0 {
            let e = errno();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("waitpid: {e}");
        }
        if Instant::now() > deadline {
            bail!("the process did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn get_regs(tid: i32) -> Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the tracee is stopped; `regs` is ours.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut regs) };
    if r < 0 {
        bail!("PTRACE_GETREGS: {}", errno());
    }
    Ok(regs)
}

fn set_regs(tid: i32, regs: &libc::user_regs_struct) -> Result<()> {
    // SAFETY: the tracee is stopped; the kernel reads `regs`.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, regs) };
    if r < 0 {
        bail!("PTRACE_SETREGS: {}", errno());
    }
    Ok(())
}

/// The thread's FPU state: the whole XSAVE area when the kernel gives it, and the
/// FXSAVE area (x87 and SSE) as a fallback for the restore.
struct FpState {
    xstate: Option<Vec<u8>>,
    fx: Box<libc::user_fpregs_struct>,
}

fn get_fp(tid: i32) -> Result<FpState> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into our buffer and updates
    // iov_len to the size of the state.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_X86_XSTATE, &mut iov) };
    let xstate = (r == 0).then(|| {
        buf.truncate(iov.iov_len);
        buf
    });
    // SAFETY: plain data, filled by the kernel below.
    let mut fx: Box<libc::user_fpregs_struct> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: the tracee is stopped; the kernel writes one user_fpregs_struct.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETFPREGS, tid, 0usize, &mut *fx) };
    if r < 0 && xstate.is_none() {
        bail!("cannot read the thread's FPU state: {}", errno());
    }
    Ok(FpState { xstate, fx })
}

fn set_fp(tid: i32, fp: &mut FpState) -> Result<()> {
    if let Some(buf) = fp.xstate.as_mut() {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: the kernel reads iov_len bytes of the state it gave us.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, NT_X86_XSTATE, &mut iov) };
        if r == 0 {
            return Ok(());
        }
        tracing::warn!(error = %errno(), "restoring the XSAVE state failed; restoring x87/SSE only");
    }
    // SAFETY: the kernel reads one user_fpregs_struct.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETFPREGS, tid, 0usize, &mut *fp.fx) };
    if r < 0 {
        bail!("cannot restore the thread's FPU state: {}", errno());
    }
    Ok(())
}

/// Write `bytes` at `addr` in the tracee, a word at a time (`addr` 8-aligned, the
/// last word padded with zeroes).
fn poke(tid: i32, addr: u64, bytes: &[u8]) -> Result<()> {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let word = u64::from_ne_bytes(w);
        // SAFETY: writes one word of the stopped tracee's memory (its stack, below
        // the red zone); no memory of ours is passed.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_POKEDATA,
                tid,
                (addr + 8 * i as u64) as usize,
                word as usize,
            )
        };
        if r < 0 {
            bail!("cannot write into the process: {}", errno());
        }
    }
    Ok(())
}

/// Call `func(arg_string, arg2)` in the stopped tracee and return `rax`. `saved` are
/// the registers the thread had when it was interrupted.
fn remote_call(
    tid: i32,
    saved: &libc::user_regs_struct,
    func: u64,
    arg: &[u8],
    arg2: u64,
) -> Result<u64> {
    let mut s = arg.to_vec();
    s.push(0);
    // Below the red zone (128 bytes) of the interrupted code, 16-byte aligned.
    let str_addr = (saved.rsp - 128 - s.len() as u64 - 64) & !15;
    poke(tid, str_addr, &s)?;
    // At a call's first instruction rsp + 8 is 16-byte aligned; the return address 0
    // faults back to us.
    let rsp = ((str_addr - 256) & !15) - 8;
    poke(tid, rsp, &0u64.to_ne_bytes())?;
    let mut regs = *saved;
    regs.rip = func;
    regs.rdi = str_addr;
    regs.rsi = arg2;
    regs.rsp = rsp;
    regs.rax = 0;
    // Not in a system call any more: no restart of the interrupted one now.
    regs.orig_rax = u64::MAX;
    // The ABI wants the direction flag clear at a call.
    regs.eflags &= !(1 << 10);
    set_regs(tid, &regs)?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut sig = 0;
    loop {
        // SAFETY: resuming the stopped tracee, delivering `sig` (0 = none).
        let r = unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, sig as usize) };
        if r < 0 {
            bail!("PTRACE_CONT: {}", errno());
        }
        let status = match wait_stop(tid, deadline) {
            Ok(s) => s,
            Err(e) => {
                // Stuck (a lock held by the interrupted code?): stop it and give up.
                // SAFETY: interrupting the seized tracee.
                unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
                let _ = wait_stop(tid, Instant::now() + Duration::from_secs(2));
                return Err(e.context("the injected call did not return"));
            }
        };
        let stop_sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if event != 0 {
            // A group-stop or an interrupt: keep going.
            sig = 0;
            continue;
        }
        if stop_sig == libc::SIGSEGV {
            let now = get_regs(tid)?;
            if now.rip == 0 {
                return Ok(now.rax);
            }
            bail!(
                "the injected call crashed at {:#x} (SIGSEGV); the process may be damaged",
                now.rip
            );
        }
        // Someone else's signal: deliver it (the handler runs on top of our call).
        sig = stop_sig;
    }
}

/// A mapped file of the target: its path and load bias.
struct Mapped {
    path: PathBuf,
    bias: u64,
}

/// Find the first mapping whose path satisfies `want` and compute its load bias.
fn mapped(pid: i32, want: impl Fn(&str) -> bool) -> Result<Option<Mapped>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    for line in maps.lines() {
        let f: Vec<&str> = line.splitn(6, char::is_whitespace).collect();
        if f.len() < 6 {
            continue;
        }
        let path = f[5].trim();
        if !path.starts_with('/') || !want(path) || f[2] != "00000000" {
            continue;
        }
        let start = u64::from_str_radix(f[0].split('-').next().unwrap_or(""), 16)?;
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {path} (mapped in {pid})"))?;
        let file = object::File::parse(&*data).with_context(|| format!("{path}: not ELF"))?;
        let first = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        return Ok(Some(Mapped {
            path: PathBuf::from(path),
            bias: start - first,
        }));
    }
    Ok(None)
}

/// Runtime address of the dynamic symbol `name` of a mapped file.
fn symbol(m: &Mapped, name: &str) -> Result<Option<u64>> {
    let data =
        std::fs::read(&m.path).with_context(|| format!("cannot read {}", m.path.display()))?;
    let file =
        object::File::parse(&*data).with_context(|| format!("{}: not ELF", m.path.display()))?;
    Ok(file
        .dynamic_symbols()
        .find(|s| s.is_definition() && s.name() == Ok(name))
        .map(|s| m.bias + s.address()))
}

/// The ptrace route.
fn ptrace_inject(pid: i32, lib: &Path, config: &Path) -> Result<i64> {
    if !crate::attach_pid::alive(pid) {
        bail!("process {pid} has exited");
    }
    let libc_map = mapped(pid, |p| {
        p.rsplit('/')
            .next()
            .is_some_and(|n| n == "libc.so.6" || (n.starts_with("libc-") && n.ends_with(".so")))
    })?
    .ok_or_else(|| anyhow!("process {pid} has no glibc libc.so.6 mapped (statically linked?)"))?;
    let dlopen = symbol(&libc_map, "dlopen")?.ok_or_else(|| {
        anyhow!(
            "{} has no dlopen (glibc older than 2.34?)",
            libc_map.path.display()
        )
    })?;
    let tid = pid;
    // SAFETY: PTRACE_SEIZE takes no memory; it fails cleanly without permission.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) };
    if r < 0 {
        let e = errno();
        if e.raw_os_error() == Some(libc::EPERM) {
            bail!("{}", permission_hint(pid));
        }
        bail!("cannot attach to process {pid} with ptrace: {e}");
    }
    let mut tracee = Tracee {
        tid,
        attached: true,
    };
    // SAFETY: interrupting the seized thread; no memory passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
    if r < 0 {
        bail!("PTRACE_INTERRUPT: {}", errno());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    // Signals arriving before the interrupt stop are delivered as usual.
    loop {
        let status = wait_stop(tid, deadline)?;
        if (status >> 16) & 0xff != 0 {
            break;
        }
        // SAFETY: resuming with the signal that stopped it.
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                tid,
                0usize,
                libc::WSTOPSIG(status) as usize,
            )
        };
    }
    let saved = get_regs(tid)?;
    let mut fp = get_fp(tid)?;
    tracing::debug!(
        xstate_bytes = fp.xstate.as_ref().map_or(0, Vec::len),
        "saved FPU state"
    );
    tracing::debug!(
        rip = saved.rip,
        rax = saved.rax as i64,
        orig_rax = saved.orig_rax as i64,
        "interrupted"
    );
    let result = (|| -> Result<i64> {
        let handle = remote_call(
            tid,
            &saved,
            dlopen,
            lib.as_os_str().as_encoded_bytes(),
            RTLD_NOW as u64,
        )?;
        if handle == 0 {
            bail!(
                "dlopen of {} failed in process {pid} (can it read the file?)",
                lib.display()
            );
        }
        let lib_name = lib.to_string_lossy().into_owned();
        let ours = mapped(pid, |p| p == lib_name)?
            .ok_or_else(|| anyhow!("{} is not mapped in {pid} after dlopen", lib.display()))?;
        let start = symbol(&ours, "stackheap_inject_start")?
            .ok_or_else(|| anyhow!("{} has no stackheap_inject_start", lib.display()))?;
        let code = remote_call(tid, &saved, start, config.as_os_str().as_encoded_bytes(), 0)?;
        Ok(code as i32 as i64)
    })();
    // Put everything back, whatever happened: registers (with the interrupted system
    // call's restart state) and the FPU state.
    set_regs(tid, &saved)?;
    set_fp(tid, &mut fp)?;
    // SAFETY: detaching the thread we seized; it continues where it was.
    let r = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize) };
    tracee.attached = r < 0;
    result
}

/// One line on why ptrace was refused.
pub fn permission_hint(pid: i32) -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .ok();
    match scope.as_deref() {
        Some(s) if s != "0" => format!(
            "cannot attach to process {pid}: ptrace not permitted (kernel.yama.ptrace_scope = {s}: run as root or with CAP_SYS_PTRACE, or set /proc/sys/kernel/yama/ptrace_scope to 0)"
        ),
        _ => format!(
            "cannot attach to process {pid}: ptrace not permitted (it belongs to another user or is not dumpable: run as its user, as root or with CAP_SYS_PTRACE)"
        ),
    }
}

/// Write the configuration file the injected library reads.
pub fn write_config(path: &Path, lines: &[(&str, String)]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    for (k, v) in lines {
        if v.contains('\n') {
            bail!("{k} contains a newline: {v:?}");
        }
        writeln!(f, "{k}={v}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dlopen_of_a_running_process_as_its_loader_does() {
        let me = std::process::id() as i32;
        let libc_map = mapped(me, |p| p.ends_with("/libc.so.6"))
            .unwrap()
            .expect("libc.so.6 mapped");
        let found = symbol(&libc_map, "dlopen").unwrap().expect("dlopen");
        // SAFETY: dlsym with a NUL-terminated name.
        let real = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"dlopen".as_ptr()) } as u64;
        assert_eq!(found, real);
        assert!(symbol(&libc_map, "no_such_symbol_here").unwrap().is_none());
    }

    #[test]
    fn a_process_that_is_gone_is_one_clear_error() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let e = ptrace_inject(pid, Path::new("/nonexistent.so"), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has exited"), "{e}");
    }
}
