//! Batches (OpenAI's Batch API): a file of requests answered in the background, each line one
//! call through the service core under the batch owner's principal, declared at the file's
//! label (joined with the line's own markings by admission), routed only where that label may
//! go, charged to the tenant's quotas and audited on its own (the surface's [`LineRunner`]
//! makes the call and its record).
//!
//! Durable and crash-safe: a line's result is stored once, keyed by (batch, `custom_id`), before
//! the worker moves on; after a `kill -9` the worker resumes each unfinished batch with the lines
//! that have no result, and the output and error files are made from the stored results under
//! ids of their own batch, so every `custom_id` appears exactly once in one of them. Lines run a
//! few at a time, leaving the engine's other slots to interactive calls; batches of different
//! tenants take turns.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use enclave_label::Label;
use enclave_store::{BatchResult, Role, StoredBatch, StoredFile};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Service;
use crate::error::Error;
use crate::files::{self, BATCH_ENDPOINTS};
use crate::principal::{Established, Principal};

/// Lines of one batch in flight at once. The embedded engine admits them after every waiting
/// interactive call and keeps a quarter of its sequences for interactive calls, so a batch may
/// use the rest.
const CONCURRENCY: usize = 12;
/// Lines answered before the worker turns to another tenant's batch.
const TURN: usize = 16;

/// One line as the surface runs it.
#[derive(Debug)]
pub struct Line<'a> {
    pub principal: &'a Principal,
    pub batch: &'a str,
    pub custom_id: &'a str,
    /// The file's label: the line is declared at it.
    pub label: &'a str,
    pub endpoint: &'a str,
    pub body: Value,
}

/// What a line's call answered.
#[derive(Debug, Clone)]
pub struct LineOutcome {
    pub status: u16,
    /// The response body (or the error object).
    pub body: Value,
    /// The label the answer reached.
    pub label: Option<String>,
}

impl LineOutcome {
    /// A failure that may pass (the audit log, a loading or busy model): the line is tried
    /// again later rather than recorded as failed.
    fn transient(&self) -> bool {
        matches!(self.status, 429 | 503)
    }
}

/// What answers a line: the HTTP surface, which parses the body with its own wire types, calls
/// the service core and writes the line's audit record.
#[async_trait::async_trait]
pub trait LineRunner: Send + Sync {
    async fn run(&self, line: Line<'_>) -> LineOutcome;
}

/// Who a batch's lines (or a fine-tuning job) run as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) key_id: String,
    tenant_id: String,
    pub(crate) tenant_name: String,
    role: String,
    clearance: String,
    user: Option<String>,
}

impl Owner {
    pub(crate) fn of(p: &Principal) -> Self {
        Self {
            key_id: p.key_id.clone(),
            tenant_id: p.tenant_id.clone(),
            tenant_name: p.tenant_name.clone(),
            role: p.role.as_str().to_string(),
            clearance: p.clearance.clone(),
            user: p.user.clone(),
        }
    }

    pub(crate) fn principal(&self) -> Result<Principal, Error> {
        Ok(Principal {
            established: Established::ApiKey,
            key_id: self.key_id.clone(),
            tenant_id: self.tenant_id.clone(),
            tenant_name: self.tenant_name.clone(),
            role: self.role.parse::<Role>().map_err(|_| Error::Internal)?,
            clearance: self.clearance.clone(),
            user: self.user.clone(),
        })
    }
}

/// A batch as the API shows it.
pub type BatchInfo = Value;

fn info(b: &StoredBatch, counts: (i64, i64)) -> BatchInfo {
    let metadata = b
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .unwrap_or(Value::Null);
    let errors = b.error.as_ref().map(|e| {
        json!({"object": "list", "data": [{"code": "batch_failed", "message": e, "param": null, "line": null}]})
    });
    json!({
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": errors,
        "input_file_id": b.input_file_id, "completion_window": "24h", "status": b.status,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
        "created_at": b.created_at, "in_progress_at": b.in_progress_at, "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at, "completed_at": b.completed_at, "failed_at": b.failed_at,
        "expired_at": if b.status == "expired" { b.completed_at } else { None },
        "cancelling_at": b.cancelling_at, "cancelled_at": b.cancelled_at,
        "request_counts": {"total": b.total, "completed": counts.0, "failed": counts.1},
        "metadata": metadata,
        "enclave": {"label": b.label, "priority": crate::jobs::Priority::of_rank(b.priority).as_str()},
    })
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "batch store failure");
    Error::Internal
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("there is no batch `{id}`"))
}

