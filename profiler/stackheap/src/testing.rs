//! Heap assertions in tests: a scope that counts the allocations made **by the current
//! thread** while it is open, so that it works under cargo's parallel test threads.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();
//!
//! #[test]
//! fn parse_allocates_little() {
//!     let scope = stackheap::testing::HeapScope::new();
//!     let v: Vec<u32> = (0..100).collect();
//!     drop(v);
//!     scope.assert_max_allocs(1);
//!     scope.assert_max_peak(400);
//!     scope.assert_no_leaks();
//! }
//! # fn main() {}
//! ```
//!
//! How: opening the first scope of the process wakes the allocator hooks (they stay
//! awake afterwards, a small cost in test binaries only); a hook that finds no
//! profiling session checks this thread's scope and counts into it without allocating
//! (fixed tables made when the scope opened; call stacks through the unwinder). Scopes
//! count only while no profiling session is running. A failed assertion names the
//! biggest sites, symbolized then.

use std::cell::Cell;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicBool;

use crate::alloc::guard::Guard;
use crate::stack::unwind;

/// Frames kept per site.
const FRAMES: usize = 32;
/// Sites per scope; later sites are gathered in the last one.
const SITES: usize = 128;
/// Blocks a scope follows (for leaks); beyond, new blocks are not followed.
const BLOCKS: usize = 1 << 15;
const EMPTY: u64 = 0;
const TOMB: u64 = 1;

/// True once a scope has been opened in this process: the hooks stay awake.
pub(crate) static EVER: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CURRENT: Cell<*mut ScopeState> = const { Cell::new(std::ptr::null_mut()) };
}

#[derive(Clone, Copy)]
struct SiteSlot {
    hash: u64,
    n: usize,
    frames: [u64; FRAMES],
    allocs: u64,
    bytes: u64,
    live_bytes: i64,
    live_blocks: i64,
}

const NO_SITE: SiteSlot = SiteSlot {
    hash: 0,
    n: 0,
    frames: [0; FRAMES],
    allocs: 0,
    bytes: 0,
    live_bytes: 0,
    live_blocks: 0,
};

struct ScopeState {
    stats: ScopeStats,
    blocks: Box<[(u64, u64, u32)]>,
    blocks_live: usize,
    sites: Box<[SiteSlot]>,
    n_sites: usize,
}

/// What a scope counted so far (allocations of this thread only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeStats {
    /// Allocations (reallocs included).
    pub allocs: u64,
    /// Frees of blocks allocated in the scope (reallocs included).
    pub frees: u64,
    /// Bytes requested (reallocs: the new size).
    pub bytes: u64,
    /// Bytes allocated in the scope and not freed yet.
    pub live_bytes: i64,
    /// Blocks allocated in the scope and not freed yet.
    pub live_blocks: i64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
    /// More blocks than the scope can follow were live: leak figures are a lower bound.
    pub overflowed: bool,
}

