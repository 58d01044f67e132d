//! One streaming pass over the events into small aggregators, one file each:
//! [`live`] (the live map and the totals it implies), [`sites`] (per call stack),
//! [`peak`] (the global peak and each site's share of it, without copying the live set),
//! [`leaks`] (what is still live at the end) and [`timeline`] (bounded time series).
//!
//! [`Analyzer::event`] takes one [`Event`] at a time; [`Analyzer::finish`] returns the
//! [`Aggregates`]. Nothing here symbolizes, formats or touches the file system.

pub mod growth;
pub mod leaks;
pub mod live;
pub mod marks;
pub mod peak;
pub mod sites;
pub mod snapshots;
pub mod spans;
pub mod stacks;
pub mod temporary;
pub mod timeline;

use rustc_hash::FxHashMap as HashMap;

use stackheap::format::reader::Held;
use stackheap::format::{Counters, Event, Module, ThreadInfo};

use growth::GrowthTracker;
use live::{Block, LiveMap};
use marks::{OomEvent, Snapshot};
use peak::PeakTracker;
use sites::SiteTable;
use timeline::Series;

/// Bytes and blocks, exact and estimated side by side.
///
/// `bytes`/`blocks` count what the trace recorded. `est_bytes`/`est_blocks` weigh each
/// recorded block by the inverse of its sampling probability; in full mode (every
/// allocation recorded) the weight is 1 and both agree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Recorded bytes.
    pub bytes: u64,
    /// Recorded blocks.
    pub blocks: u64,
    /// Estimated bytes of the whole program (recorded bytes / sampling probability).
    pub est_bytes: f64,
    /// Estimated blocks of the whole program.
    pub est_blocks: f64,
}

impl Tally {
    /// Count one block in.
    pub fn add(&mut self, b: &Block) {
        self.bytes += b.size;
        self.blocks += 1;
        self.est_bytes += b.size as f64 * b.weight;
        self.est_blocks += b.weight;
    }

    /// Count one block out (never below zero).
    pub fn sub(&mut self, b: &Block) {
        self.bytes = self.bytes.saturating_sub(b.size);
        self.blocks = self.blocks.saturating_sub(1);
        self.est_bytes = (self.est_bytes - b.size as f64 * b.weight).max(0.0);
        self.est_blocks = (self.est_blocks - b.weight).max(0.0);
    }

    /// The figure to report: exact counts in full mode, rounded estimates when sampled.
    pub fn value(&self, sampled: bool) -> (u64, u64) {
        if sampled {
            (
                self.est_bytes.round() as u64,
                self.est_blocks.round() as u64,
            )
        } else {
            (self.bytes, self.blocks)
        }
    }
}

/// The weight of a recorded allocation of `size` bytes under byte-based Poisson
/// sampling with mean `rate` bytes: it was recorded with probability
/// `p = 1 - exp(-size/rate)`, so it stands for `1/p` allocations (unbiased estimator).
pub fn sample_weight(size: u64, rate: u64) -> f64 {
    if rate <= 1 || size == 0 {
        return 1.0;
    }
    let p = -(-(size as f64) / rate as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        1.0
    }
}

/// Totals computed from the events themselves (exact in full mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTotals {
    /// Allocations, reallocs included.
    pub total_allocs: u64,
    /// Frees, reallocs included (frees of unknown blocks included too).
    pub total_frees: u64,
    /// Bytes allocated (realloc new sizes included).
    pub total_bytes: u64,
    /// Live bytes at the end.
    pub live_bytes: u64,
    /// Live blocks at the end.
    pub live_blocks: u64,
    /// Highest live bytes.
    pub peak_bytes: u64,
    /// Live blocks at that moment.
    pub peak_blocks: u64,
    /// When, ns since start.
    pub peak_time_ns: u64,
    /// Frees (and realloc old blocks) of addresses not in the live map: blocks
    /// allocated before profiling started (or, when sampled, never sampled).
    pub frees_unknown: u64,
    /// Blocks whose address was allocated again while they were live and that no
    /// realloc claimed by the end (a free was missed); retired at the end.
    pub addr_reused: u64,
    /// Failed allocations.
    pub failed_allocs: u64,
    /// Time of the last allocation event, ns since start.
    pub last_time_ns: u64,
    /// Sequence number of the last event seen.
    pub last_seq: u64,
}

