//! The audit step: one record for every call that reached authentication, made durable before
//! the answer leaves (fail closed: 503 `audit_unavailable` otherwise), and the read side —
//! checkpoints, proofs and records for auditors.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use enclave_audit::Record;
use enclave_policy::Decision;
use enclave_store::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// What a handler tells the audit step about its call, as a response extension.
#[derive(Debug, Clone, Default)]
pub struct CallNote {
    pub model: Option<String>,
    pub decision: Option<Decision>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The answer's label when inspecting the answer raised it above the request's (the answer
    /// was then served at that label, or withheld).
    pub answer_label: Option<String>,
    /// Every try at a deployment, in order.
    pub attempts: Vec<enclave_audit::Attempt>,
}

impl CallNote {
    /// A note for a call to `model`.
    pub fn for_model(model: &str) -> Self {
        Self {
            model: Some(model.to_string()),
            ..Self::default()
        }
    }

    /// The handler's answer (or its error, in the API's shape) carrying this note to the audit
    /// step.
    pub fn attach(self, result: Result<Response, ApiError>) -> Response {
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(self);
        response
    }
}

/// The stable error code of an error response, set by `ApiError::into_response`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// This node's name in records: `HOSTNAME`, else `/etc/hostname`, else `enclave`. Looked up
/// once per process.
pub fn node() -> String {
    static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NODE.get_or_init(lookup_node).clone()
}

fn lookup_node() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "enclave".to_string())
}

/// Middleware around `/v1`, outside authentication: every call that gets this far is recorded,
/// and its answer is released only once the record is durable.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let time = now_rfc3339();
    // Inside the `/v1` nest the URI has lost its prefix; the original one has it.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
    let operation = format!("{} {path}", req.method());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let limit = crate::body_limit(req.method(), &path);
    let (parts, body) = req.into_parts();
    let mut guard = CancelGuard(Some((
        state.audit.clone(),
        Record {
            v: 2,
            time: time.clone(),
            node: node(),
            kind: "api".into(),
            operation: operation.clone(),
            client: client.clone(),
            status: 499,
            code: Some("client_closed_request".into()),
            detail: Some("the client went away before the answer".into()),
            ..Record::default()
        },
    )));
    let mut request_body = axum::body::Bytes::new();
    let (response, digest) = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            let digest = (!bytes.is_empty()).then(|| hex::encode(Sha256::digest(&bytes)));
            guard.set_request_digest(digest.clone());
            request_body = bytes.clone();
            let req = Request::from_parts(parts, Body::from(bytes));
            (next.run(req).await, digest)
        }
        Err(_) => (ApiError::BodyTooLarge(limit).into_response(), None),
    };
    // A whole (not streamed) answer is hashed too; a stream is recorded as it starts.
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut response_body = None;
    let (response, response_digest) = if streamed {
        (response, None)
    } else {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, 64 << 20).await {
            Ok(bytes) => {
                let d = hex::encode(Sha256::digest(&bytes));
                response_body = Some(bytes.clone());
                (Response::from_parts(parts, Body::from(bytes)), Some(d))
            }
            Err(_) => (ApiError::Internal.into_response(), None),
        }
    };
    let principal = response.extensions().get::<Principal>().cloned();
    let note = response
        .extensions()
        .get::<CallNote>()
        .cloned()
        .unwrap_or_default();
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.to_string());
    let decision = note.decision.as_ref();
    let record = Record {
        v: 2,
        time,
        node: node(),
        kind: "api".into(),
        operation,
        client,
        tenant: principal.as_ref().map(|p| p.tenant_name.clone()),
        key_id: principal.as_ref().map(|p| p.key_id.clone()),
        role: principal.as_ref().map(|p| p.role.as_str().to_string()),
        model: note.model.clone(),
        deployment: decision.and_then(|d| d.deployment.clone()),
        status: response.status().as_u16(),
        code,
        request_label: decision.and_then(|d| d.label.clone()),
        // The answer's label is the request's until retrieval adds inputs (the high-water mark).
        answer_label: decision
            .filter(|d| d.allowed)
            .and_then(|d| note.answer_label.clone().or_else(|| d.label.clone())),
        findings: decision
            .map(|d| {
                d.findings
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), *v as u64))
                    .collect()
            })
            .unwrap_or_default(),
        redacted: decision.map_or(0, |d| d.redacted as u64),
        prompt_tokens: note.prompt_tokens,
        completion_tokens: note.completion_tokens,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        request_sha256: digest,
        response_sha256: response_digest,
        detail: decision.map(|d| d.reason.clone()),
        attempts: note.attempts,
    };
    guard.disarm();
    match state.audit.append(&record).await {
        Ok(index) => {
            metrics::counter!("enclave_audit_records_total").increment(1);
            metrics::gauge!("enclave_audit_tree_size").set((index + 1) as f64);
            if let Some(tenant) = principal.as_ref().map(|p| p.tenant_name.clone())
                && state.policy.keeps_content(&tenant)
                && !request_body.is_empty()
            {
                let kept = json!({
                    "request": String::from_utf8_lossy(&request_body),
                    "response": response_body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                });
                let vault = std::sync::Arc::clone(&state.content);
                let sealed = tokio::task::spawn_blocking(move || {
                    vault.seal(&tenant, index, kept.to_string().as_bytes())
                })
                .await;
                if !matches!(sealed, Ok(Ok(()))) {
                    tracing::error!(
                        index,
                        "cannot keep content the tenant's policy asks to keep"
                    );
                    return ApiError::AuditUnavailable.into_response();
                }
            }
            let mut response = response;
            if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
                response.headers_mut().insert("enclave-audit-index", v);
            }
            response
        }
        Err(e) => {
            metrics::counter!("enclave_audit_failures_total").increment(1);
            tracing::error!(error = %e, "audit record not durable; refusing the answer");
            ApiError::AuditUnavailable.into_response()
        }
    }
}

