//! stackheap reports: one streaming pass over a trace into aggregators, offline
//! symbolization, then renderers (text and JSON summaries, flamegraphs, a timeline).
//!
//! Everything here is a pure function of the event stream: it never touches the
//! profiled process.
//!
//! ```no_run
//! use std::path::Path;
//! use stackheap_report::{analyze_path, write_report, AnalyzeOptions, RenderOptions};
//!
//! let a = analyze_path(Path::new("app.trace"), &AnalyzeOptions::default())?;
//! print!("{}", stackheap_report::summary_text(&a));
//! write_report(&a, Path::new("report"), &RenderOptions::default())?;
//! # Ok::<(), stackheap_report::ReportError>(())
//! ```
//!
//! **Exact and estimated figures.** In full mode (sample rate 1) every allocation is
//! in the trace and every figure is exact, computed from the events. When sampled,
//! the totals come from the exact in-process counters (trailer, or the last periodic
//! counters record if the process died) and per-site figures are unbiased estimates.

pub mod analyze;
pub mod follow;
pub mod render;
pub mod select;
pub mod symbolize;

use std::io::Read;
use std::path::{Path, PathBuf};

use stackheap::format::reader::{Held, ReadError, ReadStatus, TraceReader};
use stackheap::format::{Counters, Header};

use analyze::{Aggregates, Analyzer, EventTotals, ThreadStats};
pub use render::{render_flamegraph, write_report, FlameKind, RenderOptions};
pub use render::{summary_json::summary_json, summary_text::summary_text};
pub use symbolize::Frame;

/// Why a report could not be made. Messages are one line; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The trace could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The trace file could not be read.
    #[error("cannot read trace {path}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// An output file or directory could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A renderer failed.
    #[error("cannot render {0}")]
    Render(String),
    /// Writing to a caller's output stream failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

/// How to analyze a trace; the CLI maps its flags onto these fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AnalyzeOptions {
    /// Resolve return addresses to function names (default true). When false, frames
    /// print as addresses.
    pub symbolize: bool,
    /// Most buckets in each timeline series (default 2000); the maximum of each bucket
    /// is kept, so the peak is never lost.
    pub max_timeline_points: usize,
    /// Times (ns since start) at which to keep every site's live heap, each with the
    /// name a selector will use (e.g. `5s`); see [`select`]. Default none.
    pub snapshot_times: Vec<(u64, String)>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            symbolize: true,
            max_timeline_points: 2000,
            snapshot_times: Vec::new(),
        }
    }
}

/// A site whose live bytes keep rising (see [`analyze::growth`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GrowthSite {
    /// Stack id.
    pub stack: u32,
    /// Symbolized frames, innermost first.
    pub frames: Vec<Frame>,
    /// Slope of its live bytes over its growth window, bytes per second.
    pub rate_bytes_per_s: f64,
    /// How well a straight line fits (R²).
    pub r2: f64,
    /// Its live bytes at the end of the trace.
    pub live_bytes_end: u64,
    /// Its highest sampled live bytes.
    pub live_bytes_max: u64,
    /// Its live bytes over time, `(time_ns, bytes)`.
    pub series: Vec<(u64, u64)>,
}

/// The first failed allocation (out of memory) and who held the heap then.
#[derive(Debug, Clone, PartialEq)]
pub struct Oom {
    /// When, ns since start.
    pub time_ns: u64,
    /// Thread index of the failing request.
    pub thread: u32,
    /// Bytes requested.
    pub requested_bytes: u64,
    /// Exact live heap when it failed (in-process counter).
    pub live_bytes: i64,
    /// The heap limit (0 = none: the allocator itself failed).
    pub limit_bytes: u64,
    /// Stack of the failing request, innermost first.
    pub frames: Vec<Frame>,
    /// Every site's live heap at that moment.
    pub held: analyze::marks::Snapshot,
}

/// The traced program, from the trace header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Program {
    /// Process id.
    pub pid: u32,
    /// Executable path.
    pub exe: String,
    /// Command line.
    pub argv: Vec<String>,
    /// Wall-clock start, ns since the Unix epoch.
    pub start_unix_ns: u64,
    /// The session attached to the process while it ran (`stackheap run --pid`):
    /// what it allocated before is unknown.
    pub attached: bool,
}

