//! Leak investigation end to end: the growth demo's cache is the top growth suspect at
//! the rate the demo measures and a diff between its marks puts it on top; the oom demo
//! under a heap limit dies as Rust does at OOM and its report shows the failed request
//! and a live heap at the limit; in try_reserve mode it exits 0 with the failure recorded.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use stackheap_tests::{bin, scratch};

fn expected(stdout: &str) -> HashMap<String, f64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("expected:"))
        .flat_map(|r| r.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

fn run(out: &Path, extra: &[&str], demo: &str, demo_args: &[&str]) -> Output {
    Command::new(bin("stackheap"))
        .arg("run")
        .args(extra)
        .arg("--out")
        .arg(out)
        .arg("--")
        .arg(bin(demo))
        .args(demo_args)
        .output()
        .expect("spawn stackheap")
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
        .expect("json")
}

fn has_frame(v: &Value, name: &str) -> bool {
    v["frames"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(name)))
}

#[test]
fn growth_cache_is_the_top_suspect_and_tops_the_diff() {
    let out = scratch("growth-suspect");
    let o = run(&out, &[], "growth", &["--ticks", "150", "--tick-ms", "3"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = expected(&stdout);
    let rate = want["cache_rate_bytes_per_s"];
    let s = summary(&out);
    let growth = s["growth"].as_array().expect("growth[]");
    assert!(!growth.is_empty(), "no growth suspect");
    assert!(
        has_frame(&growth[0], "growth::Service::remember_response"),
        "top suspect is not the cache: {:?}",
        growth[0]["frames"]
    );
    let got = growth[0]["rate_bytes_per_s"].as_f64().unwrap();
    assert!(
        (got - rate).abs() <= 0.2 * rate,
        "growth rate {got} B/s vs {rate} B/s measured by the demo"
    );
    for g in growth {
        for churn in [
            "growth::Service::handle_request",
            "growth::Service::keep_recent",
        ] {
            assert!(!has_frame(g, churn), "{churn} listed as growing: {g}");
        }
    }
    assert!(out.join("growth.svg").is_file());

    let trace = stackheap_tests::trace_in(&out);
    let d = out.join("diff");
    let o = Command::new(bin("stackheap"))
        .args(["diff", "--from", "warmup", "--to", "end", "--out"])
        .arg(&d)
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = std::fs::read_to_string(d.join("diff.txt")).unwrap();
    let first = table
        .lines()
        .skip_while(|l| !l.starts_with("grew most"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.contains("growth::Service::remember_response"),
        "cache not on top of the grown table:\n{table}"
    );
    // The diff-folded line of the cache: grown by the entries added after warm-up.
    let folded = std::fs::read_to_string(d.join("diff.folded")).unwrap();
    let (before, after) = folded
        .lines()
        .filter(|l| l.contains("growth::Service::remember_response"))
        .map(|l| {
            let mut it = l.rsplitn(3, ' ');
            let a: u64 = it.next().unwrap().parse().unwrap();
            let b: u64 = it.next().unwrap().parse().unwrap();
            (b, a)
        })
        .fold((0, 0), |(x, y), (b, a)| (x + b, y + a));
    let per_tick = want["cache_bytes_per_tick"] as u64;
    assert_eq!(after, want["cache_bytes"] as u64);
    assert_eq!(before, (want["ticks"] as u64 / 10) * per_tick);
    assert!(std::fs::read_to_string(d.join("diff.svg"))
        .unwrap()
        .contains("<svg"));

    // The live heap at the warmup mark: the cache holds the warm-up ticks' entries.
    let o = Command::new(bin("stackheap"))
        .args(["flamegraph", "--kind", "live", "--at", "warmup", "--folded"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cache_at_warmup: u64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("growth::Service::remember_response"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    assert_eq!(cache_at_warmup, before);

    // Two traces: the same trace at both ends gives the same table.
    let d2 = out.join("diff2");
    let o = Command::new(bin("stackheap"))
        .args(["diff", "--from", "warmup", "--to", "end", "--out"])
        .arg(&d2)
        .arg(&trace)
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(d2.join("diff.folded")).unwrap(),
        folded
    );

    // A point that is not in the trace: one line, non-zero exit, the marks listed.
    let o = Command::new(bin("stackheap"))
        .args(["diff", "--from", "nowhere", "--out"])
        .arg(out.join("diff3"))
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("marks: warmup, end"), "{err}");
}

#[test]
fn oom_demo_aborts_at_the_limit_with_a_complete_report() {
    let out = scratch("oom-abort");
    let o = run(&out, &["--limit", "64MiB"], "oom", &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Rust's OOM: a message, then abort (SIGABRT: exit 134 from `stackheap run`).
    assert_eq!(o.status.code(), Some(128 + libc::SIGABRT), "{stderr}");
    let want = expected(&stdout);
    let request = want["request_bytes"] as u64;
    assert!(
        stderr.contains(&format!("memory allocation of {request} bytes failed")),
        "{stderr}"
    );
    let s = summary(&out);
    let oom = &s["events"]["oom"];
    assert_eq!(oom["requested_bytes"].as_u64(), Some(request), "{oom}");
    let limit = 64u64 << 20;
    assert_eq!(oom["limit_bytes"].as_u64(), Some(limit));
    let live = oom["live_bytes"].as_i64().unwrap() as f64;
    assert!(
        (live - limit as f64).abs() <= 0.01 * limit as f64,
        "live at OOM {live} vs limit {limit}"
    );
    assert!(live as u64 + request > limit, "refused below the limit");
    assert!(has_frame(oom, "oom::grow_chunk"), "{oom}");
    let flame = std::fs::read_to_string(out.join("flame-oom.folded")).unwrap();
    let held: u64 = flame
        .lines()
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    assert_eq!(
        held as f64, live,
        "flame-oom shows the live heap at the OOM"
    );
    assert!(out.join("flame-oom.svg").is_file());
}

#[test]
fn oom_demo_try_reserve_fails_gracefully_and_is_recorded() {
    let out = scratch("oom-graceful");
    let o = run(&out, &["--limit", "16MiB"], "oom", &["--graceful", "1"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = expected(&stdout);
    let s = summary(&out);
    assert_eq!(s["trace"]["complete"], Value::Bool(true));
    assert!(s["heap"]["failed_allocs"].as_u64().unwrap() >= 1);
    let oom = &s["events"]["oom"];
    assert_eq!(
        oom["requested_bytes"].as_u64(),
        Some(want["failed_request_bytes"] as u64)
    );
    assert!(has_frame(oom, "oom::try_chunk"), "{oom}");
    assert!(oom["live_bytes"].as_u64().unwrap() >= want["held_bytes"] as u64);
}
