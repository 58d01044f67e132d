//! Writing the trace from a dying process: the fault handler cannot wait for the
//! recorder thread, so it writes the remaining ring bytes and its own records straight
//! to the trace fd with write(2).
//!
//! Hand-off with the recorder: the recorder holds [`WRITER`] = `RECORDER` while it
//! writes and consumes ring bytes only after they are on disk (so bytes it drained but
//! did not write are still in the rings). The handler waits (bounded) for `IDLE` and
//! sets `HANDLER` for good: from then on the recorder drops what it drained without
//! writing it (the handler writes it from the rings).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::format::kind;
use crate::format::varint::SliceWriter;
use crate::record::slots;

/// The trace fd while a session records, else -1.
pub static TRACE_FD: AtomicI32 = AtomicI32::new(-1);
/// Who writes the trace now.
pub static WRITER: AtomicU8 = AtomicU8::new(IDLE);
/// Nobody writes.
pub const IDLE: u8 = 0;
/// The recorder thread writes.
pub const RECORDER: u8 = 1;
/// A fault handler took the trace over (the process is dying).
pub const HANDLER: u8 = 2;
/// CLOCK_MONOTONIC at the session start, ns (for times computed in the handler).
pub static START_MONO_NS: AtomicU64 = AtomicU64::new(0);
/// Tid of the thread inside a fault handler's write section (0 = none).
static HANDLER_LOCK: AtomicU32 = AtomicU32::new(0);

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// CLOCK_MONOTONIC in ns. Async-signal-safe (clock_gettime is).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time since the session start, ns. Async-signal-safe.
pub fn now_ns() -> u64 {
    mono_ns().saturating_sub(START_MONO_NS.load(Ordering::Relaxed))
}

/// Queue an encoded global record (kind, len, body) from any thread; the recorder
/// writes it in its next round. Allocates: not for signal handlers.
pub fn push_global(record: &[u8]) {
    PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(record);
}

/// Recorder: move the queued global records into `out`.
pub fn take_pending(out: &mut Vec<u8>) {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    out.extend_from_slice(&p);
    p.clear();
}

/// Recorder: start writing; false if a fault handler owns the trace.
pub fn recorder_begin() -> bool {
    WRITER
        .compare_exchange(IDLE, RECORDER, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Recorder: done writing.
pub fn recorder_end() {
    let _ = WRITER.compare_exchange(RECORDER, IDLE, Ordering::AcqRel, Ordering::Acquire);
}

/// `write(2)` all of `bytes`, retrying on EINTR and short writes. Async-signal-safe.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write(2) is async-signal-safe.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            // SAFETY: reading errno of this thread.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Write `parts` as one chunk of `source`. No allocation (crc32fast's Hasher lives on
/// the stack).
fn write_chunk(fd: i32, source: u32, parts: &[&[u8]]) {
    let mut src = [0u8; 10];
    let mut w = SliceWriter::new(&mut src);
    w.uvar(source as u64);
    let n = w.len();
    let src = &src[..n];
    let len = src.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut h = crc32fast::Hasher::new();
    h.update(src);
    for p in parts {
        h.update(p);
    }
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4..].copy_from_slice(&h.finalize().to_le_bytes());
    write_all(fd, &head);
    write_all(fd, src);
    for p in parts {
        write_all(fd, p);
    }
}

/// Take over the trace from a signal handler: wait (bounded, ~0.5 s) for the recorder
/// to finish a write, then own it for good, and enter the one-handler section. Returns
/// the fd, or `None` (no session, or another handler is stuck). Async-signal-safe:
/// atomics, sched_yield and gettid only.
pub fn handler_enter() -> Option<i32> {
    let fd = TRACE_FD.load(Ordering::Acquire);
    if fd < 0 {
        return None;
    }
    let me = crate::stack::bounds::os_tid();
    let mut spins = 0u32;
    loop {
        match HANDLER_LOCK.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(t) if t == me => return None, // a fault inside our own handler
            Err(_) => {}
        }
        spins += 1;
        if spins > 200_000 {
            return None;
        }
        // SAFETY: sched_yield is a plain syscall with no preconditions.
        unsafe { libc::sched_yield() };
    }
    let mut spins = 0u32;
    loop {
        let w = WRITER.load(Ordering::Acquire);
        if w == HANDLER
            || (w == IDLE
                && WRITER
                    .compare_exchange(IDLE, HANDLER, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok())
        {
            break;
        }
        spins += 1;
        if spins > 200_000 {
            // The recorder is stuck (or it is the faulting thread): take over.
            WRITER.store(HANDLER, Ordering::Release);
            break;
        }
        // SAFETY: as above.
        unsafe { libc::sched_yield() };
    }
    Some(fd)
}

/// Leave the one-handler section.
pub fn handler_leave() {
    HANDLER_LOCK.store(0, Ordering::Release);
}

struct Scratch(UnsafeCell<[u8; 8192]>);
// SAFETY: only used inside the one-handler section (HANDLER_LOCK).
unsafe impl Sync for Scratch {}
static GLOBALS: Scratch = Scratch(UnsafeCell::new([0u8; 8192]));

/// From a handler, between [`handler_enter`] and [`handler_leave`]: write every
/// thread's unwritten ring bytes, then one global chunk with the queued global records
/// (if the queue's lock is free), a `Round` and `record` (an encoded global record).
/// Async-signal-safe: reads atomics and ring memory, write(2), a try-lock that never
/// waits.
pub fn handler_flush(fd: i32, record: &[u8]) {
    for i in 0..slots::HWM.load(Ordering::Acquire) {
        let s = slots::slot(i);
        if s.state.load(Ordering::Acquire) == slots::FREE {
            continue;
        }
        // SAFETY: the recorder no longer consumes (WRITER = HANDLER) and we are the
        // only handler in this section: we are the rings' single consumer now.
        let (head, parts) = unsafe { s.pending() };
        if parts[0].len() + parts[1].len() > 0 {
            write_chunk(fd, s.thread.load(Ordering::Acquire), &parts);
        }
        s.consume(head);
    }
    if let Ok(mut p) = PENDING.try_lock() {
        if !p.is_empty() {
            write_chunk(fd, 0, &[&p]);
            p.clear(); // keeps the capacity: no deallocation
        }
    }
    // SAFETY: inside the one-handler section; nobody else touches GLOBALS.
    let buf = unsafe { &mut *GLOBALS.0.get() };
    let mut w = SliceWriter::new(&mut buf[..]);
    let seq = slots::SEQ.load(Ordering::Acquire);
    let mut watermark = seq;
    for i in 0..slots::HWM.load(Ordering::Acquire) {
        let f = slots::slot(i).in_flight.load(Ordering::Acquire);
        if f != slots::NONE {
            watermark = watermark.min(f);
        }
    }
    let mut body = [0u8; 40];
    let mut b = SliceWriter::new(&mut body);
    b.uvar(now_ns());
    b.uvar(seq);
    b.uvar(watermark);
    let n = b.len();
    w.u8(kind::ROUND);
    w.uvar(n as u64);
    w.bytes(&body[..n]);
    let n = w.len();
    write_chunk(fd, 0, &[&buf[..n], record]);
    // SAFETY: fdatasync is async-signal-safe; errors are irrelevant here.
    unsafe { libc::fdatasync(fd) };
}
