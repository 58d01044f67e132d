//! A progress bar while a large trace is read, on standard error when it is a
//! terminal; nothing otherwise (pipes, files, CI logs).

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stackheap::format::reader::TraceReader;
use stackheap_report::{analyze_reader, Analysis, AnalyzeOptions};

/// The bar appears only once reading has taken this long (quick reports stay quiet;
/// trace size says little, since traces are compressed).
const SHOW_AFTER: Duration = Duration::from_millis(250);

/// Counts the bytes read into the bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
    start: Instant,
    shown: bool,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        if !self.shown && self.start.elapsed() >= SHOW_AFTER {
            self.shown = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Ok(n)
    }
}

/// Analyze `trace`, with a progress bar when standard error is a terminal and reading
/// takes a while; `None` when no bar is wanted (the caller reads it plainly).
pub fn analyze_with_bar(trace: &Path, opts: &AnalyzeOptions) -> Option<Result<Analysis>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let file = File::open(trace).ok()?;
    let len = file.metadata().ok()?.len();
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
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
            start: Instant::now(),
            shown: false,
        },
    );
    let result = TraceReader::new(input)
        .map_err(anyhow::Error::from)
        .and_then(|r| analyze_reader(r, opts).map_err(anyhow::Error::from))
        .with_context(|| format!("{}", trace.display()));
    bar.finish_and_clear();
    Some(result)
}
