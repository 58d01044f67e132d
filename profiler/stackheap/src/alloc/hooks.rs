//! The hooks every allocation path ends in (the `StackHeap` wrapper today, the
//! LD_PRELOAD shims later). They follow the hot-path contract: no heap allocation, no
//! lock shared between threads, no formatting, no syscall except the rare ring hand-off.
//!
//! Order matters for a correct reconstruction: a free is recorded *before* the block is
//! returned to the inner allocator and an allocation *after* it was obtained, so when
//! another thread gets the same address it also gets a later sequence number.
//!
//! The common case is inlined into the allocator ([`after_alloc_awake`], [`before_free`]):
//! one thread-local access (guard flag, slot and session together), the thread's own
//! counters, and in sampled mode the byte countdown or the sampled-page test; it takes no
//! guard because it cannot allocate (see `fast_slot`). Everything else — the first
//! call of a thread, the profiler's own allocations, failures, testing scopes, reallocs —
//! goes through the out-of-line `*_active` functions. A recorded event costs the
//! sequence number (a plain load and store while the thread is the only one with a slot,
//! one locked instruction otherwise: [`Slot::take_seq`]), a frame-pointer walk and one
//! probe of the thread's stack table, then its record is written straight into the ring.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::Relaxed;

use super::counters;
use super::guard::{self, Guard};
use super::limit;
use crate::format::encode::{self, MAX_EVENT_RECORD, MAX_FRAMES, MAX_STACK_RECORD};
use crate::format::varint::SliceWriter;
use crate::record::session::{self, ACTIVE, DORMANT, SAMPLE_RATE, SCOPED, STATE, UNINIT};
use crate::record::slots::{self, Owner, Slot, STACK_TABLE};
use crate::stack::{self, bounds::StackBounds, unwind};

/// True unless the profiler is installed and off: the only test on the dormant path,
/// one relaxed load inlined into the allocator; everything else lives in the
/// out-of-line `*_active` functions so the dormant allocator stays small.
#[inline(always)]
fn awake() -> bool {
    STATE.load(Relaxed) != DORMANT
}

/// True if this call is to be profiled (reads the environment on the very first call).
#[inline(always)]
fn active() -> bool {
    let s = STATE.load(Relaxed);
    if s == ACTIVE {
        return true;
    }
    if s == UNINIT {
        session::init_from_env();
        return STATE.load(Relaxed) == ACTIVE;
    }
    false
}

/// True unless the profiler is installed and off (the dormant test, for allocators that
/// take it once and then call the `*_awake` hooks).
#[inline(always)]
pub fn is_awake() -> bool {
    awake()
}

/// Awake only: true if an allocation of `size` more bytes is over the heap limit and
/// must get null before the inner allocator is asked (one relaxed load when no limit).
#[inline(always)]
pub fn over_limit_awake(size: usize) -> bool {
    limit::exceeds(size)
}

/// [`after_alloc`] when [`is_awake`] was already checked.
#[inline(always)]
pub fn after_alloc_awake(ptr: *mut u8, size: usize) {
    if !ptr.is_null() {
        if let Some(slot) = fast_slot() {
            counters::on_alloc(Some(slot), size);
            let rate = rate();
            if rate == 0 {
                return;
            }
            // SAFETY: `slot` is this thread's; no other &mut Owner is alive in this call
            // (the slow paths below are not running: the guard is not held).
            if rate > 1 && !unsafe { slot.owner() }.countdown.sample(size, rate) {
                return;
            }
            record_alloc(slot, ptr, size, rate);
            return;
        }
    }
    after_alloc_active(ptr, size);
}

/// The fast path's test: this thread's slot if the session records, the thread has a
/// slot of this session and does not hold the guard (is not the profiler itself).
///
/// The fast paths that follow it count, run the sampling countdown and test the set of
/// sampled blocks *without* taking the guard: none of that can allocate (plain stores
/// to the thread's slot, the global counters, `ln` of libm, loads of the sampled set),
/// so the guard's rule ("code that may allocate runs with the guard held") holds. They
/// take the guard before anything that may allocate (stack capture, records).
#[inline(always)]
fn fast_slot() -> Option<&'static Slot> {
    fast_slot_in(STATE.load(Relaxed))
}

/// [`fast_slot`] with the state already loaded.
#[inline(always)]
fn fast_slot_in(state: u8) -> Option<&'static Slot> {
    if state != ACTIVE {
        return None;
    }
    let (held, s, sess) = guard::LOCAL.with(|l| (l.held.get(), l.slot.get(), l.session.get()));
    if held || s.is_null() || sess != session::SESSION.load(Relaxed) {
        return None;
    }
    // SAFETY: the slot pointer points into the slot table, which lives for the process.
    Some(unsafe { &*s })
}