impl ScopeState {
    fn slot_of(&self, addr: u64) -> Option<usize> {
        let mask = BLOCKS - 1;
        let mut i = (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) as usize & mask;
        for _ in 0..BLOCKS {
            match self.blocks[i].0 {
                EMPTY => return None,
                a if a == addr => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
        None
    }

    fn insert_block(&mut self, addr: u64, size: u64, site: u32) {
        if self.blocks_live >= BLOCKS * 3 / 4 {
            self.stats.overflowed = true;
            return;
        }
        let mask = BLOCKS - 1;
        let mut i = (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) as usize & mask;
        while self.blocks[i].0 != EMPTY && self.blocks[i].0 != TOMB {
            i = (i + 1) & mask;
        }
        self.blocks[i] = (addr, size, site);
        self.blocks_live += 1;
    }

    fn site(&mut self) -> u32 {
        let mut buf = [MaybeUninit::<u64>::uninit(); FRAMES];
        let n = unwind::walk_backtrace(&mut buf);
        let mut frames = [0u64; FRAMES];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, f) in buf.iter().take(n).enumerate() {
            // SAFETY: the unwinder initialised the first `n` entries.
            let v = unsafe { f.assume_init() };
            frames[i] = v;
            h = (h.rotate_left(5) ^ v).wrapping_mul(0x100_0000_01b3);
        }
        h |= 1;
        for (i, s) in self.sites[..self.n_sites].iter().enumerate() {
            if s.hash == h {
                return i as u32;
            }
        }
        if self.n_sites < SITES {
            self.sites[self.n_sites] = SiteSlot {
                hash: h,
                n,
                frames,
                ..NO_SITE
            };
            self.n_sites += 1;
            (self.n_sites - 1) as u32
        } else {
            (SITES - 1) as u32
        }
    }

    fn alloc(&mut self, addr: u64, size: u64) {
        let site = self.site();
        let s = &mut self.stats;
        s.allocs += 1;
        s.bytes += size;
        s.live_bytes += size as i64;
        s.live_blocks += 1;
        s.peak_bytes = s.peak_bytes.max(s.live_bytes.max(0) as u64);
        let st = &mut self.sites[site as usize];
        st.allocs += 1;
        st.bytes += size;
        st.live_bytes += size as i64;
        st.live_blocks += 1;
        self.insert_block(addr, size, site);
    }

    fn free(&mut self, addr: u64) {
        let Some(i) = self.slot_of(addr) else { return };
        let (_, size, site) = self.blocks[i];
        self.blocks[i] = (TOMB, 0, 0);
        self.blocks_live -= 1;
        let s = &mut self.stats;
        s.frees += 1;
        s.live_bytes -= size as i64;
        s.live_blocks -= 1;
        let st = &mut self.sites[site as usize];
        st.live_bytes -= size as i64;
        st.live_blocks -= 1;
    }
}

/// Run `f` on this thread's scope, if one is open, with the guard held.
#[inline(always)]
fn with_scope(f: impl FnOnce(&mut ScopeState)) {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    // SAFETY: the state is owned by the HeapScope of this thread, which outlives its
    // registration in CURRENT; the guard keeps this from re-entering.
    f(unsafe { &mut *p });
}

/// Hook: an allocation of `size` bytes at `ptr` by this thread (no session running).
#[cold]
#[inline(never)]
pub(crate) fn on_alloc(ptr: *mut u8, size: usize) {
    if !ptr.is_null() {
        with_scope(|s| s.alloc(ptr as u64, size as u64));
    }
}

/// Hook: a free of `ptr`.
#[cold]
#[inline(never)]
pub(crate) fn on_free(ptr: *mut u8) {
    with_scope(|s| s.free(ptr as u64));
}

/// Hook: a realloc of `old` to `new` (null: failed, nothing changed).
#[cold]
#[inline(never)]
pub(crate) fn on_realloc(old: *mut u8, new: *mut u8, new_size: usize) {
    if !new.is_null() {
        with_scope(|s| {
            s.free(old as u64);
            s.alloc(new as u64, new_size as u64);
        });
    }
}

/// Counts the current thread's allocations while it lives; see the module docs.
/// Scopes nest: an inner scope counts alone until it is dropped.
pub struct HeapScope {
    state: *mut ScopeState,
    prev: *mut ScopeState,
}

impl Default for HeapScope {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapScope {
    /// Open a scope on this thread.
    pub fn new() -> HeapScope {
        let state = {
            let _g = Guard::enter();
            Box::into_raw(Box::new(ScopeState {
                stats: ScopeStats::default(),
                blocks: vec![(EMPTY, 0, 0); BLOCKS].into_boxed_slice(),
                blocks_live: 0,
                sites: vec![NO_SITE; SITES].into_boxed_slice(),
                n_sites: 0,
            }))
        };
        crate::record::session::wake_for_testing();
        let prev = CURRENT.with(|c| c.replace(state));
        HeapScope { state, prev }
    }

