//! `/v1/conversations`: the caller's kept conversations (list, open, delete, export as Markdown),
//! and the `Enclave-Conversation` header a chat names the conversation it continues in. What
//! may be seen and at which label is decided in `enclave_service::history`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_label::Label;
use enclave_service::history::{self, ConversationInfo, Keeper, Kept};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};

/// The header a chat names the kept conversation it continues in.
pub const CONVERSATION_HEADER: &str = "enclave-conversation";

/// The conversation a chat continues, if it names one: the label it is admitted at, at least,
/// and where its turn is kept. A conversation the caller may not see is not found.
pub async fn continued(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Option<(Label, Keeper)>, ApiError> {
    let Some(value) = headers.get(CONVERSATION_HEADER) else {
        return Ok(None);
    };
    let id = value.to_str().map_err(|_| {
        Error::invalid(
            "Enclave-Conversation",
            "the `Enclave-Conversation` header must be a conversation id".to_string(),
        )
    })?;
    Ok(Some(history::floor(state, principal, id.trim()).await?))
}

/// The higher of a retrieval's floor and a continued conversation's label.
pub fn joined_floor(a: Option<&Label>, b: Option<&Label>) -> Option<Label> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.join(b)),
        (a, b) => a.or(b).cloned(),
    }
}

/// `POST /v1/conversations`: a new, empty conversation at the scheme's lowest label.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", responses((status = 200, description = "The new conversation", body = ConversationInfo), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<ConversationInfo>, ApiError> {
    Ok(Json(history::create(&state, &principal).await?))
}

/// `GET /v1/conversations`: the caller's conversations their clearance still dominates, the most
/// recently updated first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", responses((status = 200, description = "`{object: list, data: [conversation]}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let data = history::list(&state, &principal).await?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/conversations/{id}`: one conversation with its messages and their labels.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = String, Path, description = "A conversation's id")), responses((status = 200, description = "The conversation with its messages", body = Kept), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Kept>, ApiError> {
    Ok(Json(history::open(&state, &principal, &id).await?))
}

/// `DELETE /v1/conversations/{id}`.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = String, Path, description = "A conversation's id")), responses((status = 200, description = "`{id, object: conversation.deleted, deleted: true}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    history::delete(&state, &principal, &id).await?;
    Ok(Json(
        json!({ "id": id, "object": "conversation.deleted", "deleted": true }),
    ))
}

/// `GET /v1/conversations/{id}/export`: the conversation as Markdown, banner above and below,
/// every message and citation with its portion mark.
#[utoipa::path(get, path = "/v1/conversations/{id}/export", tag = "conversations", params(("id" = String, Path, description = "A conversation's id")), responses((status = 200, description = "The transcript", content_type = "text/markdown", body = String), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let text = history::markdown(&state, &principal, &id).await?;
    // The id is a store key the service just found; only its safe characters reach the header.
    let file: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}.md\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}
