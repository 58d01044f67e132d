//! `stackheap report --format`: write one output format instead of the whole report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stackheap_report::render::{dhat_json, html, pprof, write_atomic};
use stackheap_report::Analysis;

/// The formats `--format` accepts besides `all`.
pub const FORMATS: [&str; 4] = ["all", "html", "dhat", "pprof"];

/// Write the file of `format` (`html`, `dhat` or `pprof`) into `out`.
pub fn write_one(a: &Analysis, format: &str, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (name, bytes) = match format {
        "html" => ("report.html", html::render(a)?.into_bytes()),
        "dhat" => ("dhat-heap.json", dhat_json::render_bytes(a)?),
        "pprof" => ("profile.pb.gz", pprof::render(a)?),
        other => anyhow::bail!("unknown format {other:?} (expected one of {FORMATS:?})"),
    };
    Ok(vec![write_atomic(out, name, &bytes)?])
}
