//! Streaming decoder: header, chunks, per-thread streams merged into global order.
//!
//! Memory is bounded by the events of the last recorder rounds (held back for the
//! merge) plus the interned stacks; it does not grow with the length of the trace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap as HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::encode::StreamState;
use super::varint::{Short, SliceReader};
use super::{kind, Counters, Event, Header, Module, ThreadInfo, MAGIC, VERSION};

/// Largest chunk a reader accepts; a larger length means a damaged file.
const MAX_CHUNK: usize = 256 << 20;
use super::writer::COMPRESSED;

/// Decompress an LZ4 chunk payload (4-byte little-endian size, then the LZ4 block);
/// `None` if it is damaged or claims more than [`MAX_CHUNK`] bytes.
fn decompress(stored: &[u8]) -> Option<Vec<u8>> {
    let size = u32::from_le_bytes(stored.get(..4)?.try_into().ok()?) as usize;
    if size > MAX_CHUNK {
        return None;
    }
    lz4_flex::block::decompress(&stored[4..], size)
        .ok()
        .filter(|v| v.len() == size)
}

/// Why a trace could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read trace: {0}")]
    Io(#[from] io::Error),
    /// The file is empty.
    #[error("the trace is empty (0 bytes): the profiled program wrote nothing")]
    Empty,
    /// The file does not start with the magic bytes.
    #[error("not a stackheap trace (bad magic bytes)")]
    NotATrace,
    /// The trace is of another format version.
    #[error("trace format version {found} is not supported (this build reads version {VERSION})")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// The header is cut short or damaged.
    #[error("the trace header is truncated or damaged (file is {0} bytes)")]
    BadHeader(u64),
}

/// What the reader found about the file's integrity, final once `next_event` returned `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStatus {
    /// Bytes of complete, valid chunks (plus the header).
    pub valid_bytes: u64,
    /// Set when the file ends inside a chunk or a chunk is damaged: the byte offset
    /// where the usable part ends.
    pub truncated_at: Option<u64>,
    /// A trailer was found: the program stopped profiling cleanly.
    pub has_trailer: bool,
    /// Records of unknown kinds that were skipped.
    pub skipped_records: u64,
    /// Events that arrived after the merge window had passed their place (processed
    /// anyway, slightly out of order).
    pub late_events: u64,
    /// Chunks read.
    pub chunks: u64,
}

/// Events of one thread not yet released, in the thread's (increasing) seq order.
type Queue = VecDeque<Held>;

/// An event as the reader holds it between decoding and `next_event`: allocations and
/// frees (nearly every event of a trace) in a compact form, 48 bytes instead of the
/// [`Event`]'s size, every other kind boxed. Events are moved twice on their way (into
/// the merge queue, into the ready queue), and the merge queue holds a whole recorder
/// round of them: its size is the memory traffic of the reader.
///
/// [`TraceReader::next_held`] hands events out in this form, for consumers that want
/// to skip building an [`Event`] for every allocation and free.
#[derive(Debug)]
pub enum Held {
    /// [`Event::Alloc`], same fields.
    Alloc {
        /// Sequence number.
        seq: u64,
        /// Time, ns since the start.
        time_ns: u64,
        /// Address of the block.
        addr: u64,
        /// Requested size, bytes.
        size: u64,
        /// Stack depth, bytes.
        depth: u64,
        /// Thread index.
        thread: u32,
        /// Global stack id (0 = none).
        stack: u32,
    },
    /// [`Event::Free`], same fields.
    Free {
        /// Sequence number.
        seq: u64,
        /// Time, ns since the start.
        time_ns: u64,
        /// Address of the block.
        addr: u64,
        /// Thread index.
        thread: u32,
    },
    /// Every other kind of event.
    Other {
        /// Sequence number (0 for events not merged).
        seq: u64,
        /// The event.
        event: Box<Event>,
    },
}

impl Held {
    /// Wrap an event whose place in the order is `seq` (0 for events not merged).
    #[inline]
    fn new(seq: u64, e: Event) -> Held {
        match e {
            Event::Alloc {
                seq,
                time_ns,
                thread,
                addr,
                size,
                stack,
                depth,
            } => Held::Alloc {
                seq,
                time_ns,
                addr,
                size,
                depth,
                thread,
                stack,
            },
            Event::Free {
                seq,
                time_ns,
                thread,
                addr,
            } => Held::Free {
                seq,
                time_ns,
                addr,
                thread,
            },
            e => Held::Other {
                seq,
                event: Box::new(e),
            },
        }
    }

