//! The operator's own models: GGUF files an agency brings in on media, added by name.
//!
//! `add` reads the file as GGUF (header, metadata and tensor table) before anything is copied,
//! refuses one that is truncated, has no chat template (unless one is given) or whose SHA-256
//! differs from the one the operator typed, and copies it under `<models>/local/<name>/` while
//! hashing the copy: what is on disk is what was verified. The catalog is `<models>/local.json`,
//! replaced whole and atomically. Nothing is left behind by a refused addition.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::models::{ModelKind, PullProgress, sha256_file};

/// One model the operator added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalModel {
    /// The id clients name in `model`.
    pub name: String,
    pub kind: LocalKind,
    /// The file's name under the model's directory.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// The architecture the GGUF declares (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// Context length to serve with, when the operator set one.
    #[serde(default)]
    pub context: Option<u32>,
    /// A chat template given with `--chat-template`, for a GGUF that carries none.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Who added it (the operating-system user), and when (Unix seconds).
    pub added_by: String,
    pub added_at: i64,
}

/// What an operator model is for. Only chat is served from GGUF today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    Chat,
}

impl LocalKind {
    pub fn model_kind(self) -> ModelKind {
        match self {
            LocalKind::Chat => ModelKind::Chat,
        }
    }
}

impl LocalModel {
    /// The path of the model's file under `models_dir`.
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        model_dir(models_dir, &self.name).join(&self.file)
    }
}

/// What the operator asks for in `enclave models add`.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub name: String,
    pub source: PathBuf,
    pub sha256: String,
    pub kind: LocalKind,
    pub context: Option<u32>,
    /// The text of a chat template file.
    pub chat_template: Option<String>,
    pub added_by: String,
    pub added_at: i64,
}

/// What the GGUF reader found in a file.
#[derive(Debug, Clone)]
pub struct GgufSummary {
    pub architecture: String,
    pub chat_template: Option<String>,
    pub tensors: usize,
    /// Where the last tensor's data ends: a shorter file is truncated.
    pub data_end: u64,
}

fn catalog_path(models_dir: &Path) -> PathBuf {
    models_dir.join("local.json")
}

fn model_dir(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join("local").join(name)
}

/// The operator's models, in the order they were added. No catalog yet is no models.
pub fn list(models_dir: &Path) -> Result<Vec<LocalModel>, EngineError> {
    let path = catalog_path(models_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| EngineError::Catalog {
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(EngineError::io(path, e)),
    }
}

fn write_catalog(models_dir: &Path, models: &[LocalModel]) -> Result<(), EngineError> {
    let path = catalog_path(models_dir);
    let json = serde_json::to_vec_pretty(models).map_err(|e| EngineError::Catalog {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(models_dir).map_err(|e| EngineError::io(models_dir, e))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| EngineError::io(tmp.path(), e))?;
    tmp.persist(&path)
        .map_err(|e| EngineError::io(&path, e.error))?;
    Ok(())
}

/// A model name is what clients type in `model` and a directory name: letters, digits, `.`,
/// `-` and `_`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), EngineError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadModelName(name.to_string()))
    }
}

/// Reads the GGUF header, metadata and tensor table of `path` (no tensor data) and checks that
/// the file is long enough to hold every tensor.
pub fn read_gguf(path: &Path) -> Result<GgufSummary, EngineError> {
    let not_gguf = |detail: String| EngineError::NotGguf {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| not_gguf("it is shorter than a GGUF header".into()))?;
    if &magic != b"GGUF" {
        return Err(not_gguf(
            "it does not start with the GGUF magic bytes".into(),
        ));
    }
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| EngineError::io(path, e))?;
    let content = gguf_file::Content::read(&mut reader).map_err(|e| {
        // candle appends a backtrace to some errors: the first line is the reason.
        let reason = e.to_string();
        let reason = reason.lines().next().unwrap_or_default().trim().to_string();
        not_gguf(format!(
            "its header or tensor table cannot be read ({reason}); the file may be truncated"
        ))
    })?;
    let text = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let architecture = text("general.architecture")
        .ok_or_else(|| not_gguf("it names no `general.architecture`".into()))?;
    let mut data_end = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let elements = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = elements / block.max(1) * info.ggml_dtype.type_size() as u64;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|o| o.checked_add(bytes))
            .ok_or_else(|| not_gguf(format!("tensor `{name}` lies past any possible end")))?;
        data_end = data_end.max(end);
    }
    if len < data_end {
        return Err(EngineError::Truncated {
            path: path.to_path_buf(),
            size: len,
            needed: data_end,
        });
    }
    Ok(GgufSummary {
        architecture,
        chat_template: text("tokenizer.chat_template"),
        tensors: content.tensor_infos.len(),
        data_end,
    })
}

