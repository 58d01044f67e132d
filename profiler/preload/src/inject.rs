//! Injected mode: `stackheap run --pid PID` loads this library into a process that is
//! already running (with `dlopen`, called in the process by gdb or by the CLI's ptrace
//! injector) and then calls [`stackheap_inject_start`].
//!
//! LD_PRELOAD is too late there: every module's calls to `malloc` & co. are already
//! bound to glibc. So the start rewrites the bindings instead: for every loaded module
//! but this library, the dynamic loader and the vDSO, each `JUMP_SLOT`/`GLOB_DAT`
//! relocation (PLT and GOT entry) of a function of the malloc family — and of `dlopen`,
//! `pthread_create`, `_exit`, `_Exit` — is pointed at this library's shim, the RELRO
//! page made writable for the write and read-only again. glibc itself is patched too,
//! so what glibc allocates on the program's behalf (`strdup`, stdio buffers) counts as
//! under LD_PRELOAD. The `dlopen` shim patches the libraries loaded later.
//!
//! The configuration cannot come from the environment: the CLI writes it to a file,
//! one `key=value` a line (`trace`, `sample`, `stack_hz`, `limit`, `control`, `status`),
//! whose path is the argument of [`stackheap_inject_start`]. `control` is a FIFO the
//! CLI holds open: a thread of this library waits on it, and when the CLI writes `q`
//! or goes away (Ctrl-C, killed) it detaches: the bindings are restored, the session
//! stops (trace flushed, trailer written), and `status` is written (`ok` or the error).
//! Until then the session ends with the process, as under LD_PRELOAD.
//!
//! Blocks allocated before the attach are unknown: their frees are counted apart
//! (`stackheap::record::attach`) and never touch the live heap.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use stackheap::alloc::guard::Guard;
use stackheap::record::{attach, session};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const R_X86_64_GLOB_DAT: u64 = 6;
const R_X86_64_JUMP_SLOT: u64 = 7;

#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

#[repr(C)]
struct Rela {
    offset: u64,
    info: u64,
    addend: i64,
}

#[repr(C)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

/// One rewritten binding: the slot, what it held before, what it holds now.
#[derive(Clone, Copy)]
struct Patch {
    slot: usize,
    original: usize,
    shim: usize,
}

static PATCHES: Mutex<Vec<Patch>> = Mutex::new(Vec::new());

/// Error codes of [`stackheap_inject_start`] (the message goes to the status file).
mod code {
    pub const OK: i32 = 0;
    pub const CONFIG: i32 = 1;
    pub const BUSY: i32 = 2;
    pub const ALLOCATOR: i32 = 3;
    pub const START: i32 = 4;
}

/// The functions whose bindings are rewritten (this library's shims of the same name,
/// and `dlopen`).
const NAMES: [&CStr; 15] = [
    c"malloc",
    c"free",
    c"cfree",
    c"calloc",
    c"realloc",
    c"reallocarray",
    c"posix_memalign",
    c"aligned_alloc",
    c"memalign",
    c"valloc",
    c"pvalloc",
    c"malloc_usable_size",
    c"pthread_create",
    c"_exit",
    c"_Exit",
];

/// Each name and the address of this library's own definition, found once. Taking
/// `super::malloc as usize` would not do: a reference from this library to an exported
/// symbol binds, like any other, to the first definition in the global scope
/// (glibc's); `dlsym` on this library's own handle finds ours.
static TARGETS: std::sync::OnceLock<Vec<(&'static [u8], usize)>> = std::sync::OnceLock::new();

fn targets() -> &'static [(&'static [u8], usize)] {
    TARGETS.get_or_init(|| {
        let mut v = vec![(&b"dlopen"[..], dlopen as *const () as usize)];
        // SAFETY: dladdr fills `info` for an address of this library; dlopen with
        // RTLD_NOLOAD only returns a handle of the already loaded library; dlsym with
        // NUL-terminated names.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            if libc::dladdr(targets as *const () as *const c_void, &mut info) == 0
                || info.dli_fname.is_null()
            {
                return v;
            }
            let own = libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if own.is_null() {
                return v;
            }
            for name in NAMES {
                let f = libc::dlsym(own, name.as_ptr()) as usize;
                let mut at: libc::Dl_info = std::mem::zeroed();
                // Only our own definitions (never glibc's, found through our
                // dependencies if ours were missing).
                if f != 0
                    && libc::dladdr(f as *const c_void, &mut at) != 0
                    && at.dli_fbase == info.dli_fbase
                {
                    v.push((name.to_bytes(), f));
                }
            }
            libc::dlclose(own);
        }
        v
    })
}

