//! Shared helpers of the demo programs.
//!
//! * [`Args`]: a tiny std-only argument parser (`--flag value`, `--flag=value` or positional
//!   values in a fixed order, `--help`), so the demos link nothing but `stackheap`.
//! * [`churn`]: the churn workload, shared by the `churn` demo (under stackheap) and the
//!   `churn_dhat` benchmark twin (under `dhat::Alloc`), so both run the very same loop.
//!
//! Every demo ends by printing one line that starts with `expected:` and holds `key=value`
//! pairs computed from what the program really allocated; [`Expected`] builds that line.
//! Tests parse it with [`parse_expected`].
//!
//! Nothing in this library installs a global allocator: each binary does that itself (the
//! demos install `stackheap::StackHeap`, `churn_dhat` installs `dhat::Alloc`).

use std::fmt::Write as _;
use std::process;

/// One flag a demo accepts: its name (without `--`), its default value and one line of help.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Name without the leading `--`, e.g. `"iters"`.
    pub name: &'static str,
    /// Default value.
    pub default: u64,
    /// One-line description for `--help`.
    pub help: &'static str,
}

/// Parsed numeric arguments of a demo, in the order of its [`Flag`] list.
#[derive(Debug, Clone)]
pub struct Args {
    values: Vec<(&'static str, u64)>,
}

impl Args {
    /// Parses `std::env::args()` against `flags`, or prints usage and exits.
    ///
    /// Accepted forms: `--name value`, `--name=value`, and bare positional values, which fill
    /// the flags in the order given. Numbers accept `_` separators and the suffixes `k`, `m`,
    /// `g` (powers of 1024 — `--size 4k` is 4096). `-h`/`--help` prints the usage to stdout
    /// and exits 0; any bad argument prints one line to stderr and exits 2.
    pub fn parse_or_exit(program: &str, about: &str, flags: &[Flag]) -> Args {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        match Self::parse_from(&argv, flags) {
            Ok(Some(args)) => args,
            Ok(None) => {
                print!("{}", usage(program, about, flags));
                process::exit(0);
            }
            Err(msg) => {
                eprintln!("{program}: error: {msg} (try `{program} --help`)");
                process::exit(2);
            }
        }
    }

    /// Parses `argv` (without the program name). `Ok(None)` means help was asked for.
    pub fn parse_from(argv: &[String], flags: &[Flag]) -> Result<Option<Args>, String> {
        let mut values: Vec<(&'static str, Option<u64>)> =
            flags.iter().map(|f| (f.name, None)).collect();
        let mut positional = 0usize;
        let mut i = 0usize;
        while i < argv.len() {
            let arg = &argv[i];
            i += 1;
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            if let Some(rest) = arg.strip_prefix("--") {
                let (name, inline) = match rest.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (rest, None),
                };
                let Some(slot) = values.iter_mut().find(|(n, _)| *n == name) else {
                    return Err(format!("unknown flag `--{name}`"));
                };
                let raw = match inline {
                    Some(v) => v,
                    None => {
                        let Some(v) = argv.get(i) else {
                            return Err(format!("flag `--{name}` needs a value"));
                        };
                        i += 1;
                        v.clone()
                    }
                };
                if slot.1.is_some() {
                    return Err(format!("flag `--{name}` given twice"));
                }
                slot.1 = Some(parse_number(&raw).map_err(|e| format!("--{name}: {e}"))?);
            } else if arg.starts_with('-') && arg.len() > 1 {
                return Err(format!("unknown option `{arg}`"));
            } else {
                // Positional: fill the next flag that has not been set.
                while positional < values.len() && values[positional].1.is_some() {
                    positional += 1;
                }
                let Some(slot) = values.get_mut(positional) else {
                    return Err(format!("unexpected argument `{arg}`"));
                };
                slot.1 = Some(parse_number(arg).map_err(|e| format!("--{}: {e}", slot.0))?);
                positional += 1;
            }
        }
        let values = values
            .into_iter()
            .zip(flags)
            .map(|((name, v), f)| (name, v.unwrap_or(f.default)))
            .collect();
        Ok(Some(Args { values }))
    }

