//! The process's segments from /proc/self/maps: text, data, bss, brk heap, other
//! anonymous memory (mmapped heap blocks, arenas), thread stacks and shared libraries.
//! The recorder writes a `Segments` record (0x34) at the start and every 100 ms.

use crate::format::varint::SliceWriter;

/// Bytes mapped per kind of segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segments {
    /// When, ns since start.
    pub time_ns: u64,
    /// The executable's code.
    pub text: u64,
    /// The executable's read-only and initialised data.
    pub data: u64,
    /// The executable's bss (anonymous memory right after its data).
    pub bss: u64,
    /// The brk heap (`[heap]`).
    pub heap_brk: u64,
    /// Other anonymous memory (mmapped heap blocks and arenas, the profiler's rings…).
    pub anon: u64,
    /// Thread stacks (`[stack]` and the registered threads' stacks).
    pub stacks: u64,
    /// Shared libraries, all their segments.
    pub libs: u64,
}

impl Segments {
    /// Classify the text of /proc/self/maps; `exe` is the executable's path and
    /// `stacks` the known thread stacks as `[low, high)`.
    pub fn classify(maps: &str, exe: &str, stacks: &[(usize, usize)]) -> Segments {
        let mut s = Segments::default();
        let mut prev_exe_end = 0usize;
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            let path = f.nth(3).unwrap_or("");
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            let len = (end - start) as u64;
            let is_exe = !exe.is_empty() && path == exe;
            if is_exe {
                if perms.contains('x') {
                    s.text += len;
                } else {
                    s.data += len;
                }
                prev_exe_end = end;
                continue;
            }
            if path == "[heap]" {
                s.heap_brk += len;
            } else if path.starts_with("[stack") {
                s.stacks += len;
            } else if path.starts_with('/') {
                s.libs += len;
            } else if path.is_empty() && start == prev_exe_end && perms.starts_with("rw") {
                s.bss += len;
            } else if path.is_empty()
                && stacks
                    .iter()
                    .any(|&(lo, hi)| lo < end && hi > start && perms.starts_with("rw"))
            {
                s.stacks += len;
            } else if path.is_empty() {
                s.anon += len;
            }
            prev_exe_end = 0;
        }
        s
    }

    /// Encode the body of a Segments record.
    pub fn body(&self, w: &mut SliceWriter<'_>) {
        for v in [
            self.time_ns,
            self.text,
            self.data,
            self.bss,
            self.heap_brk,
            self.anon,
            self.stacks,
            self.libs,
        ] {
            w.uvar(v);
        }
    }

    /// Decode a Segments body.
    pub fn parse(
        r: &mut crate::format::varint::SliceReader<'_>,
    ) -> Result<Segments, crate::format::varint::Short> {
        Ok(Segments {
            time_ns: r.uvar()?,
            text: r.uvar()?,
            data: r.uvar()?,
            bss: r.uvar()?,
            heap_brk: r.uvar()?,
            anon: r.uvar()?,
            stacks: r.uvar()?,
            libs: r.uvar()?,
        })
    }
}

/// Reads /proc/self/maps into buffers it keeps, so snapshots after the first do not
/// allocate (the recorder's own allocations must not grow with the run).
#[derive(Debug, Default)]
pub struct SegmentsReader {
    buf: Vec<u8>,
    exe: String,
    stacks: Vec<(usize, usize)>,
}

impl SegmentsReader {
    /// A reader for this process (reads the executable's path once).
    pub fn new() -> Self {
        SegmentsReader {
            buf: Vec::with_capacity(64 << 10),
            exe: std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            stacks: Vec::with_capacity(64),
        }
    }

    /// Read and classify the maps now.
    pub fn snapshot(&mut self, time_ns: u64) -> Option<Segments> {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        self.buf.clear();
        std::fs::File::open("/proc/self/maps")
            .ok()?
            .read_to_end(&mut self.buf)
            .ok()?;
        self.stacks.clear();
        for i in 0..crate::record::slots::HWM.load(Ordering::Acquire) {
            let s = crate::record::slots::slot(i);
            if s.state.load(Ordering::Acquire) == crate::record::slots::FREE {
                continue;
            }
            if let Some(b) = s.stack.bounds() {
                self.stacks.push((b.low, b.high));
            }
        }
        let maps = std::str::from_utf8(&self.buf).ok()?;
        let mut s = Segments::classify(maps, &self.exe, &self.stacks);
        s.time_ns = time_ns;
        // Not the program's: the profiler's slot table and rings.
        s.anon = s.anon.saturating_sub(crate::record::slots::mapped_bytes());
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_a_maps_text() {
        let maps = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 1 /bin/app
55d0a0001000-55d0a0003000 r-xp 00001000 08:01 1 /bin/app
55d0a0003000-55d0a0004000 rw-p 00003000 08:01 1 /bin/app
55d0a0004000-55d0a0006000 rw-p 00000000 00:00 0
55d0a1000000-55d0a1021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7f0000400000-7f0000401000 r-xp 00000000 08:01 2 /lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        let s = Segments::classify(maps, "/bin/app", &[(0x7f0000200000, 0x7f0000300000)]);
        assert_eq!(s.text, 0x2000);
        assert_eq!(s.data, 0x2000);
        assert_eq!(s.bss, 0x2000);
        assert_eq!(s.heap_brk, 0x21000);
        assert_eq!(s.anon, 0x100000);
        assert_eq!(s.stacks, 0x100000 + 0x21000);
        assert_eq!(s.libs, 0x1000);
    }
}
