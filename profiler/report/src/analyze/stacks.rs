//! Stack facts of the trace: each thread's deepest stack (from allocation depths and
//! the depth sampler's `StackMax` records), stack overflows, crashes and panics; then,
//! symbolized, the per-thread stack table, the overflow and crash reports and the
//! folded lines of the stack-bytes flamegraph.

use rustc_hash::FxHashMap as HashMap;

use stackheap::format::fatal::{class, Crash, Overflow, Panic, SizedFrame, StackMax};
use stackheap::format::Event;
use stackheap::stack::segments::Segments;

use super::ThreadStats;
use crate::symbolize::Symbolizer;

/// What the pass collects.
#[derive(Debug, Clone, Default)]
pub struct StackEvents {
    /// Stack overflows.
    pub overflows: Vec<Overflow>,
    /// Fatal signals.
    pub crashes: Vec<Crash>,
    /// Panics.
    pub panics: Vec<Panic>,
    /// Per thread: the deepest stack the sampler saw.
    pub deepest: HashMap<u32, StackMax>,
    /// Per thread: deepest depth at an allocation and when.
    pub alloc_max: HashMap<u32, (u64, u64)>,
    /// The first segments snapshot.
    pub segments_start: Option<Segments>,
    /// The snapshot with the most memory mapped (text excluded).
    pub segments_peak: Option<Segments>,
    /// Per thread: the high-water mark over time, (time_ns, depth) at each new maximum
    /// (from allocations and the sampler).
    pub high_water: HashMap<u32, Vec<(u64, u64)>>,
    /// Per thread index (small ones): its `alloc_max` depth + 1, 0 = no allocation yet.
    /// An allocation no deeper than that changes neither map, and most are: a check
    /// of this vector instead of two hash lookups per allocation.
    alloc_floor: Vec<u64>,
}

impl StackEvents {
    fn raise(&mut self, thread: u32, time_ns: u64, depth: u64) {
        let v = self.high_water.entry(thread).or_default();
        if v.last().is_none_or(|&(_, d)| depth > d) {
            v.push((time_ns, depth));
        }
    }
}

impl StackEvents {
    /// Feed one event (only the stack ones matter).
    pub fn event(&mut self, e: &Event) {
        match e {
            Event::StackOverflow(o) => self.overflows.push(o.clone()),
            Event::Crash(c) => self.crashes.push(c.clone()),
            Event::Panic(p) => self.panics.push(p.clone()),
            Event::Segments(s) => {
                if self.segments_start.is_none() {
                    self.segments_start = Some(*s);
                }
                let total = |s: &Segments| s.data + s.bss + s.heap_brk + s.anon + s.stacks + s.libs;
                if self.segments_peak.is_none_or(|p| total(s) > total(&p)) {
                    self.segments_peak = Some(*s);
                }
            }
            Event::StackMax(m) => {
                self.raise(m.thread, m.time_ns, m.depth);
                let e = self.deepest.entry(m.thread).or_default();
                if m.depth >= e.depth {
                    *e = m.clone();
                }
            }
            &Event::Alloc {
                thread,
                depth,
                time_ns,
                ..
            }
            | &Event::Realloc {
                thread,
                depth,
                time_ns,
                ..
            } => self.alloc(thread, depth, time_ns),
            _ => {}
        }
    }

    /// An allocation's stack depth (what [`Self::event`] does for an allocation).
    #[inline]
    pub fn alloc(&mut self, thread: u32, depth: u64, time_ns: u64) {
        let slot = thread as usize;
        if slot < 1 << 16 {
            if self.alloc_floor.len() <= slot {
                self.alloc_floor.resize(slot + 1, 0);
            }
            // Seen before and not deeper: `alloc_max` keeps its value and the
            // high-water mark (never below `alloc_max`) too.
            if depth < self.alloc_floor[slot] {
                return;
            }
        }
        self.raise(thread, time_ns, depth);
        let e = self.alloc_max.entry(thread).or_default();
        if depth > e.0 {
            *e = (depth, time_ns);
        }
        if let Some(f) = self.alloc_floor.get_mut(slot) {
            *f = e.0 + 1;
        }
    }
}

/// A frame with the stack bytes it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFrame {
    /// Function (the physical one: inlined callees are folded into it).
    pub name: String,
    /// Stack bytes of this frame (0 when unknown).
    pub bytes: u64,
    /// Back-to-back repeats of this frame (recursion), ≥ 1.
    pub count: u64,
}

/// One thread's stack figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadStack {
    /// Thread index.
    pub thread: u32,
    /// Kernel tid.
    pub os_tid: u32,
    /// Name.
    pub name: String,
    /// Stack size, bytes.
    pub stack_limit_bytes: u64,
    /// Deepest stack seen (sampler, allocations, overflow), bytes.
    pub max_stack_bytes: u64,
    /// When, ns since start.
    pub max_stack_time_ns: u64,
    /// `max_stack_bytes` in percent of the limit.
    pub percent_used: f64,
    /// The deepest stack's frames (innermost first), when the sampler walked it.
    pub deepest: Vec<StackFrame>,
}

