//! Which CPU kernels llama.cpp will run, proved at run time before any model is loaded.
//!
//! llama.cpp is compiled for one named feature set (see `.cargo/config.toml`): x86-64-v3, that is
//! AVX2, FMA, F16C and BMI2, with no AVX-512 and no AMX. [`check`] refuses a CPU that lacks any of
//! them, so the engine never executes an instruction the machine does not have; [`report`] reads
//! back from llama.cpp itself which features its CPU backend was built with and which extra
//! buffer types (repacked weight layouts such as `CPU_REPACK`, or `AMX`) it will place weights
//! in. An `AMX` buffer type means the crashing AMX path (llama.cpp #20824) is live: the engine
//! refuses to start with one unless the operator has explicitly allowed it.
//!
//! This is the one module with `unsafe` code: llama-cpp-2 exposes neither the CPU backend's
//! feature list nor its extra buffer types, so they are read through `llama-cpp-sys-2`.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// The instruction-set extensions the compiled llama.cpp kernels need (x86-64).
#[cfg(target_arch = "x86_64")]
pub const REQUIRED: &[&str] = &["avx", "avx2", "fma", "f16c", "bmi2", "sse4.2"];
#[cfg(not(target_arch = "x86_64"))]
pub const REQUIRED: &[&str] = &[];

/// The name of the compiled CPU variant, as `enclave version` prints it.
#[cfg(target_arch = "x86_64")]
pub const VARIANT: &str = "x86-64-v3 (AVX2, FMA, F16C, BMI2; no AVX-512, no AMX)";
#[cfg(not(target_arch = "x86_64"))]
pub const VARIANT: &str = "baseline";

/// What llama.cpp's CPU backend was built with and will use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelReport {
    /// The compiled variant ([`VARIANT`]).
    pub variant: String,
    /// The CPU backend's own feature list, e.g. `AVX2`, `FMA`, `REPACK`, `OPENMP`.
    pub features: Vec<String>,
    /// Extra buffer types weights may be placed in, e.g. `CPU_REPACK`; `AMX` is the one that
    /// crashes.
    pub buffer_types: Vec<String>,
    /// Which device kinds llama.cpp found (`CPU`, `GPU`, ...) with their names.
    pub devices: Vec<String>,
}

impl KernelReport {
    /// Whether any kernel path from AMX is compiled in and reachable.
    pub fn uses_amx(&self) -> bool {
        self.buffer_types
            .iter()
            .chain(&self.features)
            .any(|n| n.to_ascii_uppercase().contains("AMX"))
    }
}

/// The missing instruction-set extensions, if any, that the compiled kernels need.
pub fn missing_cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let have = |f: &str| match f {
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            _ => false,
        };
        REQUIRED.iter().copied().filter(|f| !have(f)).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Refuses a CPU that lacks an extension the compiled kernels use, before llama.cpp runs any.
pub fn check() -> Result<(), EngineError> {
    let missing = missing_cpu_features();
    if missing.is_empty() {
        return Ok(());
    }
    Err(EngineError::Load(format!(
        "this CPU lacks {} that llama.cpp was compiled for ({VARIANT})",
        missing.join(", ")
    )))
}

/// Reads back from llama.cpp which CPU features and buffer types its backend uses. Call after the
/// llama.cpp backend is initialised.
pub fn report() -> KernelReport {
    let mut features = Vec::new();
    let mut buffer_types = Vec::new();
    let mut devices = Vec::new();
    // SAFETY: these are llama.cpp's registry functions. Device and registry handles are static
    // for the life of the process; every returned array is NULL-terminated (as ggml-backend.h
    // documents for `ggml_backend_dev_get_extra_bufts_t` and `ggml_backend_get_features_t`); the
    // names are NUL-terminated static strings. Proc addresses are cast to the function types
    // ggml-backend.h declares for exactly those names.
    unsafe {
        let n = llama_cpp_sys_2::ggml_backend_dev_count();
        for i in 0..n {
            let dev = llama_cpp_sys_2::ggml_backend_dev_get(i);
            if dev.is_null() {
                continue;
            }
            devices.push(c_str(llama_cpp_sys_2::ggml_backend_dev_name(dev)));
        }
        let cpu = llama_cpp_sys_2::ggml_backend_dev_by_type(
            llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_CPU,
        );
        if !cpu.is_null() {
            let reg = llama_cpp_sys_2::ggml_backend_dev_backend_reg(cpu);
            if !reg.is_null() {
                let f = llama_cpp_sys_2::ggml_backend_reg_get_proc_address(
                    reg,
                    c"ggml_backend_get_features".as_ptr(),
                );
                if !f.is_null() {
                    type GetFeatures =
                        unsafe extern "C" fn(
                            llama_cpp_sys_2::ggml_backend_reg_t,
                        )
                            -> *mut llama_cpp_sys_2::ggml_backend_feature;
                    let get: GetFeatures = std::mem::transmute(f);
                    let mut p = get(reg);
                    while !p.is_null() && !(*p).name.is_null() {
                        let name = c_str((*p).name);
                        let value = c_str((*p).value);
                        if value != "0" {
                            features.push(name);
                        }
                        p = p.add(1);
                    }
                }
                let f = llama_cpp_sys_2::ggml_backend_reg_get_proc_address(
                    reg,
                    c"ggml_backend_dev_get_extra_bufts".as_ptr(),
                );
                if !f.is_null() {
                    type ExtraBufts =
                        unsafe extern "C" fn(
                            llama_cpp_sys_2::ggml_backend_dev_t,
                        )
                            -> *mut llama_cpp_sys_2::ggml_backend_buffer_type_t;
                    let get: ExtraBufts = std::mem::transmute(f);
                    let mut p = get(cpu);
                    while !p.is_null() && !(*p).is_null() {
                        buffer_types.push(c_str(llama_cpp_sys_2::ggml_backend_buft_name(*p)));
                        p = p.add(1);
                    }
                }
            }
        }
    }
    KernelReport {
        variant: VARIANT.to_string(),
        features,
        buffer_types,
        devices,
    }
}

/// A C string from llama.cpp as an owned `String` (empty for NULL).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
