//! Where the current thread's stack lies, from pthread's view of it.

/// The stack of one thread: `[low, high)`; stacks grow down from `high`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackBounds {
    /// Lowest usable address (the guard page, if any, lies just below).
    pub low: usize,
    /// One past the highest address: the stack top.
    pub high: usize,
}

impl StackBounds {
    /// Size of the stack in bytes (for the main thread glibc reports RLIMIT_STACK).
    pub fn size(&self) -> usize {
        self.high - self.low
    }

    /// True if `addr..addr+len` lies inside the stack.
    #[inline(always)]
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.low && addr.wrapping_add(len) <= self.high && addr.wrapping_add(len) > addr
    }
}

/// Bounds of the calling thread's stack. May allocate inside glibc (for the main
/// thread it reads /proc/self/maps): call with the reentrancy guard held.
pub fn current() -> Option<StackBounds> {
    // SAFETY: `attr` is initialised by pthread_getattr_np before use and destroyed once;
    // the out-pointers point to live locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok || addr.is_null() || size == 0 {
            return None;
        }
        Some(StackBounds {
            low: addr as usize,
            high: addr as usize + size,
        })
    }
}

/// The calling thread's name (at most 63 bytes), or empty.
pub fn thread_name(out: &mut [u8; 64]) -> usize {
    // SAFETY: the buffer is 64 bytes and we pass its length; glibc NUL-terminates.
    let rc = unsafe {
        libc::pthread_getname_np(libc::pthread_self(), out.as_mut_ptr().cast(), out.len())
    };
    if rc != 0 {
        return 0;
    }
    out.iter().position(|&b| b == 0).unwrap_or(0)
}

/// Kernel thread id of the caller.
pub fn os_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}
