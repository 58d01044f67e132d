//! Per-thread slots: each profiled thread owns one slot with a single-producer ring of
//! encoded records that only the recorder thread consumes. No lock is shared: the
//! owner publishes `head`, the recorder publishes `tail`.
//!
//! Ordering protocol (see the format docs and [`Slot::begin`]): before taking a sequence
//! number a thread announces a lower bound of it in `in_flight` and clears it once the
//! record is published. The recorder reads the global sequence `G`, then every `in_flight`, then
//! drains; `min(G, in_flight…)` is a watermark below which every event is on disk.

use std::cell::UnsafeCell;
use std::ptr::null_mut;
use std::sync::atomic::{compiler_fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::alloc::counters::LOST;
use crate::alloc::guard::LOCAL;
use crate::alloc::sampler::Countdown;
use crate::format::encode::StreamState;
use crate::format::varint::SliceWriter;
use crate::record::session;
use crate::stack::bounds::StackBounds;

/// Bytes in each thread's ring.
pub const RING_SIZE: usize = 1 << 20;
/// Threads that can be profiled at once; further threads' events count as lost.
pub const MAX_SLOTS: usize = 1024;
/// Entries of the per-thread stack-id cache.
pub const STACK_TABLE: usize = 4096;
/// `in_flight` value meaning "nothing in flight".
pub const NONE: u64 = u64::MAX;

/// Slot is unused.
pub const FREE: u32 = 0;
/// Slot belongs to a live thread.
pub const ACTIVE: u32 = 1;
/// The owner exited; the recorder drains the rest and frees the slot.
pub const RETIRED: u32 = 2;

/// The global event sequence.
pub static SEQ: AtomicU64 = AtomicU64::new(0);
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(null_mut());
static RINGS: AtomicPtr<u8> = AtomicPtr::new(null_mut());
/// One past the highest slot index ever used: the recorder scans `0..HWM`.
pub static HWM: AtomicUsize = AtomicUsize::new(0);
static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);

/// State only the owning thread touches.
pub struct Owner {
    /// Delta state of this thread's record stream.
    pub stream: StreamState,
    /// The thread's stack.
    pub bounds: StackBounds,
    /// Next per-thread stack id.
    pub next_stack: u64,
    /// hash → stack id of stacks already written by this thread.
    pub table: [(u64, u64); STACK_TABLE],
    /// Entries used in `table`.
    pub table_used: usize,
    /// Sampling countdown.
    pub countdown: Countdown,
}

/// One thread's slot.
#[repr(C, align(64))]
pub struct Slot {
    /// FREE, ACTIVE or RETIRED.
    pub state: AtomicU32,
    /// Thread index of the current owner.
    pub thread: AtomicU32,
    /// Lower bound of the seq being recorded, or NONE.
    pub in_flight: AtomicU64,
    /// Bytes published (monotonic; ring position is `head % RING_SIZE`).
    pub head: AtomicU64,
    /// Set while the owner updates the live counters in solo mode (see `counters`).
    pub busy: std::sync::atomic::AtomicBool,
    /// Set while this thread is the session's solo thread (see `counters`).
    pub solo: std::sync::atomic::AtomicBool,
    _pad: [u8; 38],
    /// Bytes consumed by the recorder (monotonic).
    pub tail: AtomicU64,
    _pad2: [u8; 56],
    /// This thread's exact totals (owner-written, summed by readers).
    pub totals: crate::alloc::counters::Totals,
    /// Start of this slot's ring (set at registration).
    ring: AtomicPtr<u8>,
    _pad3: [u8; 24],
    owner: UnsafeCell<Owner>,
    /// Stack bounds, depth high-water mark and deepest frames, shared with the signal
    /// handlers (see [`crate::stack::sampler`]).
    pub stack: crate::stack::sampler::StackState,
}

fn map(bytes: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping, checked for MAP_FAILED; zero-filled.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p.cast()
    }
}

/// Map the slot table and rings once per process (they are reused by later sessions).
pub fn map_once() -> bool {
    if !SLOTS.load(Ordering::Acquire).is_null() {
        return true;
    }
    let slots = map(MAX_SLOTS * std::mem::size_of::<Slot>());
    let rings = map(MAX_SLOTS * RING_SIZE);
    if slots.is_null() || rings.is_null() {
        return false;
    }
    RINGS.store(rings, Ordering::Release);
    SLOTS.store(slots.cast(), Ordering::Release);
    true
}

/// Bytes the slot table and the rings map (the profiler's own anonymous memory).
pub fn mapped_bytes() -> u64 {
    if SLOTS.load(Ordering::Acquire).is_null() {
        return 0;
    }
    (MAX_SLOTS * std::mem::size_of::<Slot>() + MAX_SLOTS * RING_SIZE) as u64
}

