//! HOT PATH: the global-allocator wrapper and the hooks it calls on every allocation.

pub mod counters;
pub mod guard;
pub mod hooks;
pub mod limit;
pub mod sampler;

use std::alloc::{GlobalAlloc, Layout, System};

/// A global allocator that profiles the program's heap, wrapping an inner allocator.
///
/// Dormant (one relaxed atomic load per call) until profiling starts. It never changes
/// what the inner allocator returns: a null stays a null (recorded as a failed
/// allocation), and it never calls `handle_alloc_error`. The one exception is the heap
/// limit ([`limit`]): with a limit set, a request that would take the live heap over it
/// gets null without reaching the inner allocator, as a real out-of-memory would.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();
/// # fn main() {}
/// ```
#[derive(Debug, Default)]
pub struct StackHeap<A: GlobalAlloc = System> {
    inner: A,
}

impl StackHeap<System> {
    /// Wrap the system allocator.
    pub const fn system() -> Self {
        StackHeap { inner: System }
    }
}

impl<A: GlobalAlloc> StackHeap<A> {
    /// Wrap any allocator.
    pub const fn new(inner: A) -> Self {
        StackHeap { inner }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments and
// returns its result unchanged; the hooks only observe pointers and sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for StackHeap<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Dormant: this one load, then the inner allocator.
        if !hooks::is_awake() {
            // SAFETY: the caller upholds GlobalAlloc::alloc's contract; we pass it through.
            return unsafe { self.inner.alloc(layout) };
        }
        if hooks::over_limit_awake(layout.size()) {
            hooks::after_alloc_awake(std::ptr::null_mut(), layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        let p = unsafe { self.inner.alloc(layout) };
        hooks::after_alloc_awake(p, layout.size());
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !hooks::is_awake() {
            // SAFETY: as for alloc.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        if hooks::over_limit_awake(layout.size()) {
            hooks::after_alloc_awake(std::ptr::null_mut(), layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: as for alloc.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        hooks::after_alloc_awake(p, layout.size());
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        hooks::before_free(ptr, layout.size());
        // SAFETY: the caller upholds GlobalAlloc::dealloc's contract; we pass it through.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !hooks::is_awake() {
            // SAFETY: the caller upholds GlobalAlloc::realloc's contract; we pass it through.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        if new_size > layout.size() && hooks::over_limit_awake(new_size - layout.size()) {
            hooks::after_alloc_awake(std::ptr::null_mut(), new_size);
            return std::ptr::null_mut();
        }
        let ticket = hooks::before_realloc_awake(ptr, new_size);
        // SAFETY: as above.
        let q = unsafe { self.inner.realloc(ptr, layout, new_size) };
        hooks::after_realloc(ticket, ptr, layout.size(), q, new_size);
        q
    }
}
