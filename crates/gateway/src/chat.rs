//! `POST /v1/chat/completions`, streamed and not, from the embedded engine or an upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_engine::{ChatEngine, Event};
use enclave_policy::{Action, Redactions};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::audit::CallNote;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::mac::{self, EnclaveInfo, LABEL_HEADER};
use crate::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, Usage,
};
use crate::policy::Backend;
use crate::{AppState, CHAT_MODEL};

/// Names the build in `system_fingerprint`, so a client can tell answers of different builds apart.
const FINGERPRINT: &str = concat!("enclave-", env!("CARGO_PKG_VERSION"));

fn embedded_chat(state: &AppState) -> Result<Arc<ChatEngine>, ApiError> {
    state
        .models
        .chat
        .get()
        .cloned()
        .ok_or_else(|| ApiError::ModelLoading(CHAT_MODEL.to_string()))
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Response {
    let mut note = CallNote {
        model: Some(req.model.clone()),
        ..CallNote::default()
    };
    let mut response = match serve(state, principal, headers, req, &mut note).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(note);
    response
}

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut req: ChatCompletionRequest,
    note: &mut CallNote,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let metadata = req.metadata.take();
    let mut chat = req.validate()?;
    let mut texts: Vec<String> = chat
        .messages
        .iter_mut()
        .map(|m| std::mem::take(&mut m.content))
        .collect();
    let admitted = match mac::admit(
        &state.policy,
        &principal,
        Action::Chat,
        &model,
        &headers,
        metadata.as_ref(),
        &mut texts,
    ) {
        Ok(a) => a,
        Err(denied) => {
            note.decision = Some(denied.decision);
            return Err(denied.error);
        }
    };
    note.decision = Some(admitted.decision.clone());
    for (m, t) in chat.messages.iter_mut().zip(texts) {
        m.content = t;
    }
    let started = Instant::now();
    let rx = match &admitted.deployment.backend {
        Backend::Embedded => {
            let engine = embedded_chat(&state)?;
            // Rendering and tokenizing a prompt of up to `MAX_BODY_BYTES` takes long enough to
            // stall a runtime worker, so it runs on the blocking pool.
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
            engine.generate(prompt, chat.sampling, chat.max_tokens)?
        }
        Backend::OpenAi(upstream) => {
            upstream
                .chat(&chat.messages, &chat.sampling, chat.max_tokens, chat.stream)
                .await?
        }
    };
    let header = admitted.header();
    let rx = match admitted.redactions {
        Some(r) if !r.is_empty() => restoring(rx, r),
        _ => rx,
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    tracing::debug!(tenant = %principal.tenant_name, key = %principal.key_id, %id, deployment = %admitted.info.deployment, "chat completion");
    let created = enclave_store::now();
    let info = admitted.info;
    let mut response = if chat.stream {
        stream(rx, id, model, created, chat.include_usage, started, info).into_response()
    } else {
        let completion = collect(rx, id, model, created, info).await?;
        note.prompt_tokens = u64::from(completion.usage.prompt_tokens);
        note.completion_tokens = u64::from(completion.usage.completion_tokens);
        Json(completion).into_response()
    };
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}

/// Puts redacted personal data back into the answer as it streams, holding back only text that
/// may still be the start of a placeholder.
fn restoring(mut rx: UnboundedReceiver<Event>, redactions: Redactions) -> UnboundedReceiver<Event> {
    let (tx, out) = unbounded_channel();
    tokio::spawn(async move {
        let mut restorer = redactions.restorer();
        while let Some(event) = rx.recv().await {
            let event = match event {
                Event::Text(t) => {
                    let text = restorer.push(&t);
                    if text.is_empty() {
                        continue;
                    }
                    Event::Text(text)
                }
                done @ Event::Done { .. } => {
                    let rest = restorer.finish();
                    if !rest.is_empty() && tx.send(Event::Text(rest)).is_err() {
                        return;
                    }
                    done
                }
                other => other,
            };
            if tx.send(event).is_err() {
                return; // the client left; dropping `rx` frees the sequence
            }
        }
    });
    out
}

async fn collect(
    mut rx: UnboundedReceiver<Event>,
    id: String,
    model: String,
    created: i64,
    info: EnclaveInfo,
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
                    enclave: Some(info),
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
    info: EnclaveInfo,
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
            enclave: None,
        };
        let mut opening = chunk(Delta { role: Some("assistant"), content: Some(String::new()) }, None);
        opening.enclave = Some(&info);
        yield Ok(chunk_event(&opening));
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
                            enclave: None,
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
