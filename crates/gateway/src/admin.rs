//! `/v1/admin`: a tenant's users, keys (minted with the secret shown once, and revoked) and
//! quotas, and the deployments and models serving the platform. Who may is decided in
//! `enclave_service::directory`; every call is audited like any other `/v1` call.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use enclave_service::directory::{self, MintedKeyInfo, NewKeyRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Another tenant (auditors), or `*` for all; the caller's own when unset.
    tenant: Option<String>,
}

fn list<T: serde::Serialize>(data: Vec<T>) -> Json<Value> {
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/admin/tenants`: the tenants the caller may administer or audit.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "administration", responses((status = 200, description = "`{object: list, data: [tenant: TenantInfo]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn tenants(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(directory::tenants(&state, &principal).await?))
}

/// `GET /v1/admin/users?tenant=`: people who signed in.
#[utoipa::path(get, path = "/v1/admin/users", tag = "administration", params(TenantQuery), responses((status = 200, description = "`{object: list, data: [user: UserInfo]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn users(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(
        directory::users(&state, &principal, q.tenant.as_deref()).await?,
    ))
}

/// `GET /v1/admin/keys?tenant=`: keys, never their secrets.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "administration", params(TenantQuery), responses((status = 200, description = "`{object: list, data: [key: KeyInfo]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(
        directory::keys(&state, &principal, q.tenant.as_deref()).await?,
    ))
}

/// `POST /v1/admin/keys`: mints a key of the caller's tenant, at most the caller's clearance.
/// The answer is the only place its secret ever appears.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "administration", request_body = NewKeyRequest, responses((status = 200, description = "The key, with its secret (shown once)", body = MintedKeyInfo), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OpenAiJson(req): OpenAiJson<NewKeyRequest>,
) -> Result<Json<MintedKeyInfo>, ApiError> {
    Ok(Json(directory::create_key(&state, &principal, &req).await?))
}

/// `DELETE /v1/admin/keys/{id}`: revokes a key of the caller's tenant (within a second).
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "administration", params(("id" = String, Path, description = "A key's id")), responses((status = 200, description = "`{id, object: key.revoked, revoked: true}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    directory::revoke_key(&state, &principal, &id).await?;
    Ok(Json(
        json!({ "id": id, "object": "key.revoked", "revoked": true }),
    ))
}

/// `GET /v1/admin/deployments`: where models run, their accreditation, jurisdiction and breaker.
#[utoipa::path(get, path = "/v1/admin/deployments", tag = "administration", responses((status = 200, description = "`{object: list, data: [deployment: DeploymentInfo]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn deployments(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(directory::deployments(&state, &principal)?))
}

/// `GET /v1/admin/models`: the models served here with their files' pinned SHA-256.
#[utoipa::path(get, path = "/v1/admin/models", tag = "administration", responses((status = 200, description = "`{object: list, data: [model: PinnedModel]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn models(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(list(directory::models(&state, &principal)?))
}
