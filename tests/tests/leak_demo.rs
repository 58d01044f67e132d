//! The leak demo under `stackheap run`: every leak is attributed to the function that
//! made it, with exactly the bytes and blocks the demo says it leaked; sampled at
//! 64 KiB, the estimates are within 10%.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use stackheap_tests::{bin, scratch};

const FUNCTIONS: [&str; 4] = [
    "leak_box_leak",
    "leak_mem_forget",
    "leak_rc_cycle",
    "leak_unbounded_cache",
];

/// Run the leak demo under the CLI; returns (expected k=v, out dir).
fn run_leak(
    name: &str,
    sample: &str,
    demo_args: &[&str],
) -> (HashMap<String, f64>, std::path::PathBuf) {
    let out = scratch(name);
    let mut cmd = Command::new(bin("stackheap"));
    cmd.args(["run", "--sample", sample, "--out"])
        .arg(&out)
        .arg("--")
        .arg(bin("leak"))
        .args(demo_args);
    let o = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "stackheap run failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let expected: HashMap<String, f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("expected:"))
        .flat_map(|r| r.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect();
    assert!(!expected.is_empty(), "no expected: line in {stdout}");
    (expected, out)
}

/// Bytes per leak function from `flame-leaked.folded` (a line counts for a function if
/// one of its frames is that function).
fn folded_bytes(dir: &Path) -> HashMap<&'static str, f64> {
    let text = std::fs::read_to_string(dir.join("flame-leaked.folded")).unwrap();
    let mut m = HashMap::new();
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: f64 = n.parse().unwrap();
        for f in FUNCTIONS {
            if stack.split(';').any(|fr| fr == format!("leak::{f}")) {
                *m.entry(f).or_insert(0.0) += n;
            }
        }
    }
    m
}

/// Leaked blocks per leak function from `summary.json`'s `leaks[]`.
fn json_blocks(dir: &Path) -> (HashMap<&'static str, f64>, serde_json::Value) {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let mut m = HashMap::new();
    for site in j["leaks"].as_array().unwrap() {
        let frames: Vec<&str> = site["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        for f in FUNCTIONS {
            if frames
                .iter()
                .any(|fr| fr.starts_with(&format!("leak::{f}")))
            {
                *m.entry(f).or_insert(0.0) += site["leaked_blocks"].as_f64().unwrap();
            }
        }
    }
    (m, j)
}

#[test]
fn leaks_attributed_exactly() {
    let (want, out) = run_leak("leak-exact", "1", &[]);
    let bytes = folded_bytes(&out);
    let (blocks, j) = json_blocks(&out);
    for f in FUNCTIONS {
        assert_eq!(
            bytes.get(f).copied().unwrap_or(0.0),
            want[&format!("{f}_bytes")],
            "{f} bytes"
        );
        assert_eq!(
            blocks.get(f).copied().unwrap_or(0.0),
            want[&format!("{f}_blocks")],
            "{f} blocks"
        );
    }
    // The process-wide figure also holds std's own never-freed blocks, never less.
    assert!(j["heap"]["leaked_bytes"].as_f64().unwrap() >= want["leaked_bytes"]);
    assert_eq!(j["sampling"]["estimated"].as_bool(), Some(false));
}

#[test]
fn sampled_leaks_within_ten_percent() {
    // Sizes chosen so each function has hundreds of sampled blocks at a 64 KiB mean:
    // the 10% bound is more than 3 standard deviations of the estimator.
    let (want, out) = run_leak(
        "leak-sampled",
        "64KiB",
        &["--count", "400000", "--size", "256", "--work", "1000"],
    );
    let bytes = folded_bytes(&out);
    let (blocks, j) = json_blocks(&out);
    assert_eq!(j["sampling"]["estimated"].as_bool(), Some(true));
    assert_eq!(j["sampling"]["rate_bytes"].as_u64(), Some(65536));
    for f in FUNCTIONS {
        for (what, got, exp) in [
            (
                "bytes",
                bytes.get(f).copied().unwrap_or(0.0),
                want[&format!("{f}_bytes")],
            ),
            (
                "blocks",
                blocks.get(f).copied().unwrap_or(0.0),
                want[&format!("{f}_blocks")],
            ),
        ] {
            let err = (got - exp).abs() / exp;
            assert!(
                err < 0.10,
                "{f} {what}: estimated {got}, true {exp} ({:.1}% off)",
                err * 100.0
            );
        }
    }
}
