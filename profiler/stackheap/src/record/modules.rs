//! The module map: every loaded object with its load bias and segments, read with
//! `dl_iterate_phdr` on the recorder thread, so stacks symbolize offline.

use std::ffi::CStr;

use crate::format::Module;

/// Every currently loaded module. The main program is given its real path.
pub fn loaded() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads the dl_phdr_info it is given, for the duration of
    // the call, and pushes owned copies into `out`, passed through `data`.
    unsafe {
        libc::dl_iterate_phdr(Some(callback), (&mut out as *mut Vec<Module>).cast());
    }
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for m in &mut out {
        if m.path.is_empty() {
            m.path = exe.clone();
        }
    }
    out.retain(|m| !m.segments.is_empty());
    out
}

/// Number of objects ever loaded (changes when a library is dlopen'ed).
pub fn generation() -> u64 {
    let mut adds: u64 = 0;
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info; data is the &mut u64 below.
        unsafe { *(data as *mut u64) = (*info).dlpi_adds };
        1
    }
    // SAFETY: the callback writes only to `adds`.
    unsafe { libc::dl_iterate_phdr(Some(cb), (&mut adds as *mut u64).cast()) };
    adds
}

unsafe extern "C" fn callback(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid dl_phdr_info for the duration of the callback and
    // `data` is the Vec passed by `loaded`.
    let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Module>)) };
    let path = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut m = Module {
        path,
        bias: info.dlpi_addr,
        ..Default::default()
    };
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr has dlpi_phnum entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            m.segments.push((ph.p_vaddr, ph.p_memsz));
        } else if ph.p_type == libc::PT_NOTE {
            // SAFETY: the note segment is mapped at bias + vaddr for p_memsz bytes.
            let note = unsafe {
                std::slice::from_raw_parts(
                    (info.dlpi_addr + ph.p_vaddr) as *const u8,
                    ph.p_memsz as usize,
                )
            };
            if let Some(id) = build_id(note) {
                m.build_id = id.to_vec();
            }
        }
    }
    if m.path.starts_with("linux-vdso") || m.path.starts_with("linux-gate") {
        return 0;
    }
    out.push(m);
    0
}

/// The GNU build id inside a PT_NOTE segment.
fn build_id(mut note: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align4 = |n: usize| (n + 3) & !3;
    while note.len() >= 12 {
        let namesz = u32::from_ne_bytes(note[0..4].try_into().ok()?) as usize;
        let descsz = u32::from_ne_bytes(note[4..8].try_into().ok()?) as usize;
        let kind = u32::from_ne_bytes(note[8..12].try_into().ok()?);
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > note.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &note[12..12 + namesz.min(4)] == b"GNU\0" {
            return Some(&note[name_end..name_end + descsz]);
        }
        note = &note[desc_end..];
    }
    None
}
