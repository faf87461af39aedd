//! `/v1/fine_tuning/jobs`: OpenAI's fine-tuning API over `enclave_service::fine_tuning`.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use enclave_service::fine_tuning::{self, NewFineTune};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

/// `{object: list, data, has_more}`, as OpenAI pages lists (one page holds everything).
fn page(data: Vec<Value>) -> Json<Value> {
    Json(json!({"object": "list", "data": data, "has_more": false}))
}

/// `POST /v1/fine_tuning/jobs`.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs", tag = "fine-tuning", request_body = NewFineTune, responses((status = 200, description = "The job, queued", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OpenAiJson(req): OpenAiJson<NewFineTune>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(fine_tuning::create(&state, &principal, req).await?))
}

/// `GET /v1/fine_tuning/jobs`.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs", tag = "fine-tuning", responses((status = 200, description = "`{object: list, data: [job], has_more}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(page(fine_tuning::list(&state, &principal).await?))
}

/// `GET /v1/fine_tuning/jobs/{id}`.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}", tag = "fine-tuning", params(("id" = String, Path, description = "A fine-tuning job id")), responses((status = 200, description = "The job", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(fine_tuning::get(&state, &principal, &id).await?))
}

/// `POST /v1/fine_tuning/jobs/{id}/cancel`.
#[utoipa::path(post, path = "/v1/fine_tuning/jobs/{id}/cancel", tag = "fine-tuning", params(("id" = String, Path, description = "A fine-tuning job id")), responses((status = 200, description = "The job", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(fine_tuning::cancel(&state, &principal, &id).await?))
}

/// `GET /v1/fine_tuning/jobs/{id}/events`.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/events", tag = "fine-tuning", params(("id" = String, Path, description = "A fine-tuning job id")), responses((status = 200, description = "`{object: list, data: [event], has_more}`, newest first", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(page(fine_tuning::events(&state, &principal, &id).await?))
}

/// `GET /v1/fine_tuning/jobs/{id}/checkpoints`.
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/checkpoints", tag = "fine-tuning", params(("id" = String, Path, description = "A fine-tuning job id")), responses((status = 200, description = "`{object: list, data: [checkpoint], has_more}`, newest first", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(page(
        fine_tuning::checkpoints(&state, &principal, &id).await?,
    ))
}
