//! Span attribution: replays each thread's span enters and exits (`SpanLayer`) in
//! sequence order and charges every allocation to the thread's innermost span at that
//! moment, by span path (`request;db`).

use rustc_hash::FxHashMap as HashMap;

/// Allocation figures per span path.
#[derive(Debug, Clone, Default)]
pub struct SpanTracker {
    /// Span id to (parent id, name), latest definition.
    defs: HashMap<u64, (u64, String)>,
    /// Path text to path index.
    index: HashMap<String, usize>,
    /// Per path index: (path, allocated bytes, allocations).
    pub paths: Vec<(String, u64, u64)>,
    /// Per thread, the path indices of the spans it is in, innermost last.
    stacks: HashMap<u32, Vec<usize>>,
    /// Allocations made outside any span, bytes and count.
    pub outside: (u64, u64),
    /// True once any span was seen.
    pub seen: bool,
    /// Per (path index, stack id): allocated bytes and allocations (path index
    /// `usize::MAX` = outside any span).
    pub by_stack: HashMap<(usize, u32), (u64, u64)>,
}

impl SpanTracker {
    /// A span was defined.
    pub fn def(&mut self, id: u64, parent: u64, name: &str) {
        self.seen = true;
        // `;` separates the names of a path and a newline the lines of folded text.
        let name = name.replace([';', '\n', '\r'], " ");
        self.defs.insert(id, (parent, name));
    }

    fn path(&self, id: u64) -> String {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != 0 && names.len() < 64 {
            match self.defs.get(&cur) {
                Some((parent, name)) => {
                    names.push(name.as_str());
                    cur = *parent;
                }
                None => {
                    names.push("[unknown span]");
                    break;
                }
            }
        }
        names.reverse();
        names.join(";")
    }

    /// `thread` entered span `id`.
    pub fn enter(&mut self, thread: u32, id: u64) {
        self.seen = true;
        let p = self.path(id);
        let n = self.paths.len();
        let i = *self.index.entry(p.clone()).or_insert(n);
        if i == n {
            self.paths.push((p, 0, 0));
        }
        self.stacks.entry(thread).or_default().push(i);
    }

    /// `thread` left span `id` (the innermost one it is in).
    pub fn exit(&mut self, thread: u32, _id: u64) {
        if let Some(s) = self.stacks.get_mut(&thread) {
            s.pop();
        }
    }

    /// `thread` allocated `bytes` at stack id `stack`.
    pub fn alloc(&mut self, thread: u32, bytes: u64, stack: u32) {
        let at = self
            .stacks
            .get(&thread)
            .and_then(|s| s.last())
            .copied()
            .unwrap_or(usize::MAX);
        if self.seen {
            let e = self.by_stack.entry((at, stack)).or_default();
            e.0 += bytes;
            e.1 += 1;
        }
        match self.stacks.get(&thread).and_then(|s| s.last()) {
            Some(&i) => {
                self.paths[i].1 += bytes;
                self.paths[i].2 += 1;
            }
            None => {
                self.outside.0 += bytes;
                self.outside.1 += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_go_to_the_innermost_span_of_their_thread() {
        let mut t = SpanTracker::default();
        t.def(1, 0, "request");
        t.def(2, 1, "db");
        t.alloc(1, 5, 9);
        t.enter(1, 1);
        t.alloc(1, 100, 9);
        t.enter(1, 2);
        t.alloc(1, 10, 9);
        t.alloc(2, 7, 9); // another thread, outside any span
        t.exit(1, 2);
        t.alloc(1, 1, 8);
        t.exit(1, 1);
        t.alloc(1, 3, 9);
        let m: HashMap<&str, (u64, u64)> = t
            .paths
            .iter()
            .map(|(p, b, n)| (p.as_str(), (*b, *n)))
            .collect();
        assert_eq!(m["request"], (101, 2));
        assert_eq!(m["request;db"], (10, 1));
        assert_eq!(t.outside, (15, 3));
        let request = t.index["request"];
        assert_eq!(t.by_stack[&(request, 9)], (100, 1));
        assert_eq!(t.by_stack[&(request, 8)], (1, 1));
        assert_eq!(t.by_stack[&(usize::MAX, 9)], (15, 3));
    }
}
