//! Framing: the header and checksummed chunks. Used by the recorder thread (never on
//! the hot path) and by [`SyntheticTrace`] to build traces for tests.

use std::collections::HashMap;
use std::io::{self, Write};

use super::encode::{self, global, StreamState};
use super::varint::SliceWriter;
use super::{Counters, Header, Module, MAGIC, VERSION};

/// Encode the header body (everything between the length and the checksum).
pub fn header_body(h: &Header) -> Vec<u8> {
    let cap = 128 + h.exe.len() + h.argv.iter().map(|a| a.len() + 10).sum::<usize>();
    let mut v = vec![0u8; cap];
    let mut w = SliceWriter::new(&mut v);
    w.uvar(h.pid as u64);
    w.uvar(h.start_unix_ns);
    w.uvar(h.page_size);
    w.uvar(h.sample_rate);
    w.uvar(h.stack_hz as u64);
    w.uvar(h.flags as u64);
    w.str(h.exe.as_bytes());
    w.uvar(h.argv.len() as u64);
    for a in &h.argv {
        w.str(a.as_bytes());
    }
    let n = w.len();
    v.truncate(n);
    v
}

/// Write the whole header.
pub fn write_header(out: &mut impl Write, h: &Header) -> io::Result<()> {
    let body = header_body(h);
    let mut buf = Vec::with_capacity(body.len() + 20);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.write_all(&buf)
}

/// Bit 31 of a chunk's length word: the payload is LZ4-compressed.
pub const COMPRESSED: u32 = 1 << 31;
/// Payloads smaller than this are stored uncompressed (not worth it).
pub const COMPRESS_MIN: usize = 512;

/// Reusable buffers and hash table for [`frame_chunk_compressed`]: after warming up,
/// compressing a chunk allocates nothing.
pub struct Compressor {
    plain: Vec<u8>,
    packed: Vec<u8>,
    table: lz4_flex::block::CompressTable,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor {
            plain: Vec::new(),
            packed: Vec::new(),
            table: lz4_flex::block::CompressTable::large(),
        }
    }
}

/// Frame `parts` as one chunk of `source`, LZ4-compressed when that makes it smaller.
pub fn frame_chunk_compressed(out: &mut Vec<u8>, source: u32, parts: &[&[u8]], c: &mut Compressor) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < COMPRESS_MIN {
        return frame_chunk(out, source, parts);
    }
    c.plain.clear();
    let mut src = [0u8; 10];
    let mut w = SliceWriter::new(&mut src);
    w.uvar(source as u64);
    c.plain.extend_from_slice(w.as_slice());
    for p in parts {
        c.plain.extend_from_slice(p);
    }
    c.packed.clear();
    c.packed
        .extend_from_slice(&(c.plain.len() as u32).to_le_bytes());
    let bound = lz4_flex::block::get_maximum_output_size(c.plain.len());
    c.packed.resize(4 + bound, 0);
    let n =
        match lz4_flex::block::compress_into_with_table(&c.plain, &mut c.packed[4..], &mut c.table)
        {
            Ok(n) => n,
            Err(_) => return frame_chunk(out, source, parts),
        };
    c.packed.truncate(4 + n);
    if c.packed.len() >= c.plain.len() {
        return frame_chunk(out, source, parts);
    }
    out.extend_from_slice(&(c.packed.len() as u32 | COMPRESSED).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&c.packed).to_le_bytes());
    out.extend_from_slice(&c.packed);
}