/// What the reader found about the trace's integrity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceInfo {
    /// Bytes of the trace that were usable.
    pub valid_bytes: u64,
    /// Where the usable part ends when the file is cut short or damaged.
    pub truncated_at: Option<u64>,
    /// A trailer was found: the program stopped profiling cleanly.
    pub complete: bool,
    /// Events the recorder could not record.
    pub lost_events: u64,
    /// Events that arrived after their place in the merge (used slightly out of order).
    pub late_events: u64,
    /// Records of unknown kinds skipped.
    pub skipped_records: u64,
}

/// Where the heap totals of an [`Analysis`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TotalsSource {
    /// Counted from the events (full mode: exact).
    Events,
    /// The trailer's exact in-process counters (sampled mode, clean stop).
    Trailer,
    /// The last periodic counters record (sampled mode, the process did not stop cleanly).
    Counters,
    /// Estimated from the sampled events (sampled mode without any counters record).
    Estimated,
}

/// Heap totals of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapTotals {
    /// Allocations, reallocs included.
    pub total_allocs: u64,
    /// Frees, reallocs included.
    pub total_frees: u64,
    /// Bytes allocated, realloc new sizes included.
    pub total_bytes: u64,
    /// Highest live heap, bytes.
    pub peak_bytes: u64,
    /// Live blocks at that moment.
    pub peak_blocks: u64,
    /// When, ns since start.
    pub peak_time_ns: u64,
    /// 0 when `peak_bytes` is exact; otherwise the true peak is within this many bytes
    /// of it (in-process counters with several threads count live bytes in batches).
    pub peak_bytes_within: u64,
    /// Live at the end: bytes never freed.
    pub leaked_bytes: u64,
    /// Blocks never freed.
    pub leaked_blocks: u64,
    /// Frees of blocks not seen allocated (allocated before profiling started).
    pub frees_unknown: u64,
    /// Allocations the allocator answered with null.
    pub failed_allocs: u64,
    /// Where these figures come from.
    pub source: TotalsSource,
}

/// One call stack and what it allocated.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Stack id in the trace (0 = recorded without a stack).
    pub stack: u32,
    /// Symbolized frames, innermost first, allocator and runtime frames trimmed.
    pub frames: Vec<Frame>,
    /// Bytes allocated here (estimated when sampled).
    pub alloc_bytes: u64,
    /// Allocations made here (estimated when sampled).
    pub alloc_count: u64,
    /// Bytes live at the global peak.
    pub peak_bytes: u64,
    /// Blocks live at the global peak.
    pub peak_blocks: u64,
    /// Bytes still live at the end.
    pub leaked_bytes: u64,
    /// Blocks still live at the end.
    pub leaked_blocks: u64,
}

/// Downsampled series for the timeline chart: `(time_ns, bytes)` in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Live heap bytes (from the events in full mode, from counters records when sampled).
    pub heap: Vec<(u64, u64)>,
    /// Resident set size samples.
    pub rss: Vec<(u64, u64)>,
}

