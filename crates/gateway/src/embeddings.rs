//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine as _;
use enclave_engine::EmbeddingEngine;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::openai::{
    EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
use crate::{AppState, CHAT_MODEL, EMBEDDING_MODEL};

enum Format {
    Float,
    Base64,
}

fn embedding_engine(state: &AppState, model: &str) -> Result<Arc<EmbeddingEngine>, ApiError> {
    match model {
        EMBEDDING_MODEL => state
            .models
            .embedding
            .get()
            .cloned()
            .ok_or_else(|| ApiError::ModelLoading(model.to_string())),
        CHAT_MODEL => Err(ApiError::WrongModelKind {
            model: model.to_string(),
            actual: "a chat",
            route: "embeddings",
        }),
        _ => Err(ApiError::ModelNotFound(model.to_string())),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let engine = embedding_engine(&state, &req.model)?;
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => Format::Float,
        Some("base64") => Format::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`; got `{other}`"),
            ));
        }
    };
    if let Some(d) = req.dimensions
        && d as usize != engine.dims()
    {
        {
            return Err(ApiError::unsupported(
                "dimensions",
                format!(
                    "`{}` gives {} dimensions and cannot be shortened to {d}",
                    req.model,
                    engine.dims()
                ),
            ));
        }
    }
    let inputs = req.input.into_inputs()?;
    tracing::debug!(tenant = %principal.tenant_name, inputs = inputs.len(), "embeddings");
    let worker = Arc::clone(&engine);
    let out = tokio::task::spawn_blocking(move || worker.embed(&inputs))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "embedding task failed");
            ApiError::Internal
        })??;
    crate::metrics::tokens(&req.model, out.tokens as u32, 0);
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
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    }))
}