    /// The value of flag `name` (panics if the demo did not declare it: a programming error).
    pub fn get(&self, name: &str) -> u64 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("flag `--{name}` was not declared"))
    }

    /// The value of flag `name` as a `usize`.
    pub fn get_usize(&self, name: &str) -> usize {
        usize::try_from(self.get(name)).unwrap_or(usize::MAX)
    }

    /// Exits with code 2 and a one-line message unless `lo <= value(name) <= hi`.
    pub fn require_range(&self, program: &str, name: &str, lo: u64, hi: u64) {
        let v = self.get(name);
        if v < lo || v > hi {
            eprintln!("{program}: error: --{name} must be between {lo} and {hi}, got {v}");
            process::exit(2);
        }
    }
}

/// The `--help` text of a demo.
pub fn usage(program: &str, about: &str, flags: &[Flag]) -> String {
    let mut s = String::new();
    let _ = write!(s, "{program}: {about}\n\nusage: {program}");
    for f in flags {
        let _ = write!(s, " [--{} N]", f.name);
    }
    s.push_str("\n       (values may also be given positionally, in this order)\n\n");
    for f in flags {
        let _ = writeln!(s, "  --{:<14} {} (default {})", f.name, f.help, f.default);
    }
    s
}

/// Parses a non-negative integer with optional `_` separators and a `k`/`m`/`g` suffix
/// (powers of 1024).
pub fn parse_number(raw: &str) -> Result<u64, String> {
    let cleaned: String = raw.chars().filter(|&c| c != '_').collect();
    let lower = cleaned.to_ascii_lowercase();
    let (digits, mult) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1u64 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1u64 << 30),
        _ => (lower.as_str(), 1u64),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{raw}` is not a non-negative integer"));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{raw}` is too large"))
}

/// Builder of the final `expected: k=v k=v ...` line.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pairs: Vec<(String, u64)>,
}

impl Expected {
    /// An empty line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value`.
    pub fn add(&mut self, key: &str, value: u64) -> &mut Self {
        self.pairs.push((key.to_string(), value));
        self
    }

