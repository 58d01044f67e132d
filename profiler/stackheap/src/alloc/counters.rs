//! Exact counters without a lock.
//!
//! Totals (allocations, frees, bytes, failures) are per thread: each thread adds to its
//! own slot's counters with plain stores (no locked instruction), and readers sum the
//! slots; live blocks are allocations minus frees. They are always exact.
//!
//! Live bytes and the peak need the *process* heap, i.e. one order of all changes:
//!
//! * **Solo mode** (one thread has a slot): that thread updates the global live total
//!   and the peak with plain loads and stores. Live bytes, `peak_bytes`, `peak_blocks`
//!   and `peak_time_ns` are exact (to the recorder's clock tick for the time).
//! * **Several threads** (from the registration of the second thread of a session on):
//!   each thread keeps its live-bytes change in its slot (`Totals::pending`, plain
//!   stores) and adds it to the global total with one locked instruction only once it
//!   exceeds ±[`BATCH`] bytes, checking the peak then. The live total read by
//!   [`snapshot`] (and the trailer) sums the pending changes, so it is exact whenever no
//!   thread is inside an allocation — at the trailer, for instance. The peak is checked
//!   against a total that misses at most `BATCH` bytes per thread, so `peak_bytes` is
//!   within `threads × BATCH` bytes of the true peak (above or below);
//!   `peak_blocks` and `peak_time_ns` belong to that approximate peak. A full-mode
//!   report does not use it: it computes the exact peak from the events, which are
//!   ordered by their sequence numbers. (With one `lock xadd` per call on one cache line
//!   the two cores of `churn --threads 2` ran at 8× the un-profiled time.)
//!
//! The heap limit compares against `live_bytes`, the same sum.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{compiler_fence, AtomicI64, AtomicPtr, AtomicU64, AtomicU8};

use crate::format::Counters;
use crate::record::slots::{self, Slot};

/// Totals of one thread (or of threads without a slot), written by one owner only.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Totals {
    /// Allocations (reallocs included).
    pub allocs: AtomicU64,
    /// Frees (reallocs included).
    pub frees: AtomicU64,
    /// Bytes allocated (reallocs: new size).
    pub bytes: AtomicU64,
    /// Failed allocations.
    pub failed: AtomicU64,
    /// Live-bytes change of this thread not yet added to the global live total (see
    /// [`BATCH`]); always 0 in solo mode.
    pub pending: AtomicI64,
}

#[inline(always)]
fn bump(a: &AtomicU64, d: u64) {
    // Owner-only counter: a plain load and store, no locked instruction.
    a.store(a.load(Relaxed).wrapping_add(d), Relaxed);
}

impl Totals {
    /// An all-zero set.
    pub const fn new() -> Self {
        Totals {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pending: AtomicI64::new(0),
        }
    }

    fn add_to(&self, c: &mut Counters) {
        c.total_allocs += self.allocs.load(Relaxed);
        c.total_frees += self.frees.load(Relaxed);
        c.total_bytes += self.bytes.load(Relaxed);
        c.failed_allocs += self.failed.load(Relaxed);
    }

    /// Move these totals into `into` (a retired slot's into the retired sum).
    pub(crate) fn fold_into(&self, into: &Totals) {
        for (a, b) in [
            (&self.allocs, &into.allocs),
            (&self.frees, &into.frees),
            (&self.bytes, &into.bytes),
            (&self.failed, &into.failed),
        ] {
            b.fetch_add(a.swap(0, Relaxed), Relaxed);
        }
        flush_pending(self);
    }

    /// Zero (session start).
    pub(crate) fn clear(&self) {
        for a in [&self.allocs, &self.frees, &self.bytes, &self.failed] {
            a.store(0, Relaxed);
        }
        self.pending.store(0, Relaxed);
    }
}

/// Totals of threads that had no slot (table full, or allocating after their exit
/// hook) — updated with atomic adds since several threads may share it — and of
/// slots whose threads have exited.
pub(crate) static SHARED: Totals = Totals::new();
/// A value alone on its cache line, so that threads writing one counter do not slow
/// down readers of its neighbours.
#[repr(align(64))]
struct Line<T>(T);

/// The global live total and the peak, each on its own cache line, in one static (one
/// address for the hot path to load).
#[repr(C)]
struct LiveAndPeak {
    live: Line<AtomicI64>,
    peak: Line<AtomicU64>,
}
static HOT: LiveAndPeak = LiveAndPeak {
    live: Line(AtomicI64::new(0)),
    peak: Line(AtomicU64::new(0)),
};
/// With several threads, each thread adds its live-bytes changes to the global live total only
/// once they add up to more than this (either way): the global counter's cache line no
/// longer moves between cores on every call. The price: the peak is then checked against
/// a live total that may miss up to `BATCH` bytes per thread (see the module docs).
pub const BATCH: i64 = 64 << 10;
static PEAK_BLOCKS: AtomicU64 = AtomicU64::new(0);
static PEAK_TIME_NS: AtomicU64 = AtomicU64::new(0);
/// Events that could not be recorded (buffer hand-off failed, too many threads).
pub(crate) static LOST: AtomicU64 = AtomicU64::new(0);
/// Allocations the profiler itself made while profiling (not counted above).
pub static OWN_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds since the session start, refreshed by the recorder every round; the hot
/// path reads it instead of calling the clock.
pub(crate) static NOW_NS: AtomicU64 = AtomicU64::new(0);

