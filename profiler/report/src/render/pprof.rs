//! `profile.pb.gz`: the run as a gzipped pprof protobuf (`profile.proto` of
//! github.com/google/pprof), the heap profile layout Go uses: sample types
//! `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`,
//! `inuse_space/bytes` (in use = live at the end of the run), one sample per site,
//! period `space/bytes` = the sampling rate. `go tool pprof`, Pyroscope, Parca and
//! speedscope read it.
//!
//! The protobuf encoding is written here by hand: the message is small and fixed
//! (five message types, varint and length-delimited fields only), which avoids a code
//! generator and its build dependencies.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::{Analysis, ReportError};

/// A protobuf message under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// A varint field (skipped when zero, as proto3 does).
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.varint(u64::from(field) << 3);
            self.varint(v);
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.varint((u64::from(field) << 3) | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
    /// A packed repeated varint field.
    fn packed(&mut self, field: u32, vs: &[u64]) {
        let mut p = Msg::default();
        for &v in vs {
            p.varint(v);
        }
        self.bytes(field, &p.0);
    }
}

/// The string table: index 0 is the empty string.
struct Strings {
    list: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            list: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u64;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn value_type(strings: &mut Strings, ty: &str, unit: &str) -> Msg {
    let mut m = Msg::default();
    m.uint(1, strings.id(ty));
    m.uint(2, strings.id(unit));
    m
}

/// The uncompressed protobuf bytes of `a`'s profile.
pub fn encode(a: &Analysis) -> Vec<u8> {
    let mut p = Msg::default();
    let mut strings = Strings::new();
    for (ty, unit) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        let vt = value_type(&mut strings, ty, unit);
        p.msg(1, vt);
    }
    // Functions by (name, file), locations by (function, line); ids start at 1.
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut function_msgs = Vec::new();
    let mut locations: HashMap<(u64, u64), u64> = HashMap::new();
    let mut location_msgs = Vec::new();
    for s in a.sites.iter().filter(|s| s.alloc_count > 0) {
        let mut ids = Vec::with_capacity(s.frames.len());
        for f in &s.frames {
            let file = f.file.clone().unwrap_or_default();
            let key = (f.name.clone(), file.clone());
            let fid = match functions.get(&key) {
                Some(&id) => id,
                None => {
                    let id = functions.len() as u64 + 1;
                    let mut m = Msg::default();
                    m.uint(1, id);
                    m.uint(2, strings.id(&f.name));
                    m.uint(3, strings.id(&f.name));
                    m.uint(4, strings.id(&file));
                    function_msgs.push(m);
                    functions.insert(key, id);
                    id
                }
            };
            let line = u64::from(f.line.unwrap_or(0));
            let lid = *locations.entry((fid, line)).or_insert_with(|| {
                let id = location_msgs.len() as u64 + 1;
                let mut m = Msg::default();
                m.uint(1, id);
                m.uint(2, 1);
                let mut l = Msg::default();
                l.uint(1, fid);
                l.uint(2, line);
                m.msg(4, l);
                location_msgs.push(m);
                id
            });
            ids.push(lid);
        }
        let mut sample = Msg::default();
        sample.packed(1, &ids);
        sample.packed(
            2,
            &[
                s.alloc_count,
                s.alloc_bytes,
                s.leaked_blocks,
                s.leaked_bytes,
            ],
        );
        p.msg(2, sample);
    }
    let mut mapping = Msg::default();
    mapping.uint(1, 1);
    mapping.uint(5, strings.id(&a.program.exe));
    mapping.uint(7, 1);
    mapping.uint(8, 1);
    mapping.uint(9, 1);
    mapping.uint(10, 1);
    p.msg(3, mapping);
    for m in location_msgs {
        p.msg(4, m);
    }
    for m in function_msgs {
        p.msg(5, m);
    }
    let period_type = value_type(&mut strings, "space", "bytes");
    let default_type = strings.id("inuse_space");
    let comment = a
        .sampled()
        .then(|| strings.id("sampled: per-site figures are estimates"));
    for s in &strings.list {
        p.bytes(6, s.as_bytes());
    }
    p.uint(9, a.program.start_unix_ns);
    p.uint(10, a.duration_ns);
    p.msg(11, period_type);
    p.uint(12, a.sample_rate.max(1));
    if let Some(c) = comment {
        p.packed(13, &[c]);
    }
    p.uint(14, default_type);
    p.0
}

/// The gzipped profile, as `profile.pb.gz` holds it.
pub fn render(a: &Analysis) -> Result<Vec<u8>, ReportError> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&encode(a))
        .and_then(|_| gz.finish())
        .map_err(|e| ReportError::Render(format!("profile.pb.gz: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_encode_as_protobuf_does() {
        let mut m = Msg::default();
        m.uint(1, 150);
        // The protobuf documentation's example: field 1 = 150 is 08 96 01.
        assert_eq!(m.0, [0x08, 0x96, 0x01]);
        let mut m = Msg::default();
        m.bytes(2, b"testing");
        assert_eq!(&m.0[..2], &[0x12, 0x07]);
        let mut m = Msg::default();
        m.packed(4, &[3, 270, 86942]);
        // The documentation's packed example: 22 06 03 8E 02 9E A7 05.
        assert_eq!(m.0, [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    }
}
