//! Which CPU kernels llama.cpp runs, chosen and proved at run time before any model is loaded.
//!
//! llama.cpp is built with its loadable backends (`dynamic-backends`): the CPU kernels are
//! compiled once per instruction-set level, each a module `libggml-cpu-<variant>.so`, and none is
//! linked into the binary. [`load`] reads with CPUID which extensions this CPU has and loads the
//! best module whose every extension is present (llama.cpp's own score check refuses a module the
//! CPU cannot run, a second proof), so one binary runs at full speed on any x86-64 machine and
//! never executes an instruction the machine lacks. The AMX module is never taken unless the
//! operator allows it (`[chat] allow_amx`): its kernels crash on some machines (llama.cpp
//! #20824). A GPU backend module beside them (`libggml-cuda.so`) is loaded too, and used when
//! it finds a device. [`report`] reads back from llama.cpp itself which variant, features and
//! extra buffer types (repacked weight layouts such as `CPU_REPACK`, or `AMX`) are in use.
//!
//! This is the one module with `unsafe` code: llama-cpp-2 exposes neither module loading by
//! path nor the CPU backend's feature list and buffer types, so they are read through
//! `llama-cpp-sys-2`.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// One build of llama.cpp's CPU kernels: its module's name and the instruction-set extensions
/// it executes (as `std::arch` names them): those of the level it builds on, and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    /// The variant whose extensions this one also runs.
    pub on: Option<&'static str>,
    /// The extensions it adds to them.
    pub adds: &'static [&'static str],
}

impl Variant {
    /// Every extension it runs.
    pub fn needs(&self) -> Vec<&'static str> {
        let mut out = self.adds.to_vec();
        let mut parent = self.on;
        while let Some(v) = parent.and_then(|name| VARIANTS.iter().find(|v| v.name == name)) {
            out.extend_from_slice(v.adds);
            parent = v.on;
        }
        out
    }

    /// Whether this build runs AMX tile instructions.
    pub fn is_amx(&self) -> bool {
        self.needs().iter().any(|n| n.starts_with("amx"))
    }

    /// The module file llama.cpp's build writes for it.
    pub fn file_name(&self) -> String {
        format!("libggml-cpu-{}.so", self.name)
    }
}

const fn variant(
    name: &'static str,
    on: Option<&'static str>,
    adds: &'static [&'static str],
) -> Variant {
    Variant { name, on, adds }
}

/// Every variant llama.cpp's `GGML_CPU_ALL_VARIANTS` builds on x86-64, best first (the
/// extensions of the same names in its `ggml/src/CMakeLists.txt`; its `AVX512` level is the five
/// Skylake-X extensions together).
#[cfg(target_arch = "x86_64")]
pub const VARIANTS: &[Variant] = &[
    variant("sapphirerapids", Some("zen4"), &["amx-tile", "amx-int8"]),
    variant("zen4", Some("icelake"), &["avx512bf16"]),
    variant("cooperlake", Some("cascadelake"), &["avx512bf16"]),
    variant("icelake", Some("cannonlake"), &["avx512vnni"]),
    variant("cascadelake", Some("skylakex"), &["avx512vnni"]),
    variant("cannonlake", Some("skylakex"), &["avx512vbmi"]),
    variant(
        "skylakex",
        Some("haswell"),
        &["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    ),
    variant("alderlake", Some("haswell"), &["avxvnni"]),
    variant("haswell", Some("piledriver"), &["avx2", "bmi2"]),
    variant("piledriver", Some("ivybridge"), &["fma"]),
    variant("ivybridge", Some("sandybridge"), &["f16c"]),
    variant("sandybridge", Some("sse42"), &["avx"]),
    variant("sse42", Some("x64"), &["sse4.2"]),
    variant("x64", None, &[]),
];

/// Other architectures build one CPU module, named `libggml-cpu.so`.
#[cfg(not(target_arch = "x86_64"))]
pub const VARIANTS: &[Variant] = &[];

/// Whether this CPU has `feature` (a `std::arch` name), proved with CPUID now.
pub fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
            "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512cd" => std::arch::is_x86_feature_detected!("avx512cd"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
            "amx-tile" => amx_bit(24),
            "amx-int8" => amx_bit(25),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// CPUID leaf 7, sub-leaf 0, EDX bit `bit` (AMX-TILE is 24, AMX-INT8 25): `std::arch` has no
/// stable detection for AMX, and the answer only ever keeps the AMX module out.
#[cfg(target_arch = "x86_64")]
fn amx_bit(bit: u32) -> bool {
    // CPUID exists on every x86-64 CPU; leaf 7 is asked only when leaf 0 says it is in range.
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << bit) != 0
}

/// The extensions `variant` needs that this CPU lacks.
pub fn missing(variant: &Variant) -> Vec<&'static str> {
    variant
        .needs()
        .into_iter()
        .filter(|f| !cpu_has(f))
        .collect()
}

/// The best variant, of those `available`, whose every extension `has` proves; the AMX one only
/// when `allow_amx`. Pure, so the choice is tested for CPUs this machine is not.
pub fn best(
    has: impl Fn(&str) -> bool,
    allow_amx: bool,
    available: impl Fn(&Variant) -> bool,
) -> Option<&'static Variant> {
    VARIANTS
        .iter()
        .find(|v| (allow_amx || !v.is_amx()) && v.needs().iter().all(|f| has(f)) && available(v))
}