/// [`before_realloc`] when [`is_awake`] was already checked.
#[inline(always)]
pub fn before_realloc_awake(old: *mut u8, new_size: usize) -> ReallocTicket {
    before_realloc_active(old, new_size)
}

/// True when no session runs but testing scopes are in use (`crate::testing`).
#[inline(always)]
fn scoped() -> bool {
    STATE.load(Relaxed) == SCOPED
}

/// Sample rate now: 0 = counters only, 1 = every allocation, N = mean bytes.
#[inline(always)]
pub(crate) fn rate() -> u64 {
    SAMPLE_RATE.load(Relaxed)
}

/// Capture the stack and return its per-thread id, writing a StackDef to the ring
/// first if this thread has not written it yet. Call between `begin` and `end`.
#[inline(always)]
pub(crate) fn stack_id(slot: &Slot, owner: &mut Owner) -> u64 {
    let mut buf = [MaybeUninit::<u64>::uninit(); MAX_FRAMES];
    let (n, h) = unwind::capture_hashed(&mut buf, owner.bounds);
    if n == 0 {
        return 0;
    }
    // SAFETY: `capture_hashed` initialised the first `n` entries.
    let frames: &[u64] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
    let mask = STACK_TABLE - 1;
    let mut i = h as usize & mask;
    for _ in 0..16 {
        let (eh, id) = owner.table[i];
        if eh == h {
            return id;
        }
        if eh == 0 {
            break;
        }
        i = (i + 1) & mask;
    }
    define_stack(slot, owner, h, i, frames)
}

/// A stack new to this thread: give it an id and write its frames. Keeps the table at
/// most 3/4 full by starting over (ids keep growing, so an id never names two stacks).
#[cold]
#[inline(never)]
fn define_stack(slot: &Slot, owner: &mut Owner, h: u64, mut i: usize, frames: &[u64]) -> u64 {
    crate::stack::fault::early_check();
    if owner.table_used >= STACK_TABLE * 3 / 4 || owner.table[i].0 != 0 {
        owner.table.iter_mut().for_each(|e| *e = (0, 0));
        owner.table_used = 0;
        i = h as usize & (STACK_TABLE - 1);
    }
    let id = owner.next_stack;
    owner.next_stack += 1;
    owner.table[i] = (h, id);
    owner.table_used += 1;
    let mut scratch = [0u8; MAX_STACK_RECORD];
    let mut w = SliceWriter::new(&mut scratch);
    encode::stack_def(&mut w, id, frames);
    slot.write(w.as_slice());
    id
}

#[inline(always)]
pub(crate) fn depth(bounds: StackBounds) -> u64 {
    bounds.high.saturating_sub(stack::current_sp()) as u64
}

/// The profiler's own allocation (guard held): not counted, but tallied so tests can
/// check the profiler does not allocate per event.
#[cold]
#[inline(never)]
fn own_allocation() {
    counters::OWN_ALLOCS.fetch_add(1, Relaxed);
    guard::saw_probe();
}

/// After the inner allocator returned `ptr` for `size` bytes.
#[inline(always)]
pub fn after_alloc(ptr: *mut u8, size: usize) {
    if awake() {
        after_alloc_awake(ptr, size);
    }
}

#[inline(never)]
fn after_alloc_active(ptr: *mut u8, size: usize) {
    if !active() {
        if scoped() {
            crate::testing::on_alloc(ptr, size);
        }
        return;
    }
    let Some(_g) = Guard::enter() else {
        own_allocation();
        return;
    };
    let slot = slots::current();
    if ptr.is_null() {
        failed(slot, size);
        return;
    }
    counters::on_alloc(slot, size);
    let rate = rate();
    let Some(slot) = slot.filter(|_| rate != 0) else {
        return;
    };
    // SAFETY: `slot` is this thread's; no other &mut Owner is alive in this call.
    let owner = unsafe { slot.owner() };
    if rate > 1 && !owner.countdown.sample(size, rate) {
        return;
    }
    record_alloc_guarded(slot, ptr, size, rate);
}

/// An allocation the fast path counted and picked for a stack: take the guard, record.
#[inline(never)]
fn record_alloc(slot: &'static Slot, ptr: *mut u8, size: usize, rate: u64) {
    let Some(_g) = Guard::enter() else { return };
    record_alloc_guarded(slot, ptr, size, rate);
}

