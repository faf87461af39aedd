//! The command line as an operator uses it: model state, refusal of corrupt models, help.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;

fn enclave(args: &[&str], data: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn models_list_shows_hashes_and_state_and_serve_refuses_a_corrupt_model() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, _) = enclave(&["models", "list"], data.path());
    assert!(ok);
    assert!(
        out.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{out}"
    );
    assert!(
        out.lines().filter(|l| l.contains("missing")).count() == 4,
        "{out}"
    );

    let dir = data.path().join("models/all-minilm-l6-v2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"not\": \"the pinned file\"}").unwrap();
    let (_, out, _) = enclave(&["models", "list"], data.path());
    let line = out.lines().find(|l| l.contains("config.json")).unwrap();
    assert!(line.contains("CORRUPT"), "{line}");

    let (ok, _, err) = enclave(
        &["serve", "--no-pull", "--listen", "127.0.0.1:0"],
        data.path(),
    );
    assert!(!ok);
    assert!(err.contains("missing or corrupt"), "{err}");
}

#[test]
fn a_verified_models_directory_lists_sizes() {
    let models = common::models_dir();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["models", "list", "--models-dir"])
        .arg(&models)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let gguf = out.lines().find(|l| l.contains(".gguf")).unwrap();
    assert!(
        gguf.contains("verified") && gguf.contains("98362432"),
        "{gguf}"
    );
}

#[test]
fn help_teaches() {
    let out = Command::new(common::bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "enclave serve",
        "ENCLAVE_LISTEN",
        "ENCLAVE_DATA_DIR",
        "models",
        "keys",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = Command::new(common::bin())
        .args(["keys", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("KEY=$(enclave keys create"), "{help}");
}