/// A repeated recursion cycle, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleReport {
    /// First frame index of the cycle.
    pub start: u32,
    /// Frames per cycle.
    pub len: u32,
    /// Repeats on the whole stack.
    pub repeats: u64,
    /// Stack bytes per cycle.
    pub bytes: u64,
    /// Functions of one cycle, innermost first.
    pub functions: Vec<String>,
}

/// A stack overflow, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowReport {
    /// Thread index.
    pub thread: u32,
    /// Thread name (from its ThreadStart).
    pub thread_name: String,
    /// Kernel tid.
    pub os_tid: u32,
    /// When.
    pub time_ns: u64,
    /// Depth at the fault.
    pub depth: u64,
    /// Stack size.
    pub limit: u64,
    /// High-water mark before.
    pub prev_max: u64,
    /// Frames on the whole stack.
    pub total_frames: u64,
    /// Fault address.
    pub fault_addr: u64,
    /// Top frames.
    pub frames: Vec<StackFrame>,
    /// The collapsed cycle.
    pub cycle: Option<CycleReport>,
}

/// A fatal signal, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// Thread index.
    pub thread: u32,
    /// Thread name.
    pub thread_name: String,
    /// Kernel tid.
    pub os_tid: u32,
    /// When.
    pub time_ns: u64,
    /// Signal number.
    pub signal: u32,
    /// Signal name.
    pub signal_name: String,
    /// si_code.
    pub code: i32,
    /// Fault address.
    pub fault_addr: u64,
    /// Class of the fault address.
    pub fault_class: String,
    /// Depth at the signal.
    pub depth: u64,
    /// Backtrace, innermost first.
    pub frames: Vec<String>,
}

/// The stack part of an analysis.
#[derive(Debug, Clone, Default)]
pub struct StackReport {
    /// Per thread, in order of appearance.
    pub threads: Vec<ThreadStack>,
    /// Overflows.
    pub overflows: Vec<OverflowReport>,
    /// Fatal signals.
    pub crashes: Vec<CrashReport>,
    /// Panics.
    pub panics: Vec<Panic>,
    /// Folded lines of the stack-bytes flamegraph.
    pub folded: Vec<String>,
    /// Segment sizes at the start.
    pub segments_start: Option<Segments>,
    /// Segment sizes when the most memory was mapped.
    pub segments_peak: Option<Segments>,
    /// Per thread: the stack high-water mark over time (time_ns, depth), sorted by time.
    pub high_water: HashMap<u32, Vec<(u64, u64)>>,
}

/// Signal name.
pub fn signal_name(sig: u32) -> String {
    match sig as i32 {
        libc_sig::SIGSEGV => "SIGSEGV".into(),
        libc_sig::SIGBUS => "SIGBUS".into(),
        libc_sig::SIGILL => "SIGILL".into(),
        libc_sig::SIGFPE => "SIGFPE".into(),
        libc_sig::SIGABRT => "SIGABRT".into(),
        n => format!("signal {n}"),
    }
}

/// Linux signal numbers (x86_64 and aarch64 agree on these).
mod libc_sig {
    pub const SIGILL: i32 = 4;
    pub const SIGABRT: i32 = 6;
    pub const SIGBUS: i32 = 7;
    pub const SIGFPE: i32 = 8;
    pub const SIGSEGV: i32 = 11;
}

fn name_of(sym: &mut Option<&mut Symbolizer>, addr: u64) -> String {
    match sym {
        Some(s) => s
            .resolve(addr)
            .last()
            .map(|f| f.name.clone())
            .unwrap_or_else(|| format!("{addr:#x}")),
        None => format!("{addr:#x}"),
    }
}

fn named(sym: &mut Option<&mut Symbolizer>, frames: &[SizedFrame]) -> Vec<StackFrame> {
    frames
        .iter()
        .map(|f| StackFrame {
            name: name_of(sym, f.addr),
            bytes: f.bytes,
            count: f.count.max(1),
        })
        .collect()
}

/// Folded lines (`root;…;frame bytes`) giving each frame its own stack bytes.
fn fold(prefix: &str, frames: &[StackFrame], rest: u64, out: &mut HashMap<String, u64>) {
    let clean = |s: &str| crate::render::folded::clean_frame(s);
    let mut path = prefix.to_string();
    if rest > 0 {
        path.push_str(";[outer frames]");
        *out.entry(path.clone()).or_default() += rest;
    }
    for f in frames.iter().rev() {
        path.push(';');
        path.push_str(&clean(&f.name));
        if f.count > 1 {
            path.push_str(&format!(" ×{}", f.count));
        }
        if f.bytes > 0 {
            *out.entry(path.clone()).or_default() += f.bytes * f.count;
        }
    }
}

