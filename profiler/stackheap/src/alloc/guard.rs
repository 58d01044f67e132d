//! The reentrancy guard: one flag per thread, one rule.
//!
//! **Rule:** every profiler code path that may allocate — registering a thread, the
//! recorder thread, starting and stopping, symbol-free stack capture fallbacks — runs
//! while this thread's guard is held. An allocation made while the guard is held goes
//! straight to the inner allocator and is neither counted nor recorded: it is the
//! profiler's own memory, not the program's.
//!
//! The flag is a `const`-initialised thread-local `Cell<bool>` without a destructor, so
//! reading it never allocates, never registers a TLS destructor, and stays readable
//! while other thread-locals are being destroyed.

use std::cell::Cell;

thread_local! {
    static HELD: Cell<bool> = const { Cell::new(false) };
    static PROBE: Cell<u8> = const { Cell::new(0) };
}

/// Check that allocations reach the profiler's hooks (that `StackHeap` is the global
/// allocator) without counting anything: a probe allocation made while the guard is
/// held is seen by the hook's "own allocation" branch only.
pub fn probe_installed() -> bool {
    let _g = Guard::enter();
    PROBE.with(|p| p.set(1));
    drop(std::hint::black_box(Box::new(0u64)));
    PROBE.with(|p| p.replace(0)) == 2
}

/// Called by the hooks for an allocation made under the guard.
#[inline]
pub(crate) fn saw_probe() {
    PROBE.with(|p| {
        if p.get() == 1 {
            p.set(2)
        }
    });
}

/// RAII holder of this thread's guard; dropping it releases the guard if it took it.
pub struct Guard {
    took: bool,
}

impl Guard {
    /// Take the guard. Returns `None` if this thread already holds it (the caller is
    /// the profiler itself and must not record).
    #[inline]
    pub fn enter() -> Option<Guard> {
        HELD.with(|h| {
            if h.get() {
                None
            } else {
                h.set(true);
                Some(Guard { took: true })
            }
        })
    }

    /// Hold the guard for the rest of this thread's life (the recorder thread).
    pub fn hold_forever() {
        HELD.with(|h| h.set(true));
    }

    /// True if this thread holds the guard.
    #[inline]
    pub fn is_held() -> bool {
        HELD.with(|h| h.get())
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if self.took {
            HELD.with(|h| h.set(false));
        }
    }
}
