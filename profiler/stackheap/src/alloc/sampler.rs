//! Byte-based Poisson sampling (as jemalloc, tcmalloc and Go do) and the set of sampled
//! blocks, so that a free costs one probe to learn whether its block was sampled.
//!
//! Every byte is sampled with probability 1/N: a per-thread countdown of bytes, drawn
//! from an exponential distribution with mean N, is decremented by each allocation's
//! size; the allocation that takes it to zero or below is sampled and a fresh countdown
//! is drawn (memorylessness makes the discarded remainder irrelevant). An allocation of
//! `s` bytes is thus sampled with probability `1 - exp(-s/N)`, which the report inverts.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// Per-thread sampler state (owned by one thread, no synchronisation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Countdown {
    left: i64,
    rng: u64,
}

impl Countdown {
    /// A fresh countdown for a thread, seeded from `seed`.
    pub fn new(seed: u64, mean: u64) -> Self {
        let mut c = Countdown {
            left: 0,
            rng: seed | 1,
        };
        c.left = c.draw(mean);
        c
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: fast, no allocation, good enough for sampling intervals.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn draw(&mut self, mean: u64) -> i64 {
        // Uniform in (0, 1], then inverse CDF of the exponential distribution.
        let u = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let d = -u.ln() * mean as f64;
        d.min(i64::MAX as f64 / 2.0) as i64 + 1
    }

    /// Account `size` bytes; true if this allocation is sampled.
    #[inline(always)]
    pub fn sample(&mut self, size: usize, mean: u64) -> bool {
        self.left -= size as i64;
        if self.left > 0 {
            return false;
        }
        self.redraw(mean);
        true
    }

    /// A sample was taken: draw the next countdown (out of line: the hot path keeps
    /// only the subtraction and the branch).
    #[cold]
    #[inline(never)]
    fn redraw(&mut self, mean: u64) {
        self.left = self.draw(mean);
    }
}

const SET_BITS: u32 = 20;
const SET_LEN: usize = 1 << SET_BITS;
const EMPTY: usize = 0;
const TOMBSTONE: usize = 1;
const MAX_PROBE: usize = 64;
/// Counters of sampled blocks per 4 KiB page of address space (indexed by page number,
/// modulo the table), so that a free on a page without any sampled block — nearly all
/// frees — is rejected with one byte load from a small, cache-friendly table.
const PAGE_BITS: u32 = 19;
const PAGE_LEN: usize = 1 << PAGE_BITS;

/// Lock-free open-addressing set of sampled block addresses, in memory mapped once
/// at session start. If it ever fills (or probes too long), `overflowed` turns on and
/// every free is recorded from then on: slower, still exact.
pub struct SampledSet {
    slots: AtomicPtr<AtomicUsize>,
    pages: AtomicPtr<AtomicU8>,
    overflowed: AtomicBool,
}

fn map_zeroed(bytes: usize) -> *mut libc::c_void {
    // SAFETY: anonymous private mapping; checked for MAP_FAILED by the caller.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    }
}

#[inline(always)]
fn hash(addr: usize) -> usize {
    (addr as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (64 - SET_BITS)
}

impl Default for SampledSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SampledSet {
    /// An unmapped set; call [`SampledSet::map_once`] before use.
    pub const fn new() -> Self {
        SampledSet {
            slots: AtomicPtr::new(std::ptr::null_mut()),
            pages: AtomicPtr::new(std::ptr::null_mut()),
            overflowed: AtomicBool::new(false),
        }
    }

    /// Map the table (`SET_LEN` words, zero-filled by the kernel, lazily committed)
    /// unless it is mapped already. False if the mapping failed.
    pub fn map_once(&self) -> bool {
        if !self.slots.load(Ordering::Acquire).is_null() {
            return true;
        }
        let p = map_zeroed(SET_LEN * std::mem::size_of::<usize>());
        let pages = map_zeroed(PAGE_LEN);
        if p == libc::MAP_FAILED || pages == libc::MAP_FAILED {
            return false;
        }
        self.pages.store(pages.cast(), Ordering::Release);
        self.slots.store(p.cast(), Ordering::Release);
        true
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> &AtomicUsize {
        // SAFETY: the index is masked below SET_LEN and the mapping (made by map_once
        // before the session could sample anything) lives for the process.
        unsafe { &*self.slots.load(Ordering::Relaxed).add(i & (SET_LEN - 1)) }
    }

    #[inline(always)]
    fn page(&self, addr: usize) -> &AtomicU8 {
        // SAFETY: the index is masked below PAGE_LEN; the mapping lives for the process.
        unsafe {
            &*self
                .pages
                .load(Ordering::Relaxed)
                .add((addr >> 12) & (PAGE_LEN - 1))
        }
    }

    /// True once the table gave up: record every free.
    #[inline(always)]
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Remember a sampled block.
    pub fn insert(&self, addr: usize) {
        // Saturating: a page counter stuck at 255 only costs extra probes.
        let _ = self
            .page(addr)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1));
        let h = hash(addr);
        for i in 0..MAX_PROBE {
            let s = self.slot(h + i);
            let cur = s.load(Ordering::Relaxed);
            if (cur == EMPTY || cur == TOMBSTONE)
                && s.compare_exchange(cur, addr, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        self.overflowed.store(true, Ordering::Relaxed);
    }

    /// False if `addr` is surely not a sampled block (its page holds none, and the
    /// table has not overflowed): one byte load, no store.
    #[inline(always)]
    pub fn may_hold(&self, addr: usize) -> bool {
        self.page(addr).load(Ordering::Relaxed) != 0 || self.overflowed()
    }

    /// Forget a block; true if it was sampled.
    #[inline(always)]
    pub fn remove(&self, addr: usize) -> bool {
        let page = self.page(addr);
        if page.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.remove_slow(addr, page)
    }

    #[inline(never)]
    fn remove_slow(&self, addr: usize, page: &AtomicU8) -> bool {
        let h = hash(addr);
        for i in 0..MAX_PROBE {
            let s = self.slot(h + i);
            let cur = s.load(Ordering::Relaxed);
            if cur == addr {
                s.store(TOMBSTONE, Ordering::Relaxed);
                let _ = page.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    (c != u8::MAX).then(|| c - 1)
                });
                return true;
            }
            if cur == EMPTY {
                return false;
            }
        }
        false
    }

    /// Empty the table (session start, nothing running concurrently).
    pub fn clear(&self) {
        for i in 0..SET_LEN {
            if self.slot(i).load(Ordering::Relaxed) != EMPTY {
                self.slot(i).store(EMPTY, Ordering::Relaxed);
            }
        }
        for i in 0..PAGE_LEN {
            let p = self.page(i << 12);
            if p.load(Ordering::Relaxed) != 0 {
                p.store(0, Ordering::Relaxed);
            }
        }
        self.overflowed.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_probability_matches_poisson() {
        let mean = 4096u64;
        let size = 1024usize;
        let mut c = Countdown::new(12345, mean);
        let n = 200_000;
        let hits = (0..n).filter(|_| c.sample(size, mean)).count() as f64;
        let p = 1.0 - (-(size as f64) / mean as f64).exp();
        let expected = p * n as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (hits - expected).abs() < 5.0 * sd,
            "hits {hits} expected {expected}"
        );
    }

    #[test]
    fn set_insert_remove() {
        let s = SampledSet::new();
        assert!(s.map_once());
        for a in (0x1000..0x1000 + 16 * 1000).step_by(16) {
            s.insert(a);
        }
        assert!(s.remove(0x1000 + 16 * 10));
        assert!(!s.remove(0x1000 + 16 * 10));
        assert!(!s.remove(0xdead0));
        assert!(!s.overflowed());
    }
}
