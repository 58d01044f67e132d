//! Starting and stopping a profiling session: from the environment on the first
//! allocation, or from code through [`crate::Profiler`]. Also the process-exit flush.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::alloc::counters;
use crate::alloc::guard::Guard;
use crate::alloc::sampler::SampledSet;
use crate::format::{self, Header};
use crate::record::recorder::{self, Recorder};
use crate::record::slots;
use crate::stack::unwind::{self, Unwinder};
use crate::Error;

/// No allocation has looked at the environment yet.
pub const UNINIT: u8 = 0;
/// One thread is reading the environment / starting.
pub const INITIALIZING: u8 = 1;
/// Installed, not profiling.
pub const DORMANT: u8 = 2;
/// Profiling.
pub const ACTIVE: u8 = 3;
/// Stopping: no new records.
pub const STOPPING: u8 = 4;
/// Not profiling, but a `testing::HeapScope` has been opened: the hooks stay awake and
/// count into the scopes of their threads.
pub const SCOPED: u8 = 5;

/// The profiler's state; the hot path reads it with one relaxed load.
pub static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Incremented at every start; thread slots of an older session are re-registered.
pub static SESSION: AtomicU32 = AtomicU32::new(0);
/// 0 = counters only, 1 = every allocation, N = mean bytes between samples.
pub static SAMPLE_RATE: AtomicU64 = AtomicU64::new(1);

static SAMPLED: SampledSet = SampledSet::new();
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);
static AT_EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);
/// Pid of the process that runs the session: a forked child does not (it has no
/// recorder thread), so it turns dormant and never joins or writes.
static SESSION_PID: AtomicU32 = AtomicU32::new(0);

struct Running {
    recorder: recorder::Handle,
}

/// The set of sampled blocks (sampled mode).
#[inline(always)]
pub fn sampled_set() -> &'static SampledSet {
    &SAMPLED
}

/// Everything a session needs; built by [`crate::ProfilerBuilder`] or from the environment.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Trace file to create (must not exist).
    pub trace_path: PathBuf,
    /// 0 = counters only, 1 = every allocation, N = mean bytes between samples.
    pub sample_rate: u64,
    /// Force an unwinder; `None` picks frame pointers when they work.
    pub unwinder: Option<Unwinder>,
    /// Heap limit in bytes (simulated out-of-memory); 0 = none.
    pub limit: u64,
    /// Stack-depth sampler rate in Hz (0 = off).
    pub stack_hz: u32,
    /// Serve the live-attach socket ([`crate::control`]).
    pub live: bool,
}

/// Default rate of the stack-depth sampler, Hz.
pub const DEFAULT_STACK_HZ: u32 = 250;

