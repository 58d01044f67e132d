//! Per-thread stack state shared with signal handlers ([`StackState`], one in every
//! slot) and the depth sampler: a thread that signals every registered thread at
//! `STACKHEAP_STACK_HZ` with a real-time signal; the handler reads the interrupted SP,
//! keeps the thread's current and deepest depth, and on a new deepest depth walks the
//! frame pointers into the slot's `deepest` frames. The recorder turns a new maximum
//! into a `StackMax` record. The handler never touches the ring.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::format::fatal::{SizedFrame, MAX_FATAL_FRAMES};
use crate::record::slots;

/// Frames kept for a thread's deepest stack.
pub const DEEPEST_FRAMES: usize = MAX_FATAL_FRAMES;

/// What signal handlers know about a thread. Lives in its slot; zeroed = unknown.
#[repr(C)]
pub struct StackState {
    /// Lowest usable stack address.
    pub low: AtomicUsize,
    /// Stack top.
    pub high: AtomicUsize,
    /// Kernel thread id (0 = none: do not signal).
    pub tid: AtomicU32,
    /// Set while the sampler may signal this thread (cleared before the thread exits;
    /// the sampler holds `signalling` around tgkill).
    pub sampled: AtomicBool,
    /// Set by the sampler around its tgkill of this thread.
    pub signalling: AtomicBool,
    /// Deepest depth seen by the sampler or at a new-maximum allocation, bytes.
    pub max_depth: AtomicU64,
    /// When (ns since start).
    pub max_time: AtomicU64,
    /// Seqlock of `deepest`: odd while the handler writes.
    pub deepest_gen: AtomicU64,
    /// Frames of the deepest stack: (return address, bytes, repeats) runs.
    pub deepest: [(AtomicU64, AtomicU64, AtomicU64); DEEPEST_FRAMES],
    /// Frames used in `deepest`.
    pub deepest_n: AtomicUsize,
    /// Depth of the stack in `deepest`.
    pub deepest_depth: AtomicU64,
    /// `deepest_gen` the recorder wrote last.
    pub written_gen: AtomicU64,
    /// Depth samples taken.
    pub samples: AtomicU64,
    /// This slot's alternate signal stack (mapped once, 0 = none yet).
    pub altstack: AtomicUsize,
}

impl StackState {
    /// Set at registration, by the thread itself.
    pub fn init(&self, low: usize, high: usize, tid: u32) {
        self.max_depth.store(0, Ordering::Relaxed);
        self.max_time.store(0, Ordering::Relaxed);
        self.deepest_n.store(0, Ordering::Relaxed);
        self.deepest_depth.store(0, Ordering::Relaxed);
        self.samples.store(0, Ordering::Relaxed);
        let g = self.deepest_gen.load(Ordering::Relaxed) & !1;
        self.deepest_gen.store(g, Ordering::Relaxed);
        self.written_gen.store(g, Ordering::Relaxed);
        self.low.store(low, Ordering::Relaxed);
        self.high.store(high, Ordering::Relaxed);
        self.tid.store(tid, Ordering::Release);
    }

    /// The thread's stack bounds, if known.
    pub fn bounds(&self) -> Option<crate::stack::bounds::StackBounds> {
        let low = self.low.load(Ordering::Acquire);
        let high = self.high.load(Ordering::Acquire);
        (high > low && low != 0).then_some(crate::stack::bounds::StackBounds { low, high })
    }

    /// Stop signalling this thread and wait until no signal from the sampler can still
    /// be sent to it (called by the thread itself before it exits).
    pub fn stop_sampling(&self) {
        self.sampled.store(false, Ordering::SeqCst);
        let mut spins = 0;
        while self.signalling.load(Ordering::SeqCst) && spins < 1_000_000 {
            spins += 1;
            std::hint::spin_loop();
        }
    }
}

