//! libstackheap_preload.so: profile a program that does not link stackheap.
//!
//! `LD_PRELOAD=libstackheap_preload.so STACKHEAP_TRACE=app.trace PROGRAM` (what
//! `stackheap run` does for such a program) puts these shims of the malloc family in
//! front of glibc's. Each forwards to glibc's own entry points (`__libc_malloc`,
//! `__libc_free`, …, exported by glibc for exactly this) and calls the same hooks as
//! `stackheap::StackHeap` (`stackheap::alloc::hooks`), so the recorder, the trace format
//! and the reports are those of the Rust path.
//!
//! * The session starts before `main`, from an ELF constructor reading `STACKHEAP_*` as
//!   the Rust path does; it is flushed at `exit` (atexit), at `_exit`/`_Exit` called by
//!   the program (not by glibc itself), and at fatal signals (the
//!   stack module's handler, installed when the session starts). `pthread_create` is
//!   wrapped so that every new thread registers at once (the stack-depth sampler then
//!   sees threads that never allocate).
//! * The hooks count requested sizes. `free` gets no size, so the requested size of
//!   every recorded block is kept in a lock-free table (`sizes`); a block unknown to
//!   it (allocated before the session, or by the profiler itself) is neither counted
//!   nor recorded when freed.
//! * This library's own Rust code allocates through glibc directly (`LibcDirect`),
//!   never through the shims; what glibc allocates for the profiler (thread stacks'
//!   TLS, the atexit list) passes the shims with the reentrancy guard held and is not
//!   counted.
//! * Children: the constructor removes `STACKHEAP_TRACE` and this library from
//!   `LD_PRELOAD` in the environment, so programs the profiled one executes are not
//!   profiled, unless `STACKHEAP_FOLLOW_FORKS=1` (`stackheap run --follow-forks`): then
//!   each executed program records its own trace (`%p` in the trace path). A child
//!   forked without exec is not followed: the existing fork handler turns it dormant,
//!   and it keeps allocating through glibc (no lock of ours is held across `fork`).

mod inject;
mod sizes;

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use stackheap::alloc::guard::Guard;
use stackheap::alloc::hooks;
use stackheap::record::session;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_valloc(size: usize) -> *mut c_void;
    fn __libc_pvalloc(size: usize) -> *mut c_void;
}

/// The allocator of this library's own Rust code: glibc's entry points, not the shims.
struct LibcDirect;

const MIN_ALIGN: usize = 16;