/// Everything a report shows, computed once from a trace.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The traced program.
    pub program: Program,
    /// Mean bytes between sampled allocations; 1 = every allocation recorded.
    pub sample_rate: u64,
    /// Trace integrity.
    pub trace: TraceInfo,
    /// Heap totals (exact; see [`HeapTotals::source`]).
    pub heap: HeapTotals,
    /// Totals counted from the events (equal to `heap` in full mode).
    pub events: EventTotals,
    /// The trailer's counters, if the process stopped cleanly.
    pub trailer: Option<Counters>,
    /// The last periodic counters record.
    pub last_counters: Option<Counters>,
    /// Problems worth a line in the summary (e.g. trailer and events disagree).
    pub warnings: Vec<String>,
    /// Duration covered by the trace, ns.
    pub duration_ns: u64,
    /// Highest RSS sample, bytes (0 if none).
    pub rss_peak_bytes: u64,
    /// Threads in order of appearance.
    pub threads: Vec<ThreadStats>,
    /// Stack depths per thread, overflows, crashes, panics, the stack flamegraph.
    pub stack: analyze::stacks::StackReport,
    /// Every site, by allocated bytes (largest first).
    pub sites: Vec<Site>,
    /// Series for the timeline chart.
    pub timeline: Timeline,
    /// Live heap by site at a bounded number of moments (for the HTML report).
    pub snapshots: Vec<analyze::snapshots::Snapshot>,
    /// Growth suspects, fastest first.
    pub growth: Vec<GrowthSite>,
    /// Total live bytes at the growth samples, `(time_ns, bytes)`.
    pub growth_total: Vec<(u64, u64)>,
    /// Named marks with every site's live heap at each, in order.
    pub marks: Vec<analyze::marks::Snapshot>,
    /// Snapshots at the requested times ([`AnalyzeOptions::snapshot_times`]).
    pub time_points: Vec<analyze::marks::Snapshot>,
    /// The first failed allocation, if any was recorded.
    pub oom: Option<Oom>,
    /// Per stack id, blocks live at the end by the quarter of the run they were
    /// allocated in.
    pub leak_ages: std::collections::HashMap<u32, [u64; 4]>,
    /// Recorded temporary allocations (freed by their thread before its next
    /// allocation, as heaptrack counts them).
    pub temporary_allocs: u64,
    /// Temporary allocations per stack id.
    pub temporary_sites: std::collections::HashMap<u32, u64>,
    /// Allocations by tracing span path (`SpanLayer`): (path `a;b`, bytes, count),
    /// largest first; empty when the trace has no spans.
    pub spans: Vec<(String, u64, u64)>,
    /// Allocations made outside any span (bytes, count), when the trace has spans.
    pub outside_spans: (u64, u64),
    /// Allocated (bytes, count) per (span path, stack id); the path is `[no span]`
    /// outside any span. Empty when the trace has no spans.
    pub span_stacks: Vec<(String, u32, u64, u64)>,
}

impl Analysis {
    /// True when the trace was sampled and per-site figures are estimates.
    pub fn sampled(&self) -> bool {
        self.sample_rate > 1
    }

    /// Sites that still hold memory at the end, by leaked bytes (largest first).
    pub fn leaks(&self) -> Vec<&Site> {
        let mut v: Vec<&Site> = self.sites.iter().filter(|s| s.leaked_bytes > 0).collect();
        v.sort_by(|a, b| {
            b.leaked_bytes
                .cmp(&a.leaked_bytes)
                .then(a.stack.cmp(&b.stack))
        });
        v
    }
}

/// Read a trace file once, then symbolize.
pub fn analyze_path(path: &Path, opts: &AnalyzeOptions) -> Result<Analysis, ReportError> {
    let wrap = |source| ReportError::Trace {
        path: path.to_path_buf(),
        source,
    };
    let reader = TraceReader::open(path).map_err(wrap)?;
    analyze_pipelined(reader, opts).map_err(|e| match e {
        ReportError::Read(source) => wrap(source),
        e => e,
    })
}

/// Stream a trace through the aggregators, then symbolize the sites.
pub fn analyze_reader<R: Read>(
    mut reader: TraceReader<R>,
    opts: &AnalyzeOptions,
) -> Result<Analysis, ReportError> {
    let header = reader.header().clone();
    let mut an = Analyzer::new(header.sample_rate, opts.max_timeline_points)
        .snapshot_at(opts.snapshot_times.clone());
    while let Some(e) = reader.next_event()? {
        an.event(&e);
    }
    let status = reader.status().clone();
    Ok(build(&header, &status, an.finish(), opts))
}