/// Record an allocation with its stack (guard held, counted already).
#[inline(always)]
fn record_alloc_guarded(slot: &'static Slot, ptr: *mut u8, size: usize, rate: u64) {
    // SAFETY: `slot` is this thread's; no other &mut Owner is alive in this call.
    let owner = unsafe { slot.owner() };
    let Some(seq) = slot.begin() else { return };
    let id = stack_id(slot, owner);
    if rate > 1 {
        session::sampled_set().insert(ptr as usize);
    }
    let d = depth(owner.bounds);
    let (addr, size) = (ptr as u64, size as u64);
    if let Some(p) = slot.reserve(MAX_EVENT_RECORD) {
        // SAFETY: `reserve` gave MAX_EVENT_RECORD writable bytes at `p`.
        let n = unsafe { owner.stream.alloc_raw(p, seq, addr, size, id, d) };
        slot.commit(n);
    } else {
        slot.record(MAX_EVENT_RECORD, |w| {
            owner.stream.alloc(w, seq, addr, size, id, d)
        });
    }
    slot.end();
}

/// Before `ptr` (of `size` bytes) is given back to the inner allocator.
#[inline(always)]
pub fn before_free(ptr: *mut u8, size: usize) {
    let state = STATE.load(Relaxed);
    if state == DORMANT {
        return;
    }
    if let Some(slot) = fast_slot_in(state) {
        counters::on_free(Some(slot), size);
        let rate = rate();
        if rate == 0 || (rate > 1 && !session::sampled_set().may_hold(ptr as usize)) {
            return;
        }
        record_free(slot, ptr, rate);
        return;
    }
    before_free_active(ptr, size);
}

/// A free the fast path counted and could not rule out: take the guard, record.
#[inline(never)]
fn record_free(slot: &'static Slot, ptr: *mut u8, rate: u64) {
    let Some(_g) = Guard::enter() else { return };
    record_free_guarded(slot, ptr, rate);
}

