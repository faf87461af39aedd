//! The llama.cpp kernels this build runs: never AMX (llama.cpp #20824 crashes there), never
//! anything the build host had but another machine may lack.
//!
//! A build made with `GGML_NATIVE` on a machine with AMX (the old `target-cpu=native`) reports an
//! `AMX` buffer type and the `AMX_INT8` feature, and fails here.

#![allow(
    clippy::unwrap_used,
    reason = "tests fail loudly at the line that broke"
)]

use enclave_engine::kernels;

#[test]
fn no_amx_or_host_specific_kernel_is_compiled_in() {
    let r = kernels::report();
    assert!(
        r.devices.iter().any(|d| d == "CPU"),
        "llama.cpp has a CPU device: {r:?}"
    );
    assert!(
        !r.uses_amx(),
        "an AMX kernel path is compiled in and would be taken by default: {r:?}"
    );
    assert!(
        !r.buffer_types.iter().any(|b| b.contains("AMX")),
        "buffer types: {:?}",
        r.buffer_types
    );
    #[cfg(target_arch = "x86_64")]
    {
        // Exactly the named variant: AVX2 and FMA kernels, no AVX-512 of any kind, whatever the
        // build host had.
        for want in ["AVX2", "FMA", "F16C"] {
            assert!(
                r.features.iter().any(|f| f == want),
                "{want} missing: {:?}",
                r.features
            );
        }
        assert!(
            !r.features.iter().any(|f| f.starts_with("AVX512")),
            "AVX-512 kernels compiled in: {:?}",
            r.features
        );
    }
}

#[test]
fn this_cpu_has_what_the_kernels_use_or_the_engine_says_so() {
    match kernels::check() {
        Ok(()) => assert!(kernels::missing_cpu_features().is_empty()),
        Err(e) => {
            let missing = kernels::missing_cpu_features();
            assert!(!missing.is_empty());
            assert!(e.to_string().contains(missing[0]), "{e}");
        }
    }
}
