//! `dhat-heap.json`: the run in the file format of Valgrind's DHAT and the `dhat` crate
//! (version 2, `rust-heap` mode), so it opens in DHAT's viewer `dh_view.html`.
//!
//! Per program point (a site): `tb`/`tbk` total bytes and blocks, `gb`/`gbk` live at
//! the global peak (t-gmax), `eb`/`ebk` live at the end (t-end). Two figures DHAT has
//! are not recorded by stackheap: the lifetime total `tl` is written as 0, and each
//! site's own maximum `mb`/`mbk` is written as the larger of its figures at t-gmax and
//! t-end (a lower bound of the true maximum).

use serde_json::{json, Value};

use crate::{Analysis, ReportError};

/// A frame as DHAT's viewer shows it: `function (file:line)`.
fn frame_text(f: &crate::Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.name),
        (Some(file), None) => format!("{} ({file})", f.name),
        _ => f.name.clone(),
    }
}

/// The DHAT JSON value of `a`.
pub fn render(a: &Analysis) -> Value {
    let mut ftbl: Vec<String> = vec!["[root]".to_string()];
    let mut index = std::collections::HashMap::new();
    let mut pps = Vec::new();
    for s in a.sites.iter().filter(|s| s.alloc_count > 0) {
        let fs: Vec<usize> = s
            .frames
            .iter()
            .map(|f| {
                let t = frame_text(f);
                *index.entry(t.clone()).or_insert_with(|| {
                    ftbl.push(t);
                    ftbl.len() - 1
                })
            })
            .collect();
        let (mb, mbk) = if s.peak_bytes >= s.leaked_bytes {
            (s.peak_bytes, s.peak_blocks.max(s.leaked_blocks))
        } else {
            (s.leaked_bytes, s.leaked_blocks.max(s.peak_blocks))
        };
        pps.push(json!({
            "tb": s.alloc_bytes,
            "tbk": s.alloc_count,
            "tl": 0,
            "mb": mb,
            "mbk": mbk,
            "gb": s.peak_bytes,
            "gbk": s.peak_blocks,
            "eb": s.leaked_bytes,
            "ebk": s.leaked_blocks,
            "fs": fs,
        }));
    }
    json!({
        "dhatFileVersion": 2,
        "mode": "rust-heap",
        "verb": "Allocated",
        "bklt": true,
        "bkacc": false,
        "tu": "µs",
        "Mtu": "s",
        "tuth": 10,
        "cmd": a.program.argv.join(" "),
        "pid": a.program.pid,
        "tg": a.heap.peak_time_ns / 1000,
        "te": a.duration_ns / 1000,
        "pps": pps,
        "ftbl": ftbl,
    })
}

/// The DHAT JSON file's bytes.
pub fn render_bytes(a: &Analysis) -> Result<Vec<u8>, ReportError> {
    serde_json::to_vec(&render(a)).map_err(|e| ReportError::Render(format!("dhat-heap.json: {e}")))
}
