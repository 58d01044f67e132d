//! Trace format v1: the one contract between the recorder and every reader.
//!
//! A trace is a header followed by length-framed, CRC-checked chunks. A chunk holds
//! the records of one *source*: the recorder itself (source 0, global records) or one
//! thread (source = thread index ≥ 1, that thread's byte stream, in order). Per-thread
//! records are delta-encoded against the previous record of the same thread, so chunks
//! of one thread must be read in file order; a reader that stops at a damaged chunk
//! keeps everything before it.
//!
//! ```text
//! file    = header chunk*
//! header  = "STKHEAP\0" (8 bytes) | version: u32 LE | body_len: u32 LE | body | crc32(body): u32 LE
//! chunk   = len_word: u32 LE | crc32(stored): u32 LE | stored (len_word & 0x7fff_ffff bytes)
//! stored  = payload                                     if bit 31 of len_word is clear
//!         | size: u32 LE | lz4_block(payload)            if it is set (LZ4 block of `size` bytes)
//! payload = source: uvar | record*
//! record  = kind: u8 | body_len: uvar | body           (unknown kinds are skipped by body_len)
//! ```
//!
//! All integers in bodies are LEB128 varints (`uvar`) or zigzag varints (`svar`).
//! `Δ` marks a delta against the previous value of the same thread stream (seq, addr).
//!
//! | kind | name        | source | body                                                                  |
//! |------|-------------|--------|-----------------------------------------------------------------------|
//! | 0x01 | Alloc       | thread | Δseq uvar, Δaddr svar, size uvar, stack uvar, depth uvar              |
//! | 0x02 | Free        | thread | Δseq uvar, Δaddr svar                                                 |
//! | 0x03 | Realloc     | thread | Δfree_seq uvar, seq−free_seq uvar, Δold svar, new−old svar, old_size, new_size, stack, depth |
//! | 0x04 | AllocFailed | thread | Δseq uvar, size uvar, stack uvar, depth uvar                          |
//! | 0x05 | StackDef    | thread | id uvar, n uvar, frame₀ uvar, (frameᵢ − frameᵢ₋₁ svar)…               |
//! | 0x06 | Oom         | thread | Δseq uvar, size uvar, stack uvar, depth uvar, live_bytes svar, limit uvar (0 = none) |
//! | 0x07 | Mark        | thread | Δseq uvar, name str (≤ 64 bytes)                                      |
//! | 0x08 | SpanDef     | thread | span uvar, parent uvar (0 = none), name str (≤ 64 bytes)              |
//! | 0x09 | SpanEnter   | thread | Δseq uvar, span uvar                                                  |
//! | 0x0A | SpanExit    | thread | Δseq uvar, span uvar                                                  |
//! | 0x10 | ThreadStart | thread | os_tid, name str, stack_top, stack_size, time_ns                      |
//! | 0x11 | ThreadEnd   | thread | time_ns                                                               |
//! | 0x20 | Module      | 0      | path str, bias, n, (vaddr, memsz)…, build_id str                      |
//! | 0x21 | Round       | 0      | time_ns, seq (next global seq), watermark                             |
//! | 0x22 | Rss         | 0      | time_ns, rss_bytes                                                    |
//! | 0x23 | Counters    | 0      | see [`Counters`], in field order                                      |
//! | 0x24 | Lost        | 0      | count (events that could not be recorded)                             |
//! | 0x25 | Trailer     | 0      | [`Counters`] fields, then lost; written once at a clean stop          |
//! | 0x26 | Attached    | 0      | time_ns, frees_unknown: the session attached to a running process; frees (and reallocs) so far of blocks allocated before it (cumulative) |
//! | 0x30 | StackOverflow | 0    | see [`fatal::Overflow`]: thread, tid, time, fault addr, depth, limit, prev max, frames walked, cycle, (addr, bytes)… |
//! | 0x31 | Crash       | 0      | see [`fatal::Crash`]: thread, tid, time, signal, si_code svar, fault addr, class u8, depth, (addr, bytes)… |
//! | 0x32 | Panic       | 0      | thread, time_ns, thread name str, message str, location str           |
//! | 0x33 | StackMax    | 0      | thread, time_ns, depth, n, (addr, bytes, count)…: a new deepest stack (sampler) |
//! | 0x34 | Segments    | 0      | time_ns, text, data, bss, heap_brk, anon, stacks, libs (bytes)        |
//!
//! **Ordering.** Every recorded event takes a number from one global sequence. A
//! `Round` record promises that every event with `seq < watermark` has already been
//! written, so a reader merges the thread streams by `seq` holding back only the events
//! of the last rounds. Event times are interpolated between the `(seq, time_ns)` pairs
//! of consecutive rounds (rounds are a few milliseconds apart).
//!
//! **Stacks.** Stack ids are per thread (a thread writes a `StackDef` the first time it
//! uses a stack); [`reader::TraceReader`] maps them to global ids. Frames are return
//! addresses; symbols are resolved offline against the `Module` records.
//!
//! Stack id 0 means "no stack" (an allocation the sampler did not pick).

