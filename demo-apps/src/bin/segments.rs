//! `segments`: where things live. Prints the address of a `const`, a `static`, a
//! `static mut`, a local, a `Box` and a big `Vec`, and which segment of the process
//! each is in (from /proc/self/maps): text/rodata, data, bss, stack, heap (brk) or an
//! mmapped block. Then `stackheap report`'s `segments` section shows the sizes.
//!
//! Usage: `segments [--big BYTES]` (default 4 MiB: above glibc's mmap threshold).

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::hint::black_box;

const ANSWER: [u8; 16] = *b"forty-two, const";
static GREETING: [u8; 16] = *b"a static, in .rd";
static mut COUNTER: [u64; 4] = [1, 2, 3, 4];
static mut ZEROED: [u64; 1024] = [0; 1024];

/// (start, end, perms, path) of every mapping.
fn maps() -> Vec<(usize, usize, String, String)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?.to_string();
            let path = f.nth(3).unwrap_or("").to_string();
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
                perms,
                path,
            ))
        })
        .collect()
}

fn segment(addr: usize, maps: &[(usize, usize, String, String)]) -> String {
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (i, (lo, hi, perms, path)) in maps.iter().enumerate() {
        if addr >= *lo && addr < *hi {
            return if *path == exe {
                match (perms.contains('x'), perms.contains('w')) {
                    (true, _) => "text (the executable's code)".into(),
                    (false, false) => "rodata (the executable's read-only data)".into(),
                    (false, true) => {
                        "data/bss (the executable's writable statics; a small bss shares the data's last page)".into()
                    }
                }
            } else if path == "[heap]" {
                "heap (brk)".into()
            } else if path == "[stack]" {
                "stack (main thread)".into()
            } else if path.is_empty() && i > 0 && maps[i - 1].3 == exe && maps[i - 1].1 == *lo {
                "bss (zero-initialised statics)".into()
            } else if path.is_empty() {
                "anonymous mapping (mmapped heap block, arena or thread stack)".into()
            } else {
                format!("mapping of {path}")
            };
        }
    }
    "unmapped".into()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let big = match (args.first().map(String::as_str), args.get(1)) {
        (Some("--big"), Some(n)) => stackheap_demos::parse_number(n).unwrap_or(4 << 20),
        _ => 4 << 20,
    } as usize;
    let local = black_box([7u8; 32]);
    let boxed = black_box(Box::new([9u8; 64]));
    let vec = black_box(vec![1u8; big]);
    let m = maps();
    let rows: [(&str, usize); 7] = [
        (
            "const ANSWER (inlined; its bytes live in rodata)",
            &ANSWER as *const _ as usize,
        ),
        ("static GREETING", &GREETING as *const _ as usize),
        ("static mut COUNTER", &raw const COUNTER as usize),
        ("static mut ZEROED", &raw const ZEROED as usize),
        ("local array", &local as *const _ as usize),
        ("Box<[u8; 64]>", &*boxed as *const _ as usize),
        ("Vec of --big bytes", vec.as_ptr() as usize),
    ];
    for (what, addr) in rows {
        println!("{what:<50} {addr:#014x}  {}", segment(addr, &m));
    }
    black_box((&local, &boxed, &vec));
}
