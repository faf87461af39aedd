//! `GET /v1/usage`: metered requests and tokens by model and day.

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use enclave_policy::{ALL_TENANTS, Action};
use enclave_service::monitor::authorize;
use enclave_service::quota::today;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD`; the first of this month when unset.
    from: Option<String>,
    /// Last day, inclusive; today when unset.
    to: Option<String>,
    /// Admins and auditors: another tenant, or `*` for all (auditors only).
    tenant: Option<String>,
    /// `model` (default): buckets by day and model. `key` (admins and auditors): by day, model
    /// and key, where a signed-in person's calls count under their user id.
    by: Option<String>,
}

fn valid_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `GET /v1/usage?from=&to=&tenant=`: requests and tokens by model and day. Users and admins
/// see their own tenant; auditors any tenant, or all.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery), responses((status = 200, description = "Requests and tokens by model and day", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = q.tenant.unwrap_or_else(|| principal.tenant_name.clone());
    authorize(&state.policy, &principal, Action::ReadUsage, &scope)?;
    let per_key = match q.by.as_deref() {
        None | Some("model") => false,
        Some("key") => {
            // Peers' use is an administrator's or an auditor's to read.
            authorize(&state.policy, &principal, Action::ReadTenant, &scope)?;
            true
        }
        Some(other) => {
            return Err(Error::invalid(
                "by",
                format!("`by` must be `model` or `key`, not `{other}`"),
            )
            .into());
        }
    };
    let tenant = (scope != ALL_TENANTS).then_some(scope);
    let today = today();
    let from = q.from.unwrap_or_else(|| format!("{}-01", &today[..7]));
    let to = q.to.unwrap_or(today);
    for (param, day) in [("from", &from), ("to", &to)] {
        if !valid_day(day) {
            return Err(Error::invalid(
                param,
                format!("`{param}` must be a day as YYYY-MM-DD; got `{day}`"),
            )
            .into());
        }
    }
    // What has not been written yet is written first, so the answer includes every call so far.
    state
        .quotas
        .meter
        .flush(state.store.as_ref())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write usage");
            Error::Internal
        })?;
    let rows = state
        .store
        .usage(tenant.as_deref(), &from, &to)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read usage");
            Error::Internal
        })?;
    // By tenant, model and day: keys are summed (a user of the tenant sees totals, not peers)
    // unless an administrator asked for them.
    type Bucket = (String, String, String, String);
    let mut by: std::collections::BTreeMap<Bucket, (u64, u64, u64)> = Default::default();
    for r in rows {
        let key = if per_key { r.key_id } else { String::new() };
        let e = by.entry((r.day, r.tenant, r.model, key)).or_default();
        e.0 += r.requests;
        e.1 += r.prompt_tokens;
        e.2 += r.completion_tokens;
    }
    let mut totals = (0, 0, 0);
    let data: Vec<Value> = by
        .into_iter()
        .map(|((day, tenant, model, key), (r, p, c))| {
            totals.0 += r;
            totals.1 += p;
            totals.2 += c;
            let mut bucket = json!({
                "object": "usage.bucket",
                "day": day,
                "tenant": tenant,
                "model": model,
                "requests": r,
                "input_tokens": p,
                "output_tokens": c,
            });
            if per_key {
                bucket["key_id"] = json!(key);
            }
            bucket
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "from": from,
        "to": to,
        "data": data,
        "total": {"requests": totals.0, "input_tokens": totals.1, "output_tokens": totals.2},
    })))
}
