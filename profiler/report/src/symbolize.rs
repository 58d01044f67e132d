//! Offline symbolization: return addresses to function names, from the `Module`
//! records of the trace and the object files they name (DWARF line tables through
//! addr2line, the ELF symbol table when there is no debug info).
//!
//! Every frame is a return address (it points just after the call), so the address
//! looked up is `addr - bias - 1`. Inlined calls expand one address into several
//! frames, innermost first. Lookups are cached per module and per address.

use std::collections::HashMap;

use stackheap::format::Module;

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    /// Demangled function name without hash, or `module+0xoffset` / `0xaddr` when
    /// it could not be resolved.
    pub name: String,
    /// Source file, if known.
    pub file: Option<String>,
    /// Source line, if known.
    pub line: Option<u32>,
}

impl Frame {
    fn unresolved(name: String) -> Self {
        Frame {
            name,
            file: None,
            line: None,
        }
    }

    /// `name at file:line`, or just the name.
    pub fn display(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{} at {}:{}", self.name, f, l),
            (Some(f), None) => format!("{} at {}", self.name, f),
            _ => self.name.clone(),
        }
    }
}

/// Demangle a symbol (Rust legacy or v0; other names pass through) without the hash.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

struct LoadedModule {
    module: Module,
    /// File name, for `module+0xoffset`.
    short: String,
    loader: Option<addr2line::Loader>,
    tried: bool,
    /// The file on disk is not the one that ran (build id differs).
    stale: bool,
}

/// Resolves addresses against a fixed set of modules.
pub struct Symbolizer {
    modules: Vec<LoadedModule>,
    cache: HashMap<u64, Vec<Frame>>,
}

impl Symbolizer {
    /// A symbolizer for these modules; object files are opened on first use.
    pub fn new(modules: &[Module]) -> Self {
        Symbolizer {
            modules: modules
                .iter()
                .map(|m| LoadedModule {
                    module: m.clone(),
                    short: m.path.rsplit('/').next().unwrap_or("").to_string(),
                    loader: None,
                    tried: false,
                    stale: false,
                })
                .collect(),
            cache: HashMap::new(),
        }
    }

    /// The frames of one return address, innermost (most inlined) first; never empty.
    pub fn resolve(&mut self, addr: u64) -> Vec<Frame> {
        if let Some(v) = self.cache.get(&addr) {
            return v.clone();
        }
        let v = self.lookup(addr);
        self.cache.insert(addr, v.clone());
        v
    }

    fn lookup(&mut self, addr: u64) -> Vec<Frame> {
        let Some(idx) = self.modules.iter().position(|m| m.module.contains(addr)) else {
            return vec![Frame::unresolved(format!("{addr:#x}"))];
        };
        let lm = &mut self.modules[idx];
        if !lm.tried {
            // A module that cannot be opened is tried once; afterwards every address in
            // it prints as module+offset. So does a file that is no longer the one the
            // program ran (rebuilt since: another build id): its symbols would be wrong.
            lm.tried = true;
            lm.stale = !lm.module.build_id.is_empty()
                && file_build_id(&lm.module.path).is_some_and(|id| id != lm.module.build_id);
            if !lm.stale {
                lm.loader = addr2line::Loader::new(&lm.module.path).ok();
            }
        }
        let offset = addr.wrapping_sub(lm.module.bias);
        let short = &lm.short;
        let fallback = || vec![Frame::unresolved(format!("{short}+{offset:#x}"))];
        let Some(loader) = &lm.loader else {
            return fallback();
        };
        let probe = offset.wrapping_sub(1);
        let mut out = Vec::new();
        if let Ok(mut it) = loader.find_frames(probe) {
            while let Ok(Some(f)) = it.next() {
                let Some(func) = f.function.as_ref() else {
                    continue;
                };
                let Ok(raw) = func.raw_name() else { continue };
                let (file, line) = match &f.location {
                    Some(l) => (l.file.map(str::to_string), l.line),
                    None => (None, None),
                };
                out.push(Frame {
                    name: demangle(&raw),
                    file,
                    line,
                });
            }
        }
        if out.is_empty() {
            if let Some(sym) = loader.find_symbol(probe) {
                out.push(Frame::unresolved(demangle(sym)));
            }
        }
        if out.is_empty() {
            return fallback();
        }
        out
    }

    /// Modules whose file on disk has another build id than the one that ran (the
    /// binary was rebuilt after the trace was recorded); their frames stay unresolved.
    pub fn stale_modules(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|m| m.stale)
            .map(|m| m.module.path.clone())
            .collect()
    }

    /// Symbolize a whole stack (return addresses, innermost first), expand inlined
    /// frames and trim the profiler's, the allocator's and the runtime's own frames.
    pub fn stack(&mut self, addrs: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(addrs.len());
        for &a in addrs {
            frames.extend(self.resolve(a));
        }
        trim(frames)
    }
}