// SAFETY: forwards to glibc's allocator, which returns blocks aligned to 16 bytes
// (memalign for larger alignments) or null.
unsafe impl GlobalAlloc for LibcDirect {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: plain glibc allocation calls.
        unsafe {
            if l.align() <= MIN_ALIGN {
                __libc_malloc(l.size()).cast()
            } else {
                __libc_memalign(l.align(), l.size()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.align() <= MIN_ALIGN {
            // SAFETY: plain glibc allocation call.
            unsafe { __libc_calloc(1, l.size()).cast() }
        } else {
            // SAFETY: `alloc` returns null or a block of `l.size()` bytes.
            unsafe {
                let p = self.alloc(l);
                if !p.is_null() {
                    std::ptr::write_bytes(p, 0, l.size());
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: `p` came from one of glibc's allocation functions above.
        unsafe { __libc_free(p.cast()) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if l.align() <= MIN_ALIGN {
            // SAFETY: `p` came from glibc; realloc keeps 16-byte alignment.
            return unsafe { __libc_realloc(p.cast(), new_size).cast() };
        }
        // SAFETY: a fresh block of the same alignment, the overlap copied, `p` freed.
        unsafe {
            let q = self.alloc(Layout::from_size_align_unchecked(new_size, l.align()));
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
                __libc_free(p.cast());
            }
            q
        }
    }
}

#[global_allocator]
static OWN: LibcDirect = LibcDirect;

// ---------------------------------------------------------------------------------
// Start: an ELF constructor.

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = constructor;

extern "C" fn constructor() {
    sizes::map_once();
    if session::STATE.load(Ordering::Acquire) == session::UNINIT {
        session::init_from_env();
    }
    if session::is_active() {
        // SAFETY: getpid has no preconditions.
        OWNER_PID.store(unsafe { libc::getpid() }, Ordering::Release);
    }
    let Some(_g) = Guard::enter() else { return };
    if session::is_active() {
        // Register the main thread now. Lazily, its first counted allocation could be
        // the `fopen` inside glibc's `pthread_getattr_np` (Rust's runtime calls it at
        // start), and registering reads the stack bounds with `pthread_getattr_np`,
        // whose lock that same thread then holds: a self-deadlock.
        let _ = stackheap::record::slots::current();
    }
    // Loaded by `dlopen` into a running process (`stackheap run --pid`): its
    // environment is not ours to change.
    if !preloaded() {
        return;
    }
    if !env_is(c"STACKHEAP_FOLLOW_FORKS", b"1") {
        scrub_env();
    }
}

/// True if this library came in through `LD_PRELOAD` or with `STACKHEAP_TRACE` (not
/// injected into a running process).
fn preloaded() -> bool {
    // SAFETY: as in env_is.
    let p = unsafe { libc::getenv(c"LD_PRELOAD".as_ptr()) };
    // SAFETY: getenv returns null or a NUL-terminated string.
    let in_preload = !p.is_null()
        && unsafe { CStr::from_ptr(p) }
            .to_bytes()
            .windows(b"libstackheap_preload.so".len())
            .any(|w| w == b"libstackheap_preload.so");
    // SAFETY: as in env_is.
    in_preload || !unsafe { libc::getenv(c"STACKHEAP_TRACE".as_ptr()) }.is_null()
}

fn env_is(name: &CStr, want: &[u8]) -> bool {
    // SAFETY: getenv reads the environment (single-threaded at constructor time); the
    // string is copied out before anything can change it.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: getenv returns null or a NUL-terminated string.
    !p.is_null() && unsafe { CStr::from_ptr(p) }.to_bytes() == want
}

/// Keep the profiler out of the programs this one runs: drop `STACKHEAP_*` and this
/// library's entry in `LD_PRELOAD` (the guard is held: setenv's memory is ours).
fn scrub_env() {
    for name in [
        c"STACKHEAP_TRACE",
        c"STACKHEAP_SAMPLE",
        c"STACKHEAP_LIMIT",
        c"STACKHEAP_STACK_HZ",
        c"STACKHEAP_UNWIND",
        c"STACKHEAP_LIVE",
    ] {
        // SAFETY: unsetenv with a NUL-terminated name.
        unsafe { libc::unsetenv(name.as_ptr()) };
    }
    // SAFETY: as in env_is.
    let p = unsafe { libc::getenv(c"LD_PRELOAD".as_ptr()) };
    if p.is_null() {
        return;
    }
    // SAFETY: getenv returns a NUL-terminated string; copied at once.
    let value = unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
    let kept: Vec<&[u8]> = value
        .split(|&c| c == b':' || c == b' ')
        .filter(|e| !e.is_empty() && !e.ends_with(b"libstackheap_preload.so"))
        .collect();
    if kept.is_empty() {
        // SAFETY: as above.
        unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
    } else {
        let mut v = kept.join(&b':');
        v.push(0);
        // SAFETY: both strings are NUL-terminated.
        unsafe { libc::setenv(c"LD_PRELOAD".as_ptr(), v.as_ptr().cast(), 1) };
    }
}

// ---------------------------------------------------------------------------------
// The hooks, as the shims call them.

/// A block glibc just returned for `size` requested bytes (null: failed).
#[inline(always)]
fn on_alloc(p: *mut c_void, size: usize) {
    if !hooks::is_awake() || Guard::is_held() {
        own_block(p);
        return;
    }
    if session::STATE.load(Ordering::Relaxed) == session::UNINIT {
        session::init_from_env();
    }
    if !session::is_active() {
        return;
    }
    if p.is_null() {
        hooks::after_alloc(p.cast(), size);
        return;
    }
    if sizes::insert(p.cast(), size) {
        hooks::after_alloc(p.cast(), size);
    }
}

/// A block about to go back to glibc.
#[inline(always)]
fn on_free(p: *mut c_void) {
    match sizes::remove(p.cast()) {
        Some(OWN_BLOCK) => {}
        Some(size) => hooks::before_free(p.cast(), size),
        None => unknown_free(),
    }
}

/// Size-table mark of a block glibc allocated for the profiler itself (guard held)
/// while attached: its free is neither counted nor taken for a pre-attach block's.
const OWN_BLOCK: usize = usize::MAX;

/// Attached: remember a block allocated with the guard held as the profiler's own.
#[inline(always)]
fn own_block(p: *mut c_void) {
    if stackheap::record::attach::is_attached() && !p.is_null() && Guard::is_held() {
        sizes::insert(p.cast(), OWN_BLOCK);
    }
}

/// A block the table does not know goes back: attached to a running process, one
/// allocated before the attach, counted apart (never against the live heap).
#[cold]
fn unknown_free() {
    if stackheap::record::attach::is_attached() && session::is_active() && !Guard::is_held() {
        stackheap::record::attach::count_unknown_free();
    }
}

/// The heap limit (`STACKHEAP_LIMIT`): true if `size` more bytes must get null, as at a
/// real out-of-memory (the failure is recorded, errno is ENOMEM). One relaxed load when
/// no limit is set.
#[inline(always)]
fn refused(size: usize) -> bool {
    if hooks::is_awake() && hooks::over_limit_awake(size) {
        hooks::after_alloc_awake(std::ptr::null_mut(), size);
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return true;
    }
    false
}

/// Requested bytes of `n` elements of `size` (saturating: an overflow is a failure).
#[inline(always)]
fn product(n: usize, size: usize) -> usize {
    n.saturating_mul(size)
}

// ---------------------------------------------------------------------------------
// The shims.

/// `malloc`.
///
/// # Safety
/// The C contract of `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarding the caller's request to glibc.
    let p = unsafe { __libc_malloc(size) };
    on_alloc(p, size);
    p
}

/// `free`; `free(NULL)` does nothing.
///
/// # Safety
/// The C contract of `free`.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    on_free(p);
    // SAFETY: the caller's block, given back to glibc which allocated it.
    unsafe { __libc_free(p) }
}

/// `cfree` (obsolete alias of free).
///
/// # Safety
/// The C contract of `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: same contract as free.
    unsafe { free(p) }
}

/// `calloc`.
///
/// # Safety
/// The C contract of `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    if refused(product(n, size)) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarding; glibc checks the overflow of n * size.
    let p = unsafe { __libc_calloc(n, size) };
    on_alloc(p, product(n, size));
    p
}

/// `realloc` with glibc's meaning: `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)`
/// frees `p` and returns NULL; on failure `p` stays valid.
///
/// # Safety
/// The C contract of `realloc`.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: realloc(NULL, n) is malloc(n).
        return unsafe { malloc(size) };
    }
    if size == 0 {
        on_free(p);
        // SAFETY: glibc frees `p` and returns NULL.
        return unsafe { __libc_realloc(p, 0) };
    }
    // Retire the old address before glibc can hand it to another thread.
    let removed = sizes::remove(p.cast());
    if removed == Some(OWN_BLOCK) {
        // The profiler's own block (attached): stays its own.
        // SAFETY: forwarding.
        let q = unsafe { __libc_realloc(p, size) };
        sizes::insert(if q.is_null() { p } else { q }.cast(), OWN_BLOCK);
        return q;
    }
    let Some(old_size) = removed else {
        // Not recorded (older than the session): the new block is a new allocation.
        // SAFETY: forwarding.
        let q = unsafe { __libc_realloc(p, size) };
        if !q.is_null() {
            unknown_free();
            on_alloc(q, size);
        }
        return q;
    };
    if size > old_size && hooks::is_awake() && hooks::over_limit_awake(size - old_size) {
        // Refused as a growth over the heap limit: `p` stays valid.
        sizes::insert(p.cast(), old_size);
        hooks::after_alloc_awake(std::ptr::null_mut(), size);
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return std::ptr::null_mut();
    }
    let ticket = hooks::before_realloc(p.cast(), size);
    // SAFETY: forwarding the caller's block.
    let q = unsafe { __libc_realloc(p, size) };
    if q.is_null() {
        sizes::insert(p.cast(), old_size);
    } else {
        sizes::insert(q.cast(), size);
    }
    hooks::after_realloc(ticket, p.cast(), old_size, q.cast(), size);
    q
}

