//! `/v1/batches`: OpenAI's Batch API over `enclave_service::batches`, and the [`Lines`] that
//! answer a batch's lines: each parsed with the API's own wire types and served by the same
//! handler code as an interactive call (declared at the batch file's label), then recorded in
//! the audit log as a call of its own (`kind: batch`, `run`: the batch id).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_service::batches::{self, Line, LineOutcome, LineRunner, NewBatch};
use enclave_service::dispatch::UpstreamClock;
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::OpenAiJson;
use crate::labels::{LABEL_HEADER, header_value};
use crate::openai::{ChatCompletionRequest, EmbeddingRequest, chat, embeddings};

/// `POST /v1/batches`.
#[utoipa::path(post, path = "/v1/batches", tag = "batches", request_body = NewBatch, responses((status = 200, description = "The batch", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OpenAiJson(req): OpenAiJson<NewBatch>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(batches::create(&state, &principal, req).await?))
}

/// `GET /v1/batches`.
#[utoipa::path(get, path = "/v1/batches", tag = "batches", responses((status = 200, description = "`{object: list, data: [batch], has_more}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let data = batches::list(&state, &principal).await?;
    Ok(Json(json!({
        "object": "list",
        "first_id": data.first().map(|b| b["id"].clone()),
        "last_id": data.last().map(|b| b["id"].clone()),
        "has_more": false,
        "data": data,
    })))
}

/// `GET /v1/batches/{id}`.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path, description = "A batch id")), responses((status = 200, description = "The batch", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(batches::get(&state, &principal, &id).await?))
}

/// `POST /v1/batches/{id}/cancel`.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "A batch id")), responses((status = 200, description = "The batch, cancelling", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(batches::cancel(&state, &principal, &id).await?))
}

/// Answers batch lines with the gateway's own handler code.
pub struct Lines(pub AppState);

impl Lines {
    async fn serve(&self, line: &Line<'_>) -> Response {
        let state = self.0.clone();
        let principal = line.principal.clone();
        let mut headers = HeaderMap::new();
        headers.insert(LABEL_HEADER, header_value(line.label));
        let clock = UpstreamClock::default();
        match line.endpoint {
            "/v1/chat/completions" => {
                let req: ChatCompletionRequest = match serde_json::from_value(line.body.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        return ApiError(Error::invalid(
                            "body",
                            format!("the line's `body` is not a chat request: {e}"),
                        ))
                        .into_response();
                    }
                };
                if req.stream == Some(true) {
                    return ApiError(Error::invalid(
                        "body.stream",
                        "a batch line is answered whole: leave out `stream`",
                    ))
                    .into_response();
                }
                let mut note = CallNote::for_model(&req.model);
                note.background = true;
                let result = chat::serve(state, principal, headers, req, &mut note, &clock).await;
                attach(note, result)
            }
            "/v1/embeddings" => {
                let req: EmbeddingRequest = match serde_json::from_value(line.body.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        return ApiError(Error::invalid(
                            "body",
                            format!("the line's `body` is not an embeddings request: {e}"),
                        ))
                        .into_response();
                    }
                };
                let mut note = CallNote::for_model(&req.model);
                let result =
                    embeddings::serve(state, principal, headers, req, &mut note, clock).await;
                attach(note, result)
            }
            other => ApiError(Error::invalid(
                "url",
                format!("`{other}` is not an endpoint batches call"),
            ))
            .into_response(),
        }
    }
}

#[async_trait::async_trait]
impl LineRunner for Lines {
    async fn run(&self, line: Line<'_>) -> LineOutcome {
        let started = Instant::now();
        let request = Bytes::from(line.body.to_string());
        let mut response = self.serve(&line).await;
        response.extensions_mut().insert(line.principal.clone());
        let label = response
            .headers()
            .get(LABEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::labels::decode_header(v.as_bytes()).unwrap_or_else(|| v.to_string()));
        let (response, bytes) = crate::audit::record_job_call(
            &self.0,
            started,
            format!("POST {}", line.endpoint),
            (line.batch, line.custom_id),
            &request,
            response,
        )
        .await;
        let status = response.status().as_u16();
        let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        LineOutcome {
            status,
            body,
            label: label.filter(|_| (200..300).contains(&status)),
        }
    }
}