    #[inline]
    fn seq(&self) -> u64 {
        match *self {
            Held::Alloc { seq, .. } | Held::Free { seq, .. } | Held::Other { seq, .. } => seq,
        }
    }

    #[inline]
    fn set_time(&mut self, t: u64) {
        match self {
            Held::Alloc { time_ns, .. } | Held::Free { time_ns, .. } => *time_ns = t,
            Held::Other { event, .. } => set_time(event, t),
        }
    }

    /// The event in its full form.
    #[inline]
    pub fn into_event(self) -> Event {
        match self {
            Held::Alloc {
                seq,
                time_ns,
                addr,
                size,
                depth,
                thread,
                stack,
            } => Event::Alloc {
                seq,
                time_ns,
                thread,
                addr,
                size,
                stack,
                depth,
            },
            Held::Free {
                seq,
                time_ns,
                addr,
                thread,
            } => Event::Free {
                seq,
                time_ns,
                thread,
                addr,
            },
            Held::Other { event, .. } => *event,
        }
    }
}

impl From<Event> for Held {
    fn from(e: Event) -> Held {
        Held::new(0, e)
    }
}

#[derive(Default)]
struct ThreadStream {
    state: StreamState,
    stacks: HashMap<u64, u32>,
}

/// Reads a trace as a stream of [`Event`]s in global order.
pub struct TraceReader<R> {
    input: R,
    header: Header,
    status: ReadStatus,
    offset: u64,
    done: bool,
    threads: HashMap<u32, ThreadStream>,
    interned: HashMap<Vec<u64>, u32>,
    /// Held-back events per thread (each in seq order) and a heap of the queues' first
    /// seqs: a k-way merge whose heap has one small entry per thread.
    queues: HashMap<u32, Queue>,
    heads: BinaryHeap<Reverse<(u64, u32)>>,
    /// The thread whose chunk is being decoded.
    current_thread: u32,
    ready: VecDeque<Held>,
    rounds: VecDeque<(u64, u64)>,
    released_below: u64,
    trailer: Option<Event>,
    chunk: Vec<u8>,
}

impl TraceReader<BufReader<File>> {
    /// Open a trace file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadError> {
        let f = File::open(path)?;
        Self::new(BufReader::with_capacity(1 << 20, f))
    }
}

/// Read as many bytes as possible into `buf`; returns how many (less only at EOF).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn parse_header(body: &[u8]) -> Result<Header, Short> {
    let mut r = SliceReader::new(body);
    let pid = r.uvar()? as u32;
    let start_unix_ns = r.uvar()?;
    let page_size = r.uvar()?;
    let sample_rate = r.uvar()?;
    let stack_hz = r.uvar()? as u32;
    let flags = r.uvar()? as u32;
    let exe = r.string()?;
    let argc = r.uvar()?;
    let mut argv = Vec::new();
    for _ in 0..argc.min(1 << 16) {
        argv.push(r.string()?);
    }
    Ok(Header {
        pid,
        start_unix_ns,
        page_size,
        sample_rate,
        stack_hz,
        flags,
        exe,
        argv,
    })
}

fn parse_counters(r: &mut SliceReader<'_>) -> Result<Counters, Short> {
    Ok(Counters {
        time_ns: r.uvar()?,
        total_allocs: r.uvar()?,
        total_frees: r.uvar()?,
        total_bytes: r.uvar()?,
        live_bytes: r.svar()?,
        live_blocks: r.svar()?,
        peak_bytes: r.uvar()?,
        peak_blocks: r.uvar()?,
        peak_time_ns: r.uvar()?,
        failed_allocs: r.uvar()?,
    })
}

