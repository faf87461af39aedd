//! OpenAI's Files API through the official `openai` package, unchanged
//! (tests/sdk/test_files.py), against the real binary: labels from the content, readers by
//! clearance, bad lines named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

use common::Server;

#[test]
fn the_openai_sdk_uploads_lists_reads_and_deletes_labelled_files() {
    let s = Server::start_with(&[]);
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
    let test = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sdk/test_files.py");
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", test])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", key("SECRET"))
        .env("ENCLAVE_LOW_KEY", key("UNCLASSIFIED"))
        .output()
        .expect("cannot run python: run scripts/test.sh, which makes .venv with the SDKs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK suite failed:\n{stdout}");
}
