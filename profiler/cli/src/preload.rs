//! How `stackheap run` reaches a program's allocator: through the environment when the
//! program links stackheap (its `#[global_allocator]` reads `STACKHEAP_TRACE`), through
//! `LD_PRELOAD=libstackheap_preload.so` for any other dynamically linked program, and
//! not at all for a static binary (one-line error).
//!
//! The library is looked up, in order: `$STACKHEAP_PRELOAD` (an explicit path); beside
//! the `stackheap` executable (where cargo builds it: `target/<profile>/`, and where to
//! copy it after `cargo install --path profiler/cli`); `../lib/stackheap/` from the
//! executable (a packaged install). Under cargo (`cargo run -- run …`, `$CARGO` set)
//! it is built first, as `stackheap demo` builds the demos. Last, the copy built into
//! this binary by `build.rs` is written to `$XDG_CACHE_HOME/stackheap/<hash>/` and used
//! from there: a binary installed alone (`cargo install`) needs nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use object::Object;

/// File name of the preload library.
pub const LIBRARY: &str = "libstackheap_preload.so";

/// How a program is profiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// It links stackheap: the environment is enough.
    Env,
    /// Any other dynamically linked program (or a script): LD_PRELOAD this library.
    Preload(PathBuf),
}

/// What the program file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Links stackheap (carries the string its allocator reads the environment with).
    LinksStackheap,
    /// A dynamically linked ELF program, or not ELF (a script: its interpreter is).
    Dynamic,
    /// A statically linked ELF program without stackheap.
    Static,
}

/// `program` as the shell would find it (a name without `/` is looked up in `$PATH`).
pub fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Classify a program file.
pub fn inspect(path: &Path) -> Result<Kind> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if contains(&data, b"STACKHEAP_TRACE\0") {
        return Ok(Kind::LinksStackheap);
    }
    let Ok(file) = object::File::parse(&*data) else {
        return Ok(Kind::Dynamic);
    };
    let dynamic =
        file.section_by_name(".interp").is_some() || file.section_by_name(".dynamic").is_some();
    Ok(if dynamic { Kind::Dynamic } else { Kind::Static })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let first = needle[0];
    hay.iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .any(|(i, _)| hay[i..].starts_with(needle))
}

/// The `#!` line of `program` if it is a script (without the `#!`), e.g.
/// `/usr/bin/env bash` for a pyenv shim.
pub fn script_interpreter(program: &str) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(resolve(program)?)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).trim().to_string())
}

/// Choose the mode for `program`.
pub fn choose(program: &str) -> Result<Mode> {
    let Some(path) = resolve(program).filter(|p| p.exists()) else {
        bail!("cannot run {program:?}: no such program");
    };
    if !path.is_file() {
        bail!("cannot run {program:?}: not a file");
    }
    let kind = match inspect(&path) {
        Ok(k) => k,
        // Unreadable (execute-only): the loader can still preload into it.
        Err(_) => Kind::Dynamic,
    };
    match kind {
        Kind::LinksStackheap => Ok(Mode::Env),
        Kind::Dynamic => Ok(Mode::Preload(library()?)),
        Kind::Static => bail!(
            "{program} is statically linked and does not link stackheap: LD_PRELOAD cannot reach its allocator (link it dynamically, or use stackheap::StackHeap as its #[global_allocator])"
        ),
    }
}

/// Find (under cargo: build) the preload library.
pub fn library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STACKHEAP_PRELOAD") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(std::fs::canonicalize(&p).unwrap_or(p));
        }
        bail!("STACKHEAP_PRELOAD={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("cannot find the stackheap executable")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [
        dir.join(LIBRARY),
        dir.join("../lib/stackheap").join(LIBRARY),
    ];
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "stackheap-preload"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            bail!("building {LIBRARY} failed (cargo build -p stackheap-preload)");
        }
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    }
    if !EMBEDDED.is_empty() {
        return extract_embedded();
    }
    bail!(
        "{LIBRARY} not found beside {} (build it with `cargo build --release -p stackheap-preload` and copy it there, or set STACKHEAP_PRELOAD)",
        exe.display()
    )
}

/// The library as built into this binary by `build.rs` (empty if it was not embedded).
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libstackheap_preload.so"));

/// Where the embedded library is written: `$XDG_CACHE_HOME/stackheap/<hash>/` (else
/// `~/.cache/…`, else the temp dir), one directory per distinct library.
fn cache_dir() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    // SipHash with fixed keys: the same bytes give the same name on every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    EMBEDDED.hash(&mut h);
    base.join("stackheap").join(format!("{:016x}", h.finish()))
}

/// Write the embedded library to the cache once (a temporary file renamed into place,
/// so a concurrent run never preloads a half-written file) and return its path.
fn extract_embedded() -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = cache_dir();
    let path = dir.join(LIBRARY);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == EMBEDDED.len() as u64) {
        return Ok(path);
    }
    let fail = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot write the embedded {LIBRARY} to {}: {e} (set XDG_CACHE_HOME, or STACKHEAP_PRELOAD to a copy of the library)",
            dir.display()
        )
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let tmp = dir.join(format!(".{LIBRARY}.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(EMBEDDED)
        .and_then(|()| f.sync_all())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o755)))
        .map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok(path)
}

/// `LD_PRELOAD` for the child: the library first, then what the user had.
pub fn ld_preload(lib: &Path) -> std::ffi::OsString {
    let mut v = lib.as_os_str().to_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_needles() {
        assert!(contains(b"xxSTACKHEAP_TRACE\0yy", b"STACKHEAP_TRACE\0"));
        assert!(!contains(b"xxSTACKHEAP_TRACEyy", b"STACKHEAP_TRACE\0"));
    }

    #[test]
    fn scripts_name_their_interpreter() {
        let dir = std::env::temp_dir().join(format!("stackheap-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("shim");
        std::fs::write(&script, "#!/usr/bin/env bash\nexec python3 \"$@\"\n").unwrap();
        let script = script.to_str().unwrap();
        assert_eq!(
            script_interpreter(script).as_deref(),
            Some("/usr/bin/env bash")
        );
        let me = std::env::current_exe().unwrap();
        assert_eq!(script_interpreter(me.to_str().unwrap()), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cli_links_stackheap_and_sh_is_dynamic() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(inspect(&me).unwrap(), Kind::LinksStackheap);
        let sh = resolve("sh").expect("sh in PATH");
        assert_eq!(inspect(&sh).unwrap(), Kind::Dynamic);
    }
}