#[inline(never)]
fn before_free_active(ptr: *mut u8, size: usize) {
    if !active() {
        if scoped() {
            crate::testing::on_free(ptr);
        }
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let slot = slots::current();
    counters::on_free(slot, size);
    let rate = rate();
    let Some(slot) = slot.filter(|_| rate != 0) else {
        return;
    };
    record_free_guarded(slot, ptr, rate);
}

/// Record a free (guard held, counted already): in sampled mode only a sampled block's.
#[inline(always)]
fn record_free_guarded(slot: &'static Slot, ptr: *mut u8, rate: u64) {
    if rate > 1 {
        let set = session::sampled_set();
        if !set.remove(ptr as usize) && !set.overflowed() {
            return;
        }
    }
    let Some(seq) = slot.begin() else { return };
    // SAFETY: this thread's slot; no other &mut Owner alive.
    let owner = unsafe { slot.owner() };
    if let Some(p) = slot.reserve(MAX_EVENT_RECORD) {
        // SAFETY: `reserve` gave MAX_EVENT_RECORD writable bytes at `p`.
        let n = unsafe { owner.stream.free_raw(p, seq, ptr as u64) };
        slot.commit(n);
    } else {
        slot.record(MAX_EVENT_RECORD, |w| owner.stream.free(w, seq, ptr as u64));
    }
    slot.end();
}

/// What `before_realloc` learned, handed to `after_realloc`.
pub struct ReallocTicket {
    owner: Option<&'static Slot>,
    slot: Option<&'static Slot>,
    free_seq: u64,
    old_sampled: bool,
    new_sampled: bool,
    guard: Option<Guard>,
    /// No session: count into this thread's testing scope after the realloc.
    scoped: bool,
}

/// Before a realloc of `old` to `new_size` bytes. The old block's retirement takes its
/// sequence number here, before the inner allocator can hand the address to another
/// thread; the record stays announced until `after_realloc`.
#[inline(always)]
pub fn before_realloc(old: *mut u8, new_size: usize) -> ReallocTicket {
    if awake() {
        before_realloc_active(old, new_size)
    } else {
        ReallocTicket::NONE
    }
}

impl ReallocTicket {
    const NONE: ReallocTicket = ReallocTicket {
        owner: None,
        slot: None,
        free_seq: 0,
        old_sampled: false,
        new_sampled: false,
        guard: None,
        scoped: false,
    };
}

#[inline(never)]
fn before_realloc_active(old: *mut u8, new_size: usize) -> ReallocTicket {
    let mut t = ReallocTicket {
        owner: None,
        slot: None,
        free_seq: 0,
        old_sampled: false,
        new_sampled: false,
        guard: None,
        scoped: false,
    };
    if !active() {
        t.scoped = scoped();
        return t;
    }
    let Some(g) = Guard::enter() else { return t };
    t.guard = Some(g);
    t.owner = slots::current();
    let rate = rate();
    let Some(slot) = t.owner.filter(|_| rate != 0) else {
        return t;
    };
    if rate > 1 {
        let set = session::sampled_set();
        t.old_sampled = set.remove(old as usize) || set.overflowed();
        // SAFETY: this thread's slot; no other &mut Owner alive.
        t.new_sampled = unsafe { slot.owner() }.countdown.sample(new_size, rate);
    } else {
        t.old_sampled = true;
        t.new_sampled = true;
    }
    if t.old_sampled || t.new_sampled {
        if let Some(seq) = slot.begin() {
            t.slot = Some(slot);
            t.free_seq = seq;
        }
    }
    t
}

/// After the inner realloc returned `new` (null: failed, `old` still valid).
#[inline(always)]
pub fn after_realloc(
    t: ReallocTicket,
    old: *mut u8,
    old_size: usize,
    new: *mut u8,
    new_size: usize,
) {
    if t.guard.is_some() || t.scoped {
        after_realloc_active(t, old, old_size, new, new_size);
    }
}

#[inline(never)]
fn after_realloc_active(
    t: ReallocTicket,
    old: *mut u8,
    old_size: usize,
    new: *mut u8,
    new_size: usize,
) {
    if t.scoped {
        crate::testing::on_realloc(old, new, new_size);
        return;
    }
    if t.guard.is_none() {
        return;
    }
    if new.is_null() {
        if let Some(slot) = t.slot {
            slot.end();
        }
        if t.old_sampled && rate() > 1 {
            session::sampled_set().insert(old as usize);
        }
        failed(t.owner, new_size);
        return;
    }
    counters::on_realloc(t.owner, old_size, new_size);
    let Some(slot) = t.slot else { return };
    // SAFETY: this thread's slot; no other &mut Owner alive.
    let owner = unsafe { slot.owner() };
    if t.new_sampled {
        let id = stack_id(slot, owner);
        if rate() > 1 {
            session::sampled_set().insert(new as usize);
        }
        let seq = slot.next_seq();
        let d = depth(owner.bounds);
        let (old, new) = (old as u64, new as u64);
        let (old_size, new_size) = (old_size as u64, new_size as u64);
        if t.old_sampled {
            slot.record(MAX_EVENT_RECORD, |w| {
                owner
                    .stream
                    .realloc(w, t.free_seq, seq, old, old_size, new, new_size, id, d)
            });
        } else {
            slot.record(MAX_EVENT_RECORD, |w| {
                owner.stream.alloc(w, seq, new, new_size, id, d)
            });
        }
    } else {
        slot.record(MAX_EVENT_RECORD, |w| {
            owner.stream.free(w, t.free_seq, old as u64)
        });
    }
    slot.end();
}

/// An allocation the inner allocator refused; the guard is held by the caller.
#[cold]
fn failed(slot: Option<&'static Slot>, size: usize) {
    counters::on_failed(slot.map(|s| &s.totals));
    let Some(slot) = slot else { return };
    if limit::first_failure(slot, size) {
        return;
    }
    if rate() == 0 {
        return;
    }
    let Some(seq) = slot.begin() else { return };
    // SAFETY: this thread's slot; no other &mut Owner alive.
    let owner = unsafe { slot.owner() };
    let id = stack_id(slot, owner);
    let d = depth(owner.bounds);
    slot.record(MAX_EVENT_RECORD, |w| {
        owner.stream.alloc_failed(w, seq, size as u64, id, d)
    });
    slot.end();
}

/// First record of a thread's stream (called at registration, guard held).
pub(crate) fn write_thread_start(slot: &Slot, bounds: StackBounds) {
    let mut name = [0u8; 64];
    let n = stack::bounds::thread_name(&mut name);
    let mut scratch = [0u8; 160];
    let mut w = SliceWriter::new(&mut scratch);
    let now = counters::NOW_NS.load(Relaxed);
    encode::thread_start(
        &mut w,
        stack::bounds::os_tid(),
        &name[..n],
        bounds.high as u64,
        bounds.size() as u64,
        now,
    );
    write_unsequenced(slot, w.as_slice());
}

/// Last record of a thread's stream (thread exit, guard held).
pub(crate) fn write_thread_end(slot: &Slot) {
    let mut scratch = [0u8; 24];
    let mut w = SliceWriter::new(&mut scratch);
    encode::thread_end(&mut w, counters::NOW_NS.load(Relaxed));
    write_unsequenced(slot, w.as_slice());
}

fn write_unsequenced(slot: &Slot, bytes: &[u8]) {
    if slot.begin().is_some() {
        slot.write(bytes);
        slot.end();
    }
}
