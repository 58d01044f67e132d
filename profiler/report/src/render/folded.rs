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

/// Folded lines for `kind` with each stack prefixed by the tracing span path it was
/// allocated in (`span;span;root;…;leaf N`). Only the allocation kinds carry spans;
/// `None` for the others.
pub fn lines_with_spans(a: &Analysis, kind: FlameKind) -> Option<Vec<String>> {
    let by_count = match kind {
        FlameKind::AllocBytes => false,
        FlameKind::AllocCount => true,
        _ => return None,
    };
    let index: std::collections::HashMap<u32, &Site> =
        a.sites.iter().map(|s| (s.stack, s)).collect();
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for (path, stack, bytes, count) in &a.span_stacks {
        let v = if by_count { *count } else { *bytes };
        if v == 0 {
            continue;
        }
        let frames: Vec<String> = index.get(stack).map_or_else(Vec::new, |s| {
            s.frames
                .iter()
                .rev()
                .map(|f| clean_frame(&f.name))
                .collect()
        });
        let mut k = path.clone();
        for f in frames {
            k.push(';');
            k.push_str(&f);
        }
        *m.entry(k).or_default() += v;
    }
    Some(m.into_iter().map(|(k, v)| format!("{k} {v}")).collect())
}
