//! Reading a trace that is still being written (live attach): [`Follow`] keeps the
//! reader's state between calls and continues from the last complete chunk, feeding the
//! live map and the site table of [`crate::analyze`]; [`analyze_prefix`] analyzes the
//! first N bytes of a trace as if the program had stopped there.
//!
//! The writer tells how many bytes are complete (the live-attach socket's
//! `complete_bytes` / `trace_bytes`, always a chunk boundary); the reader never reads
//! past that, so it never sees half a chunk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use stackheap::format::reader::TraceReader;
use stackheap::format::{Event, Header, Module};

use crate::analyze::live::{Block, LiveMap};
use crate::analyze::sample_weight;
use crate::analyze::sites::SiteTable;
use crate::symbolize::{Frame, Symbolizer};
use crate::{Analysis, AnalyzeOptions, ReportError};

/// Analyze the first `len` bytes of the trace at `path` (a prefix that ends at a chunk
/// boundary, e.g. a live process's `complete_bytes`): the result reads as a trace of a
/// program that stopped there, so its "end" (`leaked`) is the live heap at that moment.
pub fn analyze_prefix(
    path: &Path,
    len: u64,
    opts: &AnalyzeOptions,
) -> Result<Analysis, ReportError> {
    let wrap = |source| ReportError::Trace {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(|e| wrap(e.into()))?;
    let reader = TraceReader::new(BufReader::with_capacity(1 << 20, f.take(len))).map_err(wrap)?;
    crate::analyze_pipelined(reader, opts).map_err(|e| match e {
        ReportError::Read(source) => wrap(source),
        e => e,
    })
}

/// A file read up to a limit that the caller raises as the writer completes chunks.
struct Growing {
    file: File,
    pos: u64,
    limit: Arc<AtomicU64>,
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.limit.load(Ordering::Acquire).saturating_sub(self.pos);
        if room == 0 {
            return Ok(0);
        }
        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// One site as the live view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSite {
    /// Stack id (0 = allocations recorded without a stack).
    pub stack: u32,
    /// Live bytes now (estimated when sampled).
    pub bytes: u64,
    /// Live blocks now.
    pub blocks: u64,
    /// Change of its live bytes over the growth window (negative: it shrank).
    pub growth_bytes: i64,
    /// That change per second of the window.
    pub growth_per_s: f64,
}

/// Follows a growing trace: call [`Follow::poll`] with the complete length whenever the
/// writer reports more; ask for the live heap by site at any time.
pub struct Follow {
    path: PathBuf,
    limit: Arc<AtomicU64>,
    reader: TraceReader<BufReader<Growing>>,
    sampled: bool,
    sample_rate: u64,
    live: LiveMap,
    sites: SiteTable,
    stacks: HashMap<u32, Vec<u64>>,
    modules: Vec<Module>,
    symbolizer: Option<Symbolizer>,
    frames: HashMap<u32, Vec<Frame>>,
    time_ns: u64,
    window_ns: u64,
    /// Every site's live bytes, about once a second of trace time, oldest first.
    history: VecDeque<(u64, HashMap<u32, u64>)>,
    batch: Vec<Event>,
    events: u64,
}

impl Follow {
    /// Start following the trace at `path`, whose first `complete` bytes are written
    /// (at least the header). Growth is measured over the last `window_s` seconds.
    pub fn open(path: &Path, complete: u64, window_s: u64) -> Result<Follow, ReportError> {
        let wrap = |source| ReportError::Trace {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| wrap(e.into()))?;
        let limit = Arc::new(AtomicU64::new(complete));
        let input = Growing {
            file,
            pos: 0,
            limit: limit.clone(),
        };
        let reader = TraceReader::new(BufReader::with_capacity(1 << 20, input)).map_err(wrap)?;
        let sample_rate = reader.header().sample_rate.max(1);
        Ok(Follow {
            path: path.to_path_buf(),
            limit,
            reader,
            sampled: sample_rate > 1,
            sample_rate,
            live: LiveMap::default(),
            sites: SiteTable::default(),
            stacks: HashMap::default(),
            modules: Vec::new(),
            symbolizer: None,
            frames: HashMap::default(),
            time_ns: 0,
            window_ns: window_s.max(1) * 1_000_000_000,
            history: VecDeque::new(),
            batch: Vec::with_capacity(4096),
            events: 0,
        })
    }

    /// The trace header.
    pub fn header(&self) -> &Header {
        self.reader.header()
    }

    /// Read what the writer completed up to byte `complete`; returns the events taken.
    /// Events of the last rounds stay held back until a later round releases them.
    pub fn poll(&mut self, complete: u64) -> Result<u64, ReportError> {
        self.poll_at_most(complete, u64::MAX)
    }

    /// [`Self::poll`], taking at most about `max` events (the rest on later calls), so a
    /// viewer that attaches to a long trace catches up without freezing.
    pub fn poll_at_most(&mut self, complete: u64, max: u64) -> Result<u64, ReportError> {
        self.limit.fetch_max(complete, Ordering::AcqRel);
        let mut taken = 0u64;
        while taken < max {
            self.batch.clear();
            let n = self
                .reader
                .next_events_so_far(&mut self.batch, 4096)
                .map_err(|source| ReportError::Trace {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            taken += n as u64;
            let batch = std::mem::take(&mut self.batch);
            for e in &batch {
                self.event(e);
            }
            self.batch = batch;
        }
        self.events += taken;
        self.sample_history();
        Ok(taken)
    }

    /// True once the trace ended (the program stopped profiling, or the file is damaged).
    pub fn ended(&self) -> bool {
        self.reader.is_done()
    }

    /// Time of the latest event read, ns since the program's start.
    pub fn time_ns(&self) -> u64 {
        self.time_ns
    }

    /// Events read so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Live bytes and blocks of the events read so far (estimated when sampled).
    pub fn live(&self) -> (u64, u64) {
        self.live.tally().value(self.sampled)
    }

    fn block(&self, size: u64, stack: u32, seq: u64) -> Block {
        Block {
            size,
            stack,
            weight: sample_weight(size, self.sample_rate),
            seq,
        }
    }

    fn event(&mut self, e: &Event) {
        match e {
            &Event::Alloc {
                seq,
                time_ns,
                addr,
                size,
                stack,
                ..
            } => {
                self.time_ns = self.time_ns.max(time_ns);
                let b = self.block(size, stack, seq);
                self.live.insert(addr, b);
                self.sites.alloc(&b, seq, None);
            }
            &Event::Free {
                seq, time_ns, addr, ..
            } => {
                self.time_ns = self.time_ns.max(time_ns);
                if let Some(b) = self.live.remove(addr) {
                    self.sites.free(&b, seq, None);
                }
            }
            &Event::Realloc {
                seq,
                free_seq,
                time_ns,
                old_addr,
                new_addr,
                new_size,
                stack,
                ..
            } => {
                self.time_ns = self.time_ns.max(time_ns);
                if let Some(old) = self.live.remove_for_realloc(old_addr, free_seq) {
                    self.sites.free(&old, seq, None);
                }
                let b = self.block(new_size, stack, seq);
                self.live.insert(new_addr, b);
                self.sites.alloc(&b, seq, None);
            }
            Event::Stack { id, frames } => {
                self.stacks.insert(*id, frames.clone());
            }
            Event::Module(m) => {
                self.modules.push(m.clone());
                // New code was loaded: resolve with the larger module list from now on.
                self.symbolizer = None;
            }
            Event::Counters(c) => self.time_ns = self.time_ns.max(c.time_ns),
            &Event::Rss { time_ns, .. } => self.time_ns = self.time_ns.max(time_ns),
            _ => {}
        }
    }

    fn current(&self) -> HashMap<u32, u64> {
        self.sites
            .iter()
            .map(|(k, s)| (k, s.curr.value(self.sampled).0))
            .filter(|&(_, b)| b > 0)
            .collect()
    }

    fn sample_history(&mut self) {
        let due = self
            .history
            .back()
            .is_none_or(|&(t, _)| self.time_ns >= t + 1_000_000_000);
        if !due {
            return;
        }
        let now = self.current();
        self.history.push_back((self.time_ns, now));
        while self
            .history
            .get(1)
            .is_some_and(|&(t, _)| t + self.window_ns <= self.time_ns)
        {
            self.history.pop_front();
        }
    }

    /// Every site with live bytes now, with its growth over the window, unsorted.
    pub fn sites(&self) -> Vec<LiveSite> {
        let (t0, old) = match self.history.front() {
            Some((t, m)) => (*t, Some(m)),
            None => (self.time_ns, None),
        };
        let secs = (self.time_ns.saturating_sub(t0)) as f64 / 1e9;
        let mut v: Vec<LiveSite> = self
            .sites
            .iter()
            .filter_map(|(stack, s)| {
                let (bytes, blocks) = s.curr.value(self.sampled);
                let before = old.and_then(|m| m.get(&stack)).copied().unwrap_or(0);
                if bytes == 0 && before == 0 {
                    return None;
                }
                let growth_bytes = bytes as i64 - before as i64;
                Some(LiveSite {
                    stack,
                    bytes,
                    blocks,
                    growth_bytes,
                    growth_per_s: if secs > 0.0 {
                        growth_bytes as f64 / secs
                    } else {
                        0.0
                    },
                })
            })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.stack.cmp(&b.stack)));
        v
    }

    /// The `n` sites holding the most live bytes.
    pub fn top_live(&self, n: usize) -> Vec<LiveSite> {
        let mut v = self.sites();
        v.retain(|s| s.bytes > 0);
        v.truncate(n);
        v
    }

    /// The `n` sites whose live bytes grew most over the window (growing ones only).
    pub fn top_growth(&self, n: usize) -> Vec<LiveSite> {
        let mut v = self.sites();
        v.retain(|s| s.growth_bytes > 0);
        v.sort_by(|a, b| {
            b.growth_bytes
                .cmp(&a.growth_bytes)
                .then(a.stack.cmp(&b.stack))
        });
        v.truncate(n);
        v
    }

    /// Seconds of trace time the growth figures cover.
    pub fn growth_window_s(&self) -> f64 {
        self.history
            .front()
            .map_or(0.0, |&(t, _)| self.time_ns.saturating_sub(t) as f64 / 1e9)
    }

    /// The symbolized frames of stack `id`, innermost first (allocator and runtime
    /// frames trimmed).
    pub fn frames(&mut self, id: u32) -> Vec<Frame> {
        if self.symbolizer.is_none() {
            self.symbolizer = Some(Symbolizer::new(&self.modules));
            self.frames.clear();
        }
        if let Some(f) = self.frames.get(&id) {
            return f.clone();
        }
        let f = match (self.stacks.get(&id), self.symbolizer.as_mut()) {
            (Some(addrs), Some(sym)) => sym.stack(addrs),
            _ => Vec::new(),
        };
        self.frames.insert(id, f.clone());
        f
    }

    /// True if the trace is sampled (figures are estimates).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The live heap now as folded lines (`root;…;leaf bytes`, sorted), as
    /// `stackheap flamegraph --kind live` writes them.
    pub fn folded_live(&mut self) -> Vec<String> {
        let mut m = std::collections::BTreeMap::<String, u64>::new();
        for site in self.sites() {
            if site.bytes == 0 {
                continue;
            }
            let frames = self.frames(site.stack);
            let text = if frames.is_empty() {
                format!("[stack {}]", site.stack)
            } else {
                frames
                    .iter()
                    .rev()
                    .map(|f| crate::render::folded::clean_frame(&f.name))
                    .collect::<Vec<_>>()
                    .join(";")
            };
            *m.entry(text).or_default() += site.bytes;
        }
        m.into_iter().map(|(k, v)| format!("{k} {v}")).collect()
    }

    /// A short name of stack `id` ([`site_label`]), or `[stack N]`.
    pub fn site_name(&mut self, id: u32) -> String {
        if id == 0 {
            return "[no stack: not sampled]".to_string();
        }
        let frames = self.frames(id);
        if frames.is_empty() {
            return format!("[stack {id}]");
        }
        site_label(&frames)
    }
}

/// Library internals a site is not named by (`Vec::with_capacity`, hash-table growth).
const LIBRARY_PREFIXES: &[&str] = &[
    "alloc::",
    "<alloc::",
    "core::",
    "<core::",
    "std::",
    "<std::",
    "hashbrown::",
    "<hashbrown::",
    "<T as ",
    "<[T]",
    "<&",
    "<str",
];

/// The frame a person names a site by: the innermost frame (of `frames`, innermost
/// first) outside the standard library's and collections' internals, else the innermost.
pub fn site_label(frames: &[Frame]) -> String {
    let library = |n: &str| {
        LIBRARY_PREFIXES.iter().any(|p| n.starts_with(p))
            || (n.starts_with('<')
                && [" as alloc::", " as core::", " as std::", " as hashbrown::"]
                    .iter()
                    .any(|t| n.contains(t)))
    };
    frames
        .iter()
        .find(|f| !library(&f.name))
        .or(frames.first())
        .map(|f| f.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackheap::format::writer::SyntheticTrace;

    const S: u64 = 1_000_000_000;

    fn header() -> Header {
        Header {
            pid: 7,
            sample_rate: 1,
            exe: "/usr/bin/synthetic".into(),
            ..Default::default()
        }
    }

    /// A trace written in three steps; `lens[i]` is its length after step i.
    fn steps() -> (Vec<u8>, Vec<u64>) {
        let mut t = SyntheticTrace::new(&header());
        t.thread_start(1, "main", 0x7000_0000, 8 << 20, 0);
        let mut lens = vec![t.bytes().len() as u64];
        // Step 1 (0-1 s): a flat buffer and a first cache entry.
        t.alloc(S / 10, 1, 0x1000, 4096, &[0x10, 0x20]);
        t.alloc(S / 5, 1, 0x9000, 1000, &[0x30, 0x20]);
        lens.push(t.bytes().len() as u64);
        // Step 2 (1-3 s): the cache grows, churn comes and goes, the buffer is freed.
        for i in 0..4u64 {
            t.alloc(S + i * S / 2, 1, 0xa000 + i * 0x1000, 1000, &[0x30, 0x20]);
            t.alloc(S + i * S / 2 + 1, 1, 0x50_0000, 64, &[0x40, 0x20]);
            t.free(S + i * S / 2 + 2, 1, 0x50_0000, 64);
        }
        t.free(3 * S, 1, 0x1000, 4096);
        lens.push(t.bytes().len() as u64);
        (t.finish(4 * S, 0), lens)
    }

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("stackheap-follow-{name}-{}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn follows_a_growing_trace_from_chunk_to_chunk() {
        let (bytes, lens) = steps();
        let path = write("steps", &bytes);
        let mut f = Follow::open(&path, lens[0], 60).unwrap();
        assert_eq!(f.poll(lens[0]).unwrap(), 1, "the thread start");
        assert_eq!(f.live(), (0, 0));

        f.poll(lens[1]).unwrap();
        assert!(!f.ended());
        assert_eq!(f.live(), (5096, 2));
        let top = f.top_live(5);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].bytes, 4096, "{top:?}");

        f.poll(lens[2]).unwrap();
        assert!(!f.ended(), "no trailer yet");
        assert_eq!(f.live(), (5000, 5));
        let top = f.top_live(5);
        assert_eq!(
            (top.len(), top[0].bytes, top[0].blocks),
            (1, 5000, 5),
            "{top:?}"
        );
        let cache = top[0].stack;
        let growth = f.top_growth(5);
        assert_eq!(growth.len(), 1, "only the cache grew: {growth:?}");
        assert_eq!(growth[0].stack, cache);
        assert_eq!(
            growth[0].growth_bytes, 5000,
            "5 entries since the first sample (at 0 s)"
        );
        assert!(growth[0].growth_per_s > 0.0);

        // The rest, trailer included: the trace ends.
        f.poll(bytes.len() as u64).unwrap();
        assert!(f.ended());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sites_are_named_by_their_own_code() {
        let f = |n: &str| Frame {
            name: n.to_string(),
            file: None,
            line: None,
        };
        let frames = [
            f("<alloc::raw_vec::RawVecInner>::try_allocate_in"),
            f("<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec"),
            f("<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem"),
            f("growth::Service::remember_response"),
            f("growth::main"),
        ];
        assert_eq!(site_label(&frames), "growth::Service::remember_response");
        assert_eq!(site_label(&frames[..1]), frames[0].name);
        assert_eq!(site_label(&[]), "");
    }

    #[test]
    fn a_prefix_reads_as_a_stopped_trace() {
        let (bytes, lens) = steps();
        let path = write("prefix", &bytes);
        let opts = AnalyzeOptions {
            symbolize: false,
            ..Default::default()
        };
        let a = analyze_prefix(&path, lens[1], &opts).unwrap();
        assert_eq!(a.heap.leaked_bytes, 5096);
        assert!(!a.trace.complete);
        assert_eq!(
            a.trace.truncated_at, None,
            "a prefix at a chunk boundary is not damaged"
        );
        let a = analyze_prefix(&path, bytes.len() as u64, &opts).unwrap();
        assert!(a.trace.complete);
        assert_eq!(a.heap.leaked_bytes, 5000);
        let _ = std::fs::remove_file(&path);
    }
}