/// [`analyze_reader`] on two threads: one reads, decompresses, decodes and merges the
/// trace into events, the other feeds them to the aggregators; batches of events pass
/// between them through a bounded channel (memory stays bounded). With one CPU it is
/// [`analyze_reader`] itself.
fn analyze_pipelined<R: Read + Send>(
    mut reader: TraceReader<R>,
    opts: &AnalyzeOptions,
) -> Result<Analysis, ReportError> {
    const BATCH: usize = 16384;
    // At most this many events per batch (6 MiB): a batch is what one chunk of the
    // trace released, handed over whole (no copy) when it fits; churn's recorder rounds
    // release 32 Ki to 128 Ki events each (1 << 15 and 1 << 16 were slower, 1 << 19 the same).
    const HELD_BATCH: usize = 1 << 17;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return analyze_reader(reader, opts);
    }
    let header = reader.header().clone();
    let mut an = Analyzer::new(header.sample_rate, opts.max_timeline_points)
        .snapshot_at(opts.snapshot_times.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Held>>(2);
    // Empty batches go back to the reading thread to be filled again.
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Held>>();
    let (status, result) = std::thread::scope(|s| {
        let decoder = s.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let result = loop {
                match reader.next_held(&mut batch, HELD_BATCH) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {
                        let next = back_rx
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                        if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            (reader.status().clone(), result)
        });
        for mut batch in rx {
            for h in batch.drain(..) {
                an.held(h);
            }
            let _ = back_tx.send(batch);
        }
        decoder.join().expect("trace decoding thread panicked")
    });
    result?;
    Ok(build(&header, &status, an.finish(), opts))
}

fn counters_totals(
    c: &Counters,
    source: TotalsSource,
    frees_unknown: u64,
    attach_frees: u64,
    threads: usize,
) -> HeapTotals {
    HeapTotals {
        total_allocs: c.total_allocs,
        total_frees: c.total_frees + attach_frees,
        total_bytes: c.total_bytes,
        peak_bytes: c.peak_bytes,
        peak_blocks: c.peak_blocks,
        peak_time_ns: c.peak_time_ns,
        peak_bytes_within: peak_slack(threads),
        leaked_bytes: c.live_bytes.max(0) as u64,
        leaked_blocks: c.live_blocks.max(0) as u64,
        frees_unknown,
        failed_allocs: c.failed_allocs,
        source,
    }
}

/// How far the in-process peak may be from the true one: 0 with one thread (solo
/// mode, exact), else one batch of live bytes per thread (`stackheap::alloc::counters`).
fn peak_slack(threads: usize) -> u64 {
    if threads > 1 {
        threads as u64 * stackheap::alloc::counters::BATCH as u64
    } else {
        0
    }
}

/// Fields where the trailer and the events disagree, as `name trailer vs events`.
/// `threads` is the number of thread streams: with more than one, the in-process peak
/// is exact only within `threads × BATCH` bytes (see `stackheap::alloc::counters`), so
/// only a difference beyond that is reported.
fn cross_check(trailer: &Counters, ev: &EventTotals, threads: usize) -> Vec<String> {
    let e = ev.as_counters();
    let mut v = Vec::new();
    let mut cmp = |name: &str, t: i128, x: i128| {
        if t != x {
            v.push(format!("{name} {t} (trailer) vs {x} (events)"));
        }
    };
    cmp(
        "total_allocs",
        trailer.total_allocs.into(),
        e.total_allocs.into(),
    );
    cmp(
        "total_frees",
        trailer.total_frees.into(),
        e.total_frees.into(),
    );
    cmp(
        "total_bytes",
        trailer.total_bytes.into(),
        e.total_bytes.into(),
    );
    cmp("live_bytes", trailer.live_bytes.into(), e.live_bytes.into());
    cmp(
        "live_blocks",
        trailer.live_blocks.into(),
        e.live_blocks.into(),
    );
    let slack = i128::from(peak_slack(threads));
    if (i128::from(trailer.peak_bytes) - i128::from(e.peak_bytes)).abs() > slack {
        cmp("peak_bytes", trailer.peak_bytes.into(), e.peak_bytes.into());
    }
    cmp(
        "failed_allocs",
        trailer.failed_allocs.into(),
        e.failed_allocs.into(),
    );
    v
}

