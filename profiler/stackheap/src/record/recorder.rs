//! The recorder thread: every round it drains the thread rings into checksummed chunks,
//! writes a `Round` (time, sequence, watermark), and now and then RSS, counters and new
//! modules. It holds the reentrancy guard for its whole life, so its own allocations
//! are never profiled.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alloc::counters::{self, LOST, NOW_NS};
use crate::alloc::guard::Guard;
use crate::format::encode::global;
use crate::format::writer::{frame_chunk, frame_chunk_compressed, write_header, Compressor};
use crate::format::{Header, Module};
use crate::record::{crash_flush, modules, slots};

/// How long the recorder sleeps between rounds when there is little to do.
const ROUND_SLEEP: Duration = Duration::from_millis(1);
/// How often RSS and the counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often the module list is checked for new libraries.
const MODULES_EVERY: Duration = Duration::from_millis(100);
/// Length of the trace written so far, header included, always at a chunk boundary:
/// a reader of the first `COMPLETE_BYTES` bytes sees only whole chunks (live attach).
pub static COMPLETE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The recorder's state; lives on the recorder thread.
pub struct Recorder {
    file: File,
    buf: Vec<u8>,
    globals: Vec<u8>,
    start: Instant,
    page_size: u64,
    statm: Option<File>,
    modules_gen: u64,
    known: HashSet<(String, u64)>,
    last_sample: Instant,
    last_modules: Instant,
    lost_written: u64,
    error: Option<io::Error>,
    compressor: Compressor,
    /// Ring bytes framed into `buf`, consumed only once written: (slot, head, retire).
    drained: Vec<(usize, u64, bool)>,
    segments: crate::stack::segments::SegmentsReader,
}

impl Recorder {
    /// Write the header and the initial module map.
    pub fn new(
        mut file: File,
        header: &Header,
        start: Instant,
        page_size: u64,
    ) -> io::Result<Recorder> {
        write_header(&mut file, header)?;
        COMPLETE_BYTES.store(
            std::io::Seek::stream_position(&mut file)?,
            Ordering::Release,
        );
        let mut r = Recorder {
            file,
            buf: Vec::with_capacity(2 << 20),
            globals: Vec::with_capacity(4096),
            start,
            page_size,
            statm: File::open("/proc/self/statm").ok(),
            modules_gen: 0,
            known: HashSet::new(),
            last_sample: start,
            last_modules: start,
            lost_written: 0,
            error: None,
            compressor: Compressor::default(),
            drained: Vec::with_capacity(64),
            segments: crate::stack::segments::SegmentsReader::new(),
        };
        crash_flush::START_MONO_NS.store(
            crash_flush::mono_ns().saturating_sub(start.elapsed().as_nanos() as u64),
            Ordering::Relaxed,
        );
        crash_flush::TRACE_FD.store(r.file.as_raw_fd(), Ordering::Release);
        NOW_NS.store(0, Ordering::Relaxed);
        r.scan_modules();
        r.segments();
        r.sample();
        r.flush_globals();
        r.write_out();
        if let Some(e) = r.error.take() {
            return Err(e);
        }
        Ok(r)
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn segments(&mut self) {
        let now = self.now_ns();
        if let Some(s) = self.segments.snapshot(now) {
            let mut body = [0u8; 96];
            let mut w = crate::format::varint::SliceWriter::new(&mut body);
            s.body(&mut w);
            let n = w.len();
            self.globals.push(crate::format::kind::SEGMENTS);
            self.globals.push(n as u8);
            self.globals.extend_from_slice(&body[..n]);
        }
    }

    fn scan_modules(&mut self) {
        let gen = modules::generation();
        if gen == self.modules_gen {
            return;
        }
        self.modules_gen = gen;
        for m in modules::loaded() {
            if self.known.insert((m.path.clone(), m.bias)) {
                self.module(&m);
            }
        }
    }

    fn module(&mut self, m: &Module) {
        global::module(&mut self.globals, m);
    }

    fn rss_bytes(&self) -> Option<u64> {
        let mut b = [0u8; 128];
        let n = self.statm.as_ref()?.read_at(&mut b, 0).ok()?;
        let s = std::str::from_utf8(&b[..n]).ok()?;
        let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * self.page_size)
    }

