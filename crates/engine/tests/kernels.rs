//! The llama.cpp kernels this build runs: chosen at run time for the CPU it runs on, never AMX
//! unless allowed (llama.cpp #20824 crashes there), never an instruction the CPU lacks, and
//! nothing the build host had that another machine may lack.
//!
//! A build with `GGML_NATIVE` (the old `target-cpu=native`) on an AMX machine, or one that loads
//! every module and lets llama.cpp pick the highest score, reports an `AMX` buffer type and the
//! `AMX_INT8` feature on such a machine, and fails here.

#![allow(
    clippy::unwrap_used,
    reason = "tests fail loudly at the line that broke"
)]

use enclave_engine::kernels::{self, KernelChoice, VARIANTS, Variant};

#[test]
fn the_best_variant_this_cpu_proves_is_loaded_and_never_amx() {
    let loaded = kernels::load(&KernelChoice::default()).unwrap();
    let r = kernels::report();
    assert!(
        r.devices.iter().any(|d| d == "CPU"),
        "llama.cpp has a CPU device: {r:?}"
    );
    assert!(
        !r.uses_amx(),
        "an AMX kernel path would be taken by default: {r:?}"
    );
    assert!(
        !r.buffer_types.iter().any(|b| b.contains("AMX")),
        "buffer types: {:?}",
        r.buffer_types
    );
    assert_eq!(r.variant, loaded.variant);
    #[cfg(target_arch = "x86_64")]
    {
        // What CPUID proves, independently of the module: the loaded variant is the best one
        // whose every extension is present, and every extension it runs is present.
        let expected = kernels::best(kernels::cpu_has, false, |_| true).unwrap();
        assert_eq!(loaded.variant, expected.name, "{r:?}");
        assert!(kernels::missing(expected).is_empty());
        // llama.cpp's own feature list agrees with CPUID, both ways, for the extensions it names.
        for (ours, theirs) in [
            ("avx2", "AVX2"),
            ("fma", "FMA"),
            ("f16c", "F16C"),
            ("avx512f", "AVX512"),
            ("avx512vnni", "AVX512_VNNI"),
            ("avx512bf16", "AVX512_BF16"),
        ] {
            let runs = r.features.iter().any(|f| f == theirs);
            assert_eq!(
                runs,
                expected.needs().contains(&ours),
                "{theirs} in {:?} against variant {}",
                r.features,
                expected.name
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn named(name: &str) -> &'static Variant {
    VARIANTS.iter().find(|v| v.name == name).unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_choice_for_cpus_this_machine_is_not() {
    let with = |features: Vec<&'static str>| move |f: &str| features.contains(&f);
    let all = |_: &Variant| true;
    // A Sapphire Rapids CPU (AMX): the AMX module only when allowed.
    let spr = || named("sapphirerapids").needs();
    assert_eq!(kernels::best(with(spr()), false, all).unwrap().name, "zen4");
    assert_eq!(
        kernels::best(with(spr()), true, all).unwrap().name,
        "sapphirerapids"
    );
    // A CPU with AVX2 only; one with nothing beyond x86-64; one missing BMI2.
    assert_eq!(
        kernels::best(with(named("haswell").needs()), false, all)
            .unwrap()
            .name,
        "haswell"
    );
    assert_eq!(kernels::best(with(vec![]), false, all).unwrap().name, "x64");
    assert_eq!(
        kernels::best(
            with(vec!["sse4.2", "avx", "f16c", "fma", "avx2"]),
            false,
            all
        )
        .unwrap()
        .name,
        "piledriver"
    );
    // A module missing from the folder is passed over for the next best.
    assert_eq!(
        kernels::best(with(spr()), false, |v| v.name != "zen4")
            .unwrap()
            .name,
        "cooperlake"
    );
    // A CPU with exactly one variant's extensions gets that variant: no better-ranked one
    // needs less, so "best first" is a true order.
    for v in VARIANTS {
        let needs = v.needs();
        let got = kernels::best(|f| needs.contains(&f), true, all).unwrap();
        assert_eq!(got.name, v.name);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn every_variant_the_choice_can_name_was_built() {
    let dir = kernels::modules_dir().unwrap();
    for v in VARIANTS {
        assert!(
            dir.join(v.file_name()).is_file(),
            "{} missing from {}",
            v.file_name(),
            dir.display()
        );
    }
}
