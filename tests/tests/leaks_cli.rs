//! `stackheap leaks`: every leak of the leak demo is listed with its function, bytes,
//! blocks and block ages; the figures are the report's.

use std::process::Command;

use stackheap_tests::{bin, scratch};

#[test]
fn leaks_lists_every_leak_site_with_its_function() {
    let out = scratch("leaks-cli");
    let o = Command::new(bin("stackheap"))
        .args(["run", "--no-report", "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("leak"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = stackheap_tests::trace_in(&out);
    let o = Command::new(bin("stackheap"))
        .args(["leaks", "--top", "50"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for f in [
        "leak_box_leak",
        "leak_mem_forget",
        "leak_rc_cycle",
        "leak_unbounded_cache",
    ] {
        assert!(text.contains(&format!("leak::{f}")), "{f} missing:\n{text}");
    }
    // Each site line has its bytes, blocks and the four age buckets, which add up to
    // its blocks.
    let mut sites = 0;
    for l in text.lines().filter(|l| l.starts_with('#')) {
        sites += 1;
        let blocks: u64 = l
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no block count in {l}"));
        let ages: u64 = l
            .rsplit_once(": ")
            .map(|(_, r)| {
                r.trim_end_matches(" blocks")
                    .split(" / ")
                    .map(|n| n.trim().parse::<u64>().unwrap())
                    .sum()
            })
            .unwrap();
        assert_eq!(ages, blocks, "{l}");
    }
    assert!(sites >= 4, "{text}");
}