/// `reallocarray`: `realloc(p, n * size)` unless the product overflows (ENOMEM, `p`
/// untouched).
///
/// # Safety
/// The C contract of `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: as realloc.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            // SAFETY: errno is this thread's.
            unsafe { *libc::__errno_location() = libc::ENOMEM };
            on_alloc(std::ptr::null_mut(), usize::MAX);
            std::ptr::null_mut()
        }
    }
}

/// `memalign`.
///
/// # Safety
/// The C contract of `memalign`.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarding.
    let p = unsafe { __libc_memalign(align, size) };
    on_alloc(p, size);
    p
}

/// `aligned_alloc` (glibc 2.36: memalign's rules).
///
/// # Safety
/// The C contract of `aligned_alloc`.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as memalign.
    unsafe { memalign(align, size) }
}

/// `posix_memalign`: EINVAL for an alignment that is not a power of two multiple of
/// `sizeof(void *)`, ENOMEM when glibc has no memory; `*out` set only on success.
///
/// # Safety
/// The C contract of `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if align % std::mem::size_of::<*mut c_void>() != 0 || !align.is_power_of_two() {
        return libc::EINVAL;
    }
    if refused(size) {
        return libc::ENOMEM;
    }
    // SAFETY: errno is this thread's; posix_memalign must not change it.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: forwarding.
    let p = unsafe { __libc_memalign(align, size) };
    on_alloc(p, size);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid place for the result.
    unsafe { *out = p };
    0
}