/// Records a call whose client went away before its answer (the request future is dropped):
/// dropping the guard still appends a record, from a task of its own.
struct CancelGuard(Option<(enclave_audit::AuditLog, Record)>);

impl CancelGuard {
    fn set_request_digest(&mut self, digest: Option<String>) {
        if let Some((_, r)) = self.0.as_mut() {
            r.request_sha256 = digest;
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some((log, record)) = self.0.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                if let Err(e) = log.append(&record).await {
                    tracing::error!(error = %e, "cannot record a cancelled call");
                }
            });
        }
    }
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, as signed-note text.
pub async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.audit.checkpoint().map_err(|e| {
        tracing::error!(error = %e, "cannot sign a checkpoint");
        ApiError::AuditUnavailable
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Debug, Deserialize)]
pub struct InclusionQuery {
    index: u64,
    tree_size: u64,
}

fn b64(hashes: &[enclave_audit::Hash]) -> Vec<String> {
    hashes
        .iter()
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h.0))
        .collect()
}

/// `GET /v1/audit/proof/inclusion?index=&tree_size=`.
pub async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<Value>, ApiError> {
    let proof = state
        .audit
        .inclusion(q.index, q.tree_size)
        .map_err(|e| ApiError::invalid("index", e.to_string()))?;
    let leaf = state
        .audit
        .leaf(q.index)
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h.0));
    Ok(Json(json!({
        "index": q.index,
        "tree_size": q.tree_size,
        "leaf_hash": leaf,
        "proof": b64(&proof),
    })))
}

#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/audit/proof/consistency?from=&to=`.
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<Value>, ApiError> {
    let proof = state
        .audit
        .consistency(q.from, q.to)
        .map_err(|e| ApiError::invalid("from", e.to_string()))?;
    Ok(Json(
        json!({ "from": q.from, "to": q.to, "proof": b64(&proof) }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RecordsQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
}

/// `GET /v1/audit/records?from=&limit=&tenant=`: auditors read every tenant's records, admins
/// their own tenant's, users none.
pub async fn records(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Value>, ApiError> {
    let only = match principal.role {
        Role::Auditor => q.tenant.clone(),
        Role::Admin => {
            if q.tenant
                .as_ref()
                .is_some_and(|t| *t != principal.tenant_name)
            {
                return Err(ApiError::ForbiddenByPolicy(
                    "an admin key reads its own tenant's audit records only".into(),
                ));
            }
            Some(principal.tenant_name.clone())
        }
        Role::User => {
            return Err(ApiError::ForbiddenByPolicy(
                "audit records are for `auditor` keys (every tenant) and `admin` keys (their own)"
                    .into(),
            ));
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut out = Vec::new();
    let mut at = q.from;
    let size = state.audit.size().min(q.to.unwrap_or(u64::MAX));
    while at < size && (out.len() as u64) < limit {
        let chunk = state.audit.records(at, (at + 1000).min(size));
        for (index, bytes) in chunk {
            at = index + 1;
            let Ok(record) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let Some(t) = &only
                && record["tenant"].as_str() != Some(t.as_str())
            {
                continue;
            }
            out.push(json!({ "index": index, "record": record }));
            if out.len() as u64 >= limit {
                break;
            }
        }
    }
    let next = (at < size).then_some(at);
    Ok(Json(
        json!({ "object": "list", "data": out, "next_from": next, "tree_size": size }),
    ))
}

/// The status of the log for `/readyz`.
pub fn healthy(state: &AppState) -> bool {
    state.audit.healthy()
}

pub const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
