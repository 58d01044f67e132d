//! Records of a program's death and of its stack high-water marks: `StackOverflow`
//! (0x30), `Crash` (0x31), `Panic` (0x32), all global (source 0), and the per-thread
//! `StackMax` (0x33, global too) written by the recorder when the depth sampler saw a
//! new deepest stack of a thread.
//!
//! The encoders write into a caller's slice and never allocate: the first two run in a
//! signal handler (see [`crate::stack::fault`]).

use super::varint::{Short, SliceReader, SliceWriter};

/// Most frames kept in an overflow or crash record, innermost first.
pub const MAX_FATAL_FRAMES: usize = 48;

/// One frame of a walked stack: its return address and the stack bytes it owns (the
/// distance from its frame record to its caller's; 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizedFrame {
    /// Return address (frame 0: the faulting or sampled instruction).
    pub addr: u64,
    /// Stack bytes of this frame.
    pub bytes: u64,
    /// How many times this frame repeats back to back (a recursion run-length
    /// encoded; 1 = once).
    pub count: u64,
}

/// A repeated run of frames at the top of an overflowed stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cycle {
    /// Index of the first frame of the cycle in the record's frames.
    pub start: u32,
    /// Frames per cycle.
    pub len: u32,
    /// How many times the cycle repeats back to back on the whole stack.
    pub repeats: u64,
    /// Stack bytes of one cycle.
    pub bytes: u64,
}

/// A stack overflow: a fault in (or just below) a thread's stack guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Profiler thread index (0 if the thread never registered).
    pub thread: u32,
    /// Kernel thread id.
    pub os_tid: u32,
    /// When, ns since start.
    pub time_ns: u64,
    /// The faulting address.
    pub fault_addr: u64,
    /// Stack depth at the fault (top − SP), bytes.
    pub depth: u64,
    /// The thread's stack size, bytes.
    pub limit: u64,
    /// Deepest depth seen before (sampler and allocations), 0 if unknown.
    pub prev_max: u64,
    /// Frames walked on the whole stack.
    pub total_frames: u64,
    /// The repeated cycle, if one was found.
    pub cycle: Option<Cycle>,
    /// The innermost frames.
    pub frames: Vec<SizedFrame>,
}

/// Where a fault address lies.
pub mod class {
    /// Not known / no address (SIGABRT, SIGFPE…).
    pub const NONE: u8 = 0;
    /// The first pages of the address space (a null pointer, maybe plus an offset).
    pub const NULL_PAGE: u8 = 1;
    /// No mapping there.
    pub const UNMAPPED: u8 = 2;
    /// A thread's stack guard.
    pub const GUARD: u8 = 3;
    /// The executable's code.
    pub const TEXT: u8 = 4;
    /// The executable's initialised data (or read-only data).
    pub const DATA: u8 = 5;
    /// The executable's bss (anonymous memory right after its data).
    pub const BSS: u8 = 6;
    /// The brk heap.
    pub const HEAP: u8 = 7;
    /// A thread stack.
    pub const STACK: u8 = 8;
    /// A shared library.
    pub const LIBRARY: u8 = 9;
    /// Another anonymous mapping (mmapped heap blocks, …).
    pub const ANON: u8 = 10;

    /// Name of a class.
    pub fn name(c: u8) -> &'static str {
        match c {
            NULL_PAGE => "null page",
            UNMAPPED => "unmapped",
            GUARD => "guard page",
            TEXT => "text",
            DATA => "data",
            BSS => "bss",
            HEAP => "heap (brk)",
            STACK => "stack",
            LIBRARY => "shared library",
            ANON => "anonymous mapping",
            _ => "none",
        }
    }
}

/// A fatal signal other than a stack overflow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crash {
    /// Profiler thread index (0 if unregistered).
    pub thread: u32,
    /// Kernel thread id.
    pub os_tid: u32,
    /// When, ns since start.
    pub time_ns: u64,
    /// Signal number.
    pub signal: u32,
    /// `si_code` of the signal (≤ 0: sent by a process, e.g. abort()).
    pub code: i32,
    /// Fault address (SIGSEGV/SIGBUS/SIGILL/SIGFPE), 0 otherwise.
    pub fault_addr: u64,
    /// Class of the fault address, see [`class`].
    pub class: u8,
    /// Stack depth at the signal, bytes.
    pub depth: u64,
    /// Backtrace of the thread, innermost first.
    pub frames: Vec<SizedFrame>,
}

/// A panic (the hook runs before unwinding or aborting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Panic {
    /// Profiler thread index (0 if unregistered).
    pub thread: u32,
    /// When, ns since start.
    pub time_ns: u64,
    /// Thread name.
    pub thread_name: String,
    /// The panic message.
    pub message: String,
    /// `file:line:col`.
    pub location: String,
}

/// The deepest stack a thread reached, by the depth sampler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackMax {
    /// Thread index.
    pub thread: u32,
    /// When, ns since start.
    pub time_ns: u64,
    /// Depth, bytes.
    pub depth: u64,
    /// Frames of that stack, innermost first, with their sizes.
    pub frames: Vec<SizedFrame>,
}

fn frames_out(w: &mut SliceWriter<'_>, frames: &[SizedFrame]) {
    w.uvar(frames.len() as u64);
    for f in frames {
        w.uvar(f.addr);
        w.uvar(f.bytes);
        w.uvar(f.count);
    }
}