    fn sample(&mut self) {
        let t = self.now_ns();
        if let Some(rss) = self.rss_bytes() {
            global::rss(&mut self.globals, t, rss);
        }
        let mut c = counters::snapshot();
        c.time_ns = t;
        global::counters(&mut self.globals, &c);
        if crate::record::attach::is_attached() {
            global::attached(&mut self.globals, t, crate::record::attach::frees_unknown());
        }
        let lost = LOST.load(Ordering::Relaxed);
        if lost > self.lost_written {
            global::lost(&mut self.globals, lost - self.lost_written);
            self.lost_written = lost;
        }
    }

    /// One round: time and sequence first, then every thread's watermark and data.
    fn round(&mut self) -> usize {
        let seq = slots::SEQ.load(Ordering::Acquire);
        let t = self.now_ns();
        NOW_NS.store(t, Ordering::Relaxed);
        let mut watermark = seq;
        let mut drained = 0;
        for i in 0..slots::HWM.load(Ordering::Acquire) {
            let s = slots::slot(i);
            let state = s.state.load(Ordering::Acquire);
            if state == slots::FREE {
                continue;
            }
            let f = s.in_flight.load(Ordering::Acquire);
            if f != slots::NONE {
                watermark = watermark.min(f);
            }
            // SAFETY: this is the only consumer of every ring.
            let (head, parts) = unsafe { s.pending() };
            let n = parts[0].len() + parts[1].len();
            if n > 0 {
                frame_chunk_compressed(
                    &mut self.buf,
                    s.thread.load(Ordering::Acquire),
                    &parts,
                    &mut self.compressor,
                );
                drained += n;
            }
            let retire = state == slots::RETIRED
                && s.in_flight.load(Ordering::Acquire) == slots::NONE
                && s.head.load(Ordering::Acquire) == head;
            if n > 0 || retire {
                // Consumed (and freed) once on disk: see `write_out`.
                self.drained.push((i, head, retire));
            }
            self.stack_max(s);
        }
        global::round(&mut self.globals, t, seq, watermark);
        drained
    }

    /// A new deepest stack of the slot's thread (from the depth sampler), as a record.
    fn stack_max(&mut self, s: &slots::Slot) {
        let mut frames =
            [crate::format::fatal::SizedFrame::default(); crate::stack::sampler::DEEPEST_FRAMES];
        if let Some((depth, time, n)) = crate::stack::sampler::take_deepest(&s.stack, &mut frames) {
            let mut body = [0u8; 64 + crate::stack::sampler::DEEPEST_FRAMES * 30];
            let mut w = crate::format::varint::SliceWriter::new(&mut body);
            crate::format::fatal::stack_max_body(
                &mut w,
                s.thread.load(Ordering::Acquire),
                time,
                depth,
                &frames[..n],
            );
            let bl = w.len();
            let mut hdr = [0u8; 11];
            let mut h = crate::format::varint::SliceWriter::new(&mut hdr);
            h.u8(crate::format::kind::STACK_MAX);
            h.uvar(bl as u64);
            self.globals.extend_from_slice(h.as_slice());
            self.globals.extend_from_slice(&body[..bl]);
        }
    }

