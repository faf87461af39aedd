//! `POST /v1/embeddings`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;

use enclave_service::dispatch::UpstreamClock;
use enclave_service::embed::embed;

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::OpenAiJson;
use crate::labels::{LABEL_HEADER, declared, header_value};
use crate::openai::{
    EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};

enum Format {
    Float,
    Base64,
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "embeddings", request_body = crate::openai::EmbeddingRequest, params(("Enclave-Label" = Option<String>, Header, description = "The request's declared label")), responses((status = 200, description = "Embeddings", body = crate::openai::EmbeddingResponse), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Response {
    let mut note = CallNote::for_model(&req.model);
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = serve(state, principal, headers, req, &mut note, clock).await;
    attach(note, result)
}

pub(crate) async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    req: EmbeddingRequest,
    note: &mut CallNote,
    clock: UpstreamClock,
) -> Result<Response, ApiError> {
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => Format::Float,
        Some("base64") => Format::Base64,
        Some(other) => {
            return Err(Error::invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`; got `{other}`"),
            )
            .into());
        }
    };
    let inputs = req.input.into_inputs()?;
    let declared = declared(&headers, None)?;
    let out = embed(
        &state,
        &principal,
        declared.as_ref(),
        &req.model,
        inputs,
        req.dimensions,
        note,
        &clock,
    )
    .await?;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: match format {
                Format::Float => EmbeddingVector::Float(v),
                Format::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    let header = header_value(&out.info.label);
    let tokens = out.tokens as usize;
    let mut response = Json(EmbeddingResponse {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        enclave: Some(out.info),
    })
    .into_response();
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}
