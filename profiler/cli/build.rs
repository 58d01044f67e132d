//! Embeds `libstackheap_preload.so` into the `stackheap` binary, so that a binary
//! installed alone (`cargo install --path profiler/cli`) can still profile programs
//! that do not link stackheap: at run time the bytes are written once to a cache
//! directory and preloaded from there (see `src/preload.rs`).
//!
//! The library is a `cdylib` of this workspace, and cargo cannot depend on a cdylib's
//! file, so this script builds it with a nested `cargo build --release -p
//! stackheap-preload` into its own target directory under `OUT_DIR` (incremental, and
//! sharing the outer build's jobserver). Set `STACKHEAP_NO_EMBED=1` to skip it; outside
//! the workspace (no `profiler/preload` beside this crate) it is skipped too. A skipped
//! or failed build embeds nothing, with a cargo warning; `stackheap` then looks for the
//! library beside itself only.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = out.join("libstackheap_preload.so");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../..");
    println!("cargo:rerun-if-env-changed=STACKHEAP_NO_EMBED");
    let preload = root.join("profiler/preload");
    let skip = std::env::var_os("STACKHEAP_NO_EMBED").is_some_and(|v| !v.is_empty() && v != "0");
    if skip || !preload.join("Cargo.toml").is_file() {
        write_empty(&embedded);
        return;
    }
    // A directory is scanned for changes to any file under it.
    for dir in ["profiler/preload", "profiler/stackheap"] {
        println!(
            "cargo:rerun-if-changed={}",
            root.join(dir).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            root.join(dir).join("Cargo.toml").display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".cargo/config.toml").display()
    );

    let target = out.join("preload-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "--locked",
            "-p",
            "stackheap-preload",
        ])
        .arg("--target-dir")
        .arg(&target);
    // The outer build's settings for this crate are not the nested build's.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let built = target.join("release/libstackheap_preload.so");
    match cmd.status() {
        Ok(s) if s.success() && built.is_file() => {
            std::fs::copy(&built, &embedded).expect("copy the preload library into OUT_DIR");
        }
        other => {
            println!(
                "cargo:warning=libstackheap_preload.so not embedded (nested cargo build: {other:?}); stackheap will look for it beside itself"
            );
            write_empty(&embedded);
        }
    }
}

fn write_empty(path: &Path) {
    std::fs::write(path, b"").expect("write OUT_DIR file");
}