/// A batch request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    pub input_file_id: String,
    /// `/v1/chat/completions` or `/v1/embeddings`.
    pub endpoint: String,
    /// `24h`.
    pub completion_window: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Enclave's: `high`, `normal` (the default) or `low`. Batches of higher priority are
    /// answered first.
    #[serde(default)]
    pub priority: Option<crate::jobs::Priority>,
}

/// One line of a batch file: its number, `custom_id` and request body.
type InputLine = (i64, String, Value);

/// The input files of the batches under way, read once each.
type Inputs = BTreeMap<String, Arc<Vec<InputLine>>>;

/// The lines of a batch file.
fn lines(bytes: &[u8]) -> Result<Vec<InputLine>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Internal)?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(raw).map_err(|_| Error::Internal)?;
        let id = v["custom_id"].as_str().unwrap_or_default().to_string();
        out.push((i as i64 + 1, id, v["body"].take()));
    }
    Ok(out)
}

/// Starts a batch over a file `principal` may read.
pub async fn create(
    state: &Service,
    principal: &Principal,
    req: NewBatch,
) -> Result<BatchInfo, Error> {
    if req.completion_window != "24h" {
        return Err(Error::invalid(
            "completion_window",
            "`completion_window` must be `24h`",
        ));
    }
    if !BATCH_ENDPOINTS.contains(&req.endpoint.as_str()) {
        return Err(Error::invalid(
            "endpoint",
            format!(
                "`{}` is not an endpoint batches call: use `/v1/chat/completions` or `/v1/embeddings`",
                req.endpoint
            ),
        ));
    }
    files::check_metadata(req.metadata.as_ref())?;
    let (file, lines) = files::lines_for(
        state,
        principal,
        &req.input_file_id,
        files::Purpose::Batch,
        "input_file_id",
    )
    .await?;
    for (n, v) in &lines {
        let url = v["url"].as_str().unwrap_or_default();
        if url != req.endpoint {
            return Err(Error::invalid(
                "input_file_id",
                format!(
                    "line {n}: `url` `{url}` differs from the batch's endpoint `{}`",
                    req.endpoint
                ),
            ));
        }
    }
    let now = enclave_store::now();
    let b = StoredBatch {
        id: format!("batch_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: principal.tenant_id.clone(),
        owner: serde_json::to_string(&Owner::of(principal)).map_err(|_| Error::Internal)?,
        endpoint: req.endpoint,
        input_file_id: file.id,
        label: file.enclave.label,
        status: "validating".into(),
        metadata: req.metadata.filter(|m| !m.is_null()).map(|m| m.to_string()),
        total: file.enclave.lines,
        output_file_id: None,
        error_file_id: None,
        error: None,
        created_at: now,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        expires_at: now + 24 * 3600,
        priority: req.priority.unwrap_or_default().rank(),
    };
    state.store.save_batch(&b).await.map_err(store_error)?;
    Ok(info(&b, (0, 0)))
}

/// The batch `id`, if `principal` may read it (its tenant, and a clearance over its label).
async fn readable(state: &Service, principal: &Principal, id: &str) -> Result<StoredBatch, Error> {
    let b = state
        .store
        .batch(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    if !crate::monitor::may_read(&state.policy, principal, &b.tenant_id, &b.label)? {
        return Err(not_found(id));
    }
    Ok(b)
}

pub async fn get(state: &Service, principal: &Principal, id: &str) -> Result<BatchInfo, Error> {
    let b = readable(state, principal, id).await?;
    let counts = state.store.batch_counts(&b.id).await.map_err(store_error)?;
    Ok(info(&b, counts))
}

/// The tenant's batches `principal` may read, newest first.
pub async fn list(state: &Service, principal: &Principal) -> Result<Vec<BatchInfo>, Error> {
    let clearance = crate::monitor::clearance(&state.policy, principal)?;
    let scheme = &state.policy.scheme;
    let mut out = Vec::new();
    for b in state
        .store
        .list_batches(&principal.tenant_id)
        .await
        .map_err(store_error)?
    {
        if scheme
            .parse(&b.label)
            .is_ok_and(|l| clearance.dominates(&l))
        {
            let counts = state.store.batch_counts(&b.id).await.map_err(store_error)?;
            out.push(info(&b, counts));
        }
    }
    Ok(out)
}

/// Asks a batch to stop: lines already answered are kept in its files.
pub async fn cancel(state: &Service, principal: &Principal, id: &str) -> Result<BatchInfo, Error> {
    let mut b = readable(state, principal, id).await?;
    if matches!(b.status.as_str(), "validating" | "in_progress") {
        b.status = "cancelling".into();
        b.cancelling_at = Some(enclave_store::now());
        state.store.save_batch(&b).await.map_err(store_error)?;
    } else if b.status != "cancelling" {
        return Err(Error::Conflict(format!(
            "the batch is `{}`: only a running batch can be cancelled",
            b.status
        )));
    }
    let counts = state.store.batch_counts(&b.id).await.map_err(store_error)?;
    Ok(info(&b, counts))
}

/// Input files kept parsed between turns, at most (batches under way beyond it read theirs
/// again).
const KEPT_INPUTS: usize = 32;

/// Runs batches until `stop` says so, taking them from the jobs queue a turn at a time: the
/// highest priority first, then the tenant served longest ago. The batch is held during its
/// turn, so servers sharing the store never answer one batch's lines at once.
pub async fn work(
    state: Service,
    runner: Arc<dyn LineRunner>,
    stop: tokio_util::sync::CancellationToken,
) {
    const UNFINISHED: [&str; 4] = ["validating", "in_progress", "finalizing", "cancelling"];
    crate::jobs::release_mine(&state).await;
    let mut turns = crate::jobs::Turns::default();
    let mut inputs: Inputs = BTreeMap::new();
    loop {
        if stop.is_cancelled() {
            break;
        }
        let held = crate::jobs::next(&state, &mut turns, "batch", &UNFINISHED)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the jobs queue; retrying");
                None
            });
        let Some(held) = held else {
            inputs.clear();
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
            }
        };
        if inputs.len() > KEPT_INPUTS {
            inputs.clear();
        }
        let id = held.job.id.clone();
        let advanced = match state.store.batch(&id).await {
            Ok(Some(b)) => advance(&state, &runner, b, &mut inputs, &stop).await,
            Ok(None) => Err(Error::NotFound(format!(
                "the queued batch `{id}` has no record"
            ))),
            Err(e) => Err(store_error(e)),
        };
        held.release().await;
        if let Err(e) = advanced {
            tracing::warn!(batch = %id, error = %e, "batch paused");
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Moves one batch on by a turn.
async fn advance(
    state: &Service,
    runner: &Arc<dyn LineRunner>,
    mut b: StoredBatch,
    inputs: &mut Inputs,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    let now = enclave_store::now();
    match b.status.as_str() {
        "validating" => {
            b.status = "in_progress".into();
            b.in_progress_at = Some(now);
            return state.store.save_batch(&b).await.map_err(store_error);
        }
        "cancelling" => return finish(state, b, "cancelled").await,
        "finalizing" => return finish(state, b, "completed").await,
        _ => {}
    }
    if now > b.expires_at {
        return finish(state, b, "expired").await;
    }
    let owner: Owner = serde_json::from_str(&b.owner).map_err(|_| Error::Internal)?;
    let principal = owner.principal()?;
    // A batch runs only as long as the key that made it is valid.
    if let Ok(Some((key, _))) = state.store.key_for_auth(&owner.key_id).await
        && key.revoked_at.is_some()
    {
        b.error = Some(format!(
            "the key `{}` that created the batch has been revoked",
            owner.key_id
        ));
        return finish(state, b, "failed").await;
    }
    let all = match inputs.get(&b.id) {
        Some(l) => Arc::clone(l),
        None => {
            let Some(bytes) = state
                .store
                .file_content(&b.input_file_id)
                .await
                .map_err(store_error)?
            else {
                b.error = Some("its input file has been deleted".into());
                return finish(state, b, "failed").await;
            };
            let l = Arc::new(lines(&bytes)?);
            inputs.insert(b.id.clone(), Arc::clone(&l));
            l
        }
    };
    let done: HashSet<String> = state
        .store
        .batch_results(&b.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|r| r.custom_id)
        .collect();
    let todo: Vec<InputLine> = all
        .iter()
        .filter(|(_, id, _)| !done.contains(id))
        .take(TURN)
        .cloned()
        .collect();
    if todo.is_empty() {
        b.status = "finalizing".into();
        b.finalizing_at = Some(now);
        state.store.save_batch(&b).await.map_err(store_error)?;
        return finish(state, b, "completed").await;
    }
    // Owned, so the futures hold no borrow across the worker's task (it must be `Send`).
    let context = Arc::new((principal, b.id.clone(), b.label.clone(), b.endpoint.clone()));
    let calls = todo.into_iter().map(|(n, custom_id, body)| {
        let (context, runner) = (Arc::clone(&context), Arc::clone(runner));
        async move {
            let (principal, batch, label, endpoint) = &*context;
            let outcome = runner
                .run(Line {
                    principal,
                    batch,
                    custom_id: &custom_id,
                    label,
                    endpoint,
                    body,
                })
                .await;
            (n, custom_id, outcome)
        }
    });
    let outcomes: Vec<(i64, String, LineOutcome)> = futures::stream::iter(calls)
        .buffer_unordered(CONCURRENCY)
        .take_until(stop.cancelled())
        .collect()
        .await;
    let mut transient = None;
    for (n, custom_id, outcome) in outcomes {
        if outcome.transient() {
            transient = Some(outcome.status);
            continue;
        }
        let ok = (200..300).contains(&outcome.status);
        let line = json!({
            "id": format!("batch_req_{}", uuid::Uuid::new_v4().simple()),
            "custom_id": custom_id,
            "response": {"status_code": outcome.status, "request_id": null, "body": outcome.body},
            "error": if ok { Value::Null } else {
                json!({"code": outcome.body["error"]["code"], "message": outcome.body["error"]["message"]})
            },
        });
        state
            .store
            .record_batch_result(&BatchResult {
                batch_id: b.id.clone(),
                custom_id,
                line: n,
                ok,
                label: outcome.label.unwrap_or_else(|| b.label.clone()),
                body: line.to_string(),
            })
            .await
            .map_err(store_error)?;
    }
    match transient {
        Some(status) => Err(Error::Overloaded(format!(
            "a line was answered {status}; it will be tried again"
        ))),
        None => Ok(()),
    }
}

/// Writes the output and error files from the stored results and ends the batch at `status`.
/// Safe to repeat after a crash: the files' ids are the batch's own.
async fn finish(state: &Service, mut b: StoredBatch, status: &str) -> Result<(), Error> {
    let results = state
        .store
        .batch_results(&b.id)
        .await
        .map_err(store_error)?;
    let scheme = &state.policy.scheme;
    let base = scheme.parse(&b.label).map_err(|_| Error::Internal)?;
    let made = |suffix: &str, ok: bool| -> Option<(StoredFile, Vec<u8>)> {
        let picked: Vec<&BatchResult> = results.iter().filter(|r| r.ok == ok).collect();
        if picked.is_empty() {
            return None;
        }
        let mut label: Label = base.clone();
        let mut bytes = Vec::new();
        for r in &picked {
            if let Ok(l) = scheme.parse(&r.label) {
                label = label.join(&l);
            }
            bytes.extend_from_slice(r.body.as_bytes());
            bytes.push(b'\n');
        }
        Some((
            StoredFile {
                id: format!("file-{}-{suffix}", b.id),
                tenant_id: b.tenant_id.clone(),
                key_id: String::new(),
                purpose: "batch_output".into(),
                filename: format!("{}_{suffix}.jsonl", b.id),
                bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                lines: i64::try_from(picked.len()).unwrap_or(i64::MAX),
                label: scheme.banner(&label),
                sha256: hex::encode(Sha256::digest(&bytes)),
                created_at: enclave_store::now(),
            },
            bytes,
        ))
    };
    let output = made("output", true);
    let errors = made("errors", false);
    for (file, bytes) in [output.as_ref(), errors.as_ref()].into_iter().flatten() {
        state
            .store
            .delete_file(&file.id)
            .await
            .map_err(store_error)?;
        state
            .store
            .create_file(file, bytes)
            .await
            .map_err(store_error)?;
    }
    b.output_file_id = output.map(|(f, _)| f.id);
    b.error_file_id = errors.map(|(f, _)| f.id);
    let now = enclave_store::now();
    match status {
        "completed" | "expired" => b.completed_at = Some(now),
        "cancelled" => b.cancelled_at = Some(now),
        _ => b.failed_at = Some(now),
    }
    b.status = status.to_string();
    state.store.save_batch(&b).await.map_err(store_error)?;
    tracing::info!(batch = %b.id, status, "batch ended");
    Ok(())
}
