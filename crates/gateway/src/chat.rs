//! `POST /v1/chat/completions`, streamed and not.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_engine::{ChatEngine, Event};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, Usage,
};
use crate::{AppState, CHAT_MODEL, EMBEDDING_MODEL};

/// Names the build in `system_fingerprint`, so a client can tell answers of different builds apart.
const FINGERPRINT: &str = concat!("enclave-", env!("CARGO_PKG_VERSION"));

pub(crate) fn chat_engine(state: &AppState, model: &str) -> Result<Arc<ChatEngine>, ApiError> {
    match model {
        CHAT_MODEL => state
            .models
            .chat
            .get()
            .cloned()
            .ok_or_else(|| ApiError::ModelLoading(model.to_string())),
        EMBEDDING_MODEL => Err(ApiError::WrongModelKind {
            model: model.to_string(),
            actual: "an embedding",
            route: "chat completions",
        }),
        _ => Err(ApiError::ModelNotFound(model.to_string())),
    }
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let engine = chat_engine(&state, &model)?;
    let mut chat = req.validate()?;
    // Rendering and tokenizing a prompt of up to `MAX_BODY_BYTES` takes long enough to stall a
    // runtime worker, so it runs on the blocking pool.
    let prompt = {
        let engine = Arc::clone(&engine);
        let messages = std::mem::take(&mut chat.messages);
        tokio::task::spawn_blocking(move || engine.prompt(&messages))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "prompt task failed");
                ApiError::Internal
            })??
    };
    let started = Instant::now();
    let rx = engine.generate(prompt, chat.sampling, chat.max_tokens)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    tracing::debug!(tenant = %principal.tenant_name, key = %principal.key_id, %id, "chat completion");
    let created = enclave_store::now();
    if chat.stream {
        return Ok(stream(rx, id, model, created, chat.include_usage, started).into_response());
    }
    collect(rx, id, model, created)
        .await
        .map(|c| Json(c).into_response())
}

async fn collect(
    mut rx: UnboundedReceiver<Event>,
    id: String,
    model: String,
    created: i64,
) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => content.push_str(&t),
            Event::Done {
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                crate::metrics::tokens(&model, prompt_tokens, completion_tokens);
                return Ok(ChatCompletion {
                    id,
                    object: "chat.completion",
                    created,
                    model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                            refusal: None,
                        },
                        logprobs: None,
                        finish_reason: reason.as_str(),
                    }],
                    usage: Usage::new(prompt_tokens, completion_tokens),
                    system_fingerprint: FINGERPRINT,
                });
            }
            Event::Error(msg) => {
                tracing::error!(error = %msg, "generation failed");
                return Err(ApiError::Internal);
            }
        }
    }
    Err(ApiError::EngineUnavailable)
}

fn chunk_event(chunk: &ChatCompletionChunk<'_>) -> SseEvent {
    match serde_json::to_string(chunk) {
        Ok(json) => SseEvent::default().data(json),
        Err(_) => error_event(&ApiError::Internal),
    }
}

fn error_event(err: &ApiError) -> SseEvent {
    let json = serde_json::to_string(&err.body()).unwrap_or_else(|_| r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#.to_string());
    SseEvent::default().data(json)
}

/// The SSE stream the SDKs expect: a first chunk with the role, content chunks with one `id`, a
/// last chunk with `finish_reason`, a usage chunk with empty `choices` when asked for, then
/// `[DONE]`. Dropping the stream (client gone) drops the receiver, which frees the sequence.
fn stream(
    mut rx: UnboundedReceiver<Event>,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    started: Instant,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let usage_field = include_usage.then_some(None);
    let events = async_stream::stream! {
        let chunk = |delta: Delta, finish: Option<&'static str>| ChatCompletionChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &model,
            system_fingerprint: FINGERPRINT,
            choices: vec![ChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }],
            usage: usage_field,
        };
        yield Ok(chunk_event(&chunk(Delta { role: Some("assistant"), content: Some(String::new()) }, None)));
        let mut first = true;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(t) => {
                    if first {
                        metrics::histogram!("enclave_time_to_first_token_seconds").record(started.elapsed().as_secs_f64());
                        first = false;
                    }
                    yield Ok(chunk_event(&chunk(Delta { role: None, content: Some(t) }, None)));
                }
                Event::Done { reason, prompt_tokens, completion_tokens } => {
                    crate::metrics::tokens(&model, prompt_tokens, completion_tokens);
                    yield Ok(chunk_event(&chunk(Delta::default(), Some(reason.as_str()))));
                    if include_usage {
                        let last = ChatCompletionChunk {
                            id: &id,
                            object: "chat.completion.chunk",
                            created,
                            model: &model,
                            system_fingerprint: FINGERPRINT,
                            choices: vec![],
                            usage: Some(Some(Usage::new(prompt_tokens, completion_tokens))),
                        };
                        yield Ok(chunk_event(&last));
                    }
                    yield Ok(SseEvent::default().data("[DONE]"));
                    return;
                }
                Event::Error(msg) => {
                    tracing::error!(error = %msg, "generation failed mid-stream");
                    yield Ok(error_event(&ApiError::Internal));
                    return;
                }
            }
        }
        yield Ok(error_event(&ApiError::EngineUnavailable));
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}