/// Frames of the allocator and the profiler itself, trimmed from the innermost end.
const INNER_PREFIXES: &[&str] = &[
    "stackheap::",
    "<stackheap::",
    "stackheap_preload::",
    // The preload library's frames when its symbols cannot be read.
    "libstackheap_preload.so+",
    "__rust_alloc",
    "__rustc::__rust_",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rust_dealloc",
    "__rdl_",
    "__rg_",
    "alloc::alloc::",
    "<alloc::alloc::Global",
    "std::alloc::",
    "core::alloc::",
];

/// libc allocation entry points: under LD_PRELOAD they are the profiler's shims.
const INNER_EXACT: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "reallocarray",
];

/// Runtime frames below `main` (and below a spawned thread's closure), trimmed from
/// the outermost end.
const OUTER_PREFIXES: &[&str] = &[
    "std::rt::",
    "__libc_start",
    "core::ops::function::",
    "<core::ops::function::",
    "std::sys::backtrace::__rust_begin_short_backtrace",
    "std::panicking::",
    "std::panic::catch_unwind",
    "__rust_try",
    "<core::panic::unwind_safe::AssertUnwindSafe",
    "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce",
    "<alloc::boxed::Box<F, A> as core::ops::function::FnOnce",
    "std::sys::pal::",
    "std::sys::thread::",
    "std::thread::Builder::spawn_unchecked",
    "std::thread::lifecycle::",
];

/// Runtime frames matched by their whole name.
const OUTER_EXACT: &[&str] = &["_start", "start_thread", "clone", "clone3", "__clone"];

