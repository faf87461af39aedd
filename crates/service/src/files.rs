//! Files for batches and fine-tuning (OpenAI's Files API), per tenant and labelled: the label a
//! file carries is the one declared (or the tenant's default) joined with every marking found in
//! every string of every line, so a batch run from it or a model trained on it starts no lower.
//! A file above the uploader's clearance, or with a marking the scheme does not know, is refused
//! whole; a line of the wrong shape is refused naming the line. A file is read (facts, content,
//! deletion) only within its tenant by a clearance that dominates it; anyone else is told there
//! is no such file.

use std::collections::HashMap;

use enclave_label::Label;
use enclave_policy::{check_clearance, label_request};
use enclave_store::{Role, StoredFile};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Service;
use crate::error::Error;
use crate::monitor::{self, Declared};
use crate::principal::Principal;

/// The largest file accepted.
pub const MAX_FILE_BYTES: usize = 200 << 20;
/// The most lines a batch file may hold.
pub const MAX_BATCH_LINES: usize = 50_000;
/// The endpoints a batch line may call.
pub const BATCH_ENDPOINTS: [&str; 2] = ["/v1/chat/completions", "/v1/embeddings"];

/// What a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Batch,
    FineTune,
}

impl Purpose {
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "batch" => Ok(Purpose::Batch),
            "fine-tune" => Ok(Purpose::FineTune),
            other => Err(Error::invalid(
                "purpose",
                format!(
                    "`{other}` is not a purpose Enclave keeps files for: use `batch` or `fine-tune`"
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Batch => "batch",
            Purpose::FineTune => "fine-tune",
        }
    }
}

/// A file as the API shows it (OpenAI's file object, with Enclave's facts beside it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileInfo {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    pub status: &'static str,
    pub status_details: Option<String>,
    pub expires_at: Option<i64>,
    pub enclave: FileFacts,
}

/// What Enclave adds to a file object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileFacts {
    /// Declared, joined with every marking found in the file.
    pub label: String,
    pub sha256: String,
    pub lines: i64,
}

fn info(f: StoredFile) -> FileInfo {
    FileInfo {
        id: f.id,
        object: "file",
        bytes: f.bytes,
        created_at: f.created_at,
        filename: f.filename,
        purpose: f.purpose,
        status: "processed",
        status_details: None,
        expires_at: None,
        enclave: FileFacts {
            label: f.label,
            sha256: f.sha256,
            lines: f.lines,
        },
    }
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "file store failure");
    Error::Internal
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("there is no file `{id}`"))
}

fn bad_line(n: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid("file", format!("line {n}: {message}"))
}

/// Every string in `v`, depth first: what inspection reads of a line (escapes decoded, so a
/// marking spelled with `\u0028` is read as the marking it is).
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Checks one line's shape for `purpose`; `seen` holds the batch's `custom_id`s so far.
fn check_line(
    purpose: Purpose,
    n: usize,
    line: &Value,
    seen: &mut HashMap<String, usize>,
) -> Result<(), Error> {
    let Some(o) = line.as_object() else {
        return Err(bad_line(n, "a line must be a JSON object"));
    };
    match purpose {
        Purpose::Batch => {
            let id = o
                .get("custom_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad_line(n, "a batch line needs a `custom_id` string"))?;
            if let Some(first) = seen.insert(id.to_string(), n) {
                return Err(bad_line(
                    n,
                    format!("`custom_id` `{id}` is already used by line {first}"),
                ));
            }
            if o.get("method").and_then(Value::as_str) != Some("POST") {
                return Err(bad_line(n, "`method` must be `POST`"));
            }
            let url = o.get("url").and_then(Value::as_str).unwrap_or_default();
            if !BATCH_ENDPOINTS.contains(&url) {
                return Err(bad_line(
                    n,
                    format!(
                        "`url` `{url}` is not an endpoint batches call: use `/v1/chat/completions` or `/v1/embeddings`"
                    ),
                ));
            }
            if !o.get("body").is_some_and(Value::is_object) {
                return Err(bad_line(n, "`body` must be the request object"));
            }
        }
        Purpose::FineTune => {
            let messages = o
                .get("messages")
                .and_then(Value::as_array)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| bad_line(n, "a training line needs `messages`"))?;
            let mut answered = false;
            for (i, m) in messages.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or_default();
                if !matches!(role, "system" | "user" | "assistant") {
                    return Err(bad_line(
                        n,
                        format!("messages[{i}].role must be `system`, `user` or `assistant`"),
                    ));
                }
                if !m["content"].is_string() {
                    return Err(bad_line(n, format!("messages[{i}].content must be text")));
                }
                answered |= role == "assistant";
            }
            if !answered {
                return Err(bad_line(
                    n,
                    "a training line needs an `assistant` message to learn",
                ));
            }
        }
    }
    Ok(())
}