    fn flush_globals(&mut self) {
        crash_flush::take_pending(&mut self.globals);
        if !self.globals.is_empty() {
            frame_chunk(&mut self.buf, 0, &[&self.globals]);
            self.globals.clear();
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() && self.drained.is_empty() {
            return;
        }
        if !crash_flush::recorder_begin() {
            // A fault handler owns the trace and writes the rings itself.
            self.buf.clear();
            self.drained.clear();
            return;
        }
        if self.error.is_none() {
            match self.file.write_all(&self.buf) {
                Ok(()) => {
                    COMPLETE_BYTES.fetch_add(self.buf.len() as u64, Ordering::Release);
                }
                Err(e) => self.error = Some(e),
            }
        }
        // After a write error the data is dropped, but the program keeps running.
        self.buf.clear();
        for (i, head, retire) in self.drained.drain(..) {
            let s = slots::slot(i);
            s.consume(head);
            if retire {
                s.totals.fold_into(&counters::SHARED);
                s.state.store(slots::FREE, Ordering::Release);
            }
        }
        crash_flush::recorder_end();
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut rounds = 0u32;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let drained = self.round();
            // The program's runtime may install signal handlers over ours at its start.
            rounds = rounds.saturating_add(1);
            if rounds < 2000 || rounds % 100 == 0 {
                crate::stack::fault::keep_installed();
            }
            let now = Instant::now();
            if now.duration_since(self.last_sample) >= SAMPLE_EVERY {
                self.last_sample = now;
                self.sample();
            }
            if now.duration_since(self.last_modules) >= MODULES_EVERY {
                self.last_modules = now;
                self.scan_modules();
                self.segments();
            }
            self.flush_globals();
            self.write_out();
            crate::alloc::limit::round_written();
            if stopping {
                break;
            }
            if drained < slots::RING_SIZE / 8 {
                std::thread::sleep(ROUND_SLEEP);
            }
        }
        // Final: everything is drained (writers stopped before `stop` was set).
        self.round();
        self.scan_modules();
        self.segments();
        self.sample();
        let mut c = counters::snapshot();
        c.time_ns = self.now_ns();
        global::trailer(&mut self.globals, &c, LOST.load(Ordering::Relaxed));
        self.flush_globals();
        self.write_out();
        if self.error.is_none() {
            if let Err(e) = self.file.flush() {
                self.error = Some(e);
            }
        }
        if crash_flush::recorder_begin() {
            crash_flush::TRACE_FD.store(-1, Ordering::Release);
            crash_flush::recorder_end();
        }
    }
}

struct Shared {
    stop: AtomicBool,
    /// The process is exiting: keep the recorder's buffers instead of freeing them (see
    /// [`Handle::finish`]).
    exiting: AtomicBool,
    result: Mutex<Option<io::Result<()>>>,
}

/// The running recorder thread.
pub struct Handle {
    thread: libc::pthread_t,
    shared: Arc<Shared>,
}

struct Start {
    rec: Recorder,
    shared: Arc<Shared>,
}

extern "C" fn thread_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    Guard::hold_forever();
    // SAFETY: `arg` is the Box<Start> leaked by `spawn`, handed to this thread alone.
    let start = unsafe { Box::from_raw(arg as *mut Start) };
    let Start { mut rec, shared } = *start;
    rec.run(&shared.stop);
    let res = match rec.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    if shared.exiting.load(Ordering::Acquire) {
        // The buffers came from the program's heap (the recorder is built on the thread
        // that starts the session). Freeing a large one at exit makes glibc consolidate
        // the fast bins of that arena — after a program that freed millions of small
        // blocks, a walk over all of them (~10% of `tree`'s run time). The process is
        // about to end: leave them (and the trace's open descriptor) to it.
        std::mem::forget(rec);
    } else {
        drop(rec);
    }
    *shared.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
    std::ptr::null_mut()
}

/// Start the recorder thread. A raw pthread, not `std::thread::spawn`, because this can
/// run inside the first allocation of the process, before the runtime is set up.
pub fn spawn(rec: Recorder) -> io::Result<Handle> {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        exiting: AtomicBool::new(false),
        result: Mutex::new(None),
    });
    let arg = Box::into_raw(Box::new(Start {
        rec,
        shared: shared.clone(),
    }));
    let mut thread: libc::pthread_t = 0;
    // SAFETY: thread_main has the pthread start signature and takes ownership of `arg`.
    let rc =
        unsafe { libc::pthread_create(&mut thread, std::ptr::null(), thread_main, arg.cast()) };
    if rc != 0 {
        // SAFETY: the thread was not created, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    let name = c"stackheap-rec";
    // SAFETY: valid thread handle and a NUL-terminated name under 16 bytes.
    unsafe { libc::pthread_setname_np(thread, name.as_ptr()) };
    Ok(Handle { thread, shared })
}

impl Handle {
    /// Ask the recorder to write the rest and the trailer, wait for it, and return its
    /// I/O result. `exiting`: the process is about to exit, so the recorder leaves its
    /// buffers allocated instead of freeing them.
    pub fn finish(self, exiting: bool) -> io::Result<()> {
        self.shared.exiting.store(exiting, Ordering::Release);
        self.shared.stop.store(true, Ordering::Release);
        // SAFETY: joining the thread we created, once.
        unsafe { libc::pthread_join(self.thread, std::ptr::null_mut()) };
        self.shared
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(Ok(()))
    }
}
