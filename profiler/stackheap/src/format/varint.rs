//! LEB128 varints and zigzag deltas: the only integer encodings in a trace.
//!
//! The writer side works on a caller-provided byte slice and never allocates, so the
//! allocator hot path can encode records into a stack array.

/// A cursor that writes into a fixed byte slice; used on the hot path.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    /// Start writing at the beginning of `buf`.
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True when nothing was written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Remaining capacity in bytes.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Append one byte. Panics in debug builds if full; callers size buffers for the
    /// largest record they write.
    #[inline]
    pub fn u8(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    /// Append an unsigned LEB128 varint (at most 10 bytes).
    #[inline]
    pub fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.u8(v as u8);
    }

    /// Append a signed value as a zigzag varint.
    #[inline]
    pub fn svar(&mut self, v: i64) {
        self.uvar(zigzag(v));
    }

    /// Append raw bytes.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    /// Append a length-prefixed byte string.
    #[inline]
    pub fn str(&mut self, b: &[u8]) {
        self.uvar(b.len() as u64);
        self.bytes(b);
    }

    /// Overwrite the byte at `pos` (already written).
    #[inline]
    pub fn patch(&mut self, pos: usize, b: u8) {
        self.buf[pos] = b;
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.pos]
    }
}

/// Zigzag-map a signed integer so small magnitudes give small varints.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Why a byte slice did not hold a whole value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

/// A cursor that reads varints from a byte slice.
pub struct SliceReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SliceReader<'a> {
    /// Read from the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        SliceReader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// True when every byte was consumed.
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Read one byte.
    pub fn u8(&mut self) -> Result<u8, Short> {
        let b = *self.buf.get(self.pos).ok_or(Short)?;
        self.pos += 1;
        Ok(b)
    }

    /// Read an unsigned LEB128 varint.
    pub fn uvar(&mut self) -> Result<u64, Short> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(Short);
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// Read a zigzag varint.
    pub fn svar(&mut self) -> Result<i64, Short> {
        self.uvar().map(unzigzag)
    }

    /// Read `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let s = self.buf.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(s)
    }

    /// Read a length-prefixed byte string.
    pub fn str(&mut self) -> Result<&'a [u8], Short> {
        let n = self.uvar()?;
        self.bytes(usize::try_from(n).map_err(|_| Short)?)
    }

    /// Read a length-prefixed string, replacing invalid UTF-8.
    pub fn string(&mut self) -> Result<String, Short> {
        Ok(String::from_utf8_lossy(self.str()?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; 64];
        let vals = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut w = SliceWriter::new(&mut buf);
        for v in vals {
            w.uvar(v);
        }
        w.svar(-5);
        w.svar(i64::MIN);
        let n = w.len();
        let mut r = SliceReader::new(&buf[..n]);
        for v in vals {
            assert_eq!(r.uvar().unwrap(), v);
        }
        assert_eq!(r.svar().unwrap(), -5);
        assert_eq!(r.svar().unwrap(), i64::MIN);
        assert!(r.at_end());
        assert_eq!(r.uvar(), Err(Short));
    }
}