/// Symbolize and combine.
pub fn build(
    ev: StackEvents,
    threads: &[ThreadStats],
    mut sym: Option<&mut Symbolizer>,
) -> StackReport {
    let name_of_thread = |t: u32| {
        threads
            .iter()
            .find(|s| s.info.thread == t)
            .map(|s| s.info.name.clone())
            .unwrap_or_default()
    };
    let mut folded: HashMap<String, u64> = HashMap::default();
    let mut out = StackReport::default();
    for o in &ev.overflows {
        let frames = named(&mut sym, &o.frames);
        let cycle = o.cycle.map(|c| CycleReport {
            start: c.start,
            len: c.len,
            repeats: c.repeats,
            bytes: c.bytes,
            functions: frames
                .iter()
                .skip(c.start as usize)
                .take(c.len as usize)
                .map(|f| f.name.clone())
                .collect(),
        });
        out.overflows.push(OverflowReport {
            thread: o.thread,
            thread_name: name_of_thread(o.thread),
            os_tid: o.os_tid,
            time_ns: o.time_ns,
            depth: o.depth,
            limit: o.limit,
            prev_max: o.prev_max,
            total_frames: o.total_frames,
            fault_addr: o.fault_addr,
            frames,
            cycle,
        });
    }
    for c in &ev.crashes {
        out.crashes.push(CrashReport {
            thread: c.thread,
            thread_name: name_of_thread(c.thread),
            os_tid: c.os_tid,
            time_ns: c.time_ns,
            signal: c.signal,
            signal_name: signal_name(c.signal),
            code: c.code,
            fault_addr: c.fault_addr,
            fault_class: class::name(c.class).to_string(),
            depth: c.depth,
            frames: c.frames.iter().map(|f| name_of(&mut sym, f.addr)).collect(),
        });
    }
    out.panics = ev.panics.clone();
    out.segments_start = ev.segments_start;
    out.high_water = ev.high_water.clone();
    for v in out.high_water.values_mut() {
        // StackMax records arrive out of order with the events: keep a staircase.
        v.sort_unstable();
        let mut max = 0;
        v.retain(|&(_, d)| {
            let keep = d > max;
            max = max.max(d);
            keep
        });
    }
    for o in &ev.overflows {
        out.high_water
            .entry(o.thread)
            .or_default()
            .push((o.time_ns, o.depth));
    }
    out.segments_peak = ev.segments_peak;
    for t in threads {
        let id = t.info.thread;
        let mut best = (t.max_depth, 0u64);
        if let Some(&(d, time)) = ev.alloc_max.get(&id) {
            if d >= best.0 {
                best = (d, time);
            }
        }
        let mut deepest = Vec::new();
        if let Some(m) = ev.deepest.get(&id) {
            if m.depth >= best.0 {
                best = (m.depth, m.time_ns);
            }
            deepest = named(&mut sym, &m.frames);
        }
        let overflow = out.overflows.iter().find(|o| o.thread == id);
        if let Some(o) = overflow {
            if o.depth >= best.0 {
                best = (o.depth, o.time_ns);
            }
        }
        let label = if t.info.name.is_empty() {
            format!("thread {id}")
        } else {
            format!("{} (thread {id})", t.info.name)
        };
        if let Some(o) = overflow {
            // The frames above the cycle, then the cycle collapsed into one frame.
            let mut frames: Vec<StackFrame> = o.frames.clone();
            if let Some(c) = &o.cycle {
                frames.truncate(c.start as usize);
                frames.push(StackFrame {
                    name: format!("[cycle: {}]", c.functions.join(" → ")),
                    bytes: c.bytes,
                    count: c.repeats.max(1),
                });
            }
            let sum: u64 = frames.iter().map(|f| f.bytes * f.count).sum();
            fold(&label, &frames, o.depth.saturating_sub(sum), &mut folded);
        } else if !deepest.is_empty() {
            let sum: u64 = deepest.iter().map(|f| f.bytes * f.count).sum();
            let depth = ev.deepest.get(&id).map_or(0, |m| m.depth);
            fold(&label, &deepest, depth.saturating_sub(sum), &mut folded);
        }
        let limit = t.info.stack_size;
        out.threads.push(ThreadStack {
            thread: id,
            os_tid: t.info.os_tid,
            name: t.info.name.clone(),
            stack_limit_bytes: limit,
            max_stack_bytes: best.0,
            max_stack_time_ns: best.1,
            percent_used: if limit > 0 {
                best.0 as f64 * 100.0 / limit as f64
            } else {
                0.0
            },
            deepest,
        });
    }
    let mut lines: Vec<String> = folded
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    lines.sort();
    out.folded = lines;
    out
}