pub mod encode;
pub mod fatal;
pub mod reader;
pub mod varint;
pub mod writer;

/// The eight bytes every trace starts with.
pub const MAGIC: &[u8; 8] = b"STKHEAP\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Record kind bytes; see the table in the module docs.
pub mod kind {
    /// An allocation.
    pub const ALLOC: u8 = 0x01;
    /// A free.
    pub const FREE: u8 = 0x02;
    /// A realloc: one record, the old block freed and the new one allocated.
    pub const REALLOC: u8 = 0x03;
    /// An allocation the inner allocator answered with null.
    pub const ALLOC_FAILED: u8 = 0x04;
    /// A per-thread stack definition.
    pub const STACK_DEF: u8 = 0x05;
    /// The first failed allocation of the run (real or over the heap limit), with the
    /// live heap at that moment; written and flushed before the null is returned.
    pub const OOM: u8 = 0x06;
    /// A named point in time (`stackheap::mark`), in the thread's sequence.
    pub const MARK: u8 = 0x07;
    /// A tracing span was created (`SpanLayer`): its id, parent and name.
    pub const SPAN_DEF: u8 = 0x08;
    /// This thread entered a span.
    pub const SPAN_ENTER: u8 = 0x09;
    /// This thread left a span.
    pub const SPAN_EXIT: u8 = 0x0A;
    /// First record of a thread stream.
    pub const THREAD_START: u8 = 0x10;
    /// Last record of a thread stream.
    pub const THREAD_END: u8 = 0x11;
    /// A loaded module (executable or shared object) for offline symbolization.
    pub const MODULE: u8 = 0x20;
    /// A recorder round: time, global seq and the reorder watermark.
    pub const ROUND: u8 = 0x21;
    /// A resident-set-size sample.
    pub const RSS: u8 = 0x22;
    /// A snapshot of the exact in-process counters.
    pub const COUNTERS: u8 = 0x23;
    /// Events that could not be recorded.
    pub const LOST: u8 = 0x24;
    /// Final totals, written at a clean stop.
    pub const TRAILER: u8 = 0x25;
    /// The session attached to a running process: frees of blocks older than it.
    pub const ATTACHED: u8 = 0x26;
    /// A stack overflow (written by the fault handler).
    pub const STACK_OVERFLOW: u8 = 0x30;
    /// A fatal signal (written by the fault handler).
    pub const CRASH: u8 = 0x31;
    /// A panic (written by the panic hook).
    pub const PANIC: u8 = 0x32;
    /// A thread's new deepest stack, from the depth sampler.
    pub const STACK_MAX: u8 = 0x33;
    /// The process's segment sizes from /proc/self/maps.
    pub const SEGMENTS: u8 = 0x34;
}

/// Fixed facts about the traced process, written once at the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Process id.
    pub pid: u32,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Page size of the machine.
    pub page_size: u64,
    /// Mean bytes between sampled allocations; 1 records every allocation.
    pub sample_rate: u64,
    /// Stack-depth sampler frequency in Hz (0 = off).
    pub stack_hz: u32,
    /// Bit flags, see [`flags`].
    pub flags: u32,
    /// Path of the executable.
    pub exe: String,
    /// Command line.
    pub argv: Vec<String>,
}

/// Header flag bits.
pub mod flags {
    /// Stacks were captured by walking frame pointers.
    pub const FRAME_POINTERS: u32 = 1;
}

/// Exact in-process counters (all since profiling started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Time of the snapshot, ns since start.
    pub time_ns: u64,
    /// Allocations, reallocs included (a realloc creates a block).
    pub total_allocs: u64,
    /// Frees, reallocs included (a realloc retires a block).
    pub total_frees: u64,
    /// Bytes requested by allocations and reallocs (new size).
    pub total_bytes: u64,
    /// Live bytes now; negative only if blocks allocated before the start were freed.
    pub live_bytes: i64,
    /// Live blocks now (same caveat).
    pub live_blocks: i64,
    /// Highest live bytes seen.
    pub peak_bytes: u64,
    /// Live blocks when the peak was reached.
    pub peak_blocks: u64,
    /// When the peak was reached, ns since start.
    pub peak_time_ns: u64,
    /// Allocations the inner allocator answered with null.
    pub failed_allocs: u64,
}

/// A loaded module: where an object file was mapped, for offline symbolization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    /// Path of the file (the executable's real path for the main program).
    pub path: String,
    /// Load bias: runtime address = bias + ELF virtual address.
    pub bias: u64,
    /// Loaded segments as (ELF vaddr, size in memory).
    pub segments: Vec<(u64, u64)>,
    /// GNU build id, if the object has one.
    pub build_id: Vec<u8>,
}

impl Module {
    /// True if the runtime address `addr` lies in one of this module's segments.
    pub fn contains(&self, addr: u64) -> bool {
        self.segments.iter().any(|&(vaddr, len)| {
            let start = self.bias.wrapping_add(vaddr);
            addr >= start && addr < start.wrapping_add(len)
        })
    }
}