/// What the operator asks of the kernels (`[chat] cpu_variant`, `[chat] allow_amx`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelChoice {
    /// A variant by name instead of the best; refused if this CPU lacks what it needs.
    pub variant: Option<String>,
    /// Lets the AMX variant be chosen (it crashes on some machines: llama.cpp #20824).
    pub allow_amx: bool,
}

/// The kernels this process loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The CPU variant's name (`zen4`, `haswell`, …; `cpu` where one module serves all).
    pub variant: String,
    /// Its module file.
    pub module: PathBuf,
    /// GPU backend modules that were found and loaded (`cuda`, …).
    pub gpu_modules: Vec<String>,
}

static LOADED: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Where the backend modules are: `ggml-backends/` beside the running binary (a deployed copy),
/// else the build's own folder.
pub fn modules_dir() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("ggml-backends")));
    if let Some(dir) = beside.filter(|d| d.is_dir()) {
        return Some(dir);
    }
    llama_cpp_sys_2::BACKENDS_DIR.map(PathBuf::from)
}

/// Loads llama.cpp's CPU kernels (and any GPU module) once per process, as `choice` says; later
/// calls return what the first loaded. Call before the llama.cpp backend is initialised.
pub fn load(choice: &KernelChoice) -> Result<&'static Loaded, EngineError> {
    LOADED
        .get_or_init(|| load_once(choice))
        .as_ref()
        .map_err(|e| EngineError::Load(e.clone()))
}

/// What [`load`] loaded, if it has run and succeeded.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get().and_then(|r| r.as_ref().ok())
}

fn load_once(choice: &KernelChoice) -> Result<Loaded, String> {
    // llama.cpp's own messages (which module it loaded, or why not) go to the log from here on.
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let dir = modules_dir().ok_or("this build has no llama.cpp backend modules folder")?;
    let candidates: Vec<&Variant> = match choice.variant.as_deref().filter(|v| !v.is_empty()) {
        Some(name) => {
            let v = VARIANTS.iter().find(|v| v.name == name).ok_or_else(|| {
                format!(
                    "unknown CPU variant `{name}`; this build has: {}",
                    VARIANTS
                        .iter()
                        .map(|v| v.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let lacks = missing(v);
            if !lacks.is_empty() {
                return Err(format!(
                    "CPU variant `{name}` needs {}, which this CPU lacks",
                    lacks.join(", ")
                ));
            }
            if v.is_amx() && !choice.allow_amx {
                return Err(format!(
                    "CPU variant `{name}` runs AMX kernels, which crash on some machines \
                     (llama.cpp #20824); set `[chat] allow_amx = true` to use it"
                ));
            }
            vec![v]
        }
        None => VARIANTS
            .iter()
            .filter(|v| (choice.allow_amx || !v.is_amx()) && missing(v).is_empty())
            .collect(),
    };
    let mut tried = Vec::new();
    let mut cpu = None;
    for v in candidates {
        let path = dir.join(v.file_name());
        if !path.is_file() {
            continue;
        }
        // llama.cpp's own score check runs inside and refuses a module this CPU cannot run.
        if load_module(&path) {
            cpu = Some((v.name.to_string(), path));
            break;
        }
        tried.push(v.name);
    }
    if cpu.is_none() && VARIANTS.is_empty() {
        let path = dir.join("libggml-cpu.so");
        if path.is_file() && load_module(&path) {
            cpu = Some(("cpu".to_string(), path));
        }
    }
    let Some((variant, module)) = cpu else {
        return Err(format!(
            "no llama.cpp CPU kernels in {} that this CPU can run{}",
            dir.display(),
            if tried.is_empty() {
                String::new()
            } else {
                format!(" (refused by llama.cpp: {})", tried.join(", "))
            }
        ));
    };
    let mut gpu_modules = Vec::new();
    for name in ["cuda", "vulkan"] {
        let path = dir.join(format!("libggml-{name}.so"));
        if path.is_file() && load_module(&path) {
            gpu_modules.push(name.to_string());
        }
    }
    tracing::info!(%variant, module = %module.display(), gpu = ?gpu_modules, "llama.cpp kernels loaded");
    Ok(Loaded {
        variant,
        module,
        gpu_modules,
    })
}

/// Loads one backend module; false when llama.cpp refuses it (its score says this machine
/// cannot run it, or it has no device).
fn load_module(path: &Path) -> bool {
    let Some(c) = path.to_str().and_then(|p| CString::new(p).ok()) else {
        return false;
    };
    // SAFETY: `ggml_backend_load` takes a NUL-terminated path, copies what it needs, and returns
    // a registry handle owned by llama.cpp for the life of the process (or NULL).
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c.as_ptr()) };
    !reg.is_null()
}

/// What llama.cpp's CPU backend was built with and will use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelReport {
    /// The loaded CPU variant (`zen4`, `haswell`, …), empty before [`load`].
    pub variant: String,
    /// The CPU backend's own feature list, e.g. `AVX2`, `FMA`, `REPACK`, `OPENMP`.
    pub features: Vec<String>,
    /// Extra buffer types weights may be placed in, e.g. `CPU_REPACK`; `AMX` is the one that
    /// crashes.
    pub buffer_types: Vec<String>,
    /// Which devices llama.cpp found (`CPU`, `CUDA0`, ...).
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

    /// Whether llama.cpp found a GPU device to offload layers to.
    pub fn has_gpu(&self) -> bool {
        self.devices.iter().any(|d| d != "CPU")
    }
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
        variant: loaded().map(|l| l.variant.clone()).unwrap_or_default(),
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
