//! The audit step: one record for every call that reached authentication.
//!
//! A whole answer leaves only once its record is durable (fail closed: 503 `audit_unavailable`
//! otherwise). A streamed answer's record can only be written when it ends (its tokens, the
//! label its text reached, the digest of what the client received, and how it ended), so before
//! its first byte leaves, the log durably promises it ([`enclave_audit::AuditLog::open_call`]);
//! [`stream`] writes it when the stream ends, is cut by the backend, or is dropped by the
//! client, and a stop of the server part-way is recorded at the next start. The read side for
//! auditors is in [`read`].

pub mod read;
mod stream;

pub use read::{checkpoint, consistency, inclusion, records};

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use enclave_audit::Record;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};

pub use enclave_service::note::{CallNote, Ended, Outcome};

/// The handler's answer (or its error, in the API's shape) carrying `note` to the audit step.
pub fn attach(note: CallNote, result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(note);
    response
}

pub use crate::error::ErrorCode;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub use enclave_service::admin::node;

/// What the audit step knows of a call before its handler runs.
struct Call {
    started: Instant,
    time: String,
    operation: String,
    client: Option<String>,
    request_sha256: Option<String>,
}

impl Call {
    /// The call's record from what its answer carries; `response_sha256` is the digest of a
    /// whole answer (a stream's is set when it ends).
    fn record(&self, response: &Response, response_sha256: Option<String>) -> Record {
        let principal = response.extensions().get::<Principal>();
        let note = response.extensions().get::<CallNote>();
        let ended = note.map(|n| n.outcome.get()).unwrap_or_default();
        let decision = note.and_then(|n| n.decision.as_ref());
        Record {
            v: 2,
            time: self.time.clone(),
            node: node(),
            kind: "api".into(),
            operation: self.operation.clone(),
            client: self.client.clone(),
            tenant: principal.map(|p| p.tenant_name.clone()),
            key_id: principal.map(|p| p.key_id.clone()),
            role: principal.map(|p| p.role.as_str().to_string()),
            model: note.and_then(|n| n.model.clone()),
            deployment: decision.and_then(|d| d.deployment.clone()),
            status: response.status().as_u16(),
            code: response
                .extensions()
                .get::<ErrorCode>()
                .map(|c| c.0.to_string()),
            request_label: decision.and_then(|d| d.label.clone()),
            // The answer's label is the request's (with retrieved inputs) unless inspecting the
            // answer raised it.
            answer_label: decision
                .filter(|d| d.allowed)
                .and_then(|d| ended.answer_label.clone().or_else(|| d.label.clone())),
            findings: decision.map(|d| counts(&d.findings)).unwrap_or_default(),
            redacted: decision.map_or(0, |d| d.redacted as u64),
            prompt_tokens: ended.prompt_tokens,
            completion_tokens: ended.completion_tokens,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_sha256: self.request_sha256.clone(),
            response_sha256,
            detail: decision.map(|d| d.reason.clone()),
            attempts: note.map(|n| n.attempts.clone()).unwrap_or_default(),
            answer_findings: counts(&ended.answer_findings),
            run: None,
            images: note.map(|n| n.images.clone()).unwrap_or_default(),
        }
    }
}

/// Findings by kind as a record holds them.
fn counts(
    by_kind: &std::collections::BTreeMap<enclave_service::types::Kind, usize>,
) -> std::collections::BTreeMap<String, u64> {
    by_kind
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), *v as u64))
        .collect()
}

