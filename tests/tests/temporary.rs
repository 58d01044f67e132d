//! Temporary allocations: every iteration of the churn loop allocates one buffer and
//! frees it before its thread allocates again, so each is temporary; the growth demo's
//! cache entries are not.

use std::process::Command;

use serde_json::Value;
use stackheap_tests::{bin, scratch};

#[test]
fn churn_iterations_are_temporary() {
    let out = scratch("temporary");
    let o = Command::new(bin("stackheap"))
        .args(["run", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("churn"))
        .args(["--iters", "20000", "--threads", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let temp = s["temporary"]["allocs"].as_u64().unwrap();
    // 2 threads × 20 000 iterations; the rest of the program adds a few of its own.
    assert!(temp >= 40_000, "{temp} temporary allocations");
    assert!(
        temp < s["heap"]["total_allocs"].as_u64().unwrap(),
        "everything counted as temporary"
    );
    let folded = std::fs::read_to_string(out.join("flame-temporary.folded")).unwrap();
    let in_loop: u64 = folded
        .lines()
        .filter(|l| l.contains("churn_thread"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    assert_eq!(in_loop, 40_000, "temporary allocations of the churn loop");
    assert!(out.join("flame-temporary.svg").is_file());
}