/// `valloc`.
///
/// # Safety
/// The C contract of `valloc`.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarding.
    let p = unsafe { __libc_valloc(size) };
    on_alloc(p, size);
    p
}

/// `pvalloc` (recorded with the requested size; glibc rounds the block up to pages).
///
/// # Safety
/// The C contract of `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarding.
    let p = unsafe { __libc_pvalloc(size) };
    on_alloc(p, size);
    p
}

/// Resolve glibc's `name` (next in lookup order after this library), once.
fn next_symbol(cache: &AtomicUsize, name: &CStr) -> usize {
    let f = cache.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    // SAFETY: dlsym with a NUL-terminated name; its own allocations pass the shims.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    cache.store(f, Ordering::Release);
    f
}

type StartRoutine = extern "C-unwind" fn(*mut c_void) -> *mut c_void;
type PthreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartRoutine,
    *mut c_void,
) -> c_int;

static REAL_PTHREAD_CREATE: AtomicUsize = AtomicUsize::new(0);

/// What the trampoline needs: the program's start routine and its argument.
#[repr(C)]
struct Start {
    routine: StartRoutine,
    arg: *mut c_void,
}

/// `pthread_create`: while a session records, the new thread registers with the
/// profiler before running its start routine, so the stack-depth sampler sees it even
/// if it never allocates.
///
/// # Safety
/// The C contract of `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let f = next_symbol(&REAL_PTHREAD_CREATE, c"pthread_create");
    if f == 0 {
        return libc::EAGAIN;
    }
    // SAFETY: `f` is glibc's pthread_create, of this signature.
    let real: PthreadCreate = unsafe { std::mem::transmute(f) };
    // The profiler's own threads (created with the guard held) are not the program's.
    if !session::is_active() || Guard::is_held() {
        // SAFETY: forwarding.
        return unsafe { real(thread, attr, routine, arg) };
    }
    // SAFETY: glibc directly (the profiler's memory, not the program's).
    let start = unsafe { __libc_malloc(std::mem::size_of::<Start>()) }.cast::<Start>();
    if start.is_null() {
        // SAFETY: forwarding.
        return unsafe { real(thread, attr, routine, arg) };
    }
    // SAFETY: `start` is a fresh block of the right size and alignment.
    unsafe { start.write(Start { routine, arg }) };
    // SAFETY: forwarding, with our trampoline and its block.
    let rc = unsafe { real(thread, attr, trampoline, start.cast()) };
    if rc != 0 {
        // SAFETY: the thread was not created; the block is still ours.
        unsafe { __libc_free(start.cast()) };
    }
    rc
}