impl EventTotals {
    /// The same figures in the in-process counter layout, for comparisons.
    pub fn as_counters(&self) -> Counters {
        Counters {
            time_ns: self.last_time_ns,
            total_allocs: self.total_allocs,
            total_frees: self.total_frees,
            total_bytes: self.total_bytes,
            live_bytes: self.live_bytes as i64,
            live_blocks: self.live_blocks as i64,
            peak_bytes: self.peak_bytes,
            peak_blocks: self.peak_blocks,
            peak_time_ns: self.peak_time_ns,
            failed_allocs: self.failed_allocs,
        }
    }
}

/// A thread with what the pass learned about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// As first seen.
    pub info: ThreadInfo,
    /// When it ended, if it did before the trace stopped.
    pub end_ns: Option<u64>,
    /// Deepest stack depth seen at a recorded allocation, bytes.
    pub max_depth: u64,
    /// Recorded allocations made by it.
    pub allocs: u64,
}

/// Everything the pass produced, before symbolization.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    /// Mean bytes between samples; 1 = every allocation recorded.
    pub sample_rate: u64,
    /// Totals from the events.
    pub events: EventTotals,
    /// The recorded (or, when sampled, estimated) live heap at the peak.
    pub peak: peak::Peak,
    /// Per call stack.
    pub sites: SiteTable,
    /// Stack id to return addresses, innermost first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// Loaded modules.
    pub modules: Vec<Module>,
    /// Threads, in order of appearance.
    pub threads: Vec<ThreadStats>,
    /// Trailer counters and lost total, if the process stopped cleanly.
    pub trailer: Option<(Counters, u64)>,
    /// The last periodic counters record.
    pub last_counters: Option<Counters>,
    /// Sum of the `Lost` records.
    pub lost: u64,
    /// Attached to a running process: frees of blocks allocated before the attach
    /// (the last `Attached` record's count); `None` for a session started with the
    /// program.
    pub attached_frees_unknown: Option<u64>,
    /// Live heap bytes over time.
    pub heap_series: Series,
    /// Estimated live heap over time from the sampled events (sampled mode only; used
    /// when the trace has no counters record).
    pub est_heap_series: Series,
    /// RSS over time.
    pub rss_series: Series,
    /// Highest RSS sample.
    pub rss_peak: u64,
    /// Latest time seen in any record, ns since start.
    pub end_ns: u64,
    /// Live heap by site at a bounded number of moments.
    pub snapshots: Vec<snapshots::Snapshot>,
    /// Every site's live bytes sampled over time (growth detection).
    pub growth: GrowthTracker,
    /// Named marks, in order, with every site's live heap at each.
    pub marks: Vec<Snapshot>,
    /// Snapshots at the requested times ([`Analyzer::snapshot_at`]), in time order.
    pub time_points: Vec<Snapshot>,
    /// The first failed allocation and who held the heap then.
    pub oom: Option<OomEvent>,
    /// Per site, its blocks still live at the end by when they were allocated: counts
    /// in the four quarters of the run.
    pub leak_ages: HashMap<u32, [u64; 4]>,
    /// Temporary allocations (freed before the thread's next allocation).
    pub temporary: temporary::TemporaryTracker,
    /// Allocations by tracing span path.
    pub spans: spans::SpanTracker,
    /// Stack depths, overflows, crashes and panics.
    pub stack_events: stacks::StackEvents,
}

/// Feeds events to every aggregator in one pass.
pub struct Analyzer {
    sampled: bool,
    live: LiveMap,
    peak: PeakTracker,
    agg: Aggregates,
    thread_index: HashMap<u32, usize>,
    /// The last thread `thread_alloc` looked up, and its index.
    last_thread: Option<(u32, usize)>,
    snapshots: snapshots::Snapshots,
    /// Requested snapshot times not reached yet: (time ns, name), latest first.
    pending_points: Vec<(u64, String)>,
}

