//! Record encoders. The thread-stream encoders run on the allocator hot path: they
//! write into caller-provided slices and never allocate.

use super::varint::SliceWriter;
use super::{kind, Counters, Module};

/// Largest number of frames a stack record carries.
pub const MAX_FRAMES: usize = 128;
/// Upper bound of an encoded event record (Alloc/Free/Realloc/AllocFailed).
pub const MAX_EVENT_RECORD: usize = 2 + 1 + 7 * 10;
/// Upper bound of an encoded StackDef record.
pub const MAX_STACK_RECORD: usize = 4 + 2 * 10 + MAX_FRAMES * 10;

/// Write `kind | body_len | body` where `body` is produced by `f` into a scratch array of
/// `N` bytes.
#[inline]
fn framed<const N: usize>(out: &mut SliceWriter<'_>, k: u8, f: impl FnOnce(&mut SliceWriter<'_>)) {
    let mut scratch = [0u8; N];
    let mut body = SliceWriter::new(&mut scratch);
    f(&mut body);
    out.u8(k);
    out.uvar(body.len() as u64);
    out.bytes(body.as_slice());
}

/// Write `kind | body_len | body` in place for a body known to be under 128 bytes (the
/// event records: at most seven varints), so `body_len` is one byte patched afterwards.
#[inline(always)]
fn framed_small(out: &mut SliceWriter<'_>, k: u8, f: impl FnOnce(&mut SliceWriter<'_>)) {
    out.u8(k);
    let len_at = out.len();
    out.u8(0);
    f(out);
    let n = out.len() - len_at - 1;
    debug_assert!(n < 128);
    out.patch(len_at, n as u8);
}

/// Write `v` as an unsigned LEB128 varint at `p` (as [`SliceWriter::uvar`]); returns
/// the byte after it.
///
/// # Safety
/// `p` must be valid for writes of 10 bytes.
#[inline(always)]
unsafe fn raw_uvar(mut p: *mut u8, mut v: u64) -> *mut u8 {
    // SAFETY: at most 10 bytes for a u64 (the caller's contract).
    unsafe {
        while v >= 0x80 {
            p.write(v as u8 | 0x80);
            p = p.add(1);
            v >>= 7;
        }
        p.write(v as u8);
        p.add(1)
    }
}

/// Finish a record written at `start` whose body (from `start + 2`) ends at `end`:
/// kind and one-byte body length (event bodies are under 128 bytes). Returns its length.
///
/// # Safety
/// `start..end` lies in one writable buffer, `end >= start + 2`.
#[inline(always)]
unsafe fn raw_frame(start: *mut u8, k: u8, end: *mut u8) -> usize {
    // SAFETY: the caller's contract: both pointers are in one buffer.
    let n = unsafe { end.offset_from(start) } as usize;
    debug_assert!(n - 2 < 128);
    // SAFETY: the first two bytes of the record are ours to write.
    unsafe {
        start.write(k);
        start.add(1).write((n - 2) as u8);
    }
    n
}

/// Delta state of one thread stream, shared by writer and reader.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamState {
    /// Seq of the previous event.
    pub seq: u64,
    /// Address of the previous event (new address for a realloc).
    pub addr: u64,
}

impl StreamState {
    #[inline]
    fn dseq(&mut self, seq: u64) -> u64 {
        let d = seq.wrapping_sub(self.seq);
        self.seq = seq;
        d
    }

    #[inline]
    fn daddr(&mut self, addr: u64) -> i64 {
        let d = addr.wrapping_sub(self.addr) as i64;
        self.addr = addr;
        d
    }

    /// Encode an Alloc record.
    #[inline]
    pub fn alloc(
        &mut self,
        out: &mut SliceWriter<'_>,
        seq: u64,
        addr: u64,
        size: u64,
        stack: u64,
        depth: u64,
    ) {
        let ds = self.dseq(seq);
        let da = self.daddr(addr);
        framed_small(out, kind::ALLOC, |b| {
            b.uvar(ds);
            b.svar(da);
            b.uvar(size);
            b.uvar(stack);
            b.uvar(depth);
        });
    }

