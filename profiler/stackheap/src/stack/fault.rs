//! Fatal signals: a stack overflow or crash report, written without allocating from a
//! handler on the alternate signal stack, then the previous handler (std's, which
//! prints "has overflowed its stack" and aborts) runs as if we were not there. Also the
//! panic hook.
//!
//! What the handler writes: an `StackOverflow` or `Crash` record, after every thread's
//! unwritten ring bytes, straight to the trace fd (see [`crate::record::crash_flush`]),
//! and a short report on stderr (frames as addresses: `stackheap report` names them).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::format::fatal::{self, class, Crash, Cycle, OverflowRef, SizedFrame};
use crate::format::kind;
use crate::format::varint::SliceWriter;
use crate::record::{crash_flush, slots};
use crate::stack::sampler::{context_regs, walk};

/// The signals we report.
pub const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// Frames kept at the top of the stack for cycle detection.
const WALK: usize = 256;
/// A fault this far below a stack's lowest address counts as an overflow.
const GUARD_SPAN: usize = 64 << 10;

struct Prev(UnsafeCell<[MaybeUninit<libc::sigaction>; 5]>);
// SAFETY: written once in `install` before our handlers are installed, read-only after.
unsafe impl Sync for Prev {}
static PREV: Prev = Prev(UnsafeCell::new([MaybeUninit::uninit(); 5]));
static INSTALLED: AtomicBool = AtomicBool::new(false);
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Working memory of the handler (the alternate stack is small), used inside the
/// one-handler section of [`crash_flush`].
struct Work {
    pcs: [u64; WALK],
    fps: [usize; WALK],
    frames: [SizedFrame; WALK],
    record: [u8; 4096],
    body: [u8; 2048],
    maps: [u8; 4096],
}
struct WorkCell(UnsafeCell<Work>);
// SAFETY: only touched by the thread inside the one-handler section.
unsafe impl Sync for WorkCell {}
static WORK: WorkCell = WorkCell(UnsafeCell::new(Work {
    pcs: [0; WALK],
    fps: [0; WALK],
    frames: [SizedFrame {
        addr: 0,
        bytes: 0,
        count: 1,
    }; WALK],
    record: [0; 4096],
    body: [0; 2048],
    maps: [0; 4096],
}));

/// Install the handlers once per process (at the first session start), saving the
/// previous ones; give the calling thread an alternate stack if it has none.
pub fn install() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    keep_installed();
}

static EARLY_CHECKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Called on cold paths of the program's own threads (a new call stack): the first few
/// hundred times, make sure our handlers are still on top. The runtime's start (std
/// installs its SIGSEGV handler after its first allocation, which may start the
/// session) happens before the program's first new allocation site, so this catches
/// it on the main thread before the program can crash.
///
/// It also installs the panic hook, here rather than on the recorder thread: `take_hook`
/// waits for a panic in progress on another thread, and only a program thread may wait
/// for that (the panicking thread may be waiting for the recorder). A thread that is
/// panicking itself never installs it (it could hold the hook lock).
pub fn early_check() {
    if EARLY_CHECKS.load(Ordering::Relaxed) < 256 {
        EARLY_CHECKS.fetch_add(1, Ordering::Relaxed);
        keep_installed();
    }
    if !HOOKED.load(Ordering::Relaxed)
        && INSTALLED.load(Ordering::Relaxed)
        && !std::thread::panicking()
        && !HOOKED.swap(true, Ordering::AcqRel)
    {
        install_panic_hook();
    }
}