/// Slot `i` (`i < HWM`).
pub fn slot(i: usize) -> &'static Slot {
    debug_assert!(i < MAX_SLOTS);
    // SAFETY: the table was mapped by map_once (before HWM could exceed 0), lives for
    // the process, and zeroed memory is a valid FREE slot (atomics and plain data).
    unsafe { &*SLOTS.load(Ordering::Acquire).add(i) }
}

fn ring(i: usize) -> *mut u8 {
    // SAFETY: within the rings mapping (i < MAX_SLOTS).
    unsafe { RINGS.load(Ordering::Acquire).add(i * RING_SIZE) }
}

/// Mark every slot free (session start/stop, when no thread records).
pub fn reset_all() {
    for i in 0..HWM.load(Ordering::Acquire) {
        let s = slot(i);
        s.state.store(FREE, Ordering::Release);
        s.in_flight.store(NONE, Ordering::Relaxed);
        s.totals.clear();
        let h = s.head.load(Ordering::Relaxed);
        s.tail.store(h, Ordering::Relaxed);
    }
}

impl Slot {
    /// Index of this slot in the table.
    pub fn index(&self) -> usize {
        (self as *const Slot as usize - SLOTS.load(Ordering::Relaxed) as usize)
            / std::mem::size_of::<Slot>()
    }

