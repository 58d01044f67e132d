//! Data on disk survives the profiled program's death, and `stackheap run` passes the
//! program's exit code through.

use std::process::Command;
use std::time::Duration;

use stackheap_tests::{bin, run_ok, scratch};

#[test]
fn trace_of_a_killed_program_is_readable() {
    let dir = scratch("killed");
    let trace = dir.join("growth.trace");
    let mut child = Command::new(bin("growth"))
        .args(["--ticks", "100000", "--tick-ms", "1"])
        .env("STACKHEAP_TRACE", &trace)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    child.kill().unwrap(); // SIGKILL: no exit handler runs
    child.wait().unwrap();

    let report = dir.join("report");
    let text = run_ok(
        "stackheap",
        &[
            "report".as_ref(),
            trace.as_os_str(),
            "--out".as_ref(),
            report.as_os_str(),
        ],
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(
        j["trace"]["complete"], false,
        "no trailer: the process was killed"
    );
    assert!(
        j["heap"]["total_allocs"].as_u64().unwrap() > 100,
        "{}",
        j["heap"]
    );
    assert!(
        j["heap"]["leaked_bytes"].as_u64().unwrap() > 0,
        "the growing cache was live when killed"
    );
    assert!(
        text.contains("did not") || text.contains("truncated"),
        "the summary says the run was cut short:\n{text}"
    );
}

#[test]
fn run_returns_the_programs_exit_code() {
    let dir = scratch("exitcode");
    // The leak demo rejects a bad argument with exit code 2 (after the runtime started,
    // so there is a trace and a report).
    let out = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(dir.join("out"))
        .arg("--")
        .arg(bin("leak"))
        .args(["--count", "many"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
