//! An agent run's own audit records: one per model turn and one per tool call, each linked to
//! the run (the response id) and carrying the context label before and after it.

use enclave_audit::Record;
use sha2::{Digest, Sha256};

use crate::Service;
use crate::admin::node;
use crate::error::Error;
use crate::note::CallNote;
use crate::principal::Principal;

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn digest(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| hex::encode(Sha256::digest(text.as_bytes())))
}

fn base(principal: &Principal, run: &str, operation: &str) -> Record {
    Record {
        v: 2,
        time: now(),
        node: node(),
        kind: "agent".into(),
        operation: operation.into(),
        tenant: Some(principal.tenant_name.clone()),
        key_id: Some(principal.key_id.clone()),
        role: Some(principal.role.as_str().to_string()),
        run: Some(run.to_string()),
        ..Record::default()
    }
}

/// Appends `record`; an agent run does not go on past a step the log cannot hold.
async fn append(state: &Service, record: Record) -> Result<(), Error> {
    state.audit.append(&record).await.map(|_| ()).map_err(|e| {
        metrics::counter!("enclave_audit_failures_total").increment(1);
        tracing::error!(error = %e, "audit record of an agent step not durable; ending the run");
        Error::AuditUnavailable
    })
}

/// What one model turn was.
pub(super) struct Turn<'a> {
    pub note: &'a CallNote,
    pub before: String,
    pub after: Option<String>,
    pub failed: Option<&'a Error>,
    pub latency_ms: u64,
}

pub(super) async fn turn(
    state: &Service,
    principal: &Principal,
    run: &str,
    t: Turn<'_>,
) -> Result<(), Error> {
    let ended = t.note.outcome.get();
    let decision = t.note.decision.as_ref();
    let mut r = base(principal, run, "agent.turn");
    r.model = t.note.model.clone();
    r.deployment = decision.and_then(|d| d.deployment.clone());
    r.status = if t.failed.is_some() { 0 } else { 200 };
    r.code = t.failed.map(|e| e.code().to_string());
    r.request_label = Some(t.before);
    r.answer_label = t.after;
    r.findings = decision
        .map(|d| {
            d.findings
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v as u64))
                .collect()
        })
        .unwrap_or_default();
    r.prompt_tokens = ended.prompt_tokens;
    r.completion_tokens = ended.completion_tokens;
    r.latency_ms = t.latency_ms;
    r.detail = Some(match t.failed {
        Some(e) => format!("model turn failed: {e}"),
        None => decision.map_or_else(|| "model turn".to_string(), |d| d.reason.clone()),
    });
    r.attempts = t.note.attempts.clone();
    r.images = t.note.images.clone();
    append(state, r).await
}

/// Milliseconds since `started`, as records hold latencies.
pub(super) fn since(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What one tool call was: run, refused, failed or held for approval.
pub(super) struct Call<'a> {
    pub call: &'a super::McpCall,
    pub output: Option<&'a str>,
    /// The stable code of a refusal or failure.
    pub code: Option<&'a str>,
    pub detail: String,
    pub before: String,
    pub after: String,
    pub latency_ms: u64,
}

pub(super) async fn call(
    state: &Service,
    principal: &Principal,
    run: &str,
    c: Call<'_>,
) -> Result<(), Error> {
    let mut r = base(principal, run, "agent.tool_call");
    r.deployment = Some(format!("mcp:{}", c.call.server));
    r.model = Some(c.call.tool.clone());
    r.status = if c.code.is_none() { 200 } else { 0 };
    r.code = c.code.map(str::to_string);
    r.request_label = Some(c.before);
    r.answer_label = Some(c.after);
    r.request_sha256 = digest(&c.call.arguments);
    r.response_sha256 = c.output.and_then(digest);
    r.latency_ms = c.latency_ms;
    r.detail = Some(c.detail);
    append(state, r).await
}