/// A thread as first seen by the profiler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadInfo {
    /// Profiler thread index (≥ 1, never reused in one trace).
    pub thread: u32,
    /// Kernel thread id.
    pub os_tid: u32,
    /// Thread name, if it had one.
    pub name: String,
    /// Highest address of the thread's stack (stacks grow down).
    pub stack_top: u64,
    /// Size of the thread's stack: RLIMIT_STACK for the main thread.
    pub stack_size: u64,
    /// When the thread was first seen, ns since start.
    pub time_ns: u64,
}

/// One decoded event, in global order, with absolute values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A thread was seen for the first time.
    Thread(ThreadInfo),
    /// A thread ended.
    ThreadEnd {
        /// Thread index.
        thread: u32,
        /// When, ns since start.
        time_ns: u64,
    },
    /// A stack, defined before the first event that uses it. Frame 0 is innermost.
    Stack {
        /// Global stack id (≥ 1).
        id: u32,
        /// Return addresses, innermost first.
        frames: Vec<u64>,
    },
    /// A loaded module.
    Module(Module),
    /// An allocation.
    Alloc {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start (interpolated between rounds).
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Address returned.
        addr: u64,
        /// Requested size in bytes.
        size: u64,
        /// Global stack id; 0 when the allocation has no stack.
        stack: u32,
        /// Stack depth of the thread at the call, bytes.
        depth: u64,
    },
    /// A free.
    Free {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Address freed.
        addr: u64,
    },
    /// A realloc (one event: the old block retired, the new one allocated).
    Realloc {
        /// Global sequence number of the new block (taken after the inner realloc
        /// returned); the event's place in the order.
        seq: u64,
        /// Sequence number taken before the inner realloc ran: the old block was
        /// retired after it. Another thread may have been handed `old_addr` between the
        /// two numbers; its allocation then comes before this event.
        free_seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Old address.
        old_addr: u64,
        /// Old size.
        old_size: u64,
        /// New address.
        new_addr: u64,
        /// New size.
        new_size: u64,
        /// Global stack id of the realloc call; 0 when none.
        stack: u32,
        /// Stack depth at the call, bytes.
        depth: u64,
    },
    /// An allocation that failed (null returned).
    AllocFailed {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Requested size.
        size: u64,
        /// Global stack id; 0 when none.
        stack: u32,
        /// Stack depth at the call, bytes.
        depth: u64,
    },
    /// A resident-set-size sample.
    Rss {
        /// When, ns since start.
        time_ns: u64,
        /// RSS in bytes.
        rss_bytes: u64,
    },
    /// A periodic snapshot of the exact counters.
    Counters(Counters),
    /// Events the recorder could not record.
    Lost {
        /// How many.
        count: u64,
    },
    /// The final totals at a clean stop.
    Trailer {
        /// Final counters.
        counters: Counters,
        /// Total events lost over the run.
        lost: u64,
    },
    /// The first failed allocation (out of memory, real or over the heap limit). It
    /// counts as a failed allocation too (no `AllocFailed` is written for it).
    Oom {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Requested size in bytes.
        size: u64,
        /// Global stack id of the failing request; 0 when none.
        stack: u32,
        /// Stack depth at the call, bytes.
        depth: u64,
        /// Exact live heap (in-process counter) when the request failed, bytes.
        live_bytes: i64,
        /// The heap limit in force, bytes (0 = none: the allocator itself failed).
        limit_bytes: u64,
    },
    /// A named mark (`stackheap::mark`).
    Mark {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// The mark's name.
        name: String,
    },
    /// A tracing span was created (ids may be reused after the span closed; the latest
    /// definition counts).
    SpanDef {
        /// Span id (tracing's id).
        id: u64,
        /// Parent span id, 0 = none.
        parent: u64,
        /// The span's name.
        name: String,
    },
    /// A thread entered a span: its allocations until the matching exit belong to it.
    SpanEnter {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Span id.
        span: u64,
    },
    /// A thread left a span.
    SpanExit {
        /// Global sequence number.
        seq: u64,
        /// When, ns since start.
        time_ns: u64,
        /// Thread index.
        thread: u32,
        /// Span id.
        span: u64,
    },
    /// A stack overflow (the process dies right after).
    StackOverflow(fatal::Overflow),
    /// A fatal signal.
    Crash(fatal::Crash),
    /// A panic.
    Panic(fatal::Panic),
    /// A thread's deepest stack so far (depth sampler).
    StackMax(fatal::StackMax),
    /// Segment sizes of the process.
    Segments(crate::stack::segments::Segments),
    /// The session attached to a running process (`stackheap run --pid`): blocks
    /// allocated before it are unknown.
    Attached {
        /// When, ns since start.
        time_ns: u64,
        /// Frees (and reallocs) so far of blocks allocated before the attach; they are
        /// not in the trace's events nor in the counters.
        frees_unknown: u64,
    },
}
