//! The official `openai` and `anthropic` Python SDKs, unchanged, against the real binary in
//! front of the mock upstream (tests/sdk/test_upstream_sdks.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

use common::Server;
use enclave_mock_upstream::MockUpstream;

#[test]
fn the_official_openai_and_anthropic_sdks_work_through_upstreams() {
    // The mock runs on its own runtime's threads while this thread drives the binary.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockUpstream::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    let deployment = |name: &str, backend: &str| {
        format!(
            "[[deployments]]\nname = \"{name}\"\nmodel = \"{name}\"\nbackend = \"{backend}\"\n\
             base_url = \"{}\"\naccreditation = \"UNCLASSIFIED\"\njurisdiction = \"enclave\"\n\
             api_key_env = \"MOCK_UPSTREAM_KEY\"\n\n",
            mock.url("ok")
        )
    };
    std::fs::write(
        &config,
        format!(
            "{}{}[tenants.limited.key_quota]\nrequests_per_minute = 1\n",
            deployment("mock-openai", "openai"),
            deployment("mock-anthropic", "anthropic")
        ),
    )
    .unwrap();
    let s = Server::start_with(&[
        ("ENCLAVE_CONFIG", config.to_str().unwrap()),
        ("MOCK_UPSTREAM_KEY", "upstream-secret"),
    ]);
    assert!(s.cli(&["tenants", "create", "limited"]).0);
    let limited = s.key("limited", "user");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_upstream_sdks.py"
    );
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", &s.admin_key)
        .env("ENCLAVE_LIMITED_KEY", &limited)
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");
    // Every call reached the upstream through Enclave, none bypassed it.
    assert!(mock.stats()["requests"].as_u64().unwrap() >= 20);
}

#[test]
fn answers_carrying_a_higher_marking_are_withheld_through_the_sdks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockUpstream::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    let deployment = |name: &str, scenario: &str| {
        format!(
            "[[deployments]]\nname = \"{name}\"\nmodel = \"{name}\"\nbackend = \"openai\"\n\
             base_url = \"{}\"\naccreditation = \"UNCLASSIFIED\"\njurisdiction = \"enclave\"\n\n",
            mock.url(scenario)
        )
    };
    std::fs::write(
        &config,
        format!(
            "scheme = \"US\"\n\n{}{}",
            deployment("mock-marked", "marked"),
            deployment("mock-plain", "ok")
        ),
    )
    .unwrap();
    let s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    let key = |clearance: &str| {
        let (ok, out, err) = s.cli(&[
            "keys",
            "create",
            "--tenant",
            "default",
            "--clearance",
            clearance,
        ]);
        assert!(ok, "keys create failed: {err}");
        out.trim().to_string()
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_answers.py"
    );
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_LOW_KEY", key("UNCLASSIFIED"))
        .env("ENCLAVE_SECRET_KEY", key("SECRET"))
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");
    // The withheld answers were asked of the upstream: the refusal came from inspecting them.
    assert!(mock.stats()["requests"].as_u64().unwrap() >= 6);
    // The audit records name the label the answer reached: withheld (403) and served (200).
    let records: serde_json::Value = rt.block_on(async {
        common::http()
            .build()
            .unwrap()
            .get(s.url("/v1/audit/records?limit=1000"))
            .bearer_auth(&s.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let calls: Vec<(u64, String)> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["model"] == "mock-marked" && r["answer_label"].is_string())
        .map(|r| {
            let label = r["answer_label"].as_str().unwrap().to_string();
            (r["status"].as_u64().unwrap(), label)
        })
        .collect();
    assert!(calls.contains(&(403, "SECRET".to_string())), "{calls:?}");
    assert!(calls.contains(&(200, "SECRET".to_string())), "{calls:?}");
}