impl Analyzer {
    /// A fresh pass; `sample_rate` from the trace header (0 or 1 = full mode).
    pub fn new(sample_rate: u64, max_points: usize) -> Self {
        let sample_rate = sample_rate.max(1);
        Analyzer {
            sampled: sample_rate > 1,
            live: LiveMap::default(),
            peak: PeakTracker::new(sample_rate > 1),
            agg: Aggregates {
                sample_rate,
                heap_series: Series::new(max_points),
                est_heap_series: Series::new(max_points),
                rss_series: Series::new(max_points),
                ..Default::default()
            },
            thread_index: HashMap::default(),
            last_thread: None,
            snapshots: snapshots::Snapshots::default(),
            pending_points: Vec::new(),
        }
    }

    /// Also keep every site's live heap at these times (ns since start), each named as
    /// given (e.g. `5s`); a time after the last event is taken at the end.
    pub fn snapshot_at(mut self, mut points: Vec<(u64, String)>) -> Self {
        points.sort_by_key(|p| std::cmp::Reverse(p.0));
        self.pending_points = points;
        self
    }

    fn snapshot(&self, name: String, time_ns: u64, seq: u64) -> Snapshot {
        Snapshot::take(
            &self.agg.sites,
            self.sampled,
            name,
            time_ns,
            seq,
            self.live.tally().value(self.sampled).0,
        )
    }

    fn block(&self, size: u64, stack: u32, seq: u64) -> Block {
        Block {
            size,
            stack,
            weight: sample_weight(size, self.agg.sample_rate),
            seq,
        }
    }

    fn seen(&mut self, t: u64) {
        self.agg.end_ns = self.agg.end_ns.max(t);
    }

    fn thread_alloc(&mut self, thread: u32, depth: u64) {
        let i = match self.last_thread {
            Some((t, i)) if t == thread => Some(i),
            _ => {
                let i = self.thread_index.get(&thread).copied();
                if let Some(i) = i {
                    self.last_thread = Some((thread, i));
                }
                i
            }
        };
        if let Some(i) = i {
            let t = &mut self.agg.threads[i];
            t.allocs += 1;
            t.max_depth = t.max_depth.max(depth);
        }
    }