/// Reset all counters (session start; no allocation is being counted concurrently).
pub(crate) fn reset() {
    SHARED.clear();
    for c in [&PEAK_BLOCKS, &PEAK_TIME_NS, &LOST, &NOW_NS] {
        c.store(0, Relaxed);
    }
    HOT.live.0.store(0, Relaxed);
    HOT.peak.0.store(0, Relaxed);
}

/// Solo mode: while only one thread allocates, it updates the live total and the peak
/// with plain loads and stores — no locked instruction. When a second thread registers
/// it switches everyone to atomic adds (see [`thread_registered`]).
const SOLO_ALLOWED: u8 = 0;
const SOLO_CLAIMED: u8 = 1;
const SOLO_SWITCHING: u8 = 2;
const SOLO_OFF: u8 = 3;
static SOLO_STATE: AtomicU8 = AtomicU8::new(SOLO_OFF);
static SOLO_SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long) == 0 }
}

/// Session start: allow solo mode if the kernel offers private expedited membarrier.
pub(crate) fn solo_reset() {
    SOLO_SLOT.store(std::ptr::null_mut(), Relaxed);
    let ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
    SOLO_STATE.store(if ok { SOLO_ALLOWED } else { SOLO_OFF }, Relaxed);
}

/// Session stop: a full memory barrier on every thread of the process, after `STOPPING`
/// was stored and before the `in_flight` announcements are read. A solo thread takes
/// its sequence number without a locked instruction (see `Slot::take_seq`), so only
/// this barrier orders its announcement before its load of the state. Does nothing
/// (and is not needed) if solo mode was never allowed.
pub(crate) fn stop_barrier() {
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
}

/// A thread got a slot. The first one of a session becomes the solo thread; the next
/// one ends solo mode: it publishes the switch, forces a memory barrier on every thread
/// of the process (`membarrier`), then waits until the solo thread is not inside a plain
/// update. From then on the solo thread, too, sees the switch and uses atomic adds.
pub(crate) fn thread_registered(slot: &'static Slot) {
    slot.solo.store(false, Relaxed);
    loop {
        match SOLO_STATE.load(Acquire) {
            SOLO_ALLOWED => {
                if SOLO_STATE
                    .compare_exchange(SOLO_ALLOWED, SOLO_CLAIMED, AcqRel, Acquire)
                    .is_ok()
                {
                    SOLO_SLOT.store(slot as *const Slot as *mut Slot, Release);
                    slot.solo.store(true, Release);
                    return;
                }
            }
            SOLO_CLAIMED => {
                if SOLO_STATE
                    .compare_exchange(SOLO_CLAIMED, SOLO_SWITCHING, AcqRel, Acquire)
                    .is_ok()
                {
                    let solo = SOLO_SLOT.swap(std::ptr::null_mut(), AcqRel);
                    if !solo.is_null() {
                        // SAFETY: slots live in a process-lifetime mapping.
                        let solo = unsafe { &*solo };
                        solo.solo.store(false, Release);
                        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
                        while solo.busy.load(Acquire) {
                            std::thread::yield_now();
                        }
                    }
                    SOLO_STATE.store(SOLO_OFF, Release);
                    return;
                }
            }
            SOLO_SWITCHING => std::thread::yield_now(),
            _ => return,
        }
    }
}

#[inline(always)]
fn live_change(own: Option<&Slot>, bytes: i64) {
    if let Some(s) = own {
        if s.solo.load(Relaxed) {
            // Asymmetric fence: `busy` is published before `solo` is read again;
            // the switching thread's membarrier makes that store visible to it (or our
            // re-read see its switch), so no plain update can overlap an atomic one.
            s.busy.store(true, Relaxed);
            compiler_fence(SeqCst);
            if s.solo.load(Relaxed) {
                let live = HOT.live.0.load(Relaxed) + bytes;
                HOT.live.0.store(live, Relaxed);
                if bytes >= 0 && live >= 0 && live as u64 >= HOT.peak.0.load(Relaxed) {
                    new_peak(live as u64, true);
                }
                compiler_fence(SeqCst);
                s.busy.store(false, Release);
                return;
            }
            s.busy.store(false, Release);
        }
    }
    match own {
        Some(s) => {
            // Several threads: batch this thread's changes (owner-only plain stores).
            let p = s.totals.pending.load(Relaxed) + bytes;
            if (-BATCH..=BATCH).contains(&p) {
                s.totals.pending.store(p, Relaxed);
            } else {
                s.totals.pending.store(0, Relaxed);
                add_live(p);
            }
        }
        None => add_live(bytes),
    }
}