    /// The figures so far.
    pub fn stats(&self) -> ScopeStats {
        // SAFETY: our own state; hooks of this thread do not run during this read.
        unsafe { (*self.state).stats }
    }

    /// Panic (naming the biggest sites) unless at most `n` allocations were made.
    #[track_caller]
    pub fn assert_max_allocs(&self, n: u64) {
        let s = self.stats();
        if s.allocs > n {
            self.fail(
                format!("{} allocations, at most {n} allowed", s.allocs),
                |t| t.allocs as i64,
            );
        }
    }

    /// Panic unless the live bytes of the scope never went above `bytes`.
    #[track_caller]
    pub fn assert_max_peak(&self, bytes: u64) {
        let s = self.stats();
        if s.peak_bytes > bytes {
            self.fail(
                format!("peak of {} bytes, at most {bytes} allowed", s.peak_bytes),
                |t| t.bytes as i64,
            );
        }
    }

    /// Panic unless every block allocated in the scope has been freed.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        self.assert_max_live(0);
    }

    /// Panic unless at most `bytes` allocated in the scope are still live.
    #[track_caller]
    pub fn assert_max_live(&self, bytes: u64) {
        let s = self.stats();
        if s.live_bytes > bytes as i64 {
            self.fail(
                format!(
                    "{} bytes in {} blocks still live (leaked), at most {bytes} allowed",
                    s.live_bytes, s.live_blocks
                ),
                |t| t.live_bytes,
            );
        }
    }

    #[track_caller]
    fn fail(&self, what: String, key: fn(&SiteSlot) -> i64) -> ! {
        let msg = {
            let _g = Guard::enter();
            // SAFETY: our own state; the guard keeps the hooks out.
            let st = unsafe { &*self.state };
            let mut sites: Vec<&SiteSlot> = st.sites[..st.n_sites]
                .iter()
                .filter(|s| key(s) > 0)
                .collect();
            sites.sort_by_key(|s| std::cmp::Reverse(key(s)));
            let mut m = format!("stackheap::testing: {what}; biggest sites:");
            for s in sites.iter().take(3) {
                let _ = write!(
                    m,
                    "\n  {} allocations, {} bytes, {} bytes live in {} blocks, at:",
                    s.allocs, s.bytes, s.live_bytes, s.live_blocks
                );
                for name in own_frames(&s.frames[..s.n]).into_iter().take(4) {
                    let _ = write!(m, "\n      {name}");
                }
            }
            if st.stats.overflowed {
                m.push_str(
                    "\n  (more blocks were live than a scope follows: figures are a lower bound)",
                );
            }
            m
        };
        panic!("{msg}")
    }
}

/// Function names of `frames`, without the allocator's, the profiler's and the
/// standard library's own frames.
fn own_frames(frames: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    for &f in frames {
        // A return address: look up the call instruction before it. One address stands
        // for a chain of inlined functions, innermost first (`vec!`'s internals, then
        // the function that wrote it): keep every name in it that is the program's own.
        let mut names = Vec::new();
        backtrace::resolve(
            f.saturating_sub(1) as usize as *mut std::ffi::c_void,
            |sym| {
                if let Some(n) = sym.name() {
                    names.push(format!("{n:#}"));
                }
            },
        );
        for n in names {
            let skip = [
                "stackheap::",
                "<stackheap::",
                "alloc::",
                "<alloc::",
                "core::",
                "<core::",
                "std::",
                "<std::",
                "__rust",
                "backtrace::",
                "<T as alloc",
            ];
            if !skip.iter().any(|p| n.starts_with(p)) {
                out.push(n);
            }
        }
    }
    out
}

impl Drop for HeapScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        let _g = Guard::enter();
        // SAFETY: made by Box::into_raw in `new`, unregistered above.
        drop(unsafe { Box::from_raw(self.state) });
    }
}