    /// Remove the block at `addr` from the live map and its site; false if unknown.
    fn retire(&mut self, seq: u64, addr: u64) -> bool {
        match self.live.remove(addr) {
            Some(b) => {
                self.agg.sites.free(&b, seq, self.peak.peak_seq());
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, seq: u64, addr: u64, b: Block) {
        // An address still live is kept aside for a realloc to claim (see LiveMap).
        self.live.insert(addr, b);
        self.agg.sites.alloc(&b, seq, self.peak.peak_seq());
    }

    fn after_change(&mut self, seq: u64, time_ns: u64) {
        while self
            .pending_points
            .last()
            .is_some_and(|(t, _)| *t <= time_ns)
        {
            let (_, name) = self.pending_points.pop().unwrap_or_default();
            let snap = self.snapshot(name, time_ns, seq);
            self.agg.time_points.push(snap);
        }
        let total = self.live.tally().value(self.sampled).0;
        self.agg
            .growth
            .tick(time_ns, seq, &self.agg.sites, self.sampled, total);
        self.peak.update(self.live.tally(), seq, time_ns);
        if self.sampled {
            let est = self.live.tally().est_bytes.round() as u64;
            self.agg.est_heap_series.push(time_ns, est);
        } else {
            self.agg.heap_series.push(time_ns, self.live.tally().bytes);
        }
        self.agg.events.last_time_ns = time_ns;
        self.agg.events.last_seq = seq;
        self.snapshots
            .after_change(time_ns, &self.agg.sites, self.sampled);
    }

    /// Feed one event in the reader's compact form ([`Held`]): the same as
    /// [`Self::event`] on its [`Held::into_event`], without building the [`Event`] for
    /// allocations and frees.
    #[inline]
    pub fn held(&mut self, h: Held) {
        match h {
            Held::Alloc {
                seq,
                time_ns,
                addr,
                size,
                depth,
                thread,
                stack,
            } => {
                self.agg.stack_events.alloc(thread, depth, time_ns);
                self.on_alloc(seq, time_ns, thread, addr, size, stack, depth);
            }
            Held::Free {
                seq,
                time_ns,
                addr,
                thread,
            } => self.on_free(seq, time_ns, thread, addr),
            Held::Other { event, .. } => self.event(&event),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn on_alloc(
        &mut self,
        seq: u64,
        time_ns: u64,
        thread: u32,
        addr: u64,
        size: u64,
        stack: u32,
        depth: u64,
    ) {
        self.seen(time_ns);
        self.thread_alloc(thread, depth);
        self.agg.temporary.alloc(thread, addr, stack);
        self.agg.spans.alloc(thread, size, stack);
        let ev = &mut self.agg.events;
        ev.total_allocs += 1;
        ev.total_bytes += size;
        let b = self.block(size, stack, seq);
        self.insert(seq, addr, b);
        self.after_change(seq, time_ns);
    }

    #[inline]
    fn on_free(&mut self, seq: u64, time_ns: u64, thread: u32, addr: u64) {
        self.seen(time_ns);
        self.agg.temporary.free(thread, addr);
        self.agg.events.total_frees += 1;
        if !self.retire(seq, addr) {
            self.agg.events.frees_unknown += 1;
        }
        self.after_change(seq, time_ns);
    }

    /// Feed one event.
    pub fn event(&mut self, e: &Event) {
        self.agg.stack_events.event(e);
        match e {
            Event::Thread(info) => {
                self.seen(info.time_ns);
                self.last_thread = None;
                self.thread_index
                    .insert(info.thread, self.agg.threads.len());
                self.agg.threads.push(ThreadStats {
                    info: info.clone(),
                    ..Default::default()
                });
            }
            Event::ThreadEnd { thread, time_ns } => {
                self.seen(*time_ns);
                if let Some(&i) = self.thread_index.get(thread) {
                    self.agg.threads[i].end_ns = Some(*time_ns);
                }
            }
            Event::Stack { id, frames } => {
                self.agg.stacks.insert(*id, frames.clone());
            }
            Event::Module(m) => self.agg.modules.push(m.clone()),
            &Event::Alloc {
                seq,
                time_ns,
                thread,
                addr,
                size,
                stack,
                depth,
            } => self.on_alloc(seq, time_ns, thread, addr, size, stack, depth),
            &Event::Free {
                seq,
                time_ns,
                addr,
                thread,
            } => self.on_free(seq, time_ns, thread, addr),
            &Event::Realloc {
                seq,
                free_seq,
                time_ns,
                thread,
                old_addr,
                new_addr,
                new_size,
                stack,
                depth,
                ..
            } => {
                self.seen(time_ns);
                self.thread_alloc(thread, depth);
                self.agg.temporary.alloc(thread, new_addr, stack);
                self.agg.spans.alloc(thread, new_size, stack);
                let ev = &mut self.agg.events;
                ev.total_allocs += 1;
                ev.total_frees += 1;
                ev.total_bytes += new_size;
                match self.live.remove_for_realloc(old_addr, free_seq) {
                    Some(old) => self.agg.sites.free(&old, seq, self.peak.peak_seq()),
                    None => self.agg.events.frees_unknown += 1,
                }
                let b = self.block(new_size, stack, seq);
                self.insert(seq, new_addr, b);
                self.after_change(seq, time_ns);
            }
            &Event::AllocFailed { time_ns, .. } => {
                self.seen(time_ns);
                self.agg.events.failed_allocs += 1;
            }
            &Event::Oom {
                seq,
                time_ns,
                thread,
                size,
                stack,
                live_bytes,
                limit_bytes,
                ..
            } => {
                self.seen(time_ns);
                self.agg.events.failed_allocs += 1;
                if self.agg.oom.is_none() {
                    let held = self.snapshot("oom".into(), time_ns, seq);
                    self.agg.oom = Some(OomEvent {
                        time_ns,
                        seq,
                        thread,
                        requested_bytes: size,
                        stack,
                        live_bytes,
                        limit_bytes,
                        held,
                    });
                }
            }
            Event::SpanDef { id, parent, name } => self.agg.spans.def(*id, *parent, name),
            &Event::SpanEnter {
                time_ns,
                thread,
                span,
                ..
            } => {
                self.seen(time_ns);
                self.agg.spans.enter(thread, span);
            }
            &Event::SpanExit {
                time_ns,
                thread,
                span,
                ..
            } => {
                self.seen(time_ns);
                self.agg.spans.exit(thread, span);
            }
            Event::Mark {
                seq, time_ns, name, ..
            } => {
                self.seen(*time_ns);
                let snap = self.snapshot(name.clone(), *time_ns, *seq);
                self.agg.marks.push(snap);
            }
            &Event::Rss { time_ns, rss_bytes } => {
                self.seen(time_ns);
                self.agg.rss_peak = self.agg.rss_peak.max(rss_bytes);
                self.agg.rss_series.push(time_ns, rss_bytes);
            }
            Event::Counters(c) => {
                self.seen(c.time_ns);
                if self.sampled {
                    self.agg
                        .heap_series
                        .push(c.time_ns, c.live_bytes.max(0) as u64);
                }
                self.agg.last_counters = Some(*c);
            }
            &Event::Lost { count } => self.agg.lost += count,
            Event::Trailer { counters, lost } => {
                self.seen(counters.time_ns);
                if self.sampled {
                    self.agg
                        .heap_series
                        .push(counters.time_ns, counters.live_bytes.max(0) as u64);
                }
                self.agg.trailer = Some((*counters, *lost));
            }
            Event::StackOverflow(o) => self.seen(o.time_ns),
            Event::Crash(c) => self.seen(c.time_ns),
            Event::Panic(p) => self.seen(p.time_ns),
            Event::StackMax(m) => self.seen(m.time_ns),
            Event::Segments(s) => self.seen(s.time_ns),
            &Event::Attached {
                time_ns,
                frees_unknown,
            } => {
                self.seen(time_ns);
                let n = self.agg.attached_frees_unknown.unwrap_or(0);
                self.agg.attached_frees_unknown = Some(n.max(frees_unknown));
            }
        }
    }

    /// End of the stream: settle the peak snapshot and the leaks.
    pub fn finish(mut self) -> Aggregates {
        // Blocks kept aside that no realloc claimed: a free of them was lost.
        for b in self.live.drain_displaced() {
            self.agg.events.addr_reused += 1;
            let seq = self.agg.events.last_seq;
            self.agg.sites.free(&b, seq, self.peak.peak_seq());
        }
        let (seq, t) = (self.agg.events.last_seq, self.agg.events.last_time_ns);
        while let Some((_, name)) = self.pending_points.pop() {
            let snap = self.snapshot(name, t, seq);
            self.agg.time_points.push(snap);
        }
        let total = self.live.tally().value(self.sampled).0;
        if self.agg.growth.times.last() != Some(&t) {
            self.agg
                .growth
                .sample(t, seq, &self.agg.sites, self.sampled, total);
        }
        let (t0, t1) = (self.agg.growth.times.first().copied().unwrap_or(0), t);
        for b in self.live.blocks() {
            let at = self.agg.growth.time_of_seq(b.seq);
            let q = if t1 > t0 {
                ((at.saturating_sub(t0)) as u128 * 4 / (t1 - t0 + 1) as u128).min(3) as usize
            } else {
                3
            };
            self.agg.leak_ages.entry(b.stack).or_default()[q] += 1;
        }
        let live = *self.live.tally();
        let ev = &mut self.agg.events;
        ev.live_bytes = live.bytes;
        ev.live_blocks = live.blocks;
        let peak = self.peak.peak();
        ev.peak_bytes = peak.tally.bytes;
        ev.peak_blocks = peak.tally.blocks;
        ev.peak_time_ns = peak.time_ns;
        self.agg.peak = peak;
        self.agg.sites.finish(self.peak.peak_seq());
        self.agg.snapshots =
            self.snapshots
                .finish(self.agg.events.last_time_ns, &self.agg.sites, self.sampled);
        self.agg
    }
}

#[cfg(test)]
mod tests;