/// Put our handler back on top of any installed after ours (std installs its own
/// SIGSEGV handler during its runtime start, which can come after the profiler's first
/// allocation); the displaced one becomes the one we chain to. The recorder calls this
/// every round for a while, then now and then.
pub fn keep_installed() {
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    for (i, &sig) in SIGNALS.iter().enumerate() {
        // SAFETY: reading the current action into a zeroed struct.
        let current = unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut cur);
            cur.sa_sigaction
        };
        if current == on_fatal as *const () as usize {
            continue;
        }
        // SAFETY: PREV[i] is written while our handler is not installed for `sig` (so
        // no handler of ours reads it); the sigaction structs are zeroed then filled;
        // on_fatal has the SA_SIGINFO signature.
        unsafe {
            let prev = &mut (*PREV.0.get())[i];
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            prev.write(old);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fatal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Size of the alternate stacks the profiler gives threads.
const ALTSTACK: usize = 64 << 10;

/// Give the calling thread an alternate signal stack of at least 64 KiB: std's are
/// ~12 KiB, too small for its handler, ours and the kernel's frames nested (an abort
/// in std's handler re-enters ours). The stack belongs to the thread's slot, mapped
/// once and reused by the slot's later threads; [`release_altstack`] detaches it when
/// the thread exits.
pub fn ensure_altstack(st: &crate::stack::sampler::StackState) {
    // SAFETY: sigaltstack with a null new stack only reads the current one.
    let cur = unsafe {
        let mut cur: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut cur) != 0 {
            return;
        }
        cur
    };
    if cur.ss_flags & libc::SS_ONSTACK != 0
        || (cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALTSTACK)
    {
        return;
    }
    let mut p = st.altstack.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: anonymous mapping, checked for failure.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ALTSTACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if m == libc::MAP_FAILED {
            return;
        }
        p = m as usize;
        st.altstack.store(p, Ordering::Release);
    }
    let new = libc::stack_t {
        ss_sp: p as *mut libc::c_void,
        ss_flags: 0,
        ss_size: ALTSTACK,
    };
    // SAFETY: installing a mapped, writable stack of ALTSTACK bytes that belongs to
    // this thread's slot until `release_altstack`.
    unsafe { libc::sigaltstack(&new, std::ptr::null_mut()) };
}

/// Detach the slot's alternate stack from the exiting thread (if it is still the
/// current one), so the slot's next thread can use it.
pub fn release_altstack(st: &crate::stack::sampler::StackState) {
    let p = st.altstack.load(Ordering::Acquire);
    if p == 0 {
        return;
    }
    // SAFETY: reading, then disabling, this thread's alternate stack.
    unsafe {
        let mut cur: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut cur) == 0
            && cur.ss_sp as usize == p
            && cur.ss_flags & libc::SS_ONSTACK == 0
        {
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, std::ptr::null_mut());
        }
    }
}

