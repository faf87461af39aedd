//! The official `openai` Python SDK, unchanged, against the real binary (tests/sdk/).

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
fn the_official_openai_sdk_works_unchanged() {
    let s = Server::start();
    let revoked = s.key("default", "user");
    assert!(s.cli(&["keys", "revoke", &revoked[3..15]]).0);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/test_openai_sdk.py"
    );
    let out = Command::new(common::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("ENCLAVE_BASE_URL", &s.base)
        .env("ENCLAVE_KEY", &s.admin_key)
        .env("ENCLAVE_REVOKED_KEY", &revoked)
        .output()
        .expect(
            "cannot run python: run scripts/test.sh, which makes .venv with the openai package",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the openai SDK suite failed:\n{stdout}"
    );
}
