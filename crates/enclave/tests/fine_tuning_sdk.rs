//! OpenAI's fine-tuning API through the official `openai` package, unchanged
//! (tests/sdk/test_fine_tuning.py), against the real binary: a model trained on the committed
//! case-note task answers in its form and shows its lineage; a SECRET training file makes a
//! SECRET model an UNCLASSIFIED key can neither list nor call; bad jobs are refused. Then the
//! audit log: the finished job's lineage is an event in it, and calls to the model are records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

use common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_fine_tunes_a_model_that_inherits_its_datas_labels() {
    let s = Server::start_with(&[]);
    let (ok, _, err) = s.cli(&["tenants", "create", "elsewhere"]);
    assert!(ok, "{err}");
    let test = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_fine_tuning.py"
    );
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../train/testdata/case_notes");
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", test])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", s.cleared_key("default", "user", "SECRET"))
        .env(
            "ENCLAVE_LOW_KEY",
            s.cleared_key("default", "user", "UNCLASSIFIED"),
        )
        .env(
            "ENCLAVE_OTHER_KEY",
            s.cleared_key("elsewhere", "user", "SECRET"),
        )
        .env("ENCLAVE_CASE_NOTES", data)
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");

    // Finishing is audited with the lineage; serving is audited call by call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let records = s.audit_records().await;
        let text = serde_json::to_string(&records).unwrap();
        let finished = records
            .iter()
            .filter(|r| r.to_string().contains("fine_tuning.succeeded"))
            .count();
        let calls = records
            .iter()
            .filter(|r| {
                r["model"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ft:smollm2-135m-instruct:default:casenotes:"))
            })
            .count();
        if finished >= 2 && calls >= 6 {
            assert!(text.contains("base_sha256"), "the lineage is in the record");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished jobs in the log: {finished}, calls to the model: {calls}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
