//! `leak`: four ways a Rust program leaks heap memory, each in its own function.
//!
//! A leak is a heap block that is never freed: from the allocator's point of view it is
//! still allocated when the process exits. Safe Rust can leak, on purpose or not:
//!
//! 1. [`leak_box_leak`]: `Box::leak` turns a box into a `&'static mut` — the block is
//!    deliberately never freed (fine for data that lives as long as the program).
//! 2. [`leak_mem_forget`]: `std::mem::forget` skips a value's destructor, so a `Vec`'s buffer
//!    is never given back.
//! 3. [`leak_rc_cycle`]: two `Rc` nodes pointing at each other keep each other's strong count
//!    above zero after the last outside handle is dropped — reference counting cannot free
//!    a cycle (`Weak` for back-edges is the fix).
//! 4. [`leak_unbounded_cache`]: a global cache that only grows. Nothing is "lost" (the data is
//!    still reachable), but it is never freed either; this is the most common leak in
//!    long-running services.
//!
//! The program also does some honest work that allocates and frees ([`honest_work`]), so
//! the leaks are not the only thing on the heap.
//!
//! Run it under the profiler: `stackheap run -- target/release/leak`, then `stackheap leaks`.
//! The last line of stdout is `expected: ...` with the exact bytes and blocks each leak
//! function left behind; the profiler's per-stack leak report should find the same figures
//! under the same function names.
//!
//! What the `expected:` line does *not* count: allocations std makes on its own. The runtime
//! keeps a few small blocks for the main thread that are never freed (a profiler rightly
//! reports them, under std's frames, not ours), and the first `println!` allocates stdout's
//! 1024-byte `LineWriter` buffer, which lives until std's cleanup after `main` returns (so
//! whether it is "leaked" depends on when the profiler takes its exit snapshot). Argument
//! parsing allocates too, and frees everything before the leak functions run.

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::mem::size_of;
use std::rc::Rc;
use std::sync::Mutex;

use stackheap_demos::{Args, Expected, Flag};

const PROGRAM: &str = "leak";
const ABOUT: &str =
    "leaks heap memory four ways: Box::leak, mem::forget, an Rc cycle, an unbounded cache";
const FLAGS: &[Flag] = &[
    Flag {
        name: "count",
        default: 8,
        help: "leaks of each kind (boxes, forgotten Vecs, Rc cycles, cache entries)",
    },
    Flag {
        name: "size",
        default: 4096,
        help: "bytes of each leaked buffer (Box::leak, mem::forget, cache entries)",
    },
    Flag {
        name: "work",
        default: 1000,
        help: "rounds of non-leaking work (allocate and free)",
    },
];

/// What one leak function left on the heap: bytes and blocks still allocated at exit.
#[derive(Debug, Clone, Copy, Default)]
struct Leaked {
    bytes: u64,
    blocks: u64,
}

/// 1. `Box::leak`: `n` boxed byte slices of exactly `size` bytes each.
///
/// `vec![0u8; size]` asks the allocator for exactly `size` bytes (capacity == length), and
/// `into_boxed_slice` keeps that block because there is no spare capacity to shrink away.
/// So each iteration is exactly one block of `size` bytes.
#[inline(never)]
fn leak_box_leak(n: usize, size: usize) -> Leaked {
    let mut leaked = Leaked::default();
    for i in 0..n {
        let boxed: Box<[u8]> = vec![0u8; size].into_boxed_slice();
        let forever: &'static mut [u8] = Box::leak(boxed);
        forever[0] = i as u8; // it is ours forever, and usable
        black_box(&forever);
        leaked.bytes += forever.len() as u64;
        leaked.blocks += 1;
    }
    leaked
}

/// 2. `mem::forget`: `n` vectors whose destructor never runs.
///
/// The leaked block is the vector's buffer: `capacity * size_of::<u8>()` bytes, and
/// `vec![x; size]` allocates exactly `size` of capacity.
#[inline(never)]
fn leak_mem_forget(n: usize, size: usize) -> Leaked {
    let mut leaked = Leaked::default();
    for i in 0..n {
        let v: Vec<u8> = vec![i as u8 | 1; size];
        let v = black_box(v);
        leaked.bytes += (v.capacity() * size_of::<u8>()) as u64;
        leaked.blocks += 1;
        std::mem::forget(v); // the destructor that would free the buffer never runs
    }
    leaked
}

/// A node of a linked structure that can (wrongly) point back at its neighbour.
struct Node {
    next: RefCell<Option<Rc<Node>>>,
    _label: [u8; 40],
}

/// Mirror of std's private `RcInner<T>` (called `RcBox` in older releases): `Rc::new(value)`
/// allocates ONE block holding the strong count, the weak count and the value, `#[repr(C)]`
/// in that order. This struct has the same fields with the same representation, so its size
/// is the size of the block `Rc::new` asks for.
#[repr(C)]
struct RcInnerMirror<T> {
    _strong: Cell<usize>,
    _weak: Cell<usize>,
    _value: T,
}

/// Bytes of the heap block behind one `Rc<Node>`, computed two ways that must agree:
/// the `Layout` arithmetic std itself uses (`Layout` of the two counters, `extend`ed by the
/// value's layout, padded to alignment) and the size of the mirror struct.
fn rc_node_block_bytes() -> usize {
    let counters = Layout::new::<[Cell<usize>; 2]>();
    let (layout, _offset) = counters
        .extend(Layout::new::<Node>())
        .expect("layout of an Rc block fits");
    let by_layout = layout.pad_to_align().size();
    let by_mirror = size_of::<RcInnerMirror<Node>>();
    assert_eq!(
        by_layout, by_mirror,
        "two ways to size an Rc block disagree"
    );
    by_layout
}

