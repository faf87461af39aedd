//! `POST /v1/chat/completions`, streamed and not, from the embedded engine or an upstream.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_service::answer::{self, Answer, Step};
use enclave_service::dispatch::UpstreamClock;
use enclave_service::info::mark_cited;
use enclave_service::types::ToolCallDelta;

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::OpenAiJson;
use crate::labels::{LABEL_HEADER, declared, header_value};
use crate::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, FunctionDeltaOut, FunctionOut, ToolCallDeltaOut, ToolCallOut, Usage,
};

/// Names the build in `system_fingerprint`, so a client can tell answers of different builds apart.
const FINGERPRINT: &str = concat!("enclave-", env!("CARGO_PKG_VERSION"));

#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat", request_body = crate::openai::ChatCompletionRequest, params(("Enclave-Label" = Option<String>, Header, description = "The request's declared label, such as `SECRET//NOFORN`")), responses((status = 200, description = "A chat completion; with `stream: true`, server-sent chunks ending in `[DONE]`", content((crate::openai::ChatCompletion = "application/json"), (String = "text/event-stream"))), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Response {
    let mut note = CallNote::for_model(&req.model);
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = serve(state, principal, headers, req, &mut note, &clock).await;
    attach(note, result)
}

pub(crate) async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut req: ChatCompletionRequest,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let metadata = req.metadata.take();
    let valid = req.validate()?;
    let stream_it = valid.conversation.stream;
    let include_usage = valid.include_usage;
    let mut conversation = valid.conversation;
    let declared = declared(&headers, metadata.as_ref())?;
    let continued = crate::conversations::continued(&state, &principal, &headers).await?;
    let asked = conversation
        .last_user_text()
        .unwrap_or_default()
        .to_string();
    let retrieved = enclave_service::retrieval::augment(
        &state,
        &principal,
        declared.as_ref(),
        metadata.as_ref(),
        &mut conversation,
    )
    .await?;
    let mut a = answer::chat(
        &state,
        &principal,
        declared.as_ref(),
        &model,
        conversation,
        crate::conversations::joined_floor(
            retrieved.as_ref().and_then(|r| r.floor.as_ref()),
            continued.as_ref().map(|(floor, _)| floor),
        )
        .as_ref(),
        note,
        clock,
    )
    .await?;
    if let Some((_, keeper)) = continued {
        a.keep_in(keeper, asked);
    }
    if let Some(r) = retrieved {
        a.info.citations = r.citations;
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = enclave_service::types::now();
    let mut header = header_value(&a.info.label);
    let mut response = if stream_it {
        stream(a, id, model, created, include_usage).into_response()
    } else {
        let mut completion = collect(a, id, model, created).await?;
        if let Some(info) = completion.enclave.as_mut() {
            // A marking in the answer raised its label (within the caller's clearance).
            if let Some(banner) = note.outcome.get().answer_label {
                header = header_value(&banner);
                info.label = banner;
            }
            if let Some(choice) = completion.choices.first() {
                let text = choice.message.content.as_deref().unwrap_or_default();
                mark_cited(&mut info.citations, text);
            }
        }
        Json(completion).into_response()
    };
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}

/// Tool calls assembled from their streamed pieces.
#[derive(Default)]
pub struct ToolCalls(Vec<ToolCallOut>);

impl ToolCalls {
    pub fn push(&mut self, d: ToolCallDelta) {
        let i = d.index as usize;
        while self.0.len() <= i {
            self.0.push(ToolCallOut {
                id: String::new(),
                kind: "function",
                function: FunctionOut {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        let call = &mut self.0[i];
        if let Some(id) = d.id {
            call.id = id;
        }
        if let Some(name) = d.name {
            call.function.name = name;
        }
        call.function.arguments.push_str(&d.arguments);
    }

    pub fn into_inner(self) -> Vec<ToolCallOut> {
        self.0
    }
}

async fn collect(
    mut a: Answer,
    id: String,
    model: String,
    created: i64,
) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    let mut calls = ToolCalls::default();
    while let Some(step) = a.next().await {
        match step {
            Step::Text(t) => content.push_str(&t),
            Step::ToolCall(d) => calls.push(d),
            Step::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                let tool_calls = calls.into_inner();
                return Ok(ChatCompletion {
                    id,
                    object: "chat.completion",
                    created,
                    model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content: (!content.is_empty() || tool_calls.is_empty())
                                .then_some(content),
                            refusal: None,
                            tool_calls,
                        },
                        logprobs: None,
                        finish_reason: reason.as_str(),
                    }],
                    usage: Usage::new(prompt_tokens, completion_tokens).cached(cached_tokens),
                    system_fingerprint: FINGERPRINT,
                    enclave: Some(a.info),
                });
            }
            Step::Failed(error) => return Err(error.into()),
        }
    }
    Err(Error::EngineUnavailable.into())
}

fn chunk_event(chunk: &ChatCompletionChunk<'_>) -> SseEvent {
    match serde_json::to_string(chunk) {
        Ok(json) => SseEvent::default().data(json),
        Err(_) => error_event(&ApiError(Error::Internal)),
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
    mut a: Answer,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
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
        let mut opening = chunk(Delta { role: Some("assistant"), content: Some(String::new()), tool_calls: None }, None);
        opening.enclave = Some(&a.info);
        yield Ok(chunk_event(&opening));
        let mut first = true;
        while let Some(step) = a.next().await {
            match step {
                Step::Text(t) => {
                    if first {
                        metrics::histogram!("enclave_time_to_first_token_seconds").record(a.started.elapsed().as_secs_f64());
                        first = false;
                    }
                    yield Ok(chunk_event(&chunk(Delta { content: Some(t), ..Delta::default() }, None)));
                }
                Step::ToolCall(d) => {
                    let call = ToolCallDeltaOut {
                        index: d.index,
                        kind: d.id.is_some().then_some("function"),
                        id: d.id,
                        function: FunctionDeltaOut { name: d.name, arguments: d.arguments },
                    };
                    yield Ok(chunk_event(&chunk(Delta { tool_calls: Some(vec![call]), ..Delta::default() }, None)));
                }
                Step::Done { reason, prompt_tokens, completion_tokens, cached_tokens } => {
                    // The last chunk names the answer's label, which a marking in it may have
                    // raised since the header went out.
                    let mut last_info = a.info.clone();
                    if let Some(banner) = a.label() {
                        last_info.label = banner;
                    }
                    let mut last = chunk(Delta::default(), Some(reason.as_str()));
                    last.enclave = Some(&last_info);
                    yield Ok(chunk_event(&last));
                    if include_usage {
                        let last = ChatCompletionChunk {
                            id: &id,
                            object: "chat.completion.chunk",
                            created,
                            model: &model,
                            system_fingerprint: FINGERPRINT,
                            choices: vec![],
                            usage: Some(Some(Usage::new(prompt_tokens, completion_tokens).cached(cached_tokens))),
                            enclave: None,
                        };
                        yield Ok(chunk_event(&last));
                    }
                    yield Ok(SseEvent::default().data("[DONE]"));
                    return;
                }
                Step::Failed(error) => {
                    yield Ok(error_event(&ApiError(error)));
                    return;
                }
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}