    /// The line, without a trailing newline.
    pub fn line(&self) -> String {
        let mut s = String::from("expected:");
        for (k, v) in &self.pairs {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// Parses the `expected:` line of a demo's stdout into `(key, value)` pairs, in order.
/// Returns `None` if no line starts with `expected:` or a pair does not parse.
pub fn parse_expected(stdout: &str) -> Option<Vec<(String, u64)>> {
    let line = stdout.lines().find(|l| l.starts_with("expected:"))?;
    line["expected:".len()..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The deterministic churn size sequence: the i-th allocation of the churn loop asks for
/// `churn_size(i, min, max)` bytes, cycling `min, min+1, ..., max`.
#[inline]
pub fn churn_size(i: u64, min: u64, max: u64) -> usize {
    (min + i % (max - min + 1)) as usize
}

/// The churn workload: what one run did, computed arithmetically (not measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnTotals {
    /// Allocations made by the churn loops (all threads).
    pub allocs: u64,
    /// Bytes requested by those allocations, summed.
    pub bytes: u64,
}

/// Smallest allocation of the churn loop.
pub const CHURN_MIN_SIZE: u64 = 16;

/// Expected totals of [`churn`] with these arguments: `threads * iters` allocations, and the
/// sum of the cycling sizes `16..=max`, computed in closed form.
pub fn churn_totals(iters: u64, threads: u64, max: u64) -> ChurnTotals {
    let span = max - CHURN_MIN_SIZE + 1;
    let full = iters / span; // complete cycles 16..=max
    let rest = iters % span; // a partial cycle 16..16+rest-1
    let cycle_sum = (CHURN_MIN_SIZE + max) * span / 2;
    let rest_sum = rest * CHURN_MIN_SIZE + rest * rest.saturating_sub(1) / 2;
    ChurnTotals {
        allocs: iters * threads,
        bytes: (full * cycle_sum + rest_sum) * threads,
    }
}

/// One thread's churn loop: `iters` times, allocate a `Vec<u8>` of a cycling size, touch it,
/// drop it. Every iteration is exactly one allocation and one free (`Vec::with_capacity(n)`
/// of bytes asks the allocator for exactly `n` bytes; `push` stays within capacity).
///
/// `black_box` hands the buffer to an opaque function, so the optimizer cannot prove the
/// allocation unused and delete the malloc/free pair.
#[inline(never)]
pub fn churn_thread(iters: u64, max: u64) -> u64 {
    let mut checksum = 0u64;
    for i in 0..iters {
        let n = churn_size(i, CHURN_MIN_SIZE, max);
        let mut v: Vec<u8> = Vec::with_capacity(n);
        v.push(i as u8);
        let v = std::hint::black_box(v);
        checksum = checksum.wrapping_add(u64::from(v[0]));
        drop(v);
    }
    checksum
}

/// Runs [`churn_thread`] on `threads` threads (the first on the calling thread) and returns a
/// checksum. Spawning a thread allocates too (its handle, name and stack bookkeeping); those
/// allocations are *not* part of [`churn_totals`].
pub fn churn(iters: u64, threads: u64, max: u64) -> u64 {
    if threads <= 1 {
        return churn_thread(iters, max);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|_| s.spawn(move || churn_thread(iters, max)))
            .collect();
        let mine = churn_thread(iters, max);
        handles
            .into_iter()
            .map(|h| h.join().expect("churn thread panicked"))
            .fold(mine, u64::wrapping_add)
    })
}

/// The flags of the churn workload, shared by `churn` and `churn_dhat`.
pub const CHURN_FLAGS: &[Flag] = &[
    Flag {
        name: "iters",
        default: 40_000_000,
        help: "allocate+free pairs per thread",
    },
    Flag {
        name: "threads",
        default: 1,
        help: "threads running the loop",
    },
    Flag {
        name: "size",
        default: 256,
        help: "largest allocation in bytes; sizes cycle 16..=size",
    },
];

/// Parses and validates the churn flags, returning `(iters, threads, size)`.
pub fn churn_args(program: &str, about: &str) -> (u64, u64, u64) {
    let args = Args::parse_or_exit(program, about, CHURN_FLAGS);
    args.require_range(program, "iters", 0, 1 << 40);
    args.require_range(program, "threads", 1, 1024);
    args.require_range(program, "size", CHURN_MIN_SIZE, 1 << 30);
    (args.get("iters"), args.get("threads"), args.get("size"))
}

/// The `expected:` line of the churn workload.
pub fn churn_expected(iters: u64, threads: u64, size: u64) -> String {
    let t = churn_totals(iters, threads, size);
    Expected::new()
        .add("total_allocs", t.allocs)
        .add("total_frees", t.allocs)
        .add("total_bytes", t.bytes)
        .add("leaked_bytes", 0)
        .add("leaked_blocks", 0)
        .add("threads", threads)
        .add("iters", iters)
        .add("min_size", CHURN_MIN_SIZE)
        .add("max_size", size)
        .line()
}

/// The flags of the tree workload, shared by `tree`, `tree_system` and `tree_dhat`.
pub const TREE_FLAGS: &[Flag] = &[
    Flag {
        name: "items",
        default: 1_750_000,
        help: "keys inserted into the BTreeMap",
    },
    Flag {
        name: "rounds",
        default: 1,
        help: "times the whole map is built and dropped",
    },
];

/// Parses the tree flags, returning `(items, rounds)`.
pub fn tree_args(program: &str, about: &str) -> (u64, u64) {
    let args = Args::parse_or_exit(program, about, TREE_FLAGS);
    args.require_range(program, "items", 1, 1 << 32);
    args.require_range(program, "rounds", 1, 1 << 20);
    (args.get("items"), args.get("rounds"))
}

/// The tree workload (a benchmark of `scripts/bench.sh`): `rounds` times, build a
/// `BTreeMap<String, String>` of `items` keys in a scrambled order (each key and value a
/// formatted `String`: two allocations per item, plus the map's nodes), look every key
/// up, remove every third, then drop the map. About 2.1 allocations per item (3.7 M at
/// the default size); the exact
/// count depends on std's B-tree, so the `expected:` line gives the items, not the
/// allocations (the bench takes those from the profiler's trace).
#[inline(never)]
pub fn tree(items: u64, rounds: u64) -> u64 {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut checksum = 0u64;
    for _ in 0..rounds {
        let mut map = BTreeMap::new();
        // A full-period permutation of 0..items (an odd multiplier modulo a power of two,
        // skipping values out of range) so inserts land all over the tree.
        let span = items.next_power_of_two();
        let mut x = 0u64;
        let mut inserted = 0;
        while inserted < items {
            x = (x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1)) & (span - 1);
            if x >= items {
                continue;
            }
            let mut key = String::with_capacity(24);
            let _ = write!(key, "key-{x:012}");
            let mut value = String::with_capacity(16);
            let _ = write!(value, "v{}", x * 7);
            map.insert(key, value);
            inserted += 1;
        }
        let mut probe = String::with_capacity(24);
        for i in 0..items {
            probe.clear();
            let _ = write!(probe, "key-{i:012}");
            if let Some(v) = map.get(probe.as_str()) {
                checksum = checksum.wrapping_add(v.len() as u64);
            }
        }
        for i in (0..items).step_by(3) {
            probe.clear();
            let _ = write!(probe, "key-{i:012}");
            map.remove(probe.as_str());
        }
        checksum = checksum.wrapping_add(std::hint::black_box(&map).len() as u64);
    }
    checksum
}

/// The `expected:` line of the tree workload.
pub fn tree_expected(items: u64, rounds: u64) -> String {
    Expected::new()
        .add("items", items)
        .add("rounds", rounds)
        .add("leaked_bytes", 0)
        .line()
}

/// The flags of the deep-stack workload, shared by `deepstack`, `deepstack_system` and
/// `deepstack_dhat`.
pub const DEEPSTACK_FLAGS: &[Flag] = &[
    Flag {
        name: "iters",
        default: 200_000,
        help: "descents of the recursion",
    },
    Flag {
        name: "depth",
        default: 128,
        help: "frames of recursion at the bottom of which it allocates",
    },
    Flag {
        name: "allocs",
        default: 16,
        help: "alloc+free pairs at the bottom of each descent",
    },
];

/// Parses the deep-stack flags, returning `(iters, depth, allocs)`.
pub fn deepstack_args(program: &str, about: &str) -> (u64, u64, u64) {
    let args = Args::parse_or_exit(program, about, DEEPSTACK_FLAGS);
    args.require_range(program, "iters", 0, 1 << 40);
    args.require_range(program, "depth", 1, 10_000);
    args.require_range(program, "allocs", 1, 1 << 20);
    (args.get("iters"), args.get("depth"), args.get("allocs"))
}

/// One level of the deep-stack recursion. Two functions alternate by the bits of the
/// iteration number, so the stacks at the bottom differ (up to 256 distinct ones) and a
/// profiler cannot get away with one cached stack.
#[inline(never)]
fn deep_a(level: u64, i: u64, allocs: u64) -> u64 {
    let r = if level == 0 {
        deep_bottom(i, allocs)
    } else if (i >> (level % 8)) & 1 == 0 {
        deep_a(level - 1, i, allocs)
    } else {
        deep_b(level - 1, i, allocs)
    };
    // Work after the call: no tail call, every level keeps its frame.
    std::hint::black_box(r).wrapping_add(level)
}

#[inline(never)]
fn deep_b(level: u64, i: u64, allocs: u64) -> u64 {
    let r = if level == 0 {
        deep_bottom(i, allocs)
    } else if (i >> (level % 8)) & 1 == 0 {
        deep_a(level - 1, i, allocs)
    } else {
        deep_b(level - 1, i, allocs)
    };
    std::hint::black_box(r).wrapping_mul(3)
}

#[inline(never)]
fn deep_bottom(i: u64, allocs: u64) -> u64 {
    let mut sum = 0u64;
    for k in 0..allocs {
        let n = churn_size(i.wrapping_add(k), CHURN_MIN_SIZE, 256);
        let mut v: Vec<u8> = Vec::with_capacity(n);
        v.push(k as u8);
        let v = std::hint::black_box(v);
        sum = sum.wrapping_add(u64::from(v[0]));
    }
    sum
}

/// The deep-stack workload: `iters` times, recurse `depth` frames (`deep_a`/`deep_b`)
/// and make `allocs` alloc+free pairs (sizes cycling 16..=256) at the bottom. The stacks
/// of those allocations are `depth` + a few frames deep.
pub fn deepstack(iters: u64, depth: u64, allocs: u64) -> u64 {
    (0..iters).fold(0u64, |acc, i| acc.wrapping_add(deep_a(depth, i, allocs)))
}

/// The `expected:` line of the deep-stack workload (the recursion's allocations only).
pub fn deepstack_expected(iters: u64, depth: u64, allocs: u64) -> String {
    Expected::new()
        .add("total_allocs", iters * allocs)
        .add("total_frees", iters * allocs)
        .add("leaked_bytes", 0)
        .add("iters", iters)
        .add("depth", depth)
        .add("allocs", allocs)
        .line()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag {
            name: "a",
            default: 1,
            help: "",
        },
        Flag {
            name: "b",
            default: 2,
            help: "",
        },
    ];

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_flags_positionals_and_defaults() {
        let a = Args::parse_from(&argv(&[]), FLAGS).unwrap().unwrap();
        assert_eq!((a.get("a"), a.get("b")), (1, 2));
        let a = Args::parse_from(&argv(&["7", "--b=4k"]), FLAGS)
            .unwrap()
            .unwrap();
        assert_eq!((a.get("a"), a.get("b")), (7, 4096));
        let a = Args::parse_from(&argv(&["--a", "3", "9"]), FLAGS)
            .unwrap()
            .unwrap();
        assert_eq!((a.get("a"), a.get("b")), (3, 9));
        assert!(Args::parse_from(&argv(&["--help"]), FLAGS)
            .unwrap()
            .is_none());
        assert!(Args::parse_from(&argv(&["--c", "1"]), FLAGS).is_err());
        assert!(Args::parse_from(&argv(&["x"]), FLAGS).is_err());
        assert!(Args::parse_from(&argv(&["1", "2", "3"]), FLAGS).is_err());
        assert!(Args::parse_from(&argv(&["--a"]), FLAGS).is_err());
        assert!(Args::parse_from(&argv(&["-1"]), FLAGS).is_err());
    }

    #[test]
    fn churn_totals_match_a_loop() {
        for &(iters, threads, max) in &[(0, 1, 16), (1, 1, 16), (1000, 3, 100), (241, 2, 256)] {
            let bytes: u64 = (0..iters)
                .map(|i| churn_size(i, CHURN_MIN_SIZE, max) as u64)
                .sum();
            let t = churn_totals(iters, threads, max);
            assert_eq!(t.allocs, iters * threads);
            assert_eq!(t.bytes, bytes * threads);
        }
    }

    #[test]
    fn expected_line_round_trips() {
        let line = Expected::new().add("x", 1).add("y_bytes", 20).line();
        assert_eq!(line, "expected: x=1 y_bytes=20");
        let parsed = parse_expected(&format!("hello\n{line}\n")).unwrap();
        assert_eq!(parsed, vec![("x".into(), 1), ("y_bytes".into(), 20)]);
    }
}