fn build(
    header: &Header,
    status: &ReadStatus,
    mut agg: Aggregates,
    opts: &AnalyzeOptions,
) -> Analysis {
    let sampled = agg.sample_rate > 1;
    let mut ev = agg.events;
    // Attached: frees of blocks older than the attach, counted in the process apart
    // from the events (they are frees too, and never touch the live heap).
    let attach_frees = agg.attached_frees_unknown.unwrap_or(0);
    ev.frees_unknown += attach_frees;
    ev.total_frees += attach_frees;
    let trailer = agg.trailer.map(|(c, _)| c);
    let lost = agg.trailer.map_or(0, |(_, l)| l).max(agg.lost);
    let mut warnings = Vec::new();

    let heap = if !sampled {
        HeapTotals {
            total_allocs: ev.total_allocs,
            total_frees: ev.total_frees,
            total_bytes: ev.total_bytes,
            peak_bytes: ev.peak_bytes,
            peak_blocks: ev.peak_blocks,
            peak_time_ns: ev.peak_time_ns,
            peak_bytes_within: 0,
            leaked_bytes: ev.live_bytes,
            leaked_blocks: ev.live_blocks,
            frees_unknown: ev.frees_unknown,
            failed_allocs: ev.failed_allocs,
            source: TotalsSource::Events,
        }
    } else if let Some(t) = &trailer {
        counters_totals(
            t,
            TotalsSource::Trailer,
            ev.frees_unknown,
            attach_frees,
            agg.threads.len(),
        )
    } else if let Some(c) = &agg.last_counters {
        counters_totals(
            c,
            TotalsSource::Counters,
            ev.frees_unknown,
            attach_frees,
            agg.threads.len(),
        )
    } else {
        let est = |f: f64| f.round() as u64;
        let (alloc, live) = agg.sites.iter().fold(
            (analyze::Tally::default(), analyze::Tally::default()),
            |(mut a, mut l), (_, s)| {
                a.est_bytes += s.alloc.est_bytes;
                a.est_blocks += s.alloc.est_blocks;
                l.est_bytes += s.curr.est_bytes;
                l.est_blocks += s.curr.est_blocks;
                (a, l)
            },
        );
        HeapTotals {
            total_allocs: est(alloc.est_blocks),
            total_frees: est(alloc.est_blocks - live.est_blocks),
            total_bytes: est(alloc.est_bytes),
            peak_bytes: est(agg.peak.tally.est_bytes),
            peak_blocks: est(agg.peak.tally.est_blocks),
            peak_time_ns: agg.peak.time_ns,
            peak_bytes_within: 0,
            leaked_bytes: est(live.est_bytes),
            leaked_blocks: est(live.est_blocks),
            frees_unknown: ev.frees_unknown,
            failed_allocs: ev.failed_allocs,
            source: TotalsSource::Estimated,
        }
    };

    if !sampled {
        if let Some(t) = &trailer {
            let diffs = cross_check(t, &agg.events, agg.threads.len());
            if !diffs.is_empty() {
                warnings.push(format!(
                    "the trailer's counters differ from the recorded events: {}",
                    diffs.join(", ")
                ));
            }
        }
        if ev.frees_unknown > attach_frees {
            warnings.push(format!(
                "{} frees of blocks allocated before profiling started (not counted in the live heap)",
                ev.frees_unknown - attach_frees
            ));
        }
    }
    if ev.addr_reused > 0 {
        warnings.push(format!(
            "{} allocations reused an address still live in the trace (a free was not recorded)",
            ev.addr_reused
        ));
    }

    let mut sym = opts
        .symbolize
        .then(|| symbolize::Symbolizer::new(&agg.modules));
    let stack_events = std::mem::take(&mut agg.stack_events);
    let stack = analyze::stacks::build(stack_events, &agg.threads, sym.as_mut());
    let mut sites: Vec<Site> = agg
        .sites
        .iter()
        .map(|(id, s)| {
            let frames = match (id, agg.stacks.get(&id)) {
                (0, _) => vec![plain_frame("[no stack]".into())],
                (_, None) => vec![plain_frame(format!("[unknown stack {id}]"))],
                (_, Some(addrs)) => match &mut sym {
                    Some(sym) => sym.stack(addrs),
                    None => addrs
                        .iter()
                        .map(|a| plain_frame(format!("{a:#x}")))
                        .collect(),
                },
            };
            let (alloc_bytes, alloc_count) = s.alloc.value(sampled);
            let (peak_bytes, peak_blocks) = s.at_peak.value(sampled);
            let (leaked_bytes, leaked_blocks) = s.curr.value(sampled);
            Site {
                stack: id,
                frames,
                alloc_bytes,
                alloc_count,
                peak_bytes,
                peak_blocks,
                leaked_bytes,
                leaked_blocks,
            }
        })
        .collect();
    let oom = agg.oom.as_ref().map(|o| {
        let frames = match (o.stack, agg.stacks.get(&o.stack)) {
            (0, _) => vec![plain_frame("[no stack]".into())],
            (id, None) => vec![plain_frame(format!("[unknown stack {id}]"))],
            (_, Some(addrs)) => match &mut sym {
                Some(sym) => sym.stack(addrs),
                None => addrs
                    .iter()
                    .map(|a| plain_frame(format!("{a:#x}")))
                    .collect(),
            },
        };
        Oom {
            time_ns: o.time_ns,
            thread: o.thread,
            requested_bytes: o.requested_bytes,
            live_bytes: o.live_bytes,
            limit_bytes: o.limit_bytes,
            frames,
            held: o.held.clone(),
        }
    });
    if let Some(sym) = &sym {
        for path in sym.stale_modules() {
            warnings.push(format!(
                "{path} was rebuilt after this trace was recorded (its build id differs): its frames are shown as addresses, not names"
            ));
        }
    }
    sites.sort_by(|a, b| {
        b.alloc_bytes
            .cmp(&a.alloc_bytes)
            .then(a.stack.cmp(&b.stack))
    });

    let g = &agg.growth;
    let growth: Vec<GrowthSite> = analyze::growth::suspects(g)
        .into_iter()
        .map(|sus| {
            let site = sites.iter().find(|s| s.stack == sus.stack);
            let series = g.series.get(&sus.stack).map_or_else(Vec::new, |v| {
                g.times.iter().copied().zip(v.iter().copied()).collect()
            });
            GrowthSite {
                stack: sus.stack,
                frames: site.map_or_else(Vec::new, |s| s.frames.clone()),
                rate_bytes_per_s: sus.rate_bytes_per_s,
                r2: sus.r2,
                live_bytes_end: site.map_or(0, |s| s.leaked_bytes),
                live_bytes_max: sus.max_bytes,
                series,
            }
        })
        .collect();
    let growth_total = g
        .times
        .iter()
        .copied()
        .zip(g.totals.iter().copied())
        .collect();

    let duration_ns = agg
        .end_ns
        .max(trailer.map_or(0, |t| t.time_ns))
        .max(heap.peak_time_ns);

    Analysis {
        program: Program {
            pid: header.pid,
            exe: header.exe.clone(),
            argv: header.argv.clone(),
            start_unix_ns: header.start_unix_ns,
            attached: agg.attached_frees_unknown.is_some(),
        },
        sample_rate: agg.sample_rate,
        trace: TraceInfo {
            valid_bytes: status.valid_bytes,
            truncated_at: status.truncated_at,
            complete: status.has_trailer,
            lost_events: lost,
            late_events: status.late_events,
            skipped_records: status.skipped_records,
        },
        heap,
        events: ev,
        trailer,
        last_counters: agg.last_counters,
        warnings,
        duration_ns,
        rss_peak_bytes: agg.rss_peak,
        threads: agg.threads,
        stack,
        sites,
        timeline: Timeline {
            heap: if agg.heap_series.samples() == 0 {
                agg.est_heap_series.points()
            } else {
                agg.heap_series.points()
            },
            rss: agg.rss_series.points(),
        },
        snapshots: agg.snapshots,
        growth,
        growth_total,
        marks: agg.marks,
        time_points: agg.time_points,
        oom,
        leak_ages: agg.leak_ages.into_iter().collect(),
        temporary_allocs: agg.temporary.total,
        temporary_sites: agg.temporary.per_site.into_iter().collect(),
        spans: {
            let mut v = agg.spans.paths.clone();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        },
        outside_spans: agg.spans.outside,
        span_stacks: agg
            .spans
            .by_stack
            .iter()
            .map(|(&(i, stack), &(b, n))| {
                let path = agg
                    .spans
                    .paths
                    .get(i)
                    .map_or_else(|| "[no span]".to_string(), |p| p.0.clone());
                (path, stack, b, n)
            })
            .collect(),
    }
}

fn plain_frame(name: String) -> Frame {
    Frame {
        name,
        file: None,
        line: None,
    }
}
