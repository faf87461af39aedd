//! One build runs on any x86-64 CPU: llama.cpp's kernels are chosen when the engine starts, from
//! what CPUID proves, and `enclave version` says which. A lesser CPU's kernels (forced here by
//! `[chat] cpu_variant`) serve chat end to end, and a variant the CPU cannot run is refused by
//! name rather than executed.

#![cfg(target_arch = "x86_64")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

use common::{CHAT, Server};
use enclave_engine::kernels;
use serde_json::{Value, json};

fn version(env: &[(&str, &str)]) -> String {
    let out = Command::new(common::bin())
        .arg("version")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_best_variant_this_cpu_proves_and_why_not_the_others() {
    let best = kernels::best(kernels::cpu_has, false, |_| true).unwrap();
    let out = version(&[]);
    assert!(
        out.contains(&format!("llama.cpp CPU kernels: {} (", best.name)),
        "{out}"
    );
    assert!(!out.contains("NONE LOADED"), "{out}");
    // Every variant is listed with whether it runs here; those that do not name what is lacking.
    for v in kernels::VARIANTS {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", v.name)))
            .unwrap_or_else(|| panic!("{} not listed: {out}", v.name));
        let lacks = kernels::missing(v);
        if lacks.is_empty() {
            assert!(line.contains("runs here"), "{line}");
        } else {
            assert!(line.contains(lacks[0]), "{line}");
        }
    }
}

#[test]
fn a_variant_this_cpu_cannot_or_may_not_run_is_refused_by_name() {
    // The AMX variant: refused for a CPU without AMX (it lacks it) and for one with it (not
    // allowed) alike; nothing is loaded in its place.
    let out = version(&[("ENCLAVE_CHAT__CPU_VARIANT", "sapphirerapids")]);
    assert!(out.contains("NONE LOADED"), "{out}");
    assert!(
        out.contains("amx-tile") || out.contains("allow_amx"),
        "{out}"
    );
    let out = version(&[("ENCLAVE_CHAT__CPU_VARIANT", "pentium")]);
    assert!(out.contains("unknown CPU variant `pentium`"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lesser_cpus_kernels_serve_chat() {
    // SSE4.2 only: what a CPU without AVX would be given.
    let env = [("ENCLAVE_CHAT__CPU_VARIANT", "sse42")];
    assert!(
        version(&env).contains("llama.cpp CPU kernels: sse42 ("),
        "{}",
        version(&env)
    );
    let s = Server::start_with(&env);
    let r = common::http()
        .build()
        .unwrap()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.admin_key)
        .json(&json!({"model": CHAT, "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "Name three colours."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
    let log = s.log.lock().unwrap().clone();
    assert!(
        log.lines()
            .any(|l| l.contains("chat engine ready") && l.contains("sse42")),
        "the engine's start names its variant: {log}"
    );
}
