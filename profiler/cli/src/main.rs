//! `stackheap`: run a program under the profiler, turn traces into reports.
//!
//! The CLI owns processes, files, logging and exit codes; the work itself is done by
//! the `stackheap` (trace format) and `stackheap-report` libraries.

mod attach;
mod attach_pid;
mod attach_tui;
mod demo;
mod diff;
mod formats;
mod inject;
mod leaks;
mod preload;
mod progress;
mod push;
mod run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stackheap_report::{AnalyzeOptions, FlameKind, RenderOptions};

/// Stack-and-heap usage profiler.
#[derive(Parser, Debug)]
#[command(name = "stackheap", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a program (linking stackheap, or any dynamically linked one through LD_PRELOAD) or attach to a running one (--pid), record its trace, write and print the report.
    Run(run::RunArgs),
    /// Write the report (summary, flamegraphs, timeline) of a trace.
    Report {
        /// The trace file.
        trace: PathBuf,
        /// Output directory [default: the trace's directory].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write only this format: `html` (report.html), `dhat` (dhat-heap.json, for
        /// DHAT's viewer) or `pprof` (profile.pb.gz); `all` writes the whole report.
        #[arg(long, default_value = "all", value_parser = formats::FORMATS)]
        format: String,
    },
    /// Write one flamegraph (SVG, or folded lines with --folded) of a trace.
    Flamegraph {
        /// The trace file.
        trace: PathBuf,
        /// What the widths measure.
        #[arg(long, default_value = "alloc-bytes", value_parser = ["alloc-bytes", "alloc-count", "peak", "leaked", "live"])]
        kind: String,
        /// With --kind live: the point (a mark's name, a time like 5s, peak, end or oom).
        #[arg(long, default_value = "end")]
        at: String,
        /// Write folded stack lines instead of SVG.
        #[arg(long)]
        folded: bool,
        /// Prefix every stack with the tracing span it was allocated in (traces made
        /// with stackheap::SpanLayer; alloc-bytes and alloc-count only).
        #[arg(long)]
        spans: bool,
        /// Output file [default: standard output].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the sites still live at the end of a trace (leaks), with their stacks.
    Leaks {
        /// The trace file.
        trace: PathBuf,
        /// Sites to show.
        #[arg(long, default_value = "20")]
        top: usize,
        /// Frames per site.
        #[arg(long, default_value = "8")]
        frames: usize,
    },
    /// What grew between two points (marks, times, peak, end) of a trace, or two traces.
    Diff(diff::DiffArgs),
    /// Print a trace one record a line.
    Dump {
        /// The trace file.
        trace: PathBuf,
    },
    /// Run the demo programs under the profiler and write their reports.
    Demo(demo::DemoArgs),
    /// Send a trace's heap profile (pprof) to a Pyroscope server's HTTP ingest API.
    Push(push::PushArgs),
    /// Watch a running program (started with `run --live` or STACKHEAP_LIVE=1): a live
    /// terminal view, or one live-heap flamegraph with --snapshot DIR.
    Attach(attach::AttachArgs),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`stackheap dump T | head`) instead of failing on EPIPE.
    // SAFETY: resetting a signal disposition to its default has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line: clap's message up to its usage block, without the "error: "
            // prefix (a message ending in ':' continues with the names it lists).
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let message = message.trim_start_matches("error: ");
            eprintln!(
                "stackheap: error: {} (see stackheap --help)",
                if message.is_empty() {
                    "invalid arguments"
                } else {
                    message
                }
            );
            return ExitCode::from(2);
        }
    };
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stackheap: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run(args) => run::run(args),
        Command::Report { trace, out, format } => {
            let out =
                out.unwrap_or_else(|| trace.parent().map(Path::to_path_buf).unwrap_or_default());
            let out = if out.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                out
            };
            let analysis = analyze(&trace)?;
            if format != "all" {
                print_files(&formats::write_one(&analysis, &format, &out)?);
                return Ok(ExitCode::SUCCESS);
            }
            let files = write_report(&analysis, &out)?;
            print!("{}", stackheap_report::summary_text(&analysis));
            print_files(&files);
            Ok(ExitCode::SUCCESS)
        }
        Command::Flamegraph {
            trace,
            kind,
            at,
            folded,
            output,
            spans,
        } if kind == "live" => {
            if spans {
                anyhow::bail!("--spans works with --kind alloc-bytes and alloc-count only");
            }
            let a = diff::analyze_with_points(&trace, &[&at])?;
            let live = stackheap_report::select::live_at(&a, &at)
                .with_context(|| format!("{}", trace.display()))?;
            let lines = stackheap_report::select::folded(&a, &live);
            let bytes = if folded {
                lines
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .into_bytes()
            } else {
                stackheap_report::render::oom::flame_svg(
                    &a,
                    &lines,
                    &format!("Live heap at {}, by call stack", live.label),
                )?
            };
            match output {
                Some(p) => write_atomically(&p, &bytes)?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("writing to standard output")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Flamegraph {
            trace,
            kind,
            folded,
            spans,
            output,
            ..
        } => {
            let kind: FlameKind = kind.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let analysis = analyze(&trace)?;
            let mut bytes = Vec::new();
            if spans {
                stackheap_report::render::flamegraph::render_flamegraph_spans(
                    &analysis, kind, folded, &mut bytes,
                )?;
            } else {
                stackheap_report::render_flamegraph(&analysis, kind, folded, &mut bytes)?;
            }
            match output {
                Some(p) => write_atomically(&p, &bytes)?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("writing to standard output")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Leaks { trace, top, frames } => leaks::leaks(&trace, top, frames),
        Command::Diff(args) => diff::run(args),
        Command::Dump { trace } => dump(&trace),
        Command::Demo(args) => demo::demo(args),
        Command::Push(args) => push::push(args),
        Command::Attach(args) => attach::attach(args),
    }
}

/// Read and analyze a trace, with the path in any error.
pub(crate) fn analyze(trace: &Path) -> Result<stackheap_report::Analysis> {
    if let Some(r) = progress::analyze_with_bar(trace, &AnalyzeOptions::default()) {
        return r;
    }
    stackheap_report::analyze_path(trace, &AnalyzeOptions::default())
        .with_context(|| format!("{}", trace.display()))
}

/// Write every report file into `out`.
pub(crate) fn write_report(a: &stackheap_report::Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    stackheap_report::write_report(a, out, &RenderOptions::default())
        .with_context(|| format!("writing the report to {}", out.display()))
}

pub(crate) fn print_files(files: &[PathBuf]) {
    println!("\nwritten:");
    for f in files {
        println!("  {}", f.display());
    }
}

/// Write a file through a temporary name and a rename, so a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn dump(trace: &Path) -> Result<ExitCode> {
    use stackheap::format::reader::TraceReader;
    let mut r = TraceReader::open(trace).with_context(|| format!("{}", trace.display()))?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let h = r.header().clone();
    writeln!(
        out,
        "header pid={} exe={:?} argv={:?} sample_rate={} page_size={} flags={:#x} start_unix_ns={}",
        h.pid, h.exe, h.argv, h.sample_rate, h.page_size, h.flags, h.start_unix_ns
    )?;
    let mut n = 0u64;
    while let Some(e) = r
        .next_event()
        .with_context(|| format!("{}", trace.display()))?
    {
        n += 1;
        match writeln!(out, "{e:?}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            r => r?,
        }
    }
    let s = r.status();
    match s.truncated_at {
        Some(at) => writeln!(out, "end: {n} events; truncated at byte {at}")?,
        None if !s.has_trailer => writeln!(
            out,
            "end: {n} events; no trailer (the program did not stop profiling cleanly)"
        )?,
        None => writeln!(out, "end: {n} events; complete")?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