    /// Encode a Free record.
    #[inline]
    pub fn free(&mut self, out: &mut SliceWriter<'_>, seq: u64, addr: u64) {
        let ds = self.dseq(seq);
        let da = self.daddr(addr);
        framed_small(out, kind::FREE, |b| {
            b.uvar(ds);
            b.svar(da);
        });
    }

    /// [`StreamState::alloc`] written through a raw pointer: the same bytes, without
    /// the slice writer's bounds check on every byte and without a closure (the hot path
    /// writes straight into the space it reserved at the head of its ring). Returns the
    /// record's length.
    ///
    /// # Safety
    /// `out` must be valid for writes of [`MAX_EVENT_RECORD`] bytes.
    #[inline(always)]
    pub unsafe fn alloc_raw(
        &mut self,
        out: *mut u8,
        seq: u64,
        addr: u64,
        size: u64,
        stack: u64,
        depth: u64,
    ) -> usize {
        let ds = self.dseq(seq);
        let da = self.daddr(addr);
        // SAFETY: kind, length and five varints of at most 10 bytes: 52 bytes at most,
        // within the caller's MAX_EVENT_RECORD.
        unsafe {
            let body = out.add(2);
            let mut p = raw_uvar(body, ds);
            p = raw_uvar(p, super::varint::zigzag(da));
            p = raw_uvar(p, size);
            p = raw_uvar(p, stack);
            p = raw_uvar(p, depth);
            raw_frame(out, kind::ALLOC, p)
        }
    }

    /// [`StreamState::free`] written through a raw pointer (see [`StreamState::alloc_raw`]).
    ///
    /// # Safety
    /// `out` must be valid for writes of [`MAX_EVENT_RECORD`] bytes.
    #[inline(always)]
    pub unsafe fn free_raw(&mut self, out: *mut u8, seq: u64, addr: u64) -> usize {
        let ds = self.dseq(seq);
        let da = self.daddr(addr);
        // SAFETY: kind, length and two varints: 22 bytes at most.
        unsafe {
            let p = raw_uvar(out.add(2), ds);
            let p = raw_uvar(p, super::varint::zigzag(da));
            raw_frame(out, kind::FREE, p)
        }
    }

    /// Encode a Realloc record.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn realloc(
        &mut self,
        out: &mut SliceWriter<'_>,
        free_seq: u64,
        seq: u64,
        old_addr: u64,
        old_size: u64,
        new_addr: u64,
        new_size: u64,
        stack: u64,
        depth: u64,
    ) {
        let ds = self.dseq(free_seq);
        let split = seq.wrapping_sub(free_seq);
        self.seq = seq;
        let dold = self.daddr(old_addr);
        let dnew = self.daddr(new_addr);
        framed_small(out, kind::REALLOC, |b| {
            b.uvar(ds);
            b.uvar(split);
            b.svar(dold);
            b.svar(dnew);
            b.uvar(old_size);
            b.uvar(new_size);
            b.uvar(stack);
            b.uvar(depth);
        });
    }

    /// Encode an AllocFailed record.
    #[inline]
    pub fn alloc_failed(
        &mut self,
        out: &mut SliceWriter<'_>,
        seq: u64,
        size: u64,
        stack: u64,
        depth: u64,
    ) {
        let ds = self.dseq(seq);
        framed_small(out, kind::ALLOC_FAILED, |b| {
            b.uvar(ds);
            b.uvar(size);
            b.uvar(stack);
            b.uvar(depth);
        });
    }
}

