//! Differential output between two live heaps (two points of one trace, or two
//! traces): folded lines in inferno's diff-folded form (`stack before after`), a
//! differential flamegraph (red grew, blue shrank; widths are the `after` figures, or
//! the `before` ones with `negate`, as inferno's `--negate`), and a table of the sites
//! that grew most.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use inferno::flamegraph::{self, Options};

use super::fmt_bytes;
use crate::ReportError;

/// One stack with its bytes at both points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRow {
    /// Folded stack text, root first.
    pub stack: String,
    /// Live bytes at the first point.
    pub before: u64,
    /// Live bytes at the second point.
    pub after: u64,
}

impl DiffRow {
    /// after − before.
    pub fn delta(&self) -> i128 {
        self.after as i128 - self.before as i128
    }
}

/// Join two live heaps (folded stack text to bytes) into rows, largest growth first.
pub fn rows(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Vec<DiffRow> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut v: Vec<DiffRow> = keys
        .into_iter()
        .map(|k| DiffRow {
            stack: k.clone(),
            before: before.get(k).copied().unwrap_or(0),
            after: after.get(k).copied().unwrap_or(0),
        })
        .filter(|r| r.before > 0 || r.after > 0)
        .collect();
    v.sort_by(|a, b| b.delta().cmp(&a.delta()).then(a.stack.cmp(&b.stack)));
    v
}

/// Diff-folded lines: `stack before after`, sorted by stack.
pub fn folded(rows: &[DiffRow]) -> String {
    let mut v: Vec<&DiffRow> = rows.iter().collect();
    v.sort_by(|a, b| a.stack.cmp(&b.stack));
    let mut o = String::new();
    for r in v {
        let _ = writeln!(o, "{} {} {}", r.stack, r.before, r.after);
    }
    o
}

/// The differential flamegraph.
pub fn svg(rows: &[DiffRow], title: &str, negate: bool) -> Result<Vec<u8>, ReportError> {
    let text = folded(rows);
    let shown = rows
        .iter()
        .any(|r| if negate { r.before > 0 } else { r.after > 0 });
    if !shown {
        return Ok(super::flamegraph::empty_svg(
            title,
            "nothing live at the point the widths show",
        )
        .into_bytes());
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.count_name = "bytes".into();
    opts.deterministic = true;
    opts.negate_differentials = negate;
    opts.subtitle = Some("red: grew, blue: shrank".into());
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opts, text.lines(), &mut out)
        .map_err(|e| ReportError::Render(format!("the differential flamegraph: {e}")))?;
    Ok(out)
}

/// A table of the `top` stacks that grew most (and then the ones that shrank most).
pub fn table(rows: &[DiffRow], top: usize, from: &str, to: &str) -> String {
    let mut o = String::new();
    let before: u64 = rows.iter().map(|r| r.before).sum();
    let after: u64 = rows.iter().map(|r| r.after).sum();
    let _ = writeln!(
        o,
        "live heap: {} at {from} -> {} at {to} ({:+} bytes)",
        fmt_bytes(before),
        fmt_bytes(after),
        after as i128 - before as i128
    );
    let grown: Vec<&DiffRow> = rows.iter().filter(|r| r.delta() > 0).take(top).collect();
    let _ = writeln!(
        o,
        "\ngrew most ({} sites grew):",
        rows.iter().filter(|r| r.delta() > 0).count()
    );
    for r in &grown {
        let _ = writeln!(
            o,
            "  {:+} bytes  ({} -> {})  {}",
            r.delta(),
            fmt_bytes(r.before),
            fmt_bytes(r.after),
            leaf(&r.stack)
        );
    }
    let mut shrunk: Vec<&DiffRow> = rows.iter().filter(|r| r.delta() < 0).collect();
    shrunk.sort_by(|a, b| a.delta().cmp(&b.delta()).then(a.stack.cmp(&b.stack)));
    if !shrunk.is_empty() {
        let _ = writeln!(o, "\nshrank most ({} sites shrank):", shrunk.len());
        for r in shrunk.iter().take(top) {
            let _ = writeln!(
                o,
                "  {:+} bytes  ({} -> {})  {}",
                r.delta(),
                fmt_bytes(r.before),
                fmt_bytes(r.after),
                leaf(&r.stack)
            );
        }
    }
    o
}

/// True for a frame of the allocator or the standard library (by name: folded text
/// has no file names).
fn is_runtime(f: &str) -> bool {
    let f = f.trim_start_matches('<');
    [
        "alloc::",
        "core::",
        "std::",
        "__rustc::",
        "hashbrown::",
        "T as alloc::",
    ]
    .iter()
    .any(|p| f.starts_with(p))
}

/// The innermost frames of a folded stack outside the allocator and the standard
/// library (all of them if none is), innermost first, for a table line.
fn leaf(stack: &str) -> String {
    let frames: Vec<&str> = stack.split(';').collect();
    let own: Vec<&str> = frames
        .iter()
        .rev()
        .copied()
        .filter(|f| !is_runtime(f))
        .collect();
    let shown = if own.is_empty() {
        frames.iter().rev().copied().collect()
    } else {
        own
    };
    shown.into_iter().take(3).collect::<Vec<_>>().join(" <- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_rank_growth_and_fold_both_counts() {
        let before: HashMap<String, u64> = [
            ("main;cache".to_string(), 100),
            ("main;buf".to_string(), 500),
        ]
        .into();
        let after: HashMap<String, u64> = [
            ("main;cache".to_string(), 900),
            ("main;new".to_string(), 50),
        ]
        .into();
        let r = rows(&before, &after);
        assert_eq!(r[0].stack, "main;cache");
        assert_eq!(r[0].delta(), 800);
        assert_eq!(r.last().map(|r| r.stack.as_str()), Some("main;buf"));
        let f = folded(&r);
        assert!(f.contains("main;buf 500 0\n"), "{f}");
        assert!(f.contains("main;cache 100 900\n"), "{f}");
        let svg = svg(&r, "t", false).expect("renders");
        assert!(String::from_utf8_lossy(&svg).contains("<svg"));
        let t = table(&r, 5, "a", "b");
        assert!(t.contains("+800 bytes"), "{t}");
    }
}
