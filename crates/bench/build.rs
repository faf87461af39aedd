//! The binaries find llama.cpp's shared libraries beside themselves (`$ORIGIN`): the
//! `dynamic-backends` build links `libllama.so` and `libggml*.so`, which the build places next to
//! each binary, so a binary runs without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
}
