//! Shared pieces of the end-to-end tests: deterministic workloads (run once under the
//! `dhat` oracle and once under stackheap) and helpers to find the built binaries.

pub mod browser;
pub mod workload;

use std::path::PathBuf;

/// The directory cargo builds binaries into (`target/debug` for `cargo test`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a binary of the workspace, e.g. `stackheap` or the `leak` demo. `cargo test`
/// builds only this package's binaries, so the CLI and the demos are built here, once per
/// test process, with the cargo that built the tests (a no-op when they are up to date).
pub fn bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let dir = bin_dir();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "stackheap-cli",
            "-p",
            "stackheap-demos",
            "-p",
            "stackheap-preload",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let status = cmd
            .status()
            .expect("run cargo build for the CLI and the demos");
        assert!(status.success(), "building the CLI and the demos failed");
    });
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is not built", p.display());
    p
}

/// Run a workspace binary to success and return its standard output (panics with its
/// standard error otherwise).
pub fn run_ok(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(bin(name))
        .args(args)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the `sh_workload` binary (`known`, `threads` or `many`) writing `trace`.
pub fn sh_workload(kind: &str, trace: &std::path::Path, extra: &[&str]) -> String {
    let mut args: Vec<&std::ffi::OsStr> = vec![kind.as_ref(), trace.as_os_str()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_ok("sh_workload", &args)
}

/// The trace `stackheap run --out DIR` wrote into `dir`.
pub fn trace_in(dir: &std::path::Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("read the run's directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "trace"))
        .unwrap_or_else(|| panic!("no trace in {}", dir.display()))
}

/// A fresh, empty directory for one test. Kept after the test (to look at a failure);
/// the first call in a test process removes those of earlier test processes that have
/// exited.
pub fn scratch(name: &str) -> PathBuf {
    static PRUNE: std::sync::Once = std::sync::Once::new();
    PRUNE.call_once(prune_scratch);
    let d = std::env::temp_dir().join(format!("stackheap-test-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Remove `stackheap-test-*-PID` directories whose process is gone.
fn prune_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("stackheap-test-"))
        else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Compile the C program `tests/c/NAME.c` into `out` with `extra` flags (no builtin
/// malloc: gcc would elide the malloc/free pairs whose blocks are unused; frame pointers
/// for the unwinder). Fails the test if `cc` does.
pub fn compile_c(name: &str, out: &std::path::Path, extra: &[&str]) -> PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let o = std::process::Command::new("cc")
        .args([
            "-O1",
            "-g",
            "-fno-builtin",
            "-fno-omit-frame-pointer",
            "-pthread",
        ])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc {name}.c failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}