/// Middleware around `/v1`, outside authentication: every call that gets this far is recorded,
/// and its answer is released only once the record is durable (a stream: once it is promised).
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
        .get::<ConnectInfo<crate::peer::Peer>>()
        .map(|c| c.0.addr.ip().to_string());
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
    let mut request_body = Bytes::new();
    let (response, digest) = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            let digest = (!bytes.is_empty()).then(|| hex::encode(Sha256::digest(&bytes)));
            guard.set_request_digest(digest.clone());
            request_body = bytes.clone();
            let req = Request::from_parts(parts, Body::from(bytes));
            (next.run(req).await, digest)
        }
        Err(_) => (ApiError(Error::BodyTooLarge(limit)).into_response(), None),
    };
    let call = Call {
        started,
        time,
        operation,
        client,
        request_sha256: digest,
    };
    let tenant = response
        .extensions()
        .get::<Principal>()
        .map(|p| p.tenant_name.clone());
    // Content the tenant's policy keeps, sealed under the record's index.
    let keep = tenant
        .filter(|t| state.policy.keeps_content(t) && !request_body.is_empty())
        .map(|t| (t, request_body));
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        let record = call.record(&response, None);
        let outcome = response
            .extensions()
            .get::<CallNote>()
            .map(|n| n.outcome.clone())
            .unwrap_or_default();
        // From here the log records the call, whenever the request future is dropped.
        guard.disarm();
        return match state.audit.open_call(record.clone()).await {
            Ok(open) => stream::audited(state, response, open, record, started, outcome, keep),
            Err(e) => {
                metrics::counter!("enclave_audit_failures_total").increment(1);
                tracing::error!(error = %e, "audit record cannot be promised; refusing the stream");
                ApiError(Error::AuditUnavailable).into_response()
            }
        };
    }
    let (parts, body) = response.into_parts();
    // Room for the largest answer: a file's content.
    let (response, response_body) =
        match axum::body::to_bytes(body, crate::MAX_FILE_UPLOAD_BYTES).await {
            Ok(bytes) => (
                Response::from_parts(parts, Body::from(bytes.clone())),
                Some(bytes),
            ),
            Err(_) => (ApiError(Error::Internal).into_response(), None),
        };
    let record = call.record(
        &response,
        response_body
            .as_ref()
            .map(|b| hex::encode(Sha256::digest(b))),
    );
    guard.disarm();
    match state.audit.append(&record).await {
        Ok(index) => {
            recorded(index);
            if let Some((tenant, request)) = keep
                && !seal(&state, tenant, index, &request, response_body.as_deref()).await
            {
                return ApiError(Error::AuditUnavailable).into_response();
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
            ApiError(Error::AuditUnavailable).into_response()
        }
    }
}

/// Records a call a job made (a batch line) as its own record — `kind` `batch`, `run` the job,
/// the line's `custom_id` in the detail — and gives back the answer and its bytes. When the
/// record cannot be made durable the answer is replaced by 503 `audit_unavailable`, which the
/// job treats as passing and tries again.
pub async fn record_job_call(
    state: &AppState,
    started: Instant,
    operation: String,
    (run, item): (&str, &str),
    request: &Bytes,
    response: Response,
) -> (Response, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, crate::MAX_FILE_UPLOAD_BYTES)
        .await
        .unwrap_or_default();
    let response = Response::from_parts(parts, Body::from(bytes.clone()));
    let call = Call {
        started,
        time: now_rfc3339(),
        operation,
        client: None,
        request_sha256: (!request.is_empty()).then(|| hex::encode(Sha256::digest(request))),
    };
    let mut record = call.record(&response, Some(hex::encode(Sha256::digest(&bytes))));
    record.kind = "batch".into();
    record.run = Some(run.to_string());
    record.detail = Some(match record.detail.take() {
        Some(d) => format!("line `{item}`: {d}"),
        None => format!("line `{item}`"),
    });
    match state.audit.append(&record).await {
        Ok(index) => {
            recorded(index);
            (response, bytes)
        }
        Err(e) => {
            metrics::counter!("enclave_audit_failures_total").increment(1);
            tracing::error!(error = %e, "audit record of a batch line not durable; the line waits");
            let refused = ApiError(Error::AuditUnavailable).into_response();
            let (parts, body) = refused.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            (
                Response::from_parts(parts, Body::from(bytes.clone())),
                bytes,
            )
        }
    }
}

/// Counts a durable record.
fn recorded(index: u64) {
    metrics::counter!("enclave_audit_records_total").increment(1);
    metrics::gauge!("enclave_audit_tree_size").set((index + 1) as f64);
}

/// Seals a call's request and answer for a tenant whose policy keeps content; false when that
/// failed.
async fn seal(
    state: &AppState,
    tenant: String,
    index: u64,
    request: &[u8],
    response: Option<&[u8]>,
) -> bool {
    let kept = json!({
        "request": String::from_utf8_lossy(request),
        "response": response.map(|b| String::from_utf8_lossy(b).into_owned()),
    });
    let vault = Arc::clone(&state.content);
    let sealed = tokio::task::spawn_blocking(move || {
        vault.seal(&tenant, index, kept.to_string().as_bytes())
    })
    .await;
    let ok = matches!(sealed, Ok(Ok(())));
    if !ok {
        tracing::error!(
            index,
            "cannot keep content the tenant's policy asks to keep"
        );
    }
    ok
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

/// The status of the log for `/readyz`.
pub fn healthy(state: &AppState) -> bool {
    state.audit.healthy()
}

pub const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
