//! A progress bar while a large trace is read, on standard error when it is a
//! terminal; nothing otherwise (pipes, files, CI logs).

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stackheap::format::reader::TraceReader;
use stackheap_report::{analyze_reader, Analysis, AnalyzeOptions};

/// Traces smaller than this are read without a bar (they take well under a second).
const MIN_BYTES: u64 = 32 << 20;

/// Counts the bytes read into the bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Analyze `trace`, with a progress bar when standard error is a terminal and the
/// trace is large; `None` when no bar is wanted (the caller reads it plainly).
pub fn analyze_with_bar(trace: &Path, opts: &AnalyzeOptions) -> Option<Result<Analysis>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let file = File::open(trace).ok()?;
    let len = file.metadata().ok()?.len();
    if len < MIN_BYTES {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("reading {}", trace.display()));
    let input = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: file,
            bar: bar.clone(),
        },
    );
    let result = TraceReader::new(input)
        .map_err(anyhow::Error::from)
        .and_then(|r| analyze_reader(r, opts).map_err(anyhow::Error::from))
        .with_context(|| format!("{}", trace.display()));
    bar.finish_and_clear();
    Some(result)
}