    /// The owner's private state.
    ///
    /// # Safety
    /// Only the owning thread may call this, and not while holding another `&mut Owner`.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn owner(&self) -> &mut Owner {
        // SAFETY: guaranteed by the caller: one thread owns the slot.
        unsafe { &mut *self.owner.get() }
    }

    /// Start a sequenced record: announce a lower bound of the sequence number in
    /// `in_flight`, take the number, and check that profiling is still active (else
    /// give up and return `None`). One locked instruction with several threads, none
    /// in solo mode ([`Slot::take_seq`]).
    ///
    /// Why this is enough: the `fetch_add` is a release-acquire RMW on the one global
    /// sequence. The recorder reads `SEQ` with acquire before reading `in_flight`, so if
    /// our number is below what it read, it also sees our announcement. `stop` does an
    /// RMW on `SEQ` after setting `STOPPING`: whichever RMW comes second sees the other
    /// side's write (our announcement, or `STOPPING`). In solo mode `stop` forces a
    /// barrier on every thread (`membarrier`) after setting `STOPPING` instead: our
    /// announcement and our load of `STATE` below are separated by a compiler fence, so
    /// either the announcement is visible to `stop` or we see `STOPPING`.
    #[inline(always)]
    pub fn begin(&self) -> Option<u64> {
        let seq = self.take_seq(true);
        if session::STATE.load(Ordering::Acquire) != session::ACTIVE {
            self.end();
            return None;
        }
        Some(seq)
    }

    /// Take the next global sequence number (announcing it in `in_flight` first if
    /// `announce`).
    ///
    /// **Solo mode** (this thread is the only one with a slot, see
    /// [`crate::alloc::counters`]): a plain load and a release store of `SEQ`, no locked
    /// instruction, inside the thread's `busy` window — the same asymmetric protocol as
    /// the solo live-bytes update: `busy` is set, then `solo` re-read (a compiler fence
    /// between them; the switching thread's `membarrier` turns it into a full one). A
    /// thread that registers while we are inside the window waits for `busy` to clear,
    /// and `busy`'s release store comes after our store of `SEQ`, so every number taken
    /// by an RMW after the switch is above ours (and a block we freed, handed to the new
    /// thread by the inner allocator, is allocated there under a later number). The
    /// recorder still sees our announcement: it is stored before the release store of
    /// `SEQ`, which its acquire load of `SEQ` synchronises with. Exactly one thread
    /// writes `SEQ` in solo mode, so nothing is lost between the load and the store.
    #[inline(always)]
    pub fn take_seq(&self, announce: bool) -> u64 {
        if self.solo.load(Ordering::Relaxed) {
            self.busy.store(true, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            if self.solo.load(Ordering::Relaxed) {
                let seq = SEQ.load(Ordering::Relaxed);
                if announce {
                    self.in_flight.store(seq, Ordering::Relaxed);
                }
                SEQ.store(seq + 1, Ordering::Release);
                compiler_fence(Ordering::SeqCst);
                self.busy.store(false, Ordering::Release);
                return seq;
            }
            self.busy.store(false, Ordering::Release);
        }
        if announce {
            self.in_flight
                .store(SEQ.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        SEQ.fetch_add(1, Ordering::AcqRel)
    }

    /// Take a further sequence number inside a record (a realloc's second one).
    #[inline(always)]
    pub fn next_seq(&self) -> u64 {
        self.take_seq(false)
    }

    /// End the record: nothing of ours is in flight any more.
    #[inline(always)]
    pub fn end(&self) {
        self.in_flight.store(NONE, Ordering::Release);
    }

    /// Copy `bytes` into the ring, waiting for the recorder if it is full, and publish
    /// them. If the recorder cannot take them (stopping, or stuck for seconds), the
    /// record is counted as lost instead. Call between `begin` and `end`.
    #[inline(always)]
    pub fn write(&self, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let head = self.head.load(Ordering::Relaxed);
        if head + len - self.tail.load(Ordering::Acquire) > RING_SIZE as u64
            && !self.wait_for_room(head + len)
        {
            LOST.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let base = self.ring.load(Ordering::Relaxed);
        let pos = (head % RING_SIZE as u64) as usize;
        let first = bytes.len().min(RING_SIZE - pos);
        // SAFETY: [pos, pos+first) and [0, len-first) lie inside this slot's ring (set
        // at registration, before any write); the
        // recorder never reads beyond `head`, which we publish only after the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(pos), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), base, bytes.len() - first);
        }
        self.head.store(head + len, Ordering::Release);
    }

    /// Encode a record of at most `max` bytes with `f` straight into the ring and
    /// publish it (no copy). Near the end of the ring, or when it is full, it goes
    /// through a scratch buffer and [`Slot::write`]. Call between `begin` and `end`.
    #[inline(always)]
    pub fn record(&self, max: usize, f: impl FnOnce(&mut SliceWriter<'_>)) {
        match self.reserve(max) {
            Some(at) => {
                // SAFETY: `reserve` returned room for `max` bytes that only this thread
                // writes and the recorder does not read until `commit`.
                let buf = unsafe { std::slice::from_raw_parts_mut(at, max) };
                let mut w = SliceWriter::new(buf);
                f(&mut w);
                self.commit(w.len());
            }
            None => self.record_slow(max, f),
        }
    }

    /// Room for a record of at most `max` bytes at the ring's head, as a pointer to
    /// write it at (then [`Slot::commit`]), or `None` near the end of the ring or when
    /// it is full (then use [`Slot::record`]). Call between `begin` and `end`.
    #[inline(always)]
    pub fn reserve(&self, max: usize) -> Option<*mut u8> {
        let head = self.head.load(Ordering::Relaxed);
        let pos = (head % RING_SIZE as u64) as usize;
        let ring = self.ring.load(Ordering::Relaxed);
        if pos + max <= RING_SIZE
            && head + max as u64 - self.tail.load(Ordering::Acquire) <= RING_SIZE as u64
            && !ring.is_null()
        {
            // SAFETY: pos + max <= RING_SIZE, so the pointer and the `max` bytes after it
            // lie inside this slot's ring; they are beyond `head`, which the recorder does
            // not read past, and only the owner writes there.
            Some(unsafe { ring.add(pos) })
        } else {
            None
        }
    }

    /// Publish `n` bytes written at the pointer [`Slot::reserve`] returned.
    #[inline(always)]
    pub fn commit(&self, n: usize) {
        let head = self.head.load(Ordering::Relaxed);
        self.head.store(head + n as u64, Ordering::Release);
    }

    #[cold]
    #[inline(never)]
    fn record_slow(&self, max: usize, f: impl FnOnce(&mut SliceWriter<'_>)) {
        let mut scratch = [0u8; 256];
        let mut w = SliceWriter::new(&mut scratch[..max.min(256)]);
        f(&mut w);
        let n = w.len();
        self.write(&scratch[..n]);
    }

    /// The ring is full: yield until the recorder drained enough (the rare hand-off).
    #[cold]
    #[inline(never)]
    fn wait_for_room(&self, need_head: u64) -> bool {
        let mut spins = 0u32;
        while need_head - self.tail.load(Ordering::Acquire) > RING_SIZE as u64 {
            if session::STATE.load(Ordering::Relaxed) != session::ACTIVE || spins > 2_000_000 {
                return false;
            }
            spins += 1;
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        true
    }

    /// Recorder side: the published bytes not yet consumed, as up to two slices.
    ///
    /// # Safety
    /// Only the recorder thread may call this and `consume` (single consumer).
    pub unsafe fn pending(&self) -> (u64, [&[u8]; 2]) {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Relaxed);
        let n = (head - tail) as usize;
        let base = ring(self.index());
        let pos = (tail % RING_SIZE as u64) as usize;
        let first = n.min(RING_SIZE - pos);
        // SAFETY: the bytes in [tail, head) were published with Release and are not
        // overwritten until `tail` moves past them.
        unsafe {
            (
                head,
                [
                    std::slice::from_raw_parts(base.add(pos), first),
                    std::slice::from_raw_parts(base, n - first),
                ],
            )
        }
    }

    /// Recorder side: mark bytes up to `head` as written.
    pub fn consume(&self, head: u64) {
        self.tail.store(head, Ordering::Release);
    }
}

thread_local! {
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

/// Its destructor runs when the thread exits: the slot is retired so the recorder can
/// drain it and reuse it.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let Some(_g) = crate::alloc::guard::Guard::enter() else {
            return;
        };
        LOCAL.with(|l| l.exited.set(true));
        let s = LOCAL.with(|l| l.slot.replace(std::ptr::null()));
        if s.is_null()
            || LOCAL.with(|l| l.session.get()) != session::SESSION.load(Ordering::Relaxed)
        {
            return;
        }
        // SAFETY: the slot pointer points into the slot table, which lives for the process.
        let s = unsafe { &*s };
        s.stack.stop_sampling();
        crate::stack::fault::release_altstack(&s.stack);
        crate::alloc::counters::thread_exit(s);
        crate::alloc::hooks::write_thread_end(s);
        s.state.store(RETIRED, Ordering::Release);
    }
}

/// The calling thread's slot, registering the thread on first use. Must be called with
/// the reentrancy guard held (registration may allocate). `None` if the table is full.
#[inline(always)]
pub fn current() -> Option<&'static Slot> {
    let (s, sess) = LOCAL.with(|l| (l.slot.get(), l.session.get()));
    if !s.is_null() && sess == session::SESSION.load(Ordering::Relaxed) {
        // SAFETY: the slot pointer points into the slot table, which lives for the process.
        return Some(unsafe { &*s });
    }
    register()
}

#[cold]
#[inline(never)]
fn register() -> Option<&'static Slot> {
    if SLOTS.load(Ordering::Acquire).is_null() {
        return None;
    }
    let mut found = None;
    for i in 0..MAX_SLOTS {
        let s = slot(i);
        if s.state.load(Ordering::Relaxed) == FREE
            && s.state
                .compare_exchange(FREE, ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            HWM.fetch_max(i + 1, Ordering::AcqRel);
            found = Some((i, s));
            break;
        }
    }
    let Some((i, s)) = found else {
        LOST.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let thread = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    let bounds = crate::stack::bounds::current().unwrap_or_default();
    // SAFETY: we just won this slot (FREE → ACTIVE); nobody else touches its owner state.
    let owner = unsafe { s.owner() };
    owner.stream = StreamState::default();
    owner.bounds = bounds;
    owner.next_stack = 1;
    owner.table_used = 0;
    owner.table.iter_mut().for_each(|e| *e = (0, 0));
    let rate = session::SAMPLE_RATE.load(Ordering::Relaxed).max(1);
    owner.countdown = Countdown::new(
        (thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s.head.load(Ordering::Relaxed),
        rate,
    );
    s.ring.store(ring(i), Ordering::Relaxed);
    s.thread.store(thread, Ordering::Release);
    LOCAL.with(|l| {
        l.slot.set(s);
        l.session.set(session::SESSION.load(Ordering::Relaxed));
    });
    let tid = crate::stack::bounds::os_tid();
    s.stack.init(bounds.low, bounds.high, tid);
    if !LOCAL.with(|l| l.exited.get()) {
        // Touching the hook registers its destructor (may allocate: guard held).
        // Only a thread whose hook will run (and stop the sampler) is sampled.
        if EXIT_HOOK.try_with(|_| ()).is_ok() {
            s.stack.sampled.store(true, Ordering::SeqCst);
        }
    }
    crate::stack::fault::ensure_altstack(&s.stack);
    // The runtime may have put its own handlers over ours since (std does at start).
    crate::stack::fault::keep_installed();
    crate::alloc::counters::thread_registered(s);
    crate::alloc::hooks::write_thread_start(s, bounds);
    Some(s)
}

/// The calling thread's slot of the current session without registering; for signal
/// handlers (a `const` thread-local without destructor: a plain TLS load).
pub fn current_for_signal() -> Option<&'static Slot> {
    let (s, sess) = LOCAL.with(|l| (l.slot.get(), l.session.get()));
    if s.is_null() || sess != session::SESSION.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: the slot pointer points into the slot table, which lives for the process.
    Some(unsafe { &*s })
}

/// Thread index of the calling thread's slot (0 if none).
pub fn current_thread_index() -> u32 {
    let s = LOCAL.with(|l| l.slot.get());
    if s.is_null() {
        0
    } else {
        // SAFETY: points into the slot table.
        unsafe { &*s }.thread.load(Ordering::Relaxed)
    }
}

// SAFETY: shared fields are atomics; `owner` is only touched by the owning thread
// (see `Slot::owner`).
unsafe impl Sync for Slot {}