/// Handler of SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT, on the alternate stack.
///
/// Calls: atomics; a `const` thread-local read (plain TLS load); plain loads of the
/// thread's stack inside its recorded bounds; `write(2)`, `open(2)`/`read(2)`/
/// `close(2)` of /proc/self/maps, `readlink(2)`, `fdatasync(2)`, `sched_yield(2)`,
/// `gettid(2)`, `clock_gettime(2)`, `sigaction(2)`, `raise(3)` — all async-signal-safe;
/// crc32fast's `Hasher` (stack state, no allocation); a `Mutex::try_lock` that never
/// waits. Buffers are on the stack or in static memory owned through the one-handler
/// section. Then the previous handler runs (std's prints its overflow message and
/// aborts); with none, the default action happens.
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: reading and restoring this thread's errno around our syscalls.
    let errno = unsafe { *libc::__errno_location() };
    if !REPORTED.swap(true, Ordering::AcqRel) {
        // SAFETY: info and ctx are what the kernel passed to this SA_SIGINFO handler.
        unsafe { report(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    // SAFETY: chaining with the kernel's arguments.
    unsafe { chain(sig, info, ctx) };
}

/// Run the previous handler of `sig`, or restore the default action.
///
/// # Safety
/// Arguments of a SA_SIGINFO handler invocation.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    // SAFETY: PREV[i] was written in install() before this handler was installed.
    let prev = unsafe { (*PREV.0.get())[i].assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: restoring the default action; raise is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            let code = if info.is_null() { 0 } else { (*info).si_code };
            if sig == libc::SIGABRT || code <= 0 {
                libc::raise(sig);
            }
        }
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO: this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// A line buffer on the stack for stderr, with hand-made number formatting.
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Self {
        let mut l = Line {
            buf: [0; 200],
            len: 0,
        };
        l.s("stackheap: ");
        l
    }
    fn s(&mut self, t: &str) -> &mut Self {
        for &b in t.as_bytes() {
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    /// Decimal with thousands separators.
    fn n(&mut self, v: u64) -> &mut Self {
        let mut d = [0u8; 32];
        let mut i = d.len();
        let mut v = v;
        let mut k = 0;
        loop {
            if k > 0 && k % 3 == 0 {
                i -= 1;
                d[i] = b',';
            }
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            k += 1;
            if v == 0 {
                break;
            }
        }
        for &b in &d[i..] {
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    fn x(&mut self, v: u64) -> &mut Self {
        self.s("0x");
        let mut started = false;
        for sh in (0..16).rev() {
            let nib = ((v >> (sh * 4)) & 0xf) as u8;
            if nib != 0 || started || sh == 0 {
                started = true;
                let c = if nib < 10 {
                    b'0' + nib
                } else {
                    b'a' + nib - 10
                };
                if self.len < self.buf.len() - 1 {
                    self.buf[self.len] = c;
                    self.len += 1;
                }
            }
        }
        self
    }
    fn emit(&mut self) {
        self.buf[self.len] = b'\n';
        crash_flush::write_all(2, &self.buf[..self.len + 1]);
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        _ => "signal",
    }
}

/// Find the shortest cycle in `pcs`: (start, len) with at least three repeats.
fn find_cycle(pcs: &[u64]) -> Option<(usize, usize)> {
    for start in 0..pcs.len().min(16) {
        for len in 1..=32usize {
            let span = pcs.len() - start;
            if span < 3 * len {
                break;
            }
            if (start..pcs.len() - len).all(|i| pcs[i] == pcs[i + len]) {
                return Some((start, len));
            }
        }
    }
    None
}

/// The report itself.
///
/// # Safety
/// Arguments of a SA_SIGINFO handler invocation.
unsafe fn report(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo; si_addr is meaningful for the fault signals.
    let (addr, code) = unsafe {
        if info.is_null() {
            (0, 0)
        } else {
            ((*info).si_addr() as usize, (*info).si_code)
        }
    };
    let fault_sig = matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
    ) && code > 0;
    let addr = if fault_sig { addr } else { 0 };
    // SAFETY: ctx from the kernel.
    let (pc, sp, fp) = unsafe { context_regs(ctx) };
    let slot = slots::current_for_signal();
    let (thread, bounds, prev_max) = match slot {
        Some(s) => (
            s.thread.load(Ordering::Relaxed),
            s.stack.bounds(),
            s.stack.max_depth.load(Ordering::Relaxed),
        ),
        None => (0, None, 0),
    };
    let tid = crate::stack::bounds::os_tid();
    let overflow = fault_sig
        && matches!(sig, libc::SIGSEGV | libc::SIGBUS)
        && bounds.is_some_and(|b| addr < b.low + 4096 && addr + GUARD_SPAN >= b.low);
    let fd = crash_flush::handler_enter();
    let _leave = LeaveOnDrop(fd.is_some());
    // SAFETY: inside the one-handler section (or, without a trace, REPORTED makes us
    // the only reporter of this process).
    let work = unsafe { &mut *WORK.0.get() };
    // Walk the whole stack: the first WALK frames are kept.
    let mut total = 0usize;
    let mut n = 0usize;
    if let Some(b) = bounds {
        total = walk(pc, sp, fp, b.low, b.high, |i, a, bytes, f| {
            if i < WALK {
                work.pcs[i] = a;
                work.fps[i] = f;
                work.frames[i] = SizedFrame {
                    addr: a,
                    bytes,
                    count: 1,
                };
            }
            true
        });
        n = total.min(WALK);
    } else {
        work.frames[0] = SizedFrame {
            addr: pc as u64,
            bytes: 0,
            count: 1,
        };
        work.pcs[0] = pc as u64;
        if pc != 0 {
            n = 1;
            total = 1;
        }
    }
    let depth = bounds.map_or(0, |b| b.high.saturating_sub(sp) as u64);
    let limit = bounds.map_or(0, |b| b.size() as u64);
    let time_ns = crash_flush::now_ns();
    let mut w = SliceWriter::new(&mut work.record[..]);
    let body = &mut work.body;
    let mut bw = SliceWriter::new(&mut body[..]);
    let shown = n.min(fatal::MAX_FATAL_FRAMES);
    if overflow {
        // The cycle over the kept frames, then how far it goes on the whole stack.
        let cycle = find_cycle(&work.pcs[..n]).map(|(start, len)| {
            let bytes: u64 = work.frames[start..start + len]
                .iter()
                .map(|f| f.bytes)
                .sum();
            let mut matched = 0u64;
            if let Some(b) = bounds {
                let pat = &work.pcs[start..start + len];
                let mut broken = false;
                walk(pc, sp, fp, b.low, b.high, |i, a, _, _| {
                    if i < start {
                        return true;
                    }
                    if !broken && a == pat[(i - start) % len] {
                        matched += 1;
                        true
                    } else {
                        broken = true;
                        false
                    }
                });
            }
            Cycle {
                start: start as u32,
                len: len as u32,
                repeats: matched / len as u64,
                bytes,
            }
        });
        fatal::overflow_body(
            &mut bw,
            &OverflowRef {
                thread,
                os_tid: tid,
                time_ns,
                fault_addr: addr as u64,
                depth,
                limit,
                prev_max,
                total_frames: total as u64,
                cycle,
                frames: &work.frames[..shown],
            },
        );
        let bl = bw.len();
        w.u8(kind::STACK_OVERFLOW);
        w.uvar(bl as u64);
        w.bytes(&body[..bl]);
        let mut l = Line::new();
        l.s("stack overflow in thread ")
            .n(thread as u64)
            .s(" (tid ")
            .n(tid as u64)
            .s(") at depth ")
            .n(depth)
            .s(" of ")
            .n(limit)
            .s(" bytes, ")
            .n(total as u64)
            .s(" frames; fault at ")
            .x(addr as u64)
            .emit();
        if prev_max > 0 {
            Line::new()
                .s("  previous high-water mark ")
                .n(prev_max)
                .s(" bytes: this went ")
                .n(depth.saturating_sub(prev_max))
                .s(" bytes further")
                .emit();
        }
        for f in work.frames[..n.min(8)].iter().enumerate() {
            Line::new()
                .s("  #")
                .n(f.0 as u64)
                .s(" ")
                .x(f.1.addr)
                .s(" ")
                .n(f.1.bytes)
                .s(" bytes")
                .emit();
        }
        if let Some(c) = cycle {
            let mut l = Line::new();
            if c.len == 1 {
                l.s("  frame ").n(c.start as u64).s(" repeats ");
            } else {
                l.s("  frames ")
                    .n(c.start as u64)
                    .s("-")
                    .n((c.start + c.len - 1) as u64)
                    .s(" repeat ");
            }
            l.n(c.repeats)
                .s(" times, ")
                .n(c.bytes)
                .s(" bytes per cycle")
                .emit();
        }
    } else {
        let class = if fault_sig {
            classify(addr, &mut work.maps)
        } else {
            class::NONE
        };
        let c = Crash {
            thread,
            os_tid: tid,
            time_ns,
            signal: sig as u32,
            code,
            fault_addr: addr as u64,
            class,
            depth,
            frames: Vec::new(),
        };
        fatal::crash_body(&mut bw, &c, &work.frames[..shown]);
        let bl = bw.len();
        w.u8(kind::CRASH);
        w.uvar(bl as u64);
        w.bytes(&body[..bl]);
        let mut l = Line::new();
        l.s("fatal signal ").s(signal_name(sig));
        if fault_sig {
            l.s(" at address ")
                .x(addr as u64)
                .s(" (")
                .s(class::name(class))
                .s(")");
        }
        l.s(" in thread ")
            .n(thread as u64)
            .s(" (tid ")
            .n(tid as u64)
            .s("), stack depth ")
            .n(depth)
            .s(" bytes")
            .emit();
        for f in work.frames[..n.min(16)].iter().enumerate() {
            Line::new().s("  #").n(f.0 as u64).s(" ").x(f.1.addr).emit();
        }
    }
    if let Some(fd) = fd {
        let rl = w.len();
        crash_flush::handler_flush(fd, &work.record[..rl]);
        Line::new()
            .s("trace flushed; `stackheap report` names the frames")
            .emit();
    }
}

/// Leaves the one-handler section if we entered it.
struct LeaveOnDrop(bool);
impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if self.0 {
            crash_flush::handler_leave();
        }
    }
}

/// Classify `addr` against the threads' stacks and /proc/self/maps. Async-signal-safe:
/// open/read/close/readlink and parsing in the caller's buffer.
fn classify(addr: usize, buf: &mut [u8; 4096]) -> u8 {
    if addr < 65536 {
        return class::NULL_PAGE;
    }
    for i in 0..slots::HWM.load(Ordering::Acquire) {
        let s = slots::slot(i);
        if s.state.load(Ordering::Acquire) == slots::FREE {
            continue;
        }
        if let Some(b) = s.stack.bounds() {
            if addr >= b.low && addr < b.high {
                return class::STACK;
            }
            if addr < b.low && addr + GUARD_SPAN >= b.low {
                return class::GUARD;
            }
        }
    }
    let mut exe = [0u8; 256];
    // SAFETY: readlink into a local buffer of the given length.
    let el = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            exe.as_mut_ptr().cast(),
            exe.len(),
        )
    };
    let exe = if el > 0 {
        &exe[..el as usize]
    } else {
        &exe[..0]
    };
    // SAFETY: open(2) of a constant path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return class::NONE;
    }
    let mut result = class::UNMAPPED;
    let mut have = 0usize;
    let mut prev_end = 0usize;
    let mut prev_exe = false;
    'read: loop {
        // SAFETY: reading into the free tail of `buf`.
        let r = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if r <= 0 {
            break;
        }
        have += r as usize;
        loop {
            let Some(nl) = buf[..have].iter().position(|&b| b == b'\n') else {
                if have == buf.len() {
                    have = 0; // an absurd line: drop it
                }
                break;
            };
            let line = &buf[..nl];
            if let Some((start, end, perms, path)) = parse_maps_line(line) {
                if addr >= start && addr < end {
                    let is_exe = !exe.is_empty() && path == exe;
                    result = if is_exe {
                        if perms.get(2) == Some(&b'x') {
                            class::TEXT
                        } else {
                            class::DATA
                        }
                    } else if path == b"[heap]" {
                        class::HEAP
                    } else if path.starts_with(b"[stack") {
                        class::STACK
                    } else if path.is_empty() && prev_exe && prev_end == start {
                        class::BSS
                    } else if path.first() == Some(&b'/') {
                        class::LIBRARY
                    } else {
                        class::ANON
                    };
                    break 'read;
                }
                prev_exe = !exe.is_empty() && path == exe;
                prev_end = end;
            }
            buf.copy_within(nl + 1..have, 0);
            have -= nl + 1;
        }
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    result
}