/// Walk frame pointers starting at frame record `fp` with `pc` as the innermost
/// address and `sp` as the stack pointer, inside `[low, high)`. Calls `f(index, addr,
/// bytes, fp)` per frame until it returns false; returns the frames walked. Never
/// dereferences outside the bounds. Async-signal-safe (plain loads).
pub fn walk(
    pc: usize,
    sp: usize,
    mut fp: usize,
    low: usize,
    high: usize,
    mut f: impl FnMut(usize, u64, u64, usize) -> bool,
) -> usize {
    // Frame records lie above the interrupted stack pointer: an `fp` below it is not
    // one (code without frame pointers uses the register for data), and reading there
    // could touch unmapped memory under the stack.
    let floor = low.max(sp);
    let ok =
        |fp: usize| fp % 8 == 0 && fp >= floor && fp.checked_add(16).is_some_and(|e| e <= high);
    let first = if ok(fp) && fp >= sp { fp + 16 - sp } else { 0 };
    if !f(0, pc as u64, first as u64, fp) {
        return 1;
    }
    let mut n = 1;
    while ok(fp) {
        // SAFETY: [fp, fp+16) lies inside the thread's stack (checked by `ok`).
        let (next, ret) = unsafe { (*(fp as *const usize), *(fp as *const usize).add(1)) };
        if ret == 0 {
            break;
        }
        let bytes = if next > fp && ok(next) { next - fp } else { 0 };
        if !f(n, ret as u64, bytes as u64, next) {
            n += 1;
            break;
        }
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

/// Registers of an interrupted context: (pc, sp, fp).
///
/// # Safety
/// `ctx` is the `ucontext_t` a SA_SIGINFO handler received.
pub unsafe fn context_regs(ctx: *mut libc::c_void) -> (usize, usize, usize) {
    if ctx.is_null() {
        return (0, 0, 0);
    }
    // SAFETY: the kernel passes a valid ucontext_t (caller's contract).
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    #[cfg(target_arch = "x86_64")]
    {
        let g = &uc.uc_mcontext.gregs;
        (
            g[libc::REG_RIP as usize] as usize,
            g[libc::REG_RSP as usize] as usize,
            g[libc::REG_RBP as usize] as usize,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        let m = &uc.uc_mcontext;
        (m.pc as usize, m.sp as usize, m.regs[29] as usize)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = uc;
        (0, 0, 0)
    }
}

/// The real-time signal used by the sampler (glibc reserves SIGRTMIN's first two; we
/// take SIGRTMIN+5 of what `SIGRTMIN()` reports).
pub fn sample_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// The sampler's rate (0 = off).
pub static HZ: AtomicU32 = AtomicU32::new(0);
static RUN: AtomicBool = AtomicBool::new(false);
static THREAD: AtomicU64 = AtomicU64::new(0);
/// Bumped by [`stop`] to wake the sampler thread out of its sleep at once (a futex word):
/// at 250 Hz, waiting out the period made every session's stop up to 4 ms longer.
static WAKE: AtomicU32 = AtomicU32::new(0);

/// Sleep for `period`, or less if [`WAKE`] no longer holds `seen` (or is bumped meanwhile).
fn sleep_unless_woken(period: std::time::Duration, seen: u32) {
    let ts = libc::timespec {
        tv_sec: period.as_secs() as libc::time_t,
        tv_nsec: period.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a static word that lives for the process, with a relative
    // timeout we own; it returns at the timeout, on a wake, on a signal, or at once if
    // the word no longer holds `seen`. It touches no other memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            WAKE.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
static HANDLER_SET: AtomicBool = AtomicBool::new(false);
static PID: AtomicI32 = AtomicI32::new(0);

/// Real-time signal handler of the depth sampler.
///
/// Calls only: `gettid`-free TLS read of the thread's slot pointer (a `const`
/// thread-local without destructor: a plain TLS load), atomic loads and stores on the
/// slot's [`StackState`], and plain loads of stack memory inside the thread's stack
/// bounds (the frame walk). No allocation, no lock, no libc call: async-signal-safe.
extern "C" fn on_sample(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(slot) = slots::current_for_signal() else {
        return;
    };
    let st = &slot.stack;
    let Some(b) = st.bounds() else { return };
    // SAFETY: ctx is the ucontext of this SA_SIGINFO handler.
    let (pc, sp, fp) = unsafe { context_regs(ctx) };
    if sp < b.low || sp >= b.high {
        return; // on the alternate stack or unknown
    }
    let depth = (b.high - sp) as u64;
    st.samples.fetch_add(1, Ordering::Relaxed);
    if depth <= st.max_depth.load(Ordering::Relaxed) {
        return;
    }
    st.max_depth.store(depth, Ordering::Relaxed);
    st.max_time
        .store(crate::record::crash_flush::now_ns(), Ordering::Relaxed);
    let g = st.deepest_gen.load(Ordering::Relaxed);
    st.deepest_gen.store(g | 1, Ordering::Release);
    // Run-length encoded: a recursion of one function is one entry with its count.
    let mut n = 0usize;
    walk(pc, sp, fp, b.low, b.high, |_, addr, bytes, _| {
        if n > 0
            && st.deepest[n - 1].0.load(Ordering::Relaxed) == addr
            && st.deepest[n - 1].1.load(Ordering::Relaxed) == bytes
        {
            st.deepest[n - 1].2.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if n >= DEEPEST_FRAMES {
            return false;
        }
        st.deepest[n].0.store(addr, Ordering::Relaxed);
        st.deepest[n].1.store(bytes, Ordering::Relaxed);
        st.deepest[n].2.store(1, Ordering::Relaxed);
        n += 1;
        true
    });
    st.deepest_n.store(n, Ordering::Relaxed);
    st.deepest_depth.store(depth, Ordering::Relaxed);
    st.deepest_gen.store((g | 1) + 1, Ordering::Release);
}

/// Recorder: if the thread of `st` has a new deepest stack, copy it out (consistent by
/// the seqlock). Returns (depth, time, frames used).
pub fn take_deepest(
    st: &StackState,
    out: &mut [SizedFrame; DEEPEST_FRAMES],
) -> Option<(u64, u64, usize)> {
    for _ in 0..4 {
        let g = st.deepest_gen.load(Ordering::Acquire);
        if g & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        if g == st.written_gen.load(Ordering::Relaxed) {
            return None;
        }
        let n = st.deepest_n.load(Ordering::Relaxed).min(DEEPEST_FRAMES);
        for (i, o) in out.iter_mut().enumerate().take(n) {
            o.addr = st.deepest[i].0.load(Ordering::Relaxed);
            o.bytes = st.deepest[i].1.load(Ordering::Relaxed);
            o.count = st.deepest[i].2.load(Ordering::Relaxed);
        }
        let depth = st.deepest_depth.load(Ordering::Relaxed);
        let time = st.max_time.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if st.deepest_gen.load(Ordering::Relaxed) == g {
            st.written_gen.store(g, Ordering::Relaxed);
            return Some((depth, time, n));
        }
    }
    None
}

extern "C" fn sampler_main(_: *mut libc::c_void) -> *mut libc::c_void {
    crate::alloc::guard::Guard::hold_forever();
    let pid = PID.load(Ordering::Relaxed);
    let sig = sample_signal();
    loop {
        // Read before RUN: a `stop` after this load changes WAKE, so the sleep below
        // returns at once; a `stop` before it is seen in RUN.
        let seen = WAKE.load(Ordering::Acquire);
        if !RUN.load(Ordering::Acquire) {
            break;
        }
        let hz = HZ.load(Ordering::Relaxed).max(1) as u64;
        let period = std::time::Duration::from_nanos(1_000_000_000 / hz);
        for i in 0..slots::HWM.load(Ordering::Acquire) {
            let s = slots::slot(i);
            let st = &s.stack;
            if s.state.load(Ordering::Acquire) != slots::ACTIVE {
                continue;
            }
            st.signalling.store(true, Ordering::SeqCst);
            if st.sampled.load(Ordering::SeqCst) {
                let tid = st.tid.load(Ordering::Acquire);
                if tid != 0 {
                    // SAFETY: tgkill with our own pid and a tid whose thread is alive:
                    // it clears `sampled` and waits for `signalling` to drop before
                    // it exits, so the tid cannot be reused meanwhile.
                    unsafe {
                        libc::syscall(libc::SYS_tgkill, pid, tid as libc::c_int, sig);
                    }
                }
            }
            st.signalling.store(false, Ordering::SeqCst);
        }
        sleep_unless_woken(period, seen);
    }
    std::ptr::null_mut()
}

/// Start the sampler thread at `hz` (0 = off). Installs the handler once per process.
pub fn start(hz: u32) {
    HZ.store(hz, Ordering::Relaxed);
    if hz == 0 || RUN.swap(true, Ordering::AcqRel) {
        return;
    }
    PID.store(std::process::id() as i32, Ordering::Relaxed);
    if !HANDLER_SET.swap(true, Ordering::AcqRel) {
        // SAFETY: installing a SA_SIGINFO handler for a real-time signal nobody else
        // uses; the struct is zeroed then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sample as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sample_signal(), &sa, std::ptr::null_mut());
        }
    }
    let mut t: libc::pthread_t = 0;
    // SAFETY: sampler_main has the pthread start signature and takes no argument.
    let rc = unsafe {
        libc::pthread_create(&mut t, std::ptr::null(), sampler_main, std::ptr::null_mut())
    };
    if rc != 0 {
        RUN.store(false, Ordering::Release);
        return;
    }
    // SAFETY: valid handle, NUL-terminated name under 16 bytes.
    unsafe { libc::pthread_setname_np(t, c"stackheap-stk".as_ptr()) };
    THREAD.store(t as u64, Ordering::Release);
}

/// Stop the sampler thread and wait for it.
pub fn stop() {
    if !RUN.swap(false, Ordering::AcqRel) {
        return;
    }
    WAKE.fetch_add(1, Ordering::AcqRel);
    // SAFETY: FUTEX_WAKE on a static word; wakes the sampler if it sleeps on it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            WAKE.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
    let t = THREAD.swap(0, Ordering::AcqRel);
    if t != 0 {
        // SAFETY: joining the thread we created, once.
        unsafe { libc::pthread_join(t as libc::pthread_t, std::ptr::null_mut()) };
    }
}
