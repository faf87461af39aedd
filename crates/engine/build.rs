//! Puts llama.cpp's shared libraries where the binaries find them (`$ORIGIN`, see
//! `crates/enclave/build.rs`).
//!
//! With `dynamic-backends`, llama-cpp-sys-2 builds `libllama.so` and `libggml*.so` and links
//! them into the profile folder (`target/debug`), but only as the unversioned names, which are
//! relative symbolic links to the versioned files it leaves behind; the binaries ask for the
//! versioned names (`libllama.so.0`), so those dangle. A second build of the crate with other
//! build-dependency features then fails on them. Here each versioned name is linked beside them,
//! to the real file, which makes both right. Written by hand: no crate does this, and it is a
//! gap in that build script, not a general need.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    let Some(backends) = std::env::var_os("DEP_LLAMA_BACKENDS_DIR") else {
        return;
    };
    let lib = Path::new(&backends).with_file_name("lib");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    let Some(profile) = out.ancestors().nth(3) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // The soname: `lib<x>.so.<major>`, one number after `.so.`.
        let Some((_, major)) = name.split_once(".so.") else {
            continue;
        };
        if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        for dir in [
            profile.to_path_buf(),
            profile.join("deps"),
            profile.join("examples"),
        ] {
            if !dir.is_dir() {
                continue;
            }
            let dst = dir.join(name);
            match std::fs::symlink_metadata(&dst) {
                Ok(m) if m.file_type().is_symlink() => {
                    let _ = std::fs::remove_file(&dst);
                }
                Ok(_) => continue,
                Err(_) => {}
            }
            if let Err(e) = std::os::unix::fs::symlink(&real, &dst) {
                println!("cargo:warning=cannot link {}: {e}", dst.display());
            }
        }
    }
}
