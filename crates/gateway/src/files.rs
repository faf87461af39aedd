//! `/v1/files`: OpenAI's Files API for batches and fine-tuning. Uploads are multipart (`file`,
//! `purpose`), declared at `Enclave-Label`; what is accepted, at which label and for whom is
//! decided in `enclave_service::files`. Every answer about a file carries its label.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_service::files::{self, FileInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::labels::{LABEL_HEADER, declared, header_value};

fn labelled(body: impl IntoResponse, label: &str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(LABEL_HEADER, header_value(label));
    r
}

/// `POST /v1/files`: multipart with `file` and `purpose` (`batch` or `fine-tune`).
#[utoipa::path(post, path = "/v1/files", tag = "files", params(("Enclave-Label" = Option<String>, Header, description = "The file's declared label")), request_body(content((Object = "multipart/form-data"))), responses((status = 200, description = "The file", body = FileInfo), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<Response, ApiError> {
    let declared = declared(request.headers(), None)?;
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| {
            Error::invalid(
                "body",
                format!("a file is uploaded as multipart form data: {e}"),
            )
        })?;
    let mut purpose = None;
    let mut file = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Error::invalid("body", format!("bad multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| Error::invalid("purpose", e.to_string()))?,
                );
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| Error::invalid("file", e.to_string()))?;
                file = Some((name, bytes));
            }
            Some(other) => {
                return Err(Error::invalid(
                    other,
                    format!("`{other}` is not a field of a file upload: send `file` and `purpose`"),
                )
                .into());
            }
            None => {}
        }
    }
    let purpose = purpose.ok_or_else(|| {
        Error::invalid(
            "purpose",
            "give the file's `purpose`: `batch` or `fine-tune`",
        )
    })?;
    let (name, bytes) =
        file.ok_or_else(|| Error::invalid("file", "the upload has no `file` part"))?;
    let info = files::upload(
        &state,
        &principal,
        declared.as_ref(),
        purpose.trim(),
        &name,
        &bytes,
    )
    .await?;
    let label = info.enclave.label.clone();
    Ok(labelled(Json(info), &label))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only files of this purpose.
    #[serde(default)]
    purpose: Option<String>,
}

/// `GET /v1/files`: the tenant's files the caller may read, newest first.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(ListQuery), responses((status = 200, description = "`{object: list, data: [file], has_more}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let data = files::list(&state, &principal, q.purpose.as_deref()).await?;
    Ok(Json(json!({
        "object": "list",
        "first_id": data.first().map(|f| f.id.clone()),
        "last_id": data.last().map(|f| f.id.clone()),
        "has_more": false,
        "data": data,
    })))
}

/// `GET /v1/files/{id}`.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", params(("id" = String, Path, description = "A file id")), responses((status = 200, description = "The file", body = FileInfo), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let info = files::get(&state, &principal, &id).await?;
    let label = info.enclave.label.clone();
    Ok(labelled(Json(info), &label))
}

/// `GET /v1/files/{id}/content`: the bytes, as uploaded.
#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "files", params(("id" = String, Path, description = "A file id")), responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn content(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (info, bytes) = files::content(&state, &principal, &id).await?;
    let mut r = labelled(bytes, &info.enclave.label);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(r)
}

/// `DELETE /v1/files/{id}`.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", params(("id" = String, Path, description = "A file id")), responses((status = 200, description = "`{id, object: file, deleted: true}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    files::delete(&state, &principal, &id).await?;
    Ok(Json(json!({ "id": id, "object": "file", "deleted": true })))
}