/// `start-end perms offset dev inode path` → (start, end, perms, path).
fn parse_maps_line(line: &[u8]) -> Option<(usize, usize, &[u8], &[u8])> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let _off = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or(b"");
    let path = match path.iter().position(|&b| b != b' ') {
        Some(p) => &path[p..],
        None => &path[..0],
    };
    let dash = range.iter().position(|&b| b == b'-')?;
    Some((hex(&range[..dash])?, hex(&range[dash + 1..])?, perms, path))
}

fn hex(s: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v.checked_mul(16)?.checked_add(d as usize)?;
    }
    Some(v)
}

static HOOKED: AtomicBool = AtomicBool::new(false);

/// The panic hook: it queues a `Panic` record for the recorder, then runs the previous
/// hook.
fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if crate::record::session::is_active() {
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                String::from("Box<dyn Any>")
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let p = fatal::Panic {
                thread: slots::current_thread_index(),
                time_ns: crash_flush::now_ns(),
                thread_name: std::thread::current().name().unwrap_or("").to_string(),
                message,
                location,
            };
            let mut body = vec![0u8; 64 + p.thread_name.len() + p.message.len() + p.location.len()];
            let mut w = SliceWriter::new(&mut body);
            fatal::panic_body(&mut w, &p);
            let bl = w.len();
            let mut rec = vec![0u8; bl + 12];
            let mut r = SliceWriter::new(&mut rec);
            r.u8(kind::PANIC);
            r.uvar(bl as u64);
            r.bytes(&body[..bl]);
            let rl = r.len();
            crash_flush::push_global(&rec[..rl]);
        }
        prev(info);
    }));
}
