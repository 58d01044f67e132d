//! `stackheap demo`: run each demo program under the profiler, write its report, and
//! compare what it says it leaked with what the profiler measured.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::run::{record, RunArgs};

/// Options of `stackheap demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Which demo, or `all`.
    #[arg(default_value = "all", value_parser = [
        "all", "leak", "churn", "growth", "oom", "deep", "segments", "stack_overflow",
        "stack_overflow-thread", "stack_overflow-array", "crash-null", "crash-uaf",
        "crash-double-free", "crash-panic",
    ])]
    pub name: String,
    /// Directory for the reports (one subdirectory a demo).
    #[arg(long, default_value = "stackheap-out/demos")]
    pub out: PathBuf,
}

/// Each demo with the arguments `stackheap demo` runs it with (small, quick sizes).
const DEMOS: &[(&str, &[&str], &str)] = &[
    (
        "leak",
        &[],
        "four kinds of leak: Box::leak, mem::forget, an Rc cycle, a cache that only grows",
    ),
    (
        "churn",
        &["--iters", "200000"],
        "many short-lived allocations: lots of traffic, nothing held",
    ),
    (
        "growth",
        &["--ticks", "200", "--tick-ms", "2"],
        "a service loop whose cache grows while the rest stays flat",
    ),
    (
        "oom",
        &[],
        "a structure grows until the heap limit (64 MiB): the allocation fails and Rust aborts",
    ),
    (
        "deep",
        &["--bytes", "1048576"],
        "a recursion that goes 1 MiB deep and returns: the stack's high-water mark",
    ),
    (
        "segments",
        &[],
        "where a const, a static, a static mut, a local and a Box live",
    ),
    (
        "stack_overflow",
        &["recurse", "--frame", "256"],
        "unbounded recursion: the report names the recursive function and its cycle",
    ),
    (
        "stack_overflow-thread",
        &["recurse", "--frame", "64", "--thread-stack", "262144"],
        "the same on a thread with a 256 KiB stack",
    ),
    (
        "stack_overflow-array",
        &["array", "--kib", "16384"],
        "a 16 MiB array on an 8 MiB stack",
    ),
    (
        "crash-null",
        &["null"],
        "a write through a null pointer: SIGSEGV in the null page",
    ),
    (
        "crash-uaf",
        &["uaf"],
        "a write into a freed (unmapped) block: SIGSEGV",
    ),
    (
        "crash-double-free",
        &["double-free"],
        "a block freed twice: glibc aborts (SIGABRT)",
    ),
    (
        "crash-panic",
        &["panic"],
        "a plain panic: no signal, exit code 101",
    ),
];

/// The binary of a demo entry (`crash-null` runs `crash`).
fn binary(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// For a demo that dies on purpose: the `events` list of summary.json its report must
/// hold (a crashing demo succeeds when its report is complete).
fn expected_death(name: &str) -> Option<&'static str> {
    match name {
        n if n.starts_with("stack_overflow") => Some("/events/stack_overflow"),
        "crash-panic" => Some("/events/panic"),
        n if n.starts_with("crash") => Some("/events/crash"),
        "oom" => Some("/events/oom"),
        _ => None,
    }
}

/// The heap limit a demo runs under (only `oom`, so it is quick and safe).
const OOM_LIMIT: u64 = 64 << 20;

/// Where the demo binaries are: beside this executable (cargo puts every bin of the
/// workspace in one target directory).
fn demo_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the stackheap executable")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Under `cargo run -- demo`, (re)build the demos with the cargo that runs us (a no-op
/// when they are up to date); otherwise they must be beside this executable.
fn ensure_built(dir: &Path, names: &[&str]) -> Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        if names.iter().all(|n| dir.join(n).is_file()) {
            return Ok(());
        }
        bail!(
            "demo programs not found in {}: build them with `cargo build --release -p stackheap-demos`",
            dir.display()
        );
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "stackheap-demos"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("cannot run cargo to build the demos")?;
    if !status.success() {
        bail!("building the demo programs failed");
    }
    Ok(())
}

/// `expected: k=v k=v …` from a demo's standard output.
pub fn parse_expected(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("expected:"))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `stackheap demo`.
pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let dir = demo_dir()?;
    let chosen: Vec<_> = DEMOS
        .iter()
        .filter(|(n, _, _)| args.name == "all" || args.name == *n)
        .collect();
    ensure_built(
        &dir,
        &chosen.iter().map(|(n, _, _)| binary(n)).collect::<Vec<_>>(),
    )?;
    let mut failures = 0;
    for (name, demo_args, what) in chosen {
        println!("\n=== demo {name}: {what}");
        let out = args.out.join(name);
        let _ = std::fs::remove_dir_all(&out);
        let mut command = vec![dir.join(binary(name)).to_string_lossy().into_owned()];
        command.extend(demo_args.iter().map(|s| s.to_string()));
        let run = RunArgs {
            trace: None,
            out: out.clone(),
            sample: 1,
            limit: (*name == "oom").then_some(OOM_LIMIT),
            stack_hz: stackheap::record::session::DEFAULT_STACK_HZ,
            no_report: false,
            follow_forks: false,
            live: false,
            pid: None,
            inject: None,
            command,
        };
        let (outcome, stdout) = record(&run, true)?;
        let stdout = String::from_utf8_lossy(&stdout);
        print!("{stdout}");
        if !outcome.trace.exists() {
            eprintln!("stackheap: demo {name} wrote no trace");
            failures += 1;
            continue;
        }
        let analysis = crate::analyze(&outcome.trace)?;
        let files = crate::write_report(&analysis, &out)?;
        print!("{}", stackheap_report::summary_text(&analysis));
        let expected = parse_expected(&stdout);
        let json = stackheap_report::summary_json(&analysis);
        for (key, pointer) in [
            ("leaked_bytes", "/heap/leaked_bytes"),
            ("leaked_blocks", "/heap/leaked_blocks"),
        ] {
            if let Some((_, want)) = expected.iter().find(|(k, _)| k == key) {
                let got = json
                    .pointer(pointer)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                println!("check {key}: demo says {want}, profiler measured {got} (the measured figure also counts std's own buffers)");
            }
        }
        if let Some(oom) = json.pointer("/events/oom").filter(|v| !v.is_null()) {
            println!(
                "check oom: request of {} bytes failed with {} bytes live (limit {}); the demo said request_bytes={}",
                oom["requested_bytes"],
                oom["live_bytes"],
                oom["limit_bytes"],
                expected
                    .iter()
                    .find(|(k, _)| k == "request_bytes")
                    .map_or("?", |(_, v)| v.as_str())
            );
        }
        println!("report: {}", out.display());
        crate::print_files(&files);
        // A demo that dies on purpose (overflow, crash, panic, OOM abort) succeeds when
        // its report holds the event.
        if let Some(pointer) = expected_death(name) {
            let reported = json
                .pointer(pointer)
                .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
            if outcome.status.success() || !reported {
                eprintln!(
                    "stackheap: demo {name} should die and be reported ({pointer}): {:?}, reported: {reported}",
                    outcome.status
                );
                failures += 1;
            } else {
                println!(
                    "check: {name} died ({:?}) and its report is complete ({pointer})",
                    outcome.status
                );
            }
        } else if !outcome.status.success() {
            eprintln!("stackheap: demo {name} failed: {:?}", outcome.status);
            failures += 1;
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