impl StreamState {
    /// Encode an Oom record.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn oom(
        &mut self,
        out: &mut SliceWriter<'_>,
        seq: u64,
        size: u64,
        stack: u64,
        depth: u64,
        live_bytes: i64,
        limit: u64,
    ) {
        let ds = self.dseq(seq);
        framed_small(out, kind::OOM, |b| {
            b.uvar(ds);
            b.uvar(size);
            b.uvar(stack);
            b.uvar(depth);
            b.svar(live_bytes);
            b.uvar(limit);
        });
    }

    /// Encode a Mark record; `name` is cut to [`MAX_MARK_NAME`] bytes.
    #[inline]
    pub fn mark(&mut self, out: &mut SliceWriter<'_>, seq: u64, name: &[u8]) {
        let ds = self.dseq(seq);
        let name = &name[..name.len().min(MAX_MARK_NAME)];
        framed_small(out, kind::MARK, |b| {
            b.uvar(ds);
            b.str(name);
        });
    }
}

impl StreamState {
    /// Encode a SpanEnter (`enter`) or SpanExit record.
    #[inline]
    pub fn span_edge(&mut self, out: &mut SliceWriter<'_>, seq: u64, span: u64, enter: bool) {
        let ds = self.dseq(seq);
        let k = if enter {
            kind::SPAN_ENTER
        } else {
            kind::SPAN_EXIT
        };
        framed_small(out, k, |b| {
            b.uvar(ds);
            b.uvar(span);
        });
    }
}

/// Encode a SpanDef record (unsequenced); `name` is cut to [`MAX_MARK_NAME`] bytes.
pub fn span_def(out: &mut SliceWriter<'_>, span: u64, parent: u64, name: &[u8]) {
    let name = &name[..name.len().min(MAX_MARK_NAME)];
    framed_small(out, kind::SPAN_DEF, |b| {
        b.uvar(span);
        b.uvar(parent);
        b.str(name);
    });
}

/// Upper bound of an encoded SpanDef record.
pub const MAX_SPAN_DEF_RECORD: usize = 2 + 1 + 20 + 1 + MAX_MARK_NAME;

/// Longest mark name kept, bytes.
pub const MAX_MARK_NAME: usize = 64;
/// Upper bound of an encoded Mark record.
pub const MAX_MARK_RECORD: usize = 2 + 1 + 10 + 1 + MAX_MARK_NAME;

/// Encode a StackDef record (frames innermost first, at most [`MAX_FRAMES`]).
#[inline]
pub fn stack_def(out: &mut SliceWriter<'_>, id: u64, frames: &[u64]) {
    let frames = &frames[..frames.len().min(MAX_FRAMES)];
    framed::<MAX_STACK_RECORD>(out, kind::STACK_DEF, |b| {
        b.uvar(id);
        b.uvar(frames.len() as u64);
        let mut prev = 0u64;
        for (i, &f) in frames.iter().enumerate() {
            if i == 0 {
                b.uvar(f);
            } else {
                b.svar(f.wrapping_sub(prev) as i64);
            }
            prev = f;
        }
    });
}

/// Encode a ThreadStart record. `name` is cut to 64 bytes.
pub fn thread_start(
    out: &mut SliceWriter<'_>,
    os_tid: u32,
    name: &[u8],
    stack_top: u64,
    stack_size: u64,
    time_ns: u64,
) {
    let name = &name[..name.len().min(64)];
    framed::<128>(out, kind::THREAD_START, |b| {
        b.uvar(os_tid as u64);
        b.str(name);
        b.uvar(stack_top);
        b.uvar(stack_size);
        b.uvar(time_ns);
    });
}

/// Encode a ThreadEnd record.
pub fn thread_end(out: &mut SliceWriter<'_>, time_ns: u64) {
    framed::<16>(out, kind::THREAD_END, |b| b.uvar(time_ns));
}

/// Encoders for the recorder's own (source 0) records; these may allocate.
pub mod global {
    use super::*;

    fn push(out: &mut Vec<u8>, k: u8, body: &[u8]) {
        let mut hdr = [0u8; 11];
        let mut w = SliceWriter::new(&mut hdr);
        w.u8(k);
        w.uvar(body.len() as u64);
        out.extend_from_slice(w.as_slice());
        out.extend_from_slice(body);
    }