impl<R: Read> TraceReader<R> {
    /// Read the header; fails with a one-line [`ReadError`] if this is not a readable trace.
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let mut fixed = [0u8; 16];
        let n = read_full(&mut input, &mut fixed)?;
        if n == 0 {
            return Err(ReadError::Empty);
        }
        if n < 8 || &fixed[..8] != MAGIC {
            return Err(ReadError::NotATrace);
        }
        if n < 16 {
            return Err(ReadError::BadHeader(n as u64));
        }
        let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(ReadError::Version { found: version });
        }
        let len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes")) as usize;
        if len > 1 << 20 {
            return Err(ReadError::BadHeader(16));
        }
        let mut body = vec![0u8; len + 4];
        let got = read_full(&mut input, &mut body)?;
        if got < body.len() {
            return Err(ReadError::BadHeader((16 + got) as u64));
        }
        let crc = u32::from_le_bytes(body[len..].try_into().expect("4 bytes"));
        if crc32fast::hash(&body[..len]) != crc {
            return Err(ReadError::BadHeader((16 + got) as u64));
        }
        let header =
            parse_header(&body[..len]).map_err(|_| ReadError::BadHeader((16 + got) as u64))?;
        let offset = (16 + len + 4) as u64;
        Ok(TraceReader {
            input,
            header,
            status: ReadStatus {
                valid_bytes: offset,
                ..Default::default()
            },
            offset,
            done: false,
            threads: HashMap::default(),
            interned: HashMap::default(),
            queues: HashMap::default(),
            heads: BinaryHeap::new(),
            current_thread: 0,
            ready: VecDeque::new(),
            rounds: VecDeque::new(),
            released_below: 0,
            trailer: None,
            chunk: Vec::new(),
        })
    }

    /// The trace header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Integrity status so far (final after the last event).
    pub fn status(&self) -> &ReadStatus {
        &self.status
    }

    /// The next event in global order, `None` at the end of the usable trace.
    pub fn next_event(&mut self) -> Result<Option<Event>, ReadError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e.into_event()));
            }
            if self.done {
                return Ok(None);
            }
            if !self.read_chunk()? {
                self.finish();
            }
        }
    }

    /// Append up to `max` next events (in global order) to `out`; returns how many, 0 at
    /// the end of the usable trace. The same events as [`Self::next_event`] gives one at
    /// a time, with less overhead per event.
    pub fn next_events(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, ReadError> {
        let mut n = 0;
        while n < max {
            if self.ready.is_empty() {
                if self.done {
                    break;
                }
                if !self.read_chunk()? {
                    self.finish();
                }
                continue;
            }
            let take = (max - n).min(self.ready.len());
            out.reserve(take);
            for held in self.ready.drain(..take) {
                out.push(held.into_event());
            }
            n += take;
        }
        Ok(n)
    }

    /// [`Self::next_events`] in the reader's compact form ([`Held`]): the same events in
    /// the same order, without building an [`Event`] for each allocation and free.
    ///
    /// Appends up to `max` events to `out` and returns how many, 0 only at the end of
    /// the usable trace; unlike [`Self::next_events`] it may return fewer than `max`
    /// before the end (what the last chunk released). When `out` is empty and every
    /// released event fits, the reader's buffer and `out` trade places: no event is
    /// moved.
    pub fn next_held(&mut self, out: &mut Vec<Held>, max: usize) -> Result<usize, ReadError> {
        while self.ready.is_empty() {
            if self.done {
                return Ok(0);
            }
            if !self.read_chunk()? {
                self.finish();
            }
        }
        let n = self.ready.len();
        if out.is_empty() && n <= max {
            let mut spare = std::mem::take(out);
            spare.clear();
            // A deque made from a vector starts at its front: turning it back into a
            // vector moves nothing unless it wrapped around.
            *out = std::mem::replace(&mut self.ready, VecDeque::from(spare)).into();
            return Ok(n);
        }
        let take = n.min(max);
        out.extend(self.ready.drain(..take));
        Ok(take)
    }

    /// [`Self::next_events`] for a trace that is still being written (live attach):
    /// where the input ends cleanly at a chunk boundary it returns what the rounds'
    /// watermarks released so far and keeps the rest held back, without ending the
    /// trace; call again once the input has grown. A damaged or cut chunk, or a
    /// trailer, ends the trace as usual ([`Self::is_done`]).
    pub fn next_events_so_far(
        &mut self,
        out: &mut Vec<Event>,
        max: usize,
    ) -> Result<usize, ReadError> {
        let mut n = 0;
        while n < max {
            if self.ready.is_empty() {
                if self.done {
                    break;
                }
                if !self.read_chunk()? {
                    if self.status.truncated_at.is_some() {
                        self.finish();
                        continue;
                    }
                    break;
                }
                if self.status.has_trailer {
                    self.finish();
                }
                continue;
            }
            let take = (max - n).min(self.ready.len());
            out.extend(self.ready.drain(..take).map(Held::into_event));
            n += take;
        }
        Ok(n)
    }

    /// True once the end of the usable trace was reached (all events returned or ready).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) {
        self.done = true;
        self.release(u64::MAX);
        if let Some(t) = self.trailer.take() {
            self.ready.push_back(t.into());
        }
    }

    /// Read and decode one chunk; false at the end of usable data.
    fn read_chunk(&mut self) -> Result<bool, ReadError> {
        let start = self.offset;
        let mut fixed = [0u8; 8];
        let n = read_full(&mut self.input, &mut fixed)?;
        if n == 0 {
            return Ok(false);
        }
        if n < 8 {
            self.status.truncated_at = Some(start);
            return Ok(false);
        }
        let word = u32::from_le_bytes(fixed[..4].try_into().expect("4 bytes"));
        let compressed = word & COMPRESSED != 0;
        let len = (word & !COMPRESSED) as usize;
        let crc = u32::from_le_bytes(fixed[4..].try_into().expect("4 bytes"));
        if len > MAX_CHUNK {
            self.status.truncated_at = Some(start);
            return Ok(false);
        }
        self.chunk.resize(len, 0);
        let got = read_full(&mut self.input, &mut self.chunk)?;
        if got < len || crc32fast::hash(&self.chunk) != crc {
            self.status.truncated_at = Some(start);
            return Ok(false);
        }
        let chunk = if compressed {
            match decompress(&self.chunk) {
                Some(c) => c,
                None => {
                    self.status.truncated_at = Some(start);
                    return Ok(false);
                }
            }
        } else {
            std::mem::take(&mut self.chunk)
        };
        let ok = self.decode_chunk(&chunk).is_ok();
        if !compressed {
            self.chunk = chunk;
        }
        if !ok {
            self.status.truncated_at = Some(start);
            return Ok(false);
        }
        self.offset = start + 8 + len as u64;
        self.status.valid_bytes = self.offset;
        self.status.chunks += 1;
        Ok(true)
    }

    fn decode_chunk(&mut self, chunk: &[u8]) -> Result<(), Short> {
        let mut r = SliceReader::new(chunk);
        let source = u32::try_from(r.uvar()?).map_err(|_| Short)?;
        if source == 0 {
            while !r.at_end() {
                let k = r.u8()?;
                let body = r.str()?;
                self.decode_global(k, &mut SliceReader::new(body))?;
            }
            return Ok(());
        }
        // The thread's state and queue, looked up once per chunk instead of per record
        // (no release happens inside a thread's chunk: rounds come in global chunks).
        self.current_thread = source;
        let mut ts = self.threads.remove(&source).unwrap_or_default();
        let mut q = self.queues.remove(&source).unwrap_or_default();
        let mut result = Ok(());
        while !r.at_end() {
            let step = r.u8().and_then(|k| Ok((k, r.str()?)));
            result = step.and_then(|(k, body)| {
                self.decode_thread(&mut ts, &mut q, source, k, &mut SliceReader::new(body))
            });
            if result.is_err() {
                break;
            }
        }
        self.threads.insert(source, ts);
        self.queues.insert(source, q);
        result
    }

    fn decode_global(&mut self, k: u8, b: &mut SliceReader<'_>) -> Result<(), Short> {
        match k {
            kind::MODULE => {
                let path = b.string()?;
                let bias = b.uvar()?;
                let n = b.uvar()?;
                let mut segments = Vec::new();
                for _ in 0..n.min(1 << 12) {
                    segments.push((b.uvar()?, b.uvar()?));
                }
                let build_id = b.str()?.to_vec();
                self.ready.push_back(
                    Event::Module(Module {
                        path,
                        bias,
                        segments,
                        build_id,
                    })
                    .into(),
                );
            }
            kind::ROUND => {
                let time = b.uvar()?;
                let seq = b.uvar()?;
                let watermark = b.uvar()?;
                if self
                    .rounds
                    .back()
                    .is_none_or(|&(s, t)| seq >= s && time >= t)
                {
                    self.rounds.push_back((seq, time));
                }
                self.release(watermark);
            }
            kind::RSS => {
                let time_ns = b.uvar()?;
                let rss_bytes = b.uvar()?;
                self.ready
                    .push_back(Event::Rss { time_ns, rss_bytes }.into());
            }
            kind::COUNTERS => {
                let c = parse_counters(b)?;
                self.ready.push_back(Event::Counters(c).into());
            }
            kind::LOST => {
                let count = b.uvar()?;
                self.ready.push_back(Event::Lost { count }.into());
            }
            kind::TRAILER => {
                let counters = parse_counters(b)?;
                let lost = b.uvar()?;
                self.rounds.push_back((u64::MAX, counters.time_ns));
                self.status.has_trailer = true;
                self.trailer = Some(Event::Trailer { counters, lost });
            }
            kind::STACK_OVERFLOW => {
                let o = super::fatal::overflow_parse(b)?;
                self.ready.push_back(Event::StackOverflow(o).into());
            }
            kind::CRASH => {
                let c = super::fatal::crash_parse(b)?;
                self.ready.push_back(Event::Crash(c).into());
            }
            kind::PANIC => {
                let p = super::fatal::panic_parse(b)?;
                self.ready.push_back(Event::Panic(p).into());
            }
            kind::STACK_MAX => {
                let m = super::fatal::stack_max_parse(b)?;
                self.ready.push_back(Event::StackMax(m).into());
            }
            kind::SEGMENTS => {
                let s = crate::stack::segments::Segments::parse(b)?;
                self.ready.push_back(Event::Segments(s).into());
            }
            kind::ATTACHED => {
                let time_ns = b.uvar()?;
                let frees_unknown = b.uvar()?;
                self.ready.push_back(
                    Event::Attached {
                        time_ns,
                        frees_unknown,
                    }
                    .into(),
                );
            }
            _ => self.status.skipped_records += 1,
        }
        Ok(())
    }

    /// Hold back an event of the thread being decoded until a watermark passes it.
    #[inline]
    fn push(&mut self, q: &mut Queue, seq: u64, event: Event) {
        let mut held = Held::new(seq, event);
        if seq < self.released_below {
            self.status.late_events += 1;
            held.set_time(self.time_of(seq));
            self.ready.push_back(held);
            return;
        }
        let thread = self.current_thread;
        match q.back() {
            None => {
                self.heads.push(Reverse((seq, thread)));
                q.push_back(held);
            }
            Some(last) if last.seq() <= seq => q.push_back(held),
            // A thread's numbers only grow; keep the order anyway if one ever does not.
            Some(_) => {
                let at = q.partition_point(|h| h.seq() <= seq);
                let new_front = at == 0;
                q.insert(at, held);
                if new_front {
                    self.heads.push(Reverse((seq, thread)));
                }
            }
        }
    }

    fn decode_thread(
        &mut self,
        ts: &mut ThreadStream,
        q: &mut Queue,
        thread: u32,
        k: u8,
        b: &mut SliceReader<'_>,
    ) -> Result<(), Short> {
        let st = &mut ts.state;
        match k {
            kind::ALLOC => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                st.addr = st.addr.wrapping_add(b.svar()? as u64);
                let (seq, addr) = (st.seq, st.addr);
                let size = b.uvar()?;
                let local = b.uvar()?;
                let depth = b.uvar()?;
                let stack = global_stack(&ts.stacks, local);
                self.push(
                    q,
                    seq,
                    Event::Alloc {
                        seq,
                        time_ns: 0,
                        thread,
                        addr,
                        size,
                        stack,
                        depth,
                    },
                );
            }
            kind::FREE => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                st.addr = st.addr.wrapping_add(b.svar()? as u64);
                let (seq, addr) = (st.seq, st.addr);
                self.push(
                    q,
                    seq,
                    Event::Free {
                        seq,
                        time_ns: 0,
                        thread,
                        addr,
                    },
                );
            }
            kind::REALLOC => {
                let free_seq = st.seq.wrapping_add(b.uvar()?);
                st.seq = free_seq.wrapping_add(b.uvar()?);
                let old_addr = st.addr.wrapping_add(b.svar()? as u64);
                let new_addr = old_addr.wrapping_add(b.svar()? as u64);
                st.addr = new_addr;
                let seq = st.seq;
                let old_size = b.uvar()?;
                let new_size = b.uvar()?;
                let local = b.uvar()?;
                let depth = b.uvar()?;
                let stack = global_stack(&ts.stacks, local);
                self.push(
                    q,
                    seq,
                    Event::Realloc {
                        seq,
                        free_seq,
                        time_ns: 0,
                        thread,
                        old_addr,
                        old_size,
                        new_addr,
                        new_size,
                        stack,
                        depth,
                    },
                );
            }
            kind::ALLOC_FAILED => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                let seq = st.seq;
                let size = b.uvar()?;
                let local = b.uvar()?;
                let depth = b.uvar()?;
                let stack = global_stack(&ts.stacks, local);
                self.push(
                    q,
                    seq,
                    Event::AllocFailed {
                        seq,
                        time_ns: 0,
                        thread,
                        size,
                        stack,
                        depth,
                    },
                );
            }
            kind::OOM => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                let seq = st.seq;
                let size = b.uvar()?;
                let local = b.uvar()?;
                let depth = b.uvar()?;
                let live_bytes = b.svar()?;
                let limit_bytes = b.uvar()?;
                let stack = global_stack(&ts.stacks, local);
                self.push(
                    q,
                    seq,
                    Event::Oom {
                        seq,
                        time_ns: 0,
                        thread,
                        size,
                        stack,
                        depth,
                        live_bytes,
                        limit_bytes,
                    },
                );
            }
            kind::MARK => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                let seq = st.seq;
                let name = b.string()?;
                self.push(
                    q,
                    seq,
                    Event::Mark {
                        seq,
                        time_ns: 0,
                        thread,
                        name,
                    },
                );
            }
            kind::SPAN_DEF => {
                let id = b.uvar()?;
                let parent = b.uvar()?;
                let name = b.string()?;
                self.ready
                    .push_back(Event::SpanDef { id, parent, name }.into());
            }
            kind::SPAN_ENTER | kind::SPAN_EXIT => {
                st.seq = st.seq.wrapping_add(b.uvar()?);
                let seq = st.seq;
                let span = b.uvar()?;
                let e = if k == kind::SPAN_ENTER {
                    Event::SpanEnter {
                        seq,
                        time_ns: 0,
                        thread,
                        span,
                    }
                } else {
                    Event::SpanExit {
                        seq,
                        time_ns: 0,
                        thread,
                        span,
                    }
                };
                self.push(q, seq, e);
            }
            kind::STACK_DEF => {
                let local = b.uvar()?;
                let n = b.uvar()?.min(1024);
                let mut frames = Vec::with_capacity(n as usize);
                let mut prev = 0u64;
                for i in 0..n {
                    let f = if i == 0 {
                        b.uvar()?
                    } else {
                        prev.wrapping_add(b.svar()? as u64)
                    };
                    frames.push(f);
                    prev = f;
                }
                let next = self.interned.len() as u32 + 1;
                let id = *self.interned.entry(frames.clone()).or_insert(next);
                if id == next {
                    self.ready.push_back(Event::Stack { id, frames }.into());
                }
                ts.stacks.insert(local, id);
            }
            kind::THREAD_START => {
                let os_tid = b.uvar()? as u32;
                let name = b.string()?;
                let stack_top = b.uvar()?;
                let stack_size = b.uvar()?;
                let time_ns = b.uvar()?;
                self.ready.push_back(
                    Event::Thread(ThreadInfo {
                        thread,
                        os_tid,
                        name,
                        stack_top,
                        stack_size,
                        time_ns,
                    })
                    .into(),
                );
            }
            kind::THREAD_END => {
                let time_ns = b.uvar()?;
                self.ready
                    .push_back(Event::ThreadEnd { thread, time_ns }.into());
            }
            _ => self.status.skipped_records += 1,
        }
        Ok(())
    }

    /// Time of the event with this seq, interpolated between the rounds around it.
    fn time_of(&self, seq: u64) -> u64 {
        let i = self.rounds.partition_point(|&(s, _)| s <= seq);
        time_at(&self.rounds, i, seq)
    }

    /// Move every held-back event with `seq < below` to the output, in seq order.
    ///
    /// The heap holds one entry per thread; a thread's queue is drained in one run up to
    /// the next thread's first seq, so a single busy thread costs no heap operation per
    /// event.
    fn release(&mut self, below: u64) {
        while let Some(&Reverse((seq, thread))) = self.heads.peek() {
            if seq >= below {
                break;
            }
            self.heads.pop();
            let q = self.queues.get_mut(&thread).expect("a head has a queue");
            match q.front().map(Held::seq) {
                None => continue,
                Some(s) if s != seq => {
                    // A stale head (the queue's front changed by an out-of-order insert).
                    self.heads.push(Reverse((s, thread)));
                    continue;
                }
                Some(_) => {}
            }
            // Drain while this thread stays first in the global order.
            let next = self.heads.peek().map(|&Reverse(h)| h);
            let mut round = self.rounds.partition_point(|&(s, _)| s <= seq);
            while let Some(s) = q.front().map(Held::seq) {
                if s >= below || next.is_some_and(|h| (s, thread) > h) {
                    break;
                }
                let mut held = q.pop_front().expect("front exists");
                while round < self.rounds.len() && self.rounds[round].0 <= s {
                    round += 1;
                }
                held.set_time(time_at(&self.rounds, round, s));
                self.ready.push_back(held);
            }
            if let Some(front) = q.front().map(Held::seq) {
                self.heads.push(Reverse((front, thread)));
            }
        }
        self.released_below = self.released_below.max(below);
        // Rounds entirely before the oldest event still to come are no longer needed.
        let keep_from = self
            .heads
            .peek()
            .map_or(u64::MAX, |Reverse((s, _))| *s)
            .min(self.released_below);
        while self.rounds.len() > 2 && self.rounds[1].0 <= keep_from {
            self.rounds.pop_front();
        }
    }
}