/// 3. `Rc` cycles: `n` pairs `a -> b -> a`.
///
/// After both local handles are dropped each node's strong count is still 1 (held by the
/// other), so neither is ever freed: 2 blocks per cycle, each [`rc_node_block_bytes`] big.
#[inline(never)]
fn leak_rc_cycle(n: usize) -> Leaked {
    let node_bytes = rc_node_block_bytes() as u64;
    let mut leaked = Leaked::default();
    for i in 0..n {
        let a = Rc::new(Node {
            next: RefCell::new(None),
            _label: [i as u8; 40],
        });
        let b = Rc::new(Node {
            next: RefCell::new(Some(Rc::clone(&a))),
            _label: [!(i as u8); 40],
        });
        *a.next.borrow_mut() = Some(Rc::clone(&b)); // closes the cycle: a -> b -> a
        black_box((&a, &b));
        drop(a); // strong count of a: 2 -> 1 (b still holds it)
        drop(b); // strong count of b: 2 -> 1 (a still holds it)
        leaked.bytes += 2 * node_bytes;
        leaked.blocks += 2;
    }
    leaked
}

/// The unbounded cache: a global that only ever grows. A `static` is never dropped, so its
/// heap blocks are alive at exit.
static CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// 4. An unbounded cache: `n` entries of `size` bytes pushed into [`CACHE`], never evicted.
///
/// Live at exit: the `n` entry buffers (`size` bytes each), plus the cache's own buffer of
/// `Vec<u8>` headers. That outer buffer is reallocated as it grows (4, 8, 16, ... slots);
/// the old buffers are freed by `realloc`, and only its final one is live:
/// `capacity * size_of::<Vec<u8>>()` bytes, one block. Its growth happens in this function,
/// so it is counted here.
#[inline(never)]
fn leak_unbounded_cache(n: usize, size: usize) -> Leaked {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let mut leaked = Leaked::default();
    for i in 0..n {
        let entry: Vec<u8> = vec![(i as u8).wrapping_add(7); size];
        leaked.bytes += (entry.capacity() * size_of::<u8>()) as u64;
        leaked.blocks += 1;
        cache.push(entry); // may realloc the cache's own buffer
    }
    if cache.capacity() > 0 {
        leaked.bytes += (cache.capacity() * size_of::<Vec<u8>>()) as u64;
        leaked.blocks += 1;
    }
    leaked
}

/// Honest work: allocates and frees strings, vectors and a hash map. Nothing survives.
#[inline(never)]
fn honest_work(rounds: usize) -> u64 {
    let mut checksum = 0u64;
    for r in 0..rounds {
        let words: Vec<String> = (0..16).map(|i| "word".repeat(1 + (r + i) % 8)).collect();
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for w in &words {
            *counts.entry(w.len()).or_default() += 1;
        }
        let mut lens: Vec<usize> = counts.into_keys().collect();
        lens.sort_unstable();
        checksum = checksum.wrapping_add(black_box(lens).iter().sum::<usize>() as u64);
    } // words, counts and lens are freed here, every round
    checksum
}

fn main() {
    let args = Args::parse_or_exit(PROGRAM, ABOUT, FLAGS);
    args.require_range(PROGRAM, "count", 0, 1 << 20);
    args.require_range(PROGRAM, "size", 1, 1 << 30);
    args.require_range(PROGRAM, "work", 0, 1 << 30);
    let count = args.get_usize("count");
    let size = args.get_usize("size");
    let work = args.get_usize("work");
    drop(args);

    // Interleave honest work with the leaks so the heap has both.
    let mut checksum = honest_work(work / 2);
    let box_leak = leak_box_leak(count, size);
    let forget = leak_mem_forget(count, size);
    checksum = checksum.wrapping_add(honest_work(work - work / 2));
    let rc_cycle = leak_rc_cycle(count);
    let cache = leak_unbounded_cache(count, size);

    let parts = [
        ("leak_box_leak", box_leak),
        ("leak_mem_forget", forget),
        ("leak_rc_cycle", rc_cycle),
        ("leak_unbounded_cache", cache),
    ];
    let total = parts.iter().fold(Leaked::default(), |t, (_, l)| Leaked {
        bytes: t.bytes + l.bytes,
        blocks: t.blocks + l.blocks,
    });

    // What the program knows about, one line per leak function (human-readable)...
    println!("honest work checksum: {checksum} (all freed)");
    for (name, l) in &parts {
        println!(
            "{name:<22} leaked {:>9} bytes in {:>5} blocks",
            l.bytes, l.blocks
        );
    }
    println!(
        "rc node block: {} bytes (2 counters + Node of {} bytes)",
        rc_node_block_bytes(),
        size_of::<Node>()
    );
    println!(
        "not counted: std's own blocks (main-thread bookkeeping, live at exit) and stdout's \
         1024-byte buffer (allocated by the first println!, freed by std's cleanup after main)"
    );

    // ...and the one parseable line.
    let mut expected = Expected::new();
    expected
        .add("leaked_bytes", total.bytes)
        .add("leaked_blocks", total.blocks);
    for (name, l) in &parts {
        expected
            .add(&format!("{name}_bytes"), l.bytes)
            .add(&format!("{name}_blocks"), l.blocks);
    }
    expected.add("rc_node_bytes", rc_node_block_bytes() as u64);
    println!("{}", expected.line());
}
