//! Folded stacks, the text between aggregation and flamegraph: one line per stack,
//! `root;caller;callee N`, frames separated by `;`, the count last.

use std::collections::BTreeMap;

use super::FlameKind;
use crate::{Analysis, Site};

/// A frame name made safe for a folded line: `;` separates frames and a newline
/// separates lines, so neither may appear inside a name.
pub fn clean_frame(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// The figure of `kind` for one site.
pub fn value(site: &Site, kind: FlameKind) -> u64 {
    match kind {
        FlameKind::AllocBytes => site.alloc_bytes,
        FlameKind::AllocCount => site.alloc_count,
        FlameKind::Peak => site.peak_bytes,
        FlameKind::Leaked => site.leaked_bytes,
    }
}

/// Folded lines for `kind`, sorted, one per distinct stack (sites whose trimmed
/// stacks are equal are merged), zero counts left out.
pub fn lines(a: &Analysis, kind: FlameKind) -> Vec<String> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for s in &a.sites {
        let v = value(s, kind);
        if v == 0 {
            continue;
        }
        let stack: Vec<String> = s
            .frames
            .iter()
            .rev()
            .map(|f| clean_frame(&f.name))
            .collect();
        *m.entry(stack.join(";")).or_default() += v;
    }
    m.into_iter().map(|(k, v)| format!("{k} {v}")).collect()
}