/// The global id of a thread's local stack id; 0 for none (or, should it happen, an id
/// the thread never defined).
#[inline]
fn global_stack(stacks: &HashMap<u64, u32>, local: u64) -> u32 {
    if local == 0 {
        return 0;
    }
    stacks.get(&local).copied().unwrap_or(0)
}

/// Time of the event `seq`, given `i`: the number of rounds whose seq is `<= seq`.
fn time_at(rounds: &VecDeque<(u64, u64)>, i: usize, seq: u64) -> u64 {
    match (i.checked_sub(1).and_then(|j| rounds.get(j)), rounds.get(i)) {
        (Some(&(s0, t0)), Some(&(s1, t1))) if s1 > s0 && s1 != u64::MAX => {
            // u64 arithmetic when the product fits (always, in practice): a u128
            // division is a library call, several times slower.
            t0 + match (t1 - t0).checked_mul(seq - s0) {
                Some(p) => p / (s1 - s0),
                None => ((t1 - t0) as u128 * (seq - s0) as u128 / (s1 - s0) as u128) as u64,
            }
        }
        (Some(&(_, t0)), _) => t0,
        (None, Some(&(_, t1))) => t1,
        (None, None) => 0,
    }
}

fn set_time(e: &mut Event, t: u64) {
    match e {
        Event::Alloc { time_ns, .. }
        | Event::Free { time_ns, .. }
        | Event::Realloc { time_ns, .. }
        | Event::AllocFailed { time_ns, .. }
        | Event::Oom { time_ns, .. }
        | Event::Mark { time_ns, .. }
        | Event::SpanEnter { time_ns, .. }
        | Event::SpanExit { time_ns, .. } => *time_ns = t,
        _ => {}
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Event, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::writer::SyntheticTrace;
    use super::*;

    fn sample() -> (Vec<u8>, Counters) {
        let h = Header {
            pid: 7,
            sample_rate: 1,
            exe: "/bin/x".into(),
            argv: vec!["x".into()],
            ..Default::default()
        };
        let mut t = SyntheticTrace::new(&h);
        t.thread_start(1, "main", 0x7fff_0000, 8 << 20, 0);
        t.thread_start(2, "worker", 0x7ffe_0000, 2 << 20, 5);
        t.alloc(10, 1, 0x1000, 100, &[0x10, 0x20, 0x30]);
        t.alloc(20, 2, 0x2000, 50, &[0x11, 0x20, 0x30]);
        t.realloc(30, 1, 0x1000, 100, 0x3000, 300, &[0x10, 0x20, 0x30]);
        t.free(40, 2, 0x2000, 50);
        t.rss(45, 4096);
        t.alloc(50, 1, 0x4000, 8, &[]);
        let c = t.counters();
        (t.finish(60, 0), c)
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<Event>, ReadStatus), ReadError> {
        let mut r = TraceReader::new(bytes)?;
        let mut v = Vec::new();
        while let Some(e) = r.next_event()? {
            v.push(e);
        }
        Ok((v, r.status().clone()))
    }

    #[test]
    fn roundtrip_in_order_with_stacks() {
        let (bytes, c) = sample();
        let (events, status) = read_all(&bytes).unwrap();
        assert!(status.has_trailer);
        assert_eq!(status.truncated_at, None);
        let seqs: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Alloc { seq, .. } | Event::Free { seq, .. } | Event::Realloc { seq, .. } => {
                    Some(*seq)
                }
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        let stacks = events
            .iter()
            .filter(|e| matches!(e, Event::Stack { .. }))
            .count();
        assert_eq!(stacks, 2, "same frames from one thread intern once");
        match events.last().unwrap() {
            Event::Trailer { counters, .. } => assert_eq!(counters.total_allocs, c.total_allocs),
            e => panic!("last event {e:?}"),
        }
        let realloc = events
            .iter()
            .find(|e| matches!(e, Event::Realloc { .. }))
            .unwrap();
        assert!(matches!(
            realloc,
            Event::Realloc {
                old_addr: 0x1000,
                new_addr: 0x3000,
                new_size: 300,
                time_ns: 30,
                ..
            }
        ));
    }

    #[test]
    fn every_cut_loads_with_monotone_counts() {
        let (bytes, _) = sample();
        let (full, _) = read_all(&bytes).unwrap();
        let header_len = 16 + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize + 4;
        let mut last = 0;
        for cut in header_len..=bytes.len() {
            let (events, status) = read_all(&bytes[..cut]).unwrap();
            assert!(events.len() >= last, "cut {cut}");
            last = events.len();
            if cut < bytes.len() {
                assert!(!status.has_trailer);
            }
            assert!(events.len() <= full.len());
        }
        assert_eq!(last, full.len());
    }

    #[test]
    fn bad_inputs_give_errors() {
        assert!(matches!(read_all(b""), Err(ReadError::Empty)));
        assert!(matches!(
            read_all(b"hello world, not a trace"),
            Err(ReadError::NotATrace)
        ));
        let (mut bytes, _) = sample();
        bytes[8] = 9;
        assert!(matches!(
            read_all(&bytes),
            Err(ReadError::Version { found: 9 })
        ));
        let (bytes, _) = sample();
        assert!(matches!(
            read_all(&bytes[..20]),
            Err(ReadError::BadHeader(_))
        ));
    }

    #[test]
    fn compressed_chunks_roundtrip_and_bombs_are_refused() {
        use super::super::writer::{frame_chunk, frame_chunk_compressed, Compressor};
        let mut st = StreamState::default();
        let mut body = vec![0u8; 64 * 1000];
        let mut w = super::super::varint::SliceWriter::new(&mut body);
        for i in 0..1000u64 {
            st.alloc(&mut w, i, 0x1000 + 32 * i, 24, 0, 0);
        }
        let n = w.len();
        let (mut plain, mut packed) = (Vec::new(), Vec::new());
        frame_chunk(&mut plain, 1, &[&body[..n]]);
        frame_chunk_compressed(&mut packed, 1, &[&body[..n]], &mut Compressor::default());
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let h = Header {
            sample_rate: 1,
            ..Default::default()
        };
        let mut head = Vec::new();
        super::super::writer::write_header(&mut head, &h).unwrap();
        let count = |chunk: &[u8]| {
            let bytes = [head.as_slice(), chunk].concat();
            read_all(&bytes)
                .unwrap()
                .0
                .iter()
                .filter(|e| matches!(e, Event::Alloc { .. }))
                .count()
        };
        assert_eq!(count(&plain), 1000);
        assert_eq!(count(&packed), 1000);
        // A stored size beyond the limit is damage, not an allocation of gigabytes.
        assert!(decompress(&[0xff, 0xff, 0xff, 0x7f, 0, 0]).is_none());
    }

    #[test]
    fn unknown_record_kinds_are_skipped() {
        use super::super::writer::frame_chunk;
        let mut st = StreamState::default();
        let mut body = [0u8; 256];
        let mut w = super::super::varint::SliceWriter::new(&mut body);
        st.alloc(&mut w, 0, 0x1000, 8, 0, 0);
        // A record kind from a newer writer: kind, length, body.
        w.u8(0x7f);
        w.uvar(3);
        w.bytes(&[1, 2, 3]);
        st.alloc(&mut w, 1, 0x2000, 16, 0, 0);
        let n = w.len();
        let mut bytes = Vec::new();
        super::super::writer::write_header(&mut bytes, &Header::default()).unwrap();
        frame_chunk(&mut bytes, 1, &[&body[..n]]);
        let (events, status) = read_all(&bytes).unwrap();
        let sizes: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Alloc { size, .. } => Some(*size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![8, 16]);
        assert_eq!(status.skipped_records, 1);
        assert_eq!(status.truncated_at, None);
    }

    #[test]
    fn corrupt_chunk_stops_there() {
        let (mut bytes, _) = sample();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        let (_, status) = read_all(&bytes).unwrap();
        assert!(status.truncated_at.is_some());
        assert!(!status.has_trailer);
    }
}