/// `dlopen` of the program: the library is loaded by glibc, then its bindings (and
/// those of its dependencies) are rewritten while a session records.
///
/// # Safety
/// The C contract of `dlopen`.
pub unsafe extern "C" fn dlopen(file: *const c_char, flags: c_int) -> *mut c_void {
    // SAFETY: forwarding to glibc's dlopen (this library's own binding is never
    // rewritten).
    let h = unsafe { libc::dlopen(file, flags) };
    if !h.is_null() && attach::is_attached() {
        if let Some(_g) = Guard::enter() {
            patch_all();
        }
    }
    h
}

/// What one walk over the loaded modules does. Patching carries each target's global
/// definition, looked up before the walk: `dlsym` inside the walk's callback would take
/// the loader's lock while `dl_iterate_phdr` holds its other one (the reverse of
/// `dlopen`'s order).
enum Walk<'a> {
    Patch(&'a mut Vec<Patch>, &'a [usize]),
    Restore(&'a mut Vec<Patch>),
}

/// True if `addr` lies in one of the module's loaded segments.
fn module_contains(info: &libc::dl_phdr_info, addr: usize) -> bool {
    phdrs(info).iter().any(|p| {
        let start = (info.dlpi_addr as usize).wrapping_add(p.p_vaddr as usize);
        p.p_type == PT_LOAD && addr >= start && addr < start.wrapping_add(p.p_memsz as usize)
    })
}

fn phdrs(info: &libc::dl_phdr_info) -> &[libc::Elf64_Phdr] {
    if info.dlpi_phdr.is_null() {
        return &[];
    }
    // SAFETY: the loader hands out `dlpi_phnum` program headers at `dlpi_phdr`, valid
    // for the duration of the callback.
    unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
}

