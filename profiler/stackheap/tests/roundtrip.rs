//! One process, one global allocator: profile a known workload from code and read the
//! trace back.

use stackheap::format::reader::TraceReader;
use stackheap::format::Event;

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

/// One session at a time per process: the tests take turns.
static SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[inline(never)]
fn workload() -> Vec<Box<[u8]>> {
    let mut keep = Vec::new();
    for i in 0..1000usize {
        let b = vec![1u8; 16 + i].into_boxed_slice();
        if i % 10 == 0 {
            keep.push(b);
        }
    }
    keep
}

/// Profile `workload()` from code into a fresh trace; returns its path.
fn profile_workload(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stackheap-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.trace");
    let _ = std::fs::remove_file(&path);
    let p = stackheap::Profiler::builder()
        .trace_path(&path)
        .start()
        .unwrap();
    let keep = workload();
    let path = p.stop().unwrap();
    drop(keep);
    path
}

#[test]
fn events_match_counters() {
    let _turn = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let path = profile_workload("rt");

    let mut r = TraceReader::open(&path).unwrap();
    let (mut allocs, mut frees, mut reallocs, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut trailer = None;
    let mut last_seq = None;
    let mut stacks = 0;
    while let Some(e) = r.next_event().unwrap() {
        match e {
            Event::Alloc {
                seq, size, stack, ..
            } => {
                allocs += 1;
                bytes += size;
                assert!(stack != 0);
                assert!(last_seq < Some(seq));
                last_seq = Some(seq);
            }
            Event::Free { seq, .. } => {
                frees += 1;
                assert!(last_seq < Some(seq));
                last_seq = Some(seq);
            }
            Event::Realloc { seq, new_size, .. } => {
                reallocs += 1;
                bytes += new_size;
                assert!(last_seq < Some(seq));
                last_seq = Some(seq);
            }
            Event::Stack { .. } => stacks += 1,
            Event::Trailer { counters, lost } => trailer = Some((counters, lost)),
            _ => {}
        }
    }
    let (c, lost) = trailer.expect("trailer");
    assert_eq!(lost, 0);
    assert_eq!(r.status().truncated_at, None);
    assert_eq!(c.total_allocs, allocs + reallocs);
    assert_eq!(c.total_frees, frees + reallocs);
    assert_eq!(c.total_bytes, bytes);
    assert!(allocs >= 1000, "allocs {allocs}");
    assert!(stacks > 0);
    eprintln!("{c:?} stacks={stacks}");
}

#[test]
fn second_start_is_refused() {
    let _turn = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("stackheap-rt3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.trace"), dir.join("b.trace"));
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    let p = stackheap::Profiler::builder()
        .trace_path(&a)
        .start()
        .unwrap();
    assert!(matches!(
        stackheap::Profiler::builder().trace_path(&b).start(),
        Err(stackheap::Error::AlreadyRunning)
    ));
    p.stop().unwrap();
    // An existing file is never overwritten.
    let e = stackheap::Profiler::builder()
        .trace_path(&a)
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("a.trace"), "{e}");
}

#[test]
fn stacks_name_the_caller() {
    let _turn = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let path = profile_workload("rt2");
    assert_eq!(
        stackheap::Unwinder::FramePointers,
        stackheap::stack::unwind::get(),
        "this workspace builds with frame pointers"
    );
    let r = TraceReader::open(&path).unwrap();
    let mut found = false;
    for e in r {
        if let Event::Stack { frames, .. } = e.unwrap() {
            let mut names = Vec::new();
            for f in &frames {
                backtrace::resolve((*f as usize - 1) as *mut std::ffi::c_void, |s| {
                    names.push(s.name().map(|n| n.to_string()).unwrap_or_default());
                });
            }
            if names.iter().any(|n| n.contains("roundtrip::workload")) {
                found = true;
                eprintln!("{names:#?}");
                break;
            }
        }
    }
    assert!(found, "some stack goes through workload()");
}