/// Add `bytes` to the global live total (one locked instruction) and check the peak.
#[inline(never)]
fn add_live(bytes: i64) {
    let live = HOT.live.0.fetch_add(bytes, Relaxed) + bytes;
    // `>=` as dhat: of equal peaks the latest counts.
    if bytes >= 0 && live >= 0 && live as u64 >= HOT.peak.0.load(Relaxed) {
        new_peak(live as u64, false);
    }
}

/// Move a thread's pending live-bytes change into the global total (its thread exits, or
/// its retired slot is folded).
fn flush_pending(t: &Totals) {
    let p = t.pending.swap(0, Relaxed);
    if p != 0 {
        add_live(p);
    }
}

/// The calling thread is exiting: its pending change goes into the global total now, so
/// that the peaks other threads see include it.
pub(crate) fn thread_exit(s: &Slot) {
    flush_pending(&s.totals);
}

/// The live total reached (or equalled) the peak. Equal peaks are common (a loop that
/// allocates and frees at the top of the heap), so they take no locked instruction.
#[inline(never)]
fn new_peak(live: u64, solo: bool) {
    if live > HOT.peak.0.load(Relaxed) {
        if solo {
            HOT.peak.0.store(live, Relaxed);
        } else {
            HOT.peak.0.fetch_max(live, Relaxed);
        }
    }
    let blocks = live_blocks().max(0) as u64;
    if PEAK_BLOCKS.load(Relaxed) != blocks {
        PEAK_BLOCKS.store(blocks, Relaxed);
    }
    let now = NOW_NS.load(Relaxed);
    if PEAK_TIME_NS.load(Relaxed) != now {
        PEAK_TIME_NS.store(now, Relaxed);
    }
}

/// Live blocks: all allocations minus all frees, summed over the threads.
fn live_blocks() -> i64 {
    let mut c = Counters::default();
    sum_totals(&mut c);
    c.total_allocs as i64 - c.total_frees as i64
}

fn sum_totals(c: &mut Counters) {
    SHARED.add_to(c);
    for i in 0..slots::HWM.load(Relaxed) {
        slots::slot(i).totals.add_to(c);
    }
}

#[inline(always)]
fn totals(own: Option<&Totals>, f: impl FnOnce(&Totals, fn(&AtomicU64, u64))) {
    match own {
        Some(t) => f(t, bump),
        None => f(&SHARED, |a, d| {
            a.fetch_add(d, Relaxed);
        }),
    }
}

/// Count an allocation of `size` bytes by the thread owning `own` (None: no slot).
#[inline(always)]
pub(crate) fn on_alloc(own: Option<&'static Slot>, size: usize) {
    totals(own.map(|s| &s.totals), |t, add| {
        add(&t.allocs, 1);
        add(&t.bytes, size as u64);
    });
    live_change(own, size as i64);
}

/// Count a free of `size` bytes.
#[inline(always)]
pub(crate) fn on_free(own: Option<&'static Slot>, size: usize) {
    totals(own.map(|s| &s.totals), |t, add| add(&t.frees, 1));
    live_change(own, -(size as i64));
}

/// Count a realloc: one block retired, one created.
#[inline(always)]
pub(crate) fn on_realloc(own: Option<&'static Slot>, old_size: usize, new_size: usize) {
    totals(own.map(|s| &s.totals), |t, add| {
        add(&t.allocs, 1);
        add(&t.frees, 1);
        add(&t.bytes, new_size as u64);
    });
    live_change(own, new_size as i64 - old_size as i64);
}

/// Count an allocation the inner allocator refused.
#[inline(always)]
pub(crate) fn on_failed(own: Option<&Totals>) {
    totals(own, |t, add| add(&t.failed, 1));
}

/// Live heap bytes now: the global total plus every thread's pending change (exact when
/// no thread is counting; the heap limit compares against it).
pub(crate) fn live_bytes() -> i64 {
    let mut live = HOT.live.0.load(Relaxed) + SHARED.pending.load(Relaxed);
    for i in 0..slots::HWM.load(Relaxed) {
        live += slots::slot(i).totals.pending.load(Relaxed);
    }
    live
}

/// A snapshot of every counter (sums the thread slots).
pub fn snapshot() -> Counters {
    let mut c = Counters {
        time_ns: NOW_NS.load(Relaxed),
        live_bytes: live_bytes(),
        peak_bytes: HOT.peak.0.load(Relaxed),
        peak_blocks: PEAK_BLOCKS.load(Relaxed),
        peak_time_ns: PEAK_TIME_NS.load(Relaxed),
        ..Default::default()
    };
    sum_totals(&mut c);
    c.live_blocks = c.total_allocs as i64 - c.total_frees as i64;
    c
}
