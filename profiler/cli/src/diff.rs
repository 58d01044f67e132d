//! `stackheap diff`: what grew between two points of a trace (marks, times, `peak`,
//! `end`), or between the ends of two traces. Writes `diff.folded` (inferno's
//! diff-folded form), `diff.svg` (red grew, blue shrank) and `diff.txt`, and prints the
//! table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use stackheap_report::render::{diff, write_atomic};
use stackheap_report::select;
use stackheap_report::{Analysis, AnalyzeOptions};

/// Options of `stackheap diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The trace (or the "before" trace when a second one is given).
    pub trace: PathBuf,
    /// A second trace: compare the first at --from with this one at --to.
    pub other: Option<PathBuf>,
    /// The first point: a mark's name, a time like 5s, peak or end.
    #[arg(long, default_value = "end")]
    pub from: String,
    /// The second point: a mark's name, a time like 5s, peak or end.
    #[arg(long, default_value = "end")]
    pub to: String,
    /// Directory for diff.folded, diff.svg and diff.txt.
    #[arg(long, default_value = "stackheap-out/diff")]
    pub out: PathBuf,
    /// Flamegraph widths from the first point instead of the second (inferno's --negate).
    #[arg(long)]
    pub negate: bool,
    /// Rows of the table.
    #[arg(long, default_value = "10")]
    pub top: usize,
}

/// Analyze `trace`, keeping snapshots at the time selectors among `sels`.
pub fn analyze_with_points(trace: &Path, sels: &[&str]) -> Result<Analysis> {
    let mut opts = AnalyzeOptions::default();
    opts.snapshot_times = sels
        .iter()
        .filter_map(|s| select::time_selector(s).map(|t| (t, s.to_string())))
        .collect();
    stackheap_report::analyze_path(trace, &opts).with_context(|| format!("{}", trace.display()))
}

/// `stackheap diff`.
pub fn run(args: DiffArgs) -> Result<ExitCode> {
    let (a, b) = match &args.other {
        None => {
            let a = analyze_with_points(&args.trace, &[&args.from, &args.to])?;
            (a, None)
        }
        Some(o) => (
            analyze_with_points(&args.trace, &[&args.from])?,
            Some(analyze_with_points(o, &[&args.to])?),
        ),
    };
    let b_ref = b.as_ref().unwrap_or(&a);
    let from =
        select::live_at(&a, &args.from).with_context(|| format!("{}", args.trace.display()))?;
    let to = select::live_at(b_ref, &args.to)
        .with_context(|| format!("{}", args.other.as_ref().unwrap_or(&args.trace).display()))?;
    let rows = diff::rows(
        &select::stack_totals(&a, &from),
        &select::stack_totals(b_ref, &to),
    );
    crate::run::prepare_out(&args.out)?;
    let table = diff::table(&rows, args.top, &from.label, &to.label);
    let title = format!("Live heap: {} -> {}", from.label, to.label);
    let mut files = vec![
        write_atomic(&args.out, "diff.folded", diff::folded(&rows).as_bytes())?,
        write_atomic(&args.out, "diff.txt", table.as_bytes())?,
    ];
    files.push(write_atomic(
        &args.out,
        "diff.svg",
        &diff::svg(&rows, &title, args.negate)?,
    )?);
    print!("{table}");
    crate::print_files(&files);
    Ok(ExitCode::SUCCESS)
}
