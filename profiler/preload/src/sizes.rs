//! Requested size of every live block the hooks counted, keyed by address: `free` gets
//! no size from its caller, and the counters and the trace carry requested sizes.
//!
//! A fixed open-addressing table in one anonymous mapping (reserved, touched lazily),
//! lock-free: an insert claims an empty or retired entry with one compare-and-swap, a
//! removal retires its entry. No heap allocation, no lock, so it runs inside `malloc`
//! and after `fork` alike. An address is live at most once: the shims remove a block
//! before glibc gets it back and insert one after glibc handed it out.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicUsize};

/// log2 of the number of entries: 2^23 entries of 16 bytes = 128 MiB of address space,
/// of which only the touched pages are ever backed.
const BITS: u32 = 23;
const LEN: usize = 1 << BITS;
const MASK: usize = LEN - 1;
/// Longest probe before giving up (the block then goes unrecorded, consistently).
const MAX_PROBE: usize = 4096;

const EMPTY: usize = 0;
const RETIRED: usize = 1;

#[repr(C)]
struct Entry {
    key: AtomicUsize,
    size: AtomicUsize,
}

static TABLE: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());

/// Map the table (once; the constructor calls it before any block is recorded).
pub fn map_once() -> bool {
    if !TABLE.load(Acquire).is_null() {
        return true;
    }
    // SAFETY: an anonymous private mapping with no address hint; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN * std::mem::size_of::<Entry>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if TABLE
        .compare_exchange(std::ptr::null_mut(), p.cast(), AcqRel, Acquire)
        .is_err()
    {
        // SAFETY: our own mapping, never published.
        unsafe { libc::munmap(p, LEN * std::mem::size_of::<Entry>()) };
    }
    true
}

#[inline(always)]
fn table() -> Option<&'static [Entry]> {
    let p = TABLE.load(Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the mapping holds LEN zero-initialised entries and is never unmapped once
    // published; entries are atomics.
    Some(unsafe { std::slice::from_raw_parts(p, LEN) })
}

#[inline(always)]
fn home(ptr: usize) -> usize {
    ((ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) & MASK
}

/// Remember `ptr` (live, `size` requested bytes). False if the table is not mapped or
/// too crowded: the caller then does not record the block at all.
#[inline]
pub fn insert(ptr: *mut u8, size: usize) -> bool {
    let Some(t) = table() else { return false };
    let key = ptr as usize;
    let mut i = home(key);
    for _ in 0..MAX_PROBE {
        let e = &t[i];
        let k = e.key.load(Relaxed);
        if (k == EMPTY || k == RETIRED) && e.key.compare_exchange(k, key, AcqRel, Relaxed).is_ok() {
            e.size.store(size, Release);
            return true;
        }
        i = (i + 1) & MASK;
    }
    false
}

/// Forget `ptr` and return its requested size, or `None` if it was never recorded
/// (allocated before profiling started, or by the profiler itself).
#[inline]
pub fn remove(ptr: *mut u8) -> Option<usize> {
    let t = table()?;
    let key = ptr as usize;
    let mut i = home(key);
    for _ in 0..MAX_PROBE {
        let e = &t[i];
        let k = e.key.load(Acquire);
        if k == key {
            let size = e.size.load(Acquire);
            e.key.store(RETIRED, Release);
            return Some(size);
        }
        if k == EMPTY {
            return None;
        }
        i = (i + 1) & MASK;
    }
    None
}

/// Forget every block (a new attach: blocks of an earlier session are stale). The
/// pages are given back and read as zeroes (empty) again.
pub fn clear() {
    let p = TABLE.load(Acquire);
    if !p.is_null() {
        // SAFETY: our own private anonymous mapping; MADV_DONTNEED zero-fills it.
        unsafe {
            libc::madvise(
                p.cast(),
                LEN * std::mem::size_of::<Entry>(),
                libc::MADV_DONTNEED,
            )
        };
    }
}