fn frames_in(r: &mut SliceReader<'_>) -> Result<Vec<SizedFrame>, Short> {
    let n = r.uvar()?.min(4096);
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(SizedFrame {
            addr: r.uvar()?,
            bytes: r.uvar()?,
            count: r.uvar()?,
        });
    }
    Ok(v)
}

/// Body of a StackOverflow record.
pub fn overflow_body(w: &mut SliceWriter<'_>, o: &OverflowRef<'_>) {
    w.uvar(o.thread as u64);
    w.uvar(o.os_tid as u64);
    w.uvar(o.time_ns);
    w.uvar(o.fault_addr);
    w.uvar(o.depth);
    w.uvar(o.limit);
    w.uvar(o.prev_max);
    w.uvar(o.total_frames);
    match o.cycle {
        Some(c) => {
            w.u8(1);
            w.uvar(c.start as u64);
            w.uvar(c.len as u64);
            w.uvar(c.repeats);
            w.uvar(c.bytes);
        }
        None => w.u8(0),
    }
    frames_out(w, o.frames);
}

/// [`Overflow`] with borrowed frames, for the encoder that cannot allocate.
#[derive(Debug, Clone, Copy)]
pub struct OverflowRef<'a> {
    /// See [`Overflow`].
    pub thread: u32,
    /// See [`Overflow`].
    pub os_tid: u32,
    /// See [`Overflow`].
    pub time_ns: u64,
    /// See [`Overflow`].
    pub fault_addr: u64,
    /// See [`Overflow`].
    pub depth: u64,
    /// See [`Overflow`].
    pub limit: u64,
    /// See [`Overflow`].
    pub prev_max: u64,
    /// See [`Overflow`].
    pub total_frames: u64,
    /// See [`Overflow`].
    pub cycle: Option<Cycle>,
    /// See [`Overflow`].
    pub frames: &'a [SizedFrame],
}

/// Decode a StackOverflow body.
pub fn overflow_parse(r: &mut SliceReader<'_>) -> Result<Overflow, Short> {
    let thread = r.uvar()? as u32;
    let os_tid = r.uvar()? as u32;
    let time_ns = r.uvar()?;
    let fault_addr = r.uvar()?;
    let depth = r.uvar()?;
    let limit = r.uvar()?;
    let prev_max = r.uvar()?;
    let total_frames = r.uvar()?;
    let cycle = if r.u8()? == 1 {
        Some(Cycle {
            start: r.uvar()? as u32,
            len: r.uvar()? as u32,
            repeats: r.uvar()?,
            bytes: r.uvar()?,
        })
    } else {
        None
    };
    let frames = frames_in(r)?;
    Ok(Overflow {
        thread,
        os_tid,
        time_ns,
        fault_addr,
        depth,
        limit,
        prev_max,
        total_frames,
        cycle,
        frames,
    })
}

/// Body of a Crash record (`frames` borrowed: no allocation).
pub fn crash_body(w: &mut SliceWriter<'_>, c: &Crash, frames: &[SizedFrame]) {
    w.uvar(c.thread as u64);
    w.uvar(c.os_tid as u64);
    w.uvar(c.time_ns);
    w.uvar(c.signal as u64);
    w.svar(c.code as i64);
    w.uvar(c.fault_addr);
    w.u8(c.class);
    w.uvar(c.depth);
    frames_out(w, frames);
}

/// Decode a Crash body.
pub fn crash_parse(r: &mut SliceReader<'_>) -> Result<Crash, Short> {
    Ok(Crash {
        thread: r.uvar()? as u32,
        os_tid: r.uvar()? as u32,
        time_ns: r.uvar()?,
        signal: r.uvar()? as u32,
        code: r.svar()? as i32,
        fault_addr: r.uvar()?,
        class: r.u8()?,
        depth: r.uvar()?,
        frames: frames_in(r)?,
    })
}

/// Body of a Panic record.
pub fn panic_body(w: &mut SliceWriter<'_>, p: &Panic) {
    w.uvar(p.thread as u64);
    w.uvar(p.time_ns);
    w.str(p.thread_name.as_bytes());
    w.str(p.message.as_bytes());
    w.str(p.location.as_bytes());
}

/// Decode a Panic body.
pub fn panic_parse(r: &mut SliceReader<'_>) -> Result<Panic, Short> {
    Ok(Panic {
        thread: r.uvar()? as u32,
        time_ns: r.uvar()?,
        thread_name: r.string()?,
        message: r.string()?,
        location: r.string()?,
    })
}

/// Body of a StackMax record.
pub fn stack_max_body(
    w: &mut SliceWriter<'_>,
    thread: u32,
    time_ns: u64,
    depth: u64,
    frames: &[SizedFrame],
) {
    w.uvar(thread as u64);
    w.uvar(time_ns);
    w.uvar(depth);
    frames_out(w, frames);
}

/// Decode a StackMax body.
pub fn stack_max_parse(r: &mut SliceReader<'_>) -> Result<StackMax, Short> {
    Ok(StackMax {
        thread: r.uvar()? as u32,
        time_ns: r.uvar()?,
        depth: r.uvar()?,
        frames: frames_in(r)?,
    })
}