    /// Encode a small body in a stack array and append it (no allocation but the
    /// output's growth).
    fn small(out: &mut Vec<u8>, k: u8, f: impl FnOnce(&mut SliceWriter<'_>)) {
        let mut scratch = [0u8; 160];
        let mut w = SliceWriter::new(&mut scratch);
        f(&mut w);
        let n = w.len();
        push(out, k, &scratch[..n]);
    }

    /// Append a Module record.
    pub fn module(out: &mut Vec<u8>, m: &Module) {
        let cap = 64 + m.path.len() + m.build_id.len() + m.segments.len() * 20;
        let mut v = vec![0u8; cap];
        let mut w = SliceWriter::new(&mut v);
        {
            w.str(m.path.as_bytes());
            w.uvar(m.bias);
            w.uvar(m.segments.len() as u64);
            for &(v, l) in &m.segments {
                w.uvar(v);
                w.uvar(l);
            }
            w.str(&m.build_id);
        }
        let n = w.len();
        push(out, kind::MODULE, &v[..n]);
    }

    /// Append a Round record.
    pub fn round(out: &mut Vec<u8>, time_ns: u64, seq: u64, watermark: u64) {
        small(out, kind::ROUND, |w| {
            w.uvar(time_ns);
            w.uvar(seq);
            w.uvar(watermark);
        });
    }

    /// Append an Rss record.
    pub fn rss(out: &mut Vec<u8>, time_ns: u64, rss_bytes: u64) {
        small(out, kind::RSS, |w| {
            w.uvar(time_ns);
            w.uvar(rss_bytes);
        });
    }

    fn counters_body(w: &mut SliceWriter<'_>, c: &Counters) {
        w.uvar(c.time_ns);
        w.uvar(c.total_allocs);
        w.uvar(c.total_frees);
        w.uvar(c.total_bytes);
        w.svar(c.live_bytes);
        w.svar(c.live_blocks);
        w.uvar(c.peak_bytes);
        w.uvar(c.peak_blocks);
        w.uvar(c.peak_time_ns);
        w.uvar(c.failed_allocs);
    }

    /// Append a Counters record.
    pub fn counters(out: &mut Vec<u8>, c: &Counters) {
        small(out, kind::COUNTERS, |w| counters_body(w, c));
    }

    /// Append a Lost record.
    pub fn lost(out: &mut Vec<u8>, count: u64) {
        small(out, kind::LOST, |w| w.uvar(count));
    }

    /// Append an Attached record.
    pub fn attached(out: &mut Vec<u8>, time_ns: u64, frees_unknown: u64) {
        small(out, kind::ATTACHED, |w| {
            w.uvar(time_ns);
            w.uvar(frees_unknown);
        });
    }

    /// Append the Trailer record.
    pub fn trailer(out: &mut Vec<u8>, c: &Counters, lost: u64) {
        small(out, kind::TRAILER, |w| {
            counters_body(w, c);
            w.uvar(lost);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw encoders write exactly the bytes of the slice-writer ones.
    #[test]
    fn raw_records_match_the_slice_writer() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 35,
            u64::MAX - 1,
            u64::MAX,
        ];
        let (mut a, mut b) = (StreamState::default(), StreamState::default());
        for (i, &x) in values.iter().enumerate() {
            for &y in &values {
                let (seq, addr) = (x.wrapping_mul(i as u64 + 1), y ^ x);
                let mut want = [0u8; MAX_EVENT_RECORD];
                let mut w = SliceWriter::new(&mut want);
                a.alloc(&mut w, seq, addr, y, x, y / 3);
                let n = w.len();
                let mut got = [0xAAu8; MAX_EVENT_RECORD];
                // SAFETY: `got` has MAX_EVENT_RECORD bytes.
                let m = unsafe { b.alloc_raw(got.as_mut_ptr(), seq, addr, y, x, y / 3) };
                assert_eq!(&want[..n], &got[..m]);
                let mut w = SliceWriter::new(&mut want);
                a.free(&mut w, seq.wrapping_add(1), y);
                let n = w.len();
                // SAFETY: as above.
                let m = unsafe { b.free_raw(got.as_mut_ptr(), seq.wrapping_add(1), y) };
                assert_eq!(&want[..n], &got[..m]);
            }
        }
    }
}
