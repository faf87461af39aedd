//! `POST /v1/embeddings`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;

use crate::AppState;
use crate::audit::CallNote;
use crate::auth::Principal;
use crate::dispatch::{self, UpstreamClock};
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::mac::{self, LABEL_HEADER};
use crate::openai::{
    EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
use enclave_engine::EmbedInput;
use enclave_policy::Action;

enum Format {
    Float,
    Base64,
}

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
    note.attach(result)
}

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    req: EmbeddingRequest,
    note: &mut CallNote,
    clock: UpstreamClock,
) -> Result<Response, ApiError> {
    let inputs = req.input.into_inputs()?;
    // Token ids are inspected as the text they stand for; before the model loads, there is no
    // vocabulary to decode them with.
    let decoder = state.models.embedding.get().cloned();
    let mut texts: Vec<String> = Vec::with_capacity(inputs.len());
    for input in &inputs {
        texts.push(match input {
            EmbedInput::Text(s) => s.clone(),
            EmbedInput::Tokens(ids) => match &decoder {
                Some(engine) => engine.decode(ids),
                None => return Err(ApiError::ModelLoading(req.model.clone())),
            },
        });
    }
    let mut admitted = match mac::admit(
        &state.policy,
        &principal,
        Action::Embed,
        &req.model,
        &headers,
        None,
        None,
        &mut texts,
    ) {
        Ok(a) => a,
        Err(denied) => {
            note.decision = Some(denied.decision);
            return Err(denied.error);
        }
    };
    note.decision = Some(admitted.decision.clone());
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
    let estimate: u64 = texts.iter().map(|t| (t.len() as u64).div_ceil(4) + 2).sum();
    let ticket = state
        .quotas
        .reserve(&state.policy, &principal, &req.model, estimate)
        .await?;
    tracing::debug!(tenant = %principal.tenant_name, inputs = inputs.len(), "embeddings");
    let redacted = admitted.redacted.as_ref().map(|(t, _)| t.clone());
    let work = dispatch::Work::Embed {
        inputs: &inputs,
        plain: &texts,
        redacted: redacted.as_deref(),
        dimensions: req.dimensions,
    };
    let mut attempts = Vec::new();
    let dispatched =
        dispatch::dispatch(&state, &admitted.routes, &work, &mut attempts, &clock).await;
    note.attempts = attempts;
    let (out, index) = match dispatched {
        Ok((dispatch::Output::Embeddings(e), i)) => (e, i),
        Ok(_) => {
            ticket.release().await;
            return Err(ApiError::Internal);
        }
        Err(e) => {
            ticket.release().await;
            return Err(e);
        }
    };
    admitted.serve(index);
    note.decision = Some(admitted.decision.clone());
    if let Some(d) = req.dimensions
        && out.vectors.first().is_some_and(|v| v.len() != d as usize)
    {
        ticket.release().await;
        return Err(ApiError::unsupported(
            "dimensions",
            format!(
                "`{}` gives {} dimensions and cannot be shortened to {d}",
                req.model,
                out.vectors.first().map_or(0, Vec::len)
            ),
        ));
    }
    ticket.settle(out.tokens as u32, 0).await;
    crate::metrics::tokens(&req.model, out.tokens as u32, 0);
    note.outcome.tokens(out.tokens as u64, 0);
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
    let header = admitted.header();
    let mut response = Json(EmbeddingResponse {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
        enclave: Some(admitted.info),
    })
    .into_response();
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}
