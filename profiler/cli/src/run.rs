//! `stackheap run`: start the program with the profiler's environment, wait, report.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `stackheap run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Trace file to write [default: OUT/stackheap-PID.trace]; `%p` is the pid.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Directory for the trace and the report.
    #[arg(long, default_value = "stackheap-out")]
    pub out: PathBuf,
    /// Mean bytes between sampled allocations: 1 records every allocation with its
    /// stack, 0 only counts; sizes like 512KiB work.
    #[arg(long, default_value = "1", value_parser = parse_bytes)]
    pub sample: u64,
    /// Heap limit (simulated out-of-memory): an allocation that would take the live
    /// heap over it fails as a real OOM would, e.g. 256MiB [default: none].
    #[arg(long, value_parser = parse_bytes)]
    pub limit: Option<u64>,
    /// Rate of the stack-depth sampler in Hz (0 = off).
    #[arg(long, default_value_t = stackheap::record::session::DEFAULT_STACK_HZ)]
    pub stack_hz: u32,
    /// Record only; do not write the report.
    #[arg(long)]
    pub no_report: bool,
    /// Profile the programs it executes too (each writes its own trace: keep `%p` in
    /// the trace path). Without it they run unprofiled. A child forked without exec is
    /// never followed.
    #[arg(long)]
    pub follow_forks: bool,
    /// Serve the live-attach socket while the program runs, for `stackheap attach PID`
    /// (the same as STACKHEAP_LIVE=1).
    #[arg(long)]
    pub live: bool,
    /// Attach to this running process instead of starting one (Linux, needs ptrace
    /// permission): record its allocations from now until it exits or Ctrl-C, which
    /// detaches and leaves it running.
    #[arg(long, value_name = "PID", conflicts_with_all = ["command", "follow_forks", "live"])]
    pub pid: Option<u32>,
    /// With --pid: how to load the library into the process: gdb, our own ptrace
    /// injector, or auto (gdb, then ptrace).
    #[arg(long, value_parser = ["auto", "gdb", "ptrace"])]
    pub inject: Option<String>,
    /// The program and its arguments.
    #[arg(
        required_unless_present = "pid",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    pub command: Vec<String>,
}

/// Parse a byte size for clap (`524288`, `512KiB`, `4M`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    stackheap::record::session::parse_size(s).ok_or_else(|| {
        format!(
            "invalid size {s:?}: use a number of bytes, optionally with K, KiB, M, MiB, G or GiB"
        )
    })
}

/// What a finished run left behind.
pub struct RunOutcome {
    /// The program's exit status.
    pub status: ExitStatus,
    /// The trace it wrote.
    pub trace: PathBuf,
}

/// Exit code of `stackheap run`: the child's, or 128 + signal like a shell.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
        _ => ExitCode::from(1),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!(
            "was killed by signal {sig}{}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        _ => "ended".to_string(),
    }
}

/// Create `out` (if needed) and check it is a writable directory.
pub fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let probe = out.join(format!(".stackheap-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Run the program to completion with profiling on; stdout/stderr are inherited, or
/// captured when `capture` is set (returned in the outcome's second field).
pub fn record(args: &RunArgs, capture: bool) -> Result<(RunOutcome, Vec<u8>)> {
    prepare_out(&args.out)?;
    let program = &args.command[0];
    let trace_pattern = args
        .trace
        .clone()
        .unwrap_or_else(|| args.out.join("stackheap-%p.trace"));
    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..])
        .env("STACKHEAP_TRACE", &trace_pattern)
        .env("STACKHEAP_SAMPLE", args.sample.to_string())
        .env("STACKHEAP_STACK_HZ", args.stack_hz.to_string());
    if let Some(limit) = args.limit {
        cmd.env("STACKHEAP_LIMIT", limit.to_string());
    }
    if let crate::preload::Mode::Preload(lib) = crate::preload::choose(program)? {
        tracing::info!(library = %lib.display(), "profiling through LD_PRELOAD");
        cmd.env("LD_PRELOAD", crate::preload::ld_preload(&lib));
        if !args.follow_forks {
            if let Some(interp) = crate::preload::script_interpreter(program) {
                eprintln!(
                    "stackheap: note: {program} is a script ({interp}): that interpreter is profiled, not the programs it executes (name the real program, or add --follow-forks)"
                );
            }
        }
    }
    if args.follow_forks {
        cmd.env("STACKHEAP_FOLLOW_FORKS", "1");
    }
    if args.live {
        cmd.env("STACKHEAP_LIVE", "1");
    }
    if capture {
        cmd.stdout(std::process::Stdio::piped());
    }
    // SAFETY: the closure only calls async-signal-safe `signal` between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("cannot run {program:?}: no such program"),
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("cannot run {program:?}: permission denied")
        }
        _ => anyhow::anyhow!("cannot run {program:?}: {e}"),
    })?;
    let pid = child.id();
    if args.live {
        eprintln!("stackheap: watch it live with: stackheap attach {pid}");
    }
    // While the child runs, Ctrl-C is for the child: we stay to write its report.
    // SAFETY: setting a signal disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let output = child
        .wait_with_output()
        .context("waiting for the program")?;
    let trace = PathBuf::from(
        trace_pattern
            .to_string_lossy()
            .replace("%p", &pid.to_string()),
    );
    tracing::info!(pid, status = ?output.status, trace = %trace.display(), "program finished");
    Ok((
        RunOutcome {
            status: output.status,
            trace,
        },
        output.stdout,
    ))
}

/// `stackheap run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    if let Some(pid) = args.pid {
        return crate::attach_pid::run(pid, &args);
    }
    // Checked here: clap's `requires = "pid"` is not enforced beside the trailing
    // PROGRAM argument (`run --inject gdb -- ls` passed it).
    if args.inject.is_some() {
        bail!("--inject chooses how to attach to a running process: it needs --pid");
    }
    let (outcome, _) = record(&args, false)?;
    let program = &args.command[0];
    eprintln!("stackheap: {program} {}", describe(outcome.status));
    if !outcome.trace.exists() {
        bail!(
            "{program} wrote no trace at {} (it neither uses stackheap::StackHeap as its #[global_allocator] nor reaches malloc through LD_PRELOAD)",
            outcome.trace.display()
        );
    }
    if !args.no_report {
        let analysis = crate::analyze(&outcome.trace)?;
        let files = crate::write_report(&analysis, &args.out)?;
        print!("{}", stackheap_report::summary_text(&analysis));
        println!("\ntrace: {}", outcome.trace.display());
        crate::print_files(&files);
    } else {
        println!("trace: {}", outcome.trace.display());
    }
    Ok(exit_code(outcome.status))
}