/// Checks, labels and keeps a file `principal` uploads.
pub async fn upload(
    state: &Service,
    principal: &Principal,
    declared: Option<&Declared>,
    purpose: &str,
    filename: &str,
    bytes: &[u8],
) -> Result<FileInfo, Error> {
    if principal.role == Role::Auditor {
        return Err(Error::ForbiddenByPolicy(
            "auditors read records; they do not upload files".into(),
        ));
    }
    let purpose = Purpose::parse(purpose)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::BodyTooLarge(MAX_FILE_BYTES));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid("file", format!("the file is not UTF-8 text: {e}")))?;
    let policy = &state.policy;
    let floor = match declared {
        Some(Declared { source, text }) => {
            policy.scheme.parse(text).map_err(|e| Error::InvalidLabel {
                param: source.to_string(),
                message: format!(
                    "`{text}` in `{source}` is not a label of scheme {}: {e}",
                    policy.scheme.name()
                ),
            })?
        }
        None => policy.tenant(&principal.tenant_name).default_label.clone(),
    };
    let mut label: Label = floor.clone();
    let mut seen = HashMap::new();
    let mut lines = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        lines += 1;
        if purpose == Purpose::Batch && lines > MAX_BATCH_LINES {
            return Err(bad_line(
                n,
                format!("a batch file holds at most {MAX_BATCH_LINES} lines"),
            ));
        }
        let line: Value =
            serde_json::from_str(raw).map_err(|e| bad_line(n, format!("not valid JSON: {e}")))?;
        check_line(purpose, n, &line, &mut seen)?;
        let mut texts = Vec::new();
        strings(&line, &mut texts);
        let labelled = label_request(&policy.inspector, &floor, texts.iter().copied());
        if let Some(why) = monitor::unrecognized(&policy.scheme, &texts, &labelled.findings) {
            return Err(Error::UnrecognizedMarkingInDocument(format!(
                "line {n}: {why}"
            )));
        }
        label = label.join(&labelled.label);
    }
    if lines == 0 {
        return Err(Error::invalid("file", "the file holds no lines"));
    }
    let clearance = monitor::clearance(policy, principal)?;
    check_clearance(&policy.scheme, &clearance, &label).map_err(|why| {
        Error::LabelExceedsClearance(format!(
            "the file is labelled {}: {why}",
            policy.scheme.banner(&label)
        ))
    })?;
    let stored = StoredFile {
        id: format!("file-{}", uuid::Uuid::now_v7().simple()),
        tenant_id: principal.tenant_id.clone(),
        key_id: principal.key_id.clone(),
        purpose: purpose.as_str().to_string(),
        filename: filename.to_string(),
        bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        lines: i64::try_from(lines).unwrap_or(i64::MAX),
        label: policy.scheme.banner(&label),
        sha256: hex::encode(Sha256::digest(bytes)),
        created_at: enclave_store::now(),
    };
    state
        .store
        .create_file(&stored, bytes)
        .await
        .map_err(store_error)?;
    Ok(info(stored))
}

/// The file `id`, if `principal` may read it.
async fn readable(state: &Service, principal: &Principal, id: &str) -> Result<StoredFile, Error> {
    let f = state
        .store
        .file(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    if !monitor::may_read(&state.policy, principal, &f.tenant_id, &f.label)? {
        return Err(not_found(id));
    }
    Ok(f)
}

/// A file's facts.
pub async fn get(state: &Service, principal: &Principal, id: &str) -> Result<FileInfo, Error> {
    Ok(info(readable(state, principal, id).await?))
}

/// The lines of file `id`, which `principal` may read and which was uploaded for `purpose`,
/// each as parsed JSON with its number (1-based); `param` names the request field that gave the
/// id. Blank lines are passed over; every other line was checked at upload.
pub(crate) async fn lines_for(
    state: &Service,
    principal: &Principal,
    id: &str,
    purpose: Purpose,
    param: &str,
) -> Result<(FileInfo, Vec<(usize, Value)>), Error> {
    let (file, bytes) = content(state, principal, id).await?;
    if file.purpose != purpose.as_str() {
        return Err(Error::invalid(
            param,
            format!(
                "`{}` was uploaded for `{}`, not `{}`",
                file.id,
                file.purpose,
                purpose.as_str()
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::Internal)?;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        lines.push((
            i + 1,
            serde_json::from_str(raw).map_err(|_| Error::Internal)?,
        ));
    }
    Ok((file, lines))
}

/// `metadata` as OpenAI's job APIs take it: absent, null, or an object of at most 16 strings.
pub(crate) fn check_metadata(metadata: Option<&Value>) -> Result<(), Error> {
    match metadata {
        Some(m)
            if !(m.is_null()
                || m.as_object()
                    .is_some_and(|o| o.len() <= 16 && o.values().all(Value::is_string))) =>
        {
            Err(Error::invalid(
                "metadata",
                "`metadata` is an object of at most 16 strings",
            ))
        }
        _ => Ok(()),
    }
}

/// A file's facts and bytes.
pub async fn content(
    state: &Service,
    principal: &Principal,
    id: &str,
) -> Result<(FileInfo, Vec<u8>), Error> {
    let f = readable(state, principal, id).await?;
    let bytes = state
        .store
        .file_content(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    Ok((info(f), bytes))
}

/// The files of `principal`'s tenant it may read, newest first, of `purpose` when given.
pub async fn list(
    state: &Service,
    principal: &Principal,
    purpose: Option<&str>,
) -> Result<Vec<FileInfo>, Error> {
    if let Some(p) = purpose
        && !matches!(p, "batch" | "fine-tune" | "batch_output")
    {
        return Err(Error::invalid(
            "purpose",
            format!("`{p}` is not a purpose: use `batch`, `fine-tune` or `batch_output`"),
        ));
    }
    let clearance = monitor::clearance(&state.policy, principal)?;
    let scheme = &state.policy.scheme;
    Ok(state
        .store
        .list_files(&principal.tenant_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|f| purpose.is_none_or(|p| f.purpose == p))
        .filter(|f| {
            scheme
                .parse(&f.label)
                .is_ok_and(|l| clearance.dominates(&l))
        })
        .map(info)
        .collect())
}

/// Deletes a file `principal` may read. What was made from it keeps its label.
pub async fn delete(state: &Service, principal: &Principal, id: &str) -> Result<(), Error> {
    readable(state, principal, id).await?;
    if state.store.delete_file(id).await.map_err(store_error)? {
        Ok(())
    } else {
        Err(not_found(id))
    }
}
