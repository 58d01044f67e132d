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

use crate::record::slots::Slot;

/// Everything the hot path needs of the calling thread, in one thread-local so that one
/// TLS address computation serves the guard, the slot and its session (under
/// `LD_PRELOAD` the library is a shared object: each thread-local is a
/// `__tls_get_addr` call there).
pub(crate) struct Local {
    /// The guard flag.
    pub held: Cell<bool>,
    /// [`probe_installed`]'s state.
    pub probe: Cell<u8>,
    /// The thread's exit hook ran (see `record::slots`).
    pub exited: Cell<bool>,
    /// Session the slot below was registered in.
    pub session: Cell<u32>,
    /// The thread's slot (null: none yet).
    pub slot: Cell<*const Slot>,
}

thread_local! {
    pub(crate) static LOCAL: Local = const {
        Local {
            held: Cell::new(false),
            probe: Cell::new(0),
            exited: Cell::new(false),
            session: Cell::new(0),
            slot: Cell::new(std::ptr::null()),
        }
    };
}

/// Check that allocations reach the profiler's hooks (that `StackHeap` is the global
/// allocator) without counting anything: a probe allocation made while the guard is
/// held is seen by the hook's "own allocation" branch only.
pub fn probe_installed() -> bool {
    let _g = Guard::enter();
    LOCAL.with(|l| l.probe.set(1));
    drop(std::hint::black_box(Box::new(0u64)));
    LOCAL.with(|l| l.probe.replace(0)) == 2
}

/// Called by the hooks for an allocation made under the guard.
#[inline]
pub(crate) fn saw_probe() {
    LOCAL.with(|l| {
        if l.probe.get() == 1 {
            l.probe.set(2)
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
        LOCAL.with(|l| {
            if l.held.get() {
                None
            } else {
                l.held.set(true);
                Some(Guard { took: true })
            }
        })
    }

    /// Hold the guard for the rest of this thread's life (the recorder thread).
    pub fn hold_forever() {
        LOCAL.with(|l| l.held.set(true));
    }

    /// True if this thread holds the guard.
    #[inline]
    pub fn is_held() -> bool {
        LOCAL.with(|l| l.held.get())
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if self.took {
            LOCAL.with(|l| l.held.set(false));
        }
    }
}