/// Adds a model: checks the file and the name, copies it while hashing, and records it.
pub fn add(
    models_dir: &Path,
    request: AddRequest,
    progress: &dyn PullProgress,
) -> Result<LocalModel, EngineError> {
    check_name(&request.name)?;
    if crate::models::find(&request.name).is_some() {
        return Err(EngineError::ModelExists(request.name));
    }
    let mut models = list(models_dir)?;
    if models.iter().any(|m| m.name == request.name) {
        return Err(EngineError::ModelExists(request.name));
    }
    let expected = request.sha256.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EngineError::BadHash(request.sha256));
    }
    progress.message(&format!("reading {}", request.source.display()));
    let gguf = read_gguf(&request.source)?;
    if gguf.chat_template.is_none() && request.chat_template.is_none() {
        return Err(EngineError::NoChatTemplate(request.source));
    }
    let file_name = request
        .source
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("model.gguf")
        .to_string();
    let dir = model_dir(models_dir, &request.name);
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let result = copy_verified(&request.source, &dir.join(&file_name), &expected, progress);
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let model = LocalModel {
        name: request.name,
        kind: request.kind,
        file: file_name,
        sha256: expected,
        size,
        architecture: gguf.architecture,
        context: request.context,
        chat_template: request.chat_template,
        added_by: request.added_by,
        added_at: request.added_at,
    };
    models.push(model.clone());
    if let Err(e) = write_catalog(models_dir, &models) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    progress.message(&format!("{} added and verified", model.name));
    Ok(model)
}

/// Copies `from` to `to`, kept only when its SHA-256 is `expected` (see
/// [`crate::models::write_verified`]).
fn copy_verified(
    from: &Path,
    to: &Path,
    expected: &str,
    progress: &dyn PullProgress,
) -> Result<u64, EngineError> {
    let mut input = File::open(from).map_err(|e| EngineError::io(from, e))?;
    let total = input
        .metadata()
        .map_err(|e| EngineError::io(from, e))?
        .len();
    crate::models::write_verified(&mut input, from, to, from, expected, total, progress)
}

/// Removes a model and its file.
pub fn remove(models_dir: &Path, name: &str) -> Result<LocalModel, EngineError> {
    let mut models = list(models_dir)?;
    let at = models
        .iter()
        .position(|m| m.name == name)
        .ok_or_else(|| EngineError::UnknownModel(name.to_string()))?;
    let model = models.remove(at);
    write_catalog(models_dir, &models)?;
    let dir = model_dir(models_dir, name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(dir, e)),
    }
    Ok(model)
}

/// Checks a model's file against the hash recorded when it was added.
pub fn verify(models_dir: &Path, model: &LocalModel) -> Result<(), EngineError> {
    let path = model.path(models_dir);
    if !path.exists() {
        return Err(EngineError::ModelMissing {
            model: model.name.clone(),
            file: model.file.clone(),
        });
    }
    let (actual, _) = sha256_file(&path).map_err(|e| EngineError::io(&path, e))?;
    if actual != model.sha256 {
        return Err(EngineError::HashMismatch {
            file: path,
            expected: model.sha256.clone(),
            actual,
        });
    }
    Ok(())
}