fn is_inner(name: &str) -> bool {
    INNER_EXACT.contains(&name) || INNER_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn is_outer(name: &str) -> bool {
    OUTER_EXACT.contains(&name) || OUTER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Drop the profiler's and allocator's frames from the innermost end and the runtime's
/// from the outermost end (keeping `main`). A stack made only of such frames is kept
/// whole, so no site ever has an empty stack.
pub fn trim(frames: Vec<Frame>) -> Vec<Frame> {
    let start = frames
        .iter()
        .position(|f| !is_inner(&f.name))
        .unwrap_or(frames.len());
    let mut end = frames.len();
    // std runs `main` and every spawned thread's closure through
    // `__rust_begin_short_backtrace`: everything outside it is the runtime's.
    if let Some(b) = frames[start..]
        .iter()
        .position(|f| f.name.ends_with("__rust_begin_short_backtrace"))
    {
        end = start + b;
        while end > start + 1
            && frames[end - 1]
                .name
                .starts_with("core::ops::function::FnOnce::call_once")
        {
            end -= 1;
        }
    }
    while end > start {
        let name = frames[end - 1].name.as_str();
        // The C `main` the Rust runtime generates sits just below std::rt::lang_start;
        // any other `main` (a C program's, under LD_PRELOAD) is the program's own.
        let generated_main =
            name == "main" && end >= 2 && frames[end - 2].name.starts_with("std::rt::lang_start");
        if is_outer(name) || generated_main {
            end -= 1;
        } else {
            break;
        }
    }
    if start >= end {
        return frames;
    }
    frames[start..end].to_vec()
}

/// The GNU build id of an ELF file, if it has one.
fn file_build_id(path: &str) -> Option<Vec<u8>> {
    use object::Object;
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: the file is mapped read-only and only read while mapped; a concurrent
    // truncation by another process could fault, as for any debugger reading binaries.
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    let obj = object::File::parse(&*map).ok()?;
    obj.build_id().ok().flatten().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame::unresolved(name.to_string())
    }

    fn names(v: &[Frame]) -> Vec<&str> {
        v.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn trims_allocator_and_runtime_frames() {
        let stack = vec![
            f("stackheap::alloc::hook::on_alloc"),
            f("<stackheap::alloc::StackHeap<A> as core::alloc::global::GlobalAlloc>::alloc"),
            f("__rust_alloc"),
            f("__rustc::__rust_alloc"),
            f("alloc::alloc::alloc"),
            f("alloc::raw_vec::RawVec<T,A>::grow_one"),
            f("stackheap_demos::leak::make"),
            f("leak::main"),
            f("core::ops::function::FnOnce::call_once"),
            f("std::sys::backtrace::__rust_begin_short_backtrace"),
            f("std::rt::lang_start::{{closure}}"),
            f("std::rt::lang_start_internal"),
            f("std::rt::lang_start"),
            f("main"),
            f("__libc_start_call_main"),
            f("__libc_start_main_impl"),
            f("_start"),
        ];
        assert_eq!(
            names(&trim(stack)),
            vec![
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                "stackheap_demos::leak::make",
                "leak::main"
            ]
        );
    }

    #[test]
    fn keeps_a_c_main_and_user_call_once() {
        let stack = vec![
            f("malloc"),
            f("make_list"),
            f("core::ops::function::FnOnce::call_once"),
            f("main"),
            f("__libc_start_main"),
            f("_start"),
        ];
        assert_eq!(
            names(&trim(stack)),
            vec![
                "make_list",
                "core::ops::function::FnOnce::call_once",
                "main"
            ]
        );
    }

    #[test]
    fn a_stack_of_only_profiler_frames_is_kept() {
        let stack = vec![f("__rust_alloc"), f("_start")];
        assert_eq!(names(&trim(stack.clone())), names(&stack));
    }

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }

    #[test]
    fn unknown_addresses_print_as_numbers() {
        let m = Module {
            path: "/nonexistent/libfoo.so".into(),
            bias: 0x7000_0000,
            segments: vec![(0, 0x1000)],
            build_id: vec![],
        };
        let mut s = Symbolizer::new(&[m]);
        assert_eq!(s.resolve(0x10)[0].name, "0x10");
        assert_eq!(s.resolve(0x7000_0123)[0].name, "libfoo.so+0x123");
        assert_eq!(s.resolve(0x7000_0124)[0].name, "libfoo.so+0x124");
    }

    #[inline(never)]
    fn marker_function_for_symbolization() -> u64 {
        std::hint::black_box(42)
    }

    /// The main program's module as the recorder describes it (dl_iterate_phdr).
    fn main_module() -> Module {
        // Elf_Addr is u32 on 32-bit targets, hence the casts.
        #[allow(clippy::unnecessary_cast)]
        unsafe extern "C" fn first(
            info: *mut libc::dl_phdr_info,
            _size: usize,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: `data` is the `&mut Vec` passed below, alive for the whole call;
            // `info` and its `dlpi_phnum` program headers are valid during the callback.
            unsafe {
                let out = &mut *(data as *mut Vec<(u64, u64, u64)>);
                let info = &*info;
                for i in 0..info.dlpi_phnum as usize {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type == libc::PT_LOAD {
                        out.push((info.dlpi_addr as u64, ph.p_vaddr as u64, ph.p_memsz as u64));
                    }
                }
            }
            1 // the first object is the main program; stop there
        }
        let mut segs: Vec<(u64, u64, u64)> = Vec::new();
        // SAFETY: the callback only reads the headers it is given and writes `segs`.
        unsafe {
            libc::dl_iterate_phdr(Some(first), &mut segs as *mut _ as *mut libc::c_void);
        }
        Module {
            path: std::env::current_exe()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            bias: segs[0].0,
            segments: segs.iter().map(|&(_, v, l)| (v, l)).collect(),
            build_id: vec![],
        }
    }

    #[test]
    fn symbolizes_a_function_of_this_test_binary() {
        let m = main_module();
        let addr = marker_function_for_symbolization as *const () as u64;
        assert!(m.contains(addr));
        let mut s = Symbolizer::new(&[m]);
        // As a return address: one past the first instruction of the function.
        let frames = s.resolve(addr + 1);
        let f = frames.last().unwrap();
        assert!(
            f.name.ends_with("marker_function_for_symbolization"),
            "{frames:?}"
        );
        assert!(!f.name.contains("17h"), "hash removed: {}", f.name);
        assert!(
            f.file
                .as_deref()
                .is_some_and(|p| p.ends_with("symbolize.rs")),
            "{frames:?}"
        );
        // Cached: the same answer again.
        assert_eq!(s.resolve(addr + 1), frames);
        let stack = s.stack(&[addr + 1]);
        assert!(stack
            .iter()
            .any(|f| f.name.ends_with("marker_function_for_symbolization")));
    }

    #[test]
    fn a_rebuilt_binary_is_not_symbolized() {
        let mut m = main_module();
        let addr = marker_function_for_symbolization as *const () as u64;
        let real = file_build_id(&m.path).expect("the test binary has a build id");
        // The build id the program ran with matches the file: names.
        m.build_id = real.clone();
        let mut s = Symbolizer::new(std::slice::from_ref(&m));
        assert!(s
            .resolve(addr + 1)
            .iter()
            .any(|f| f.name.ends_with("marker_function_for_symbolization")));
        assert!(s.stale_modules().is_empty());
        // Another build id: the file was rebuilt since; addresses only, and said so.
        m.build_id = real.iter().map(|b| b ^ 0xff).collect();
        let mut s = Symbolizer::new(std::slice::from_ref(&m));
        let frames = s.resolve(addr + 1);
        assert!(
            frames.iter().all(|f| !f.name.contains("marker_function")),
            "{frames:?}"
        );
        assert!(frames[0].name.contains("+0x"), "{frames:?}");
        assert_eq!(s.stale_modules(), vec![m.path.clone()]);
    }
}