/// Frame `parts` (concatenated) as one chunk of `source` and append it to `out`.
/// Building the whole chunk first means a chunk reaches the file in one write.
pub fn frame_chunk(out: &mut Vec<u8>, source: u32, parts: &[&[u8]]) {
    let mut src = [0u8; 10];
    let mut w = SliceWriter::new(&mut src);
    w.uvar(source as u64);
    let src = w.as_slice();
    let len = src.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut h = crc32fast::Hasher::new();
    h.update(src);
    for p in parts {
        h.update(p);
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(src);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Builds a well-formed trace in memory, event by event, the way the recorder would.
/// For tests of readers and reports; it assigns sequence numbers and writes a round
/// around every event so times are exact (`time_ns` per call).
pub struct SyntheticTrace {
    out: Vec<u8>,
    seq: u64,
    streams: HashMap<u32, (StreamState, HashMap<Vec<u64>, u64>)>,
    counters: Counters,
}

impl SyntheticTrace {
    /// Start a trace with this header.
    pub fn new(header: &Header) -> Self {
        let mut out = Vec::new();
        write_header(&mut out, header).expect("write to Vec");
        SyntheticTrace {
            out,
            seq: 0,
            streams: HashMap::new(),
            counters: Counters::default(),
        }
    }

    fn global(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut body = Vec::new();
        f(&mut body);
        frame_chunk(&mut self.out, 0, &[&body]);
    }

    fn thread(
        &mut self,
        thread: u32,
        f: impl FnOnce(&mut SliceWriter<'_>, &mut StreamState, &mut HashMap<Vec<u64>, u64>),
    ) {
        let mut buf = vec![0u8; 4096];
        let mut w = SliceWriter::new(&mut buf);
        let (st, stacks) = self.streams.entry(thread).or_default();
        f(&mut w, st, stacks);
        let n = w.len();
        frame_chunk(&mut self.out, thread, &[&buf[..n]]);
    }

    fn stack_id(
        w: &mut SliceWriter<'_>,
        stacks: &mut HashMap<Vec<u64>, u64>,
        frames: &[u64],
    ) -> u64 {
        if frames.is_empty() {
            return 0;
        }
        let next = stacks.len() as u64 + 1;
        let id = *stacks.entry(frames.to_vec()).or_insert(next);
        if id == next {
            encode::stack_def(w, id, frames);
        }
        id
    }

    /// Rounds on both sides of an event pin its interpolated time to `time_ns`.
    fn round(&mut self, time_ns: u64) {
        let seq = self.seq;
        self.global(|b| global::round(b, time_ns, seq, seq));
    }

    fn next_seq(&mut self, time_ns: u64) -> u64 {
        self.round(time_ns);
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    /// A module record.
    pub fn module(&mut self, m: &Module) {
        self.global(|b| global::module(b, m));
    }

    /// A thread start.
    pub fn thread_start(
        &mut self,
        thread: u32,
        name: &str,
        stack_top: u64,
        stack_size: u64,
        time_ns: u64,
    ) {
        self.thread(thread, |w, _, _| {
            encode::thread_start(
                w,
                thread + 1000,
                name.as_bytes(),
                stack_top,
                stack_size,
                time_ns,
            )
        });
    }

    /// An allocation at `time_ns` with these frames (innermost first; empty = no stack).
    pub fn alloc(&mut self, time_ns: u64, thread: u32, addr: u64, size: u64, frames: &[u64]) {
        let seq = self.next_seq(time_ns);
        self.thread(thread, |w, st, stacks| {
            let id = Self::stack_id(w, stacks, frames);
            st.alloc(w, seq, addr, size, id, 0);
        });
        self.counters.total_allocs += 1;
        self.counters.total_bytes += size;
        self.live_change(time_ns, size as i64, 1);
        self.round(time_ns);
    }

    /// A free at `time_ns` of a block of `size` bytes.
    pub fn free(&mut self, time_ns: u64, thread: u32, addr: u64, size: u64) {
        let seq = self.next_seq(time_ns);
        self.thread(thread, |w, st, _| st.free(w, seq, addr));
        self.counters.total_frees += 1;
        self.live_change(time_ns, -(size as i64), -1);
        self.round(time_ns);
    }

    /// A realloc at `time_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn realloc(
        &mut self,
        time_ns: u64,
        thread: u32,
        old: u64,
        old_size: u64,
        new: u64,
        new_size: u64,
        frames: &[u64],
    ) {
        let seq = self.next_seq(time_ns);
        self.thread(thread, |w, st, stacks| {
            let id = Self::stack_id(w, stacks, frames);
            st.realloc(w, seq, seq, old, old_size, new, new_size, id, 0);
        });
        self.counters.total_allocs += 1;
        self.counters.total_frees += 1;
        self.counters.total_bytes += new_size;
        self.live_change(time_ns, new_size as i64 - old_size as i64, 0);
        self.round(time_ns);
    }

    fn live_change(&mut self, time_ns: u64, bytes: i64, blocks: i64) {
        let c = &mut self.counters;
        c.live_bytes += bytes;
        c.live_blocks += blocks;
        c.time_ns = time_ns;
        if c.live_bytes > c.peak_bytes as i64 {
            c.peak_bytes = c.live_bytes as u64;
            c.peak_blocks = c.live_blocks as u64;
            c.peak_time_ns = time_ns;
        }
    }

    /// An RSS sample.
    pub fn rss(&mut self, time_ns: u64, rss_bytes: u64) {
        self.global(|b| global::rss(b, time_ns, rss_bytes));
    }

    /// An `Attached` record: `frees_unknown` frees of pre-attach blocks so far.
    pub fn attached(&mut self, time_ns: u64, frees_unknown: u64) {
        self.global(|b| global::attached(b, time_ns, frees_unknown));
    }

    /// Counters as the synthetic events imply them so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The bytes so far, without a trailer (as if the process died here).
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// Write the trailer and return the finished trace.
    pub fn finish(mut self, end_ns: u64, lost: u64) -> Vec<u8> {
        let mut c = self.counters;
        c.time_ns = end_ns;
        self.global(|b| global::trailer(b, &c, lost));
        self.out
    }
}