/// Rewrite (or restore) the bindings of every loaded module.
fn patch_all() {
    let globals: Vec<usize> = targets()
        .iter()
        .map(|&(name, _)| {
            let mut cname = name.to_vec();
            cname.push(0);
            // SAFETY: dlsym with a NUL-terminated name.
            unsafe { libc::dlsym(libc::RTLD_DEFAULT, cname.as_ptr().cast()) as usize }
        })
        .collect();
    let mut patches = PATCHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut walk = Walk::Patch(&mut patches, &globals);
    // SAFETY: the callback only reads the loader's structures and writes GOT slots.
    unsafe { libc::dl_iterate_phdr(Some(each_module), (&mut walk as *mut Walk<'_>).cast()) };
}

/// Point every rewritten binding back at what it held before (modules unloaded since
/// are not touched; a slot changed by someone else since is left alone).
fn restore_all() {
    let mut patches = PATCHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut walk = Walk::Restore(&mut patches);
    // SAFETY: as in patch_all.
    unsafe { libc::dl_iterate_phdr(Some(each_module), (&mut walk as *mut Walk<'_>).cast()) };
    patches.clear();
}

/// The `dl_iterate_phdr` callback: walk one module unless it is skipped.
///
/// # Safety
/// Called by `dl_iterate_phdr` with a valid `info` and `data` pointing at a [`Walk`].
unsafe extern "C" fn each_module(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info; `data` is the Walk of the caller,
    // alive for the whole iteration.
    let (info, walk) = unsafe { (&*info, &mut *data.cast::<Walk<'_>>()) };
    let name = if info.dlpi_name.is_null() {
        &b""[..]
    } else {
        // SAFETY: a NUL-terminated path kept by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let skip = contains(name, b"/ld-linux")
        || contains(name, b"linux-vdso")
        || contains(name, b"linux-gate")
        || module_contains(info, each_module as *const () as usize);
    if !skip {
        // SAFETY: a loaded module's program headers and dynamic section.
        unsafe { module(info, walk) };
    }
    0
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Walk one module's PLT and GOT relocations.
///
/// # Safety
/// `info` describes a module that stays loaded during the call (the loader's lock is
/// held by dl_iterate_phdr).
unsafe fn module(info: &libc::dl_phdr_info, walk: &mut Walk<'_>) {
    let base = info.dlpi_addr as usize;
    let ph = phdrs(info);
    let Some(dynamic) = ph.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return;
    };
    let relro = ph
        .iter()
        .find(|p| p.p_type == PT_GNU_RELRO)
        .map(|p| (base + p.p_vaddr as usize, p.p_memsz as usize));
    let (mut strtab, mut symtab) = (0usize, 0usize);
    let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0usize, 0usize, 0usize, 0usize);
    let mut d = (base + dynamic.p_vaddr as usize) as *const Dyn;
    // The loader relocates the address entries of the dynamic section in place on
    // x86-64; an entry still below the base is an offset.
    let abs = |v: u64| {
        let v = v as usize;
        if v < base {
            v + base
        } else {
            v
        }
    };
    for _ in 0..4096 {
        // SAFETY: the dynamic section is an array of entries ended by DT_NULL.
        let e = unsafe { &*d };
        match e.tag {
            DT_NULL => break,
            DT_STRTAB => strtab = abs(e.val),
            DT_SYMTAB => symtab = abs(e.val),
            DT_RELA => rela = abs(e.val),
            DT_RELASZ => relasz = e.val as usize,
            DT_JMPREL => jmprel = abs(e.val),
            DT_PLTRELSZ => pltrelsz = e.val as usize,
            _ => {}
        }
        // SAFETY: still inside the array (DT_NULL not reached).
        d = unsafe { d.add(1) };
    }
    if strtab == 0 || symtab == 0 {
        return;
    }
    let targets = targets();
    for (table, size) in [(jmprel, pltrelsz), (rela, relasz)] {
        if table == 0 {
            continue;
        }
        let n = size / std::mem::size_of::<Rela>();
        // SAFETY: DT_RELA/DT_JMPREL point at `size` bytes of Elf64_Rela entries.
        let relas = unsafe { std::slice::from_raw_parts(table as *const Rela, n) };
        for r in relas {
            let kind = r.info & 0xffff_ffff;
            if kind != R_X86_64_JUMP_SLOT && kind != R_X86_64_GLOB_DAT {
                continue;
            }
            let sym_index = (r.info >> 32) as usize;
            if sym_index == 0 {
                continue;
            }
            // SAFETY: the symbol index of a relocation is inside the symbol table.
            let sym = unsafe { &*(symtab as *const Sym).add(sym_index) };
            // SAFETY: st_name is an offset of a NUL-terminated string in the table.
            let name =
                unsafe { CStr::from_ptr((strtab + sym.name as usize) as *const c_char) }.to_bytes();
            let Some(index) = targets.iter().position(|(n, _)| *n == name) else {
                continue;
            };
            let shim = targets[index].1;
            let slot = base.wrapping_add(r.offset as usize);
            // SAFETY: the relocation's target is a pointer-sized, aligned GOT slot of
            // this loaded module.
            let cell = unsafe { &*(slot as *const AtomicUsize) };
            let current = cell.load(Ordering::Acquire);
            match walk {
                Walk::Patch(patches, globals) => {
                    let global = globals.get(index).copied().unwrap_or(0);
                    if current == shim || !bound_to_glibc(global, current, info, kind) {
                        continue;
                    }
                    // SAFETY: writing a GOT slot of this module (see `write_slot`).
                    if unsafe { write_slot(slot, shim, relro) } {
                        patches.push(Patch {
                            slot,
                            original: current,
                            shim,
                        });
                    }
                }
                Walk::Restore(patches) => {
                    if current != shim {
                        continue;
                    }
                    if let Some(p) = patches.iter().find(|p| p.slot == slot && p.shim == shim) {
                        // SAFETY: as above, back to the value it had.
                        unsafe { write_slot(slot, p.original, relro) };
                    }
                }
            }
        }
    }
}

/// True if a binding holds glibc's function: the global definition of its name (which
/// the start checked is glibc's), or, for a PLT slot not yet resolved, the module's own
/// lazy-binding stub. A module bound elsewhere (its own allocator) is left alone.
fn bound_to_glibc(global: usize, current: usize, info: &libc::dl_phdr_info, kind: u64) -> bool {
    (global != 0 && current == global)
        || (kind == R_X86_64_JUMP_SLOT && module_contains(info, current))
}

/// Store `value` in the GOT slot, making its page writable for the moment if it lies
/// in the module's RELRO segment. False if the page could not be made writable.
///
/// # Safety
/// `slot` is a GOT slot of a loaded module.
unsafe fn write_slot(slot: usize, value: usize, relro: Option<(usize, usize)>) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let in_relro = relro.is_some_and(|(start, len)| slot >= start && slot < start + len);
    let page_start = slot & !(page - 1);
    if in_relro {
        // SAFETY: changing the protection of one page of the module's RELRO segment
        // (mapped, ours to protect as the loader did).
        let rc = unsafe {
            libc::mprotect(
                page_start as *mut c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return false;
        }
    }
    // SAFETY: the slot is writable now; an atomic store, so a thread calling through it
    // sees either the old or the new function.
    unsafe { &*(slot as *const AtomicUsize) }.store(value, Ordering::Release);
    if in_relro {
        // SAFETY: back to read-only, as the loader left it.
        unsafe { libc::mprotect(page_start as *mut c_void, page, libc::PROT_READ) };
    }
    true
}

/// The configuration file, parsed.
struct Config {
    session: session::SessionConfig,
    control: Option<PathBuf>,
    status: Option<PathBuf>,
}

fn parse_config(path: &Path) -> Result<Config, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut session = session::SessionConfig {
        trace_path: PathBuf::new(),
        sample_rate: 1,
        unwinder: None,
        limit: 0,
        stack_hz: session::DEFAULT_STACK_HZ,
        live: false,
    };
    let (mut control, mut status) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let size = || session::parse_size(v).ok_or_else(|| format!("invalid {k}={v:?}"));
        match k {
            "trace" => session.trace_path = session::expand_path(v),
            "sample" => session.sample_rate = size()?,
            "limit" => session.limit = size()?,
            "stack_hz" => {
                session.stack_hz = v.parse().map_err(|_| format!("invalid {k}={v:?}"))?;
            }
            "control" => control = Some(PathBuf::from(v)),
            "status" => status = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    if session.trace_path.as_os_str().is_empty() {
        return Err(format!("{}: no trace path", path.display()));
    }
    Ok(Config {
        session,
        control,
        status,
    })
}

/// Write the status file (through a temporary name: a reader sees all of it or none).
fn write_status(path: Option<&Path>, text: &str) {
    let Some(path) = path else { return };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    if std::fs::write(&tmp, format!("{text}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// True if the process's `malloc` is glibc's (not jemalloc, tcmalloc, …): the shims
/// forward to glibc, so they must not stand in for another allocator.
fn malloc_is_glibc() -> bool {
    // SAFETY: dlopen/dlsym with NUL-terminated names; RTLD_NOLOAD only looks up.
    unsafe {
        let libc_handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if libc_handle.is_null() {
            return false;
        }
        let ours = libc::dlsym(libc_handle, c"malloc".as_ptr());
        let global = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        libc::dlclose(libc_handle);
        !ours.is_null() && ours == global
    }
}

/// Start recording in this (running) process: read the configuration file at
/// `config_path`, start a session marked as attached, rewrite the bindings and start
/// the thread that detaches when the CLI says so. Returns 0, or an error code with the
/// message written to the configuration's `status` file: 1 bad configuration, 2 a
/// session already records, 3 the program's malloc is not glibc's, 4 the session
/// could not start.
///
/// # Safety
/// `config_path` is a NUL-terminated path. Called once, by the injector.
#[no_mangle]
pub unsafe extern "C" fn stackheap_inject_start(config_path: *const c_char) -> c_int {
    let Some(_g) = Guard::enter() else {
        return code::START;
    };
    if targets().len() < NAMES.len() + 1 {
        return code::START;
    }
    if config_path.is_null() {
        return code::CONFIG;
    }
    // SAFETY: the caller passes a NUL-terminated path.
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(
        unsafe { CStr::from_ptr(config_path) }.to_bytes(),
    ));
    let cfg = match parse_config(&path) {
        Ok(c) => c,
        Err(_) => return code::CONFIG,
    };
    let status = cfg.status.as_deref();
    if session::is_active() {
        write_status(
            status,
            "error: this process is already being profiled by stackheap",
        );
        return code::BUSY;
    }
    if !malloc_is_glibc() {
        write_status(
            status,
            "error: the program's malloc is not glibc's (another allocator is linked in); attach works with glibc's malloc only",
        );
        return code::ALLOCATOR;
    }
    if !super::sizes::map_once() {
        write_status(status, "error: cannot map the block-size table");
        return code::START;
    }
    super::sizes::clear();
    attach::set_attached(true);
    // Bindings first, session second: what glibc allocates for the session (thread
    // stacks' TLS, thread-local destructors) then passes the shims with the guard held
    // and is marked as the profiler's own, so its frees are not taken for frees of
    // blocks older than the attach.
    patch_all();
    if let Err(e) = session::start(&cfg.session) {
        restore_all();
        attach::set_attached(false);
        write_status(status, &format!("error: {e}"));
        return code::START;
    }
    // SAFETY: getpid has no preconditions.
    super::OWNER_PID.store(unsafe { libc::getpid() }, Ordering::Release);
    if let Some(control) = cfg.control {
        if spawn_watcher(control, cfg.status.clone()).is_err() {
            detach(cfg.status.as_deref());
            write_status(status, "error: cannot start the control thread");
            return code::START;
        }
    }
    code::OK
}

/// Start the control thread: a raw pthread (as the recorder's) whose first act is to
/// hold the reentrancy guard, so that nothing it or glibc allocates for it is counted
/// (`std::thread` would register thread-local destructors through the rewritten
/// `calloc` before the guard could be taken).
fn spawn_watcher(control: PathBuf, status: Option<PathBuf>) -> Result<(), ()> {
    let arg = Box::into_raw(Box::new((control, status)));
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `watch_main` has the pthread start signature and takes ownership of `arg`.
    let rc = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), watch_main, arg.cast()) };
    if rc != 0 {
        // SAFETY: the thread was not created, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(());
    }
    // SAFETY: a valid thread handle and a NUL-terminated name under 16 bytes; the
    // thread is never joined.
    unsafe {
        libc::pthread_setname_np(thread, c"stackheap-ctl".as_ptr());
        libc::pthread_detach(thread);
    }
    Ok(())
}

extern "C" fn watch_main(arg: *mut c_void) -> *mut c_void {
    Guard::hold_forever();
    // SAFETY: `arg` is the box leaked by `spawn_watcher`, handed to this thread alone.
    let (control, status) = *unsafe { Box::from_raw(arg.cast::<(PathBuf, Option<PathBuf>)>()) };
    watch(&control, status.as_deref());
    std::ptr::null_mut()
}

/// Wait on the control FIFO; detach at `q` or when the CLI closed it.
fn watch(control: &Path, status: Option<&Path>) {
    let mut cpath = control.as_os_str().as_bytes().to_vec();
    cpath.push(0);
    // SAFETY: open a FIFO by a NUL-terminated path; non-blocking so that a CLI already
    // gone cannot leave this thread stuck in open.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr().cast(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: clearing O_NONBLOCK on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
        let mut b = [0u8; 1];
        loop {
            // SAFETY: reading into our own buffer from our descriptor.
            let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n != 1 || b[0] == b'q' {
                break;
            }
        }
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd) };
    }
    detach(status);
}

/// Stop recording and leave the process as it was: bindings restored, session
/// stopped (trace flushed, trailer written), status written.
fn detach(status: Option<&Path>) {
    restore_all();
    let result = if session::is_active() {
        session::stop()
    } else {
        Ok(())
    };
    attach::set_attached(false);
    match result {
        Ok(()) => write_status(status, "ok"),
        Err(e) => write_status(status, &format!("error: {e}")),
    }
}