// "C-unwind": a thread that ends with pthread_exit unwinds through this frame.
extern "C-unwind" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the block pthread_create wrote; read once and freed here.
    let Start { routine, arg } = unsafe { p.cast::<Start>().read() };
    // SAFETY: allocated with __libc_malloc above.
    unsafe { __libc_free(p) };
    if session::is_active() {
        if let Some(_g) = Guard::enter() {
            let _ = stackheap::record::slots::current();
        }
    }
    routine(arg)
}

/// Pid of the process whose session this library started (0: none).
static OWNER_PID: AtomicI32 = AtomicI32::new(0);
static REAL_EXIT: AtomicUsize = AtomicUsize::new(0);

/// `_exit` skips atexit, so the trace is flushed here first — only by the process that
/// owns the session: a forked child is dormant, and a `vfork`/`posix_spawn` child that
/// fails to exec (same memory, other pid) must not stop its parent's session.
fn flush_before_exit() {
    // SAFETY: getpid has no preconditions.
    if session::is_active() && OWNER_PID.load(Ordering::Acquire) == unsafe { libc::getpid() } {
        if let Err(e) = session::stop_at_exit() {
            let msg = format!("stackheap: {e}\n");
            // SAFETY: writes our own buffer to fd 2.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
    }
}

/// Leave with glibc's `_exit` (or the raw system call if it cannot be found).
fn real_exit(code: c_int) -> ! {
    let f = next_symbol(&REAL_EXIT, c"_exit");
    if f != 0 {
        // SAFETY: `f` is glibc's _exit, of this signature.
        let real: extern "C" fn(c_int) -> ! = unsafe { std::mem::transmute(f) };
        real(code);
    }
    // SAFETY: exit_group ends the process; it does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, code) };
    unreachable!("exit_group returned")
}

/// `_exit`: flush the trace (see `flush_before_exit`), then leave.
#[no_mangle]
pub extern "C" fn _exit(code: c_int) -> ! {
    flush_before_exit();
    real_exit(code)
}

/// `_Exit`: as `_exit`.
#[no_mangle]
pub extern "C" fn _Exit(code: c_int) -> ! {
    flush_before_exit();
    real_exit(code)
}

static REAL_USABLE: AtomicUsize = AtomicUsize::new(0);

/// `malloc_usable_size`: glibc's, found once with `dlsym(RTLD_NEXT)` (whose own
/// allocations pass the shims like any other).
///
/// # Safety
/// The C contract of `malloc_usable_size`.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    let f = next_symbol(&REAL_USABLE, c"malloc_usable_size");
    if f == 0 {
        return 0;
    }
    // SAFETY: `f` is glibc's malloc_usable_size, of this signature.
    let real: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { std::mem::transmute(f) };
    // SAFETY: forwarding.
    unsafe { real(p) }
}
