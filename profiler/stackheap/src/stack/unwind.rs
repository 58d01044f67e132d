//! Call-stack capture into a fixed array, without allocating: frame-pointer walking
//! when the program has frame pointers, `backtrace::trace_unsynchronized` otherwise.
//!
//! The frame-pointer walk only follows frame records that lie inside the thread's
//! stack, above the previous one, so a function built without frame pointers (whose
//! `rbp` holds some other value) ends the walk instead of faulting.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use super::bounds::StackBounds;

/// How stacks are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwinder {
    /// Walk the chain of saved frame pointers (fast; needs `-C force-frame-pointers=yes`).
    FramePointers,
    /// libgcc's DWARF unwinder through the `backtrace` crate (slower, works everywhere).
    Backtrace,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Choose the unwinder for this process.
pub fn set(u: Unwinder) {
    MODE.store(
        if u == Unwinder::FramePointers { 1 } else { 2 },
        Ordering::Relaxed,
    );
}

/// The unwinder in use.
pub fn get() -> Unwinder {
    if MODE.load(Ordering::Relaxed) == 1 {
        Unwinder::FramePointers
    } else {
        Unwinder::Backtrace
    }
}

/// The frame pointer of the caller's frame.
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register, no memory access, no side effects.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register, no memory access, no side effects.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// Walk frame pointers from the caller's frame; returns how many return addresses
/// were written to `out` (innermost first).
#[inline(always)]
pub fn walk_frame_pointers(out: &mut [MaybeUninit<u64>], stack: StackBounds) -> usize {
    let mut fp = frame_pointer();
    let mut n = 0;
    while n < out.len() && fp % std::mem::align_of::<usize>() == 0 && stack.contains(fp, 16) {
        // SAFETY: `fp..fp+16` lies inside this thread's mapped stack (checked above), so
        // both words are readable; a frame record is [saved fp, return address].
        let (next, ret) = unsafe { (*(fp as *const usize), *(fp as *const usize).add(1)) };
        if ret == 0 {
            break;
        }
        out[n].write(ret as u64);
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

/// One step of the stack hash (FNV-like; the per-thread stack table keys on it).
#[inline(always)]
pub fn hash_step(h: u64, frame: u64) -> u64 {
    (h.rotate_left(5) ^ frame).wrapping_mul(0x100_0000_01b3)
}

/// Seed of the stack hash.
pub const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// [`walk_frame_pointers`] that also hashes the return addresses as it goes: the hash's
/// multiply chain runs beside the walk's chain of dependent loads instead of after it
/// (on a 133-frame stack this halves the capture). Returns (frames, hash | 1).
#[inline(always)]
pub fn walk_frame_pointers_hashed(
    out: &mut [MaybeUninit<u64>],
    stack: StackBounds,
) -> (usize, u64) {
    let mut fp = frame_pointer();
    let mut h = HASH_SEED;
    if out.is_empty() || fp % std::mem::align_of::<usize>() != 0 || !stack.contains(fp, 16) {
        return (0, h | 1);
    }
    // Records above a valid one lie above `low` too (each `next` must be above `fp`),
    // so after the first only the upper bound and the alignment are checked.
    let top = stack.high - 16;
    let mut n = 0;
    loop {
        // SAFETY: `fp..fp+16` lies inside this thread's stack: checked for the first
        // record above, and for each next one below (low <= fp < next <= high - 16).
        let (next, ret) = unsafe { (*(fp as *const usize), *(fp as *const usize).add(1)) };
        if ret == 0 {
            break;
        }
        out[n].write(ret as u64);
        h = hash_step(h, ret as u64);
        n += 1;
        if n == out.len() || next <= fp || next > top || next % std::mem::align_of::<usize>() != 0 {
            break;
        }
        fp = next;
    }
    (n, h | 1)
}

/// Capture the current call stack with the chosen unwinder, with its hash (see
/// [`walk_frame_pointers_hashed`]).
#[inline(always)]
pub fn capture_hashed(out: &mut [MaybeUninit<u64>], stack: StackBounds) -> (usize, u64) {
    match get() {
        Unwinder::FramePointers => walk_frame_pointers_hashed(out, stack),
        Unwinder::Backtrace => {
            let n = walk_backtrace(out);
            let mut h = HASH_SEED;
            for f in &out[..n] {
                // SAFETY: walk_backtrace initialised the first `n` entries.
                h = hash_step(h, unsafe { f.assume_init() });
            }
            (n, h | 1)
        }
    }
}

/// Capture with libgcc's unwinder. Does not allocate in the common case; call with the
/// reentrancy guard held anyway, since the unwinder may take the loader lock.
#[inline(never)]
pub fn walk_backtrace(out: &mut [MaybeUninit<u64>]) -> usize {
    let mut n = 0;
    // SAFETY: trace_unsynchronized is unsafe because it must not race with another
    // unwind on some platforms' non-thread-safe unwinders; libgcc's _Unwind_Backtrace
    // on Linux is thread-safe, and the callback does not re-enter the unwinder.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if n >= out.len() {
                return false;
            }
            out[n].write(frame.ip() as u64);
            n += 1;
            true
        });
    }
    n
}

/// Capture the current call stack with the chosen unwinder.
#[inline(always)]
pub fn capture(out: &mut [MaybeUninit<u64>], stack: StackBounds) -> usize {
    match get() {
        Unwinder::FramePointers => walk_frame_pointers(out, stack),
        Unwinder::Backtrace => walk_backtrace(out),
    }
}

/// Decide whether frame pointers give the same callers as the DWARF unwinder from here:
/// true if the first return addresses of the frame-pointer walk appear, in order, in
/// the DWARF backtrace.
#[inline(never)]
pub fn frame_pointers_work(stack: StackBounds) -> bool {
    let mut fp = [MaybeUninit::new(0u64); 8];
    let mut bt = [MaybeUninit::new(0u64); 24];
    let nf = walk_frame_pointers(&mut fp, stack);
    let nb = walk_backtrace(&mut bt);
    // Both arrays were fully initialised above (with zeros, then frames).
    let fp: Vec<u64> = fp.iter().map(init_value).collect();
    let bt: Vec<u64> = bt.iter().map(init_value).collect();
    let want = nf.min(3);
    if want < 2 {
        return false;
    }
    bt[..nb].windows(want).any(|w| w == &fp[..want])
}

/// Read an element that was initialised at creation.
fn init_value(v: &MaybeUninit<u64>) -> u64 {
    // SAFETY: only called on arrays created with `MaybeUninit::new`.
    unsafe { v.assume_init() }
}