fn getenv(name: &CStr) -> Option<String> {
    // SAFETY: getenv reads the environment; the returned pointer is valid until the
    // environment changes, and we copy it at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Parse a byte size such as `524288`, `512K`, `512KiB`, `4MiB`, `1G`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Expand `%p` to the pid.
pub fn expand_path(p: &str) -> PathBuf {
    PathBuf::from(p.replace("%p", &std::process::id().to_string()))
}

fn say(msg: &str) {
    let line = format!("stackheap: {msg}\n");
    // SAFETY: writes a byte buffer we own to fd 2; no lock taken.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Read `STACKHEAP_*` and start if `STACKHEAP_TRACE` is set. Runs once, from the first
/// allocation the profiler sees.
#[cold]
#[inline(never)]
pub fn init_from_env() {
    let Some(_g) = Guard::enter() else { return };
    if STATE
        .compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let Some(path) = getenv(c"STACKHEAP_TRACE").filter(|p| !p.is_empty()) else {
        STATE.store(idle_state(), Ordering::Release);
        return;
    };
    let sample_rate = match getenv(c"STACKHEAP_SAMPLE") {
        None => 1,
        Some(s) => match parse_size(&s) {
            Some(n) => n,
            None => {
                say(&format!("invalid STACKHEAP_SAMPLE={s:?} (want bytes, e.g. 524288 or 512KiB); profiling is off"));
                STATE.store(idle_state(), Ordering::Release);
                return;
            }
        },
    };
    let unwinder = match getenv(c"STACKHEAP_UNWIND").as_deref() {
        Some("fp") => Some(Unwinder::FramePointers),
        Some("backtrace" | "dwarf") => Some(Unwinder::Backtrace),
        _ => None,
    };
    let limit = match getenv(c"STACKHEAP_LIMIT") {
        None => 0,
        Some(s) => match parse_size(&s) {
            Some(n) => n,
            None => {
                say(&format!(
                    "invalid STACKHEAP_LIMIT={s:?} (want bytes, e.g. 256MiB); profiling is off"
                ));
                STATE.store(idle_state(), Ordering::Release);
                return;
            }
        },
    };
    let stack_hz = match getenv(c"STACKHEAP_STACK_HZ") {
        None => DEFAULT_STACK_HZ,
        Some(s) => match s.trim().parse::<u32>() {
            Ok(n) => n.min(100_000),
            Err(_) => {
                say(&format!("invalid STACKHEAP_STACK_HZ={s:?} (want a number of Hz, 0 = off); profiling is off"));
                STATE.store(idle_state(), Ordering::Release);
                return;
            }
        },
    };
    let cfg = SessionConfig {
        trace_path: expand_path(&path),
        sample_rate,
        unwinder,
        limit,
        stack_hz,
        live: getenv(c"STACKHEAP_LIVE").is_some_and(|v| crate::control::env_enabled(&v)),
    };
    STATE.store(idle_state(), Ordering::Release);
    if let Err(e) = start(&cfg) {
        say(&format!("{e}; profiling is off"));
    }
}

fn cmdline() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn create_trace(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
        .map_err(|source| Error::Create {
            path: path.to_owned(),
            source,
        })
}

/// Start a session. The caller holds the reentrancy guard or is outside the allocator.
pub fn start(cfg: &SessionConfig) -> Result<(), Error> {
    let _g = Guard::enter();
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if running.is_some() || STATE.load(Ordering::Acquire) == ACTIVE {
        return Err(Error::AlreadyRunning);
    }
    if !slots::map_once() || (cfg.sample_rate > 1 && !SAMPLED.map_once()) {
        return Err(Error::Map);
    }
    let file = create_trace(&cfg.trace_path)?;
    let bounds = crate::stack::bounds::current().unwrap_or_default();
    let unwinder = cfg.unwinder.unwrap_or_else(|| {
        if unwind::frame_pointers_work(bounds) {
            Unwinder::FramePointers
        } else {
            Unwinder::Backtrace
        }
    });
    unwind::set(unwinder);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let header = Header {
        pid: std::process::id(),
        start_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        page_size,
        sample_rate: cfg.sample_rate,
        stack_hz: cfg.stack_hz,
        flags: if unwinder == Unwinder::FramePointers {
            format::flags::FRAME_POINTERS
        } else {
            0
        },
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        argv: cmdline(),
    };
    counters::reset();
    counters::solo_reset();
    slots::reset_all();
    slots::SEQ.store(0, Ordering::SeqCst);
    if cfg.sample_rate > 1 {
        SAMPLED.clear();
    }
    SAMPLE_RATE.store(cfg.sample_rate, Ordering::Relaxed);
    crate::alloc::limit::reset(cfg.limit);
    SESSION.fetch_add(1, Ordering::AcqRel);
    let rec = Recorder::new(file, &header, Instant::now(), page_size).map_err(|source| {
        Error::Create {
            path: cfg.trace_path.clone(),
            source,
        }
    })?;
    let handle = recorder::spawn(rec).map_err(|source| Error::Create {
        path: cfg.trace_path.clone(),
        source,
    })?;
    *running = Some(Running { recorder: handle });
    SESSION_PID.store(std::process::id(), Ordering::Release);
    STATE.store(ACTIVE, Ordering::SeqCst);
    crate::stack::fault::install();
    crate::stack::sampler::start(cfg.stack_hz);
    if cfg.live {
        if let Err(e) = crate::control::start(&cfg.trace_path, cfg.sample_rate, cfg.stack_hz) {
            say(&format!("cannot serve the live-attach socket: {e}"));
        }
    }
    if !AT_EXIT_REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registering plain extern "C" fns; atexit and pthread_atfork copy the
        // pointers.
        unsafe {
            libc::atexit(at_exit);
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    }
    Ok(())
}

/// True while a session records.
pub fn is_active() -> bool {
    STATE.load(Ordering::Acquire) == ACTIVE
}

/// Stop the session: no new records, drain every thread, write the trailer, close.
pub fn stop() -> Result<(), Error> {
    stop_session(false)
}

/// [`stop`] when the process is about to exit (atexit, `_exit`): the same, except that
/// the recorder's buffers are not freed (see `recorder::Handle::finish`).
pub fn stop_at_exit() -> Result<(), Error> {
    stop_session(true)
}

fn stop_session(exiting: bool) -> Result<(), Error> {
    let _g = Guard::enter();
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(run) = running.take() else {
        return Err(Error::NotRunning);
    };
    if SESSION_PID.load(Ordering::Acquire) != std::process::id() {
        // A forked child: the recorder thread is the parent's.
        std::mem::forget(run);
        return Err(Error::NotRunning);
    }
    crate::control::stop();
    crate::stack::sampler::stop();
    STATE.store(STOPPING, Ordering::SeqCst);
    // Pairs with the RMW in `Slot::begin`: a thread that took its number before this
    // is seen in `in_flight` below; one after it sees STOPPING.
    slots::SEQ.fetch_add(0, Ordering::AcqRel);
    // The solo thread takes its number with plain stores: see `Slot::begin`.
    counters::stop_barrier();
    // Wait for records already announced to be published (or abandoned).
    // A record takes microseconds; a thread stuck inside one for a second (stopped by a
    // debugger, frozen in a signal handler) is not waited for: its record is lost.
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    for i in 0..slots::HWM.load(Ordering::Acquire) {
        let s = slots::slot(i);
        while s.in_flight.load(Ordering::SeqCst) != slots::NONE && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    crate::alloc::limit::reset(0);
    let result = run.recorder.finish(exiting);
    slots::reset_all();
    STATE.store(idle_state(), Ordering::Release);
    result.map_err(Error::Write)
}

/// The state when not profiling: dormant, or awake for the testing scopes.
fn idle_state() -> u8 {
    if crate::testing::EVER.load(Ordering::Acquire) {
        SCOPED
    } else {
        DORMANT
    }
}

/// A testing scope opens: read the environment if nobody has yet, then keep the hooks
/// awake from now on (unless a session runs, which keeps them awake anyway).
pub(crate) fn wake_for_testing() {
    crate::testing::EVER.store(true, Ordering::Release);
    if STATE.load(Ordering::Acquire) == UNINIT {
        init_from_env();
    }
    // Another thread may be reading the environment: it ends in the idle state, which
    // sees EVER; wait for it so that the exchange below cannot be lost.
    while STATE.load(Ordering::Acquire) == INITIALIZING {
        std::thread::yield_now();
    }
    let _ = STATE.compare_exchange(DORMANT, SCOPED, Ordering::AcqRel, Ordering::Acquire);
}

/// In a forked child: the recorder thread does not exist here, so stop recording. The
/// parent's trace stays the parent's. (Only an atomic store: async-signal-safe.)
extern "C" fn after_fork_in_child() {
    STATE.store(DORMANT, Ordering::SeqCst);
}

extern "C" fn at_exit() {
    if SESSION_PID.load(Ordering::Acquire) != std::process::id() {
        return;
    }
    if is_active() {
        if let Err(e) = stop_at_exit() {
            say(&format!("{e}"));
        }
    }
}
