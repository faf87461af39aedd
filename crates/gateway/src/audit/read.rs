//! The read side of the audit log for auditors: signed checkpoints, proofs and records.

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use enclave_policy::{ALL_TENANTS, Action};
use enclave_service::monitor::authorize;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint, as signed-note text.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit", responses((status = 200, description = "The latest signed checkpoint, as signed-note text", body = String, content_type = "text/plain"), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.audit.checkpoint().map_err(|e| {
        tracing::error!(error = %e, "cannot sign a checkpoint");
        Error::AuditUnavailable
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(get, path = "/v1/audit/proof/inclusion", tag = "audit", params(InclusionQuery), responses((status = 200, description = "An inclusion proof", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<Value>, ApiError> {
    let proof = state
        .audit
        .inclusion(q.index, q.tree_size)
        .map_err(|e| Error::invalid("index", e.to_string()))?;
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/audit/proof/consistency?from=&to=`.
#[utoipa::path(get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyQuery), responses((status = 200, description = "A consistency proof", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<Value>, ApiError> {
    let proof = state
        .audit
        .consistency(q.from, q.to)
        .map_err(|e| Error::invalid("from", e.to_string()))?;
    Ok(Json(
        json!({ "from": q.from, "to": q.to, "proof": b64(&proof) }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
    /// Also give each record's exact bytes (base64), as its leaf was hashed: what a verifier
    /// needs to check an inclusion proof itself.
    #[serde(default)]
    raw: bool,
}

/// `GET /v1/audit/records?from=&limit=&tenant=&raw=`: auditors read every tenant's records,
/// admins their own tenant's, users none. With `raw=true`, each record's exact bytes too.
#[utoipa::path(get, path = "/v1/audit/records", tag = "audit", params(RecordsQuery), responses((status = 200, description = "Records the key may read, with their indices", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn records(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Value>, ApiError> {
    // No tenant named: every tenant where the policy allows it, else the caller's own.
    let scope = match q.tenant.clone() {
        Some(t) => t,
        None if authorize(&state.policy, &principal, Action::ReadAudit, ALL_TENANTS).is_ok() => {
            ALL_TENANTS.to_string()
        }
        None => principal.tenant_name.clone(),
    };
    authorize(&state.policy, &principal, Action::ReadAudit, &scope)?;
    let only = (scope != ALL_TENANTS).then_some(scope);
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
            let mut item = json!({ "index": index, "record": record });
            if q.raw {
                item["raw"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
            }
            out.push(item);
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
