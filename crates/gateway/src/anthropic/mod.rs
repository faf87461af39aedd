//! `POST /v1/messages`: Anthropic's Messages API, served by any deployment, so the official
//! `anthropic` SDK works unchanged. Parses into the same [`Conversation`] as the OpenAI
//! surface and shares every step after that (`enclave_service::answer::chat`); only the wire differs.

use std::convert::Infallible;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_service::types::FinishReason;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::OpenAiJson;
use crate::labels::{LABEL_HEADER, declared, header_value};
use crate::openai::chat::ToolCalls;
use enclave_service::answer::{self, Answer, Step};
use enclave_service::conversation::{Conversation, Image, Role, Tool, ToolCall, ToolChoice, Turn};
use enclave_service::dispatch::UpstreamClock;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<MessageIn>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<ToolIn>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Anthropic parameters Enclave does not implement; refused by name when they matter.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageIn {
    pub role: String,
    pub content: Value,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ToolIn {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

const UNSUPPORTED: &[&str] = &["thinking", "container", "mcp_servers"];

/// Text of a `content` that is a string or a list of text blocks.
fn text_of(v: &Value, param: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    other => {
                        return Err(Error::unsupported(
                            format!("{param}[{j}].type"),
                            format!(
                                "content of type `{}` is not supported here: send text",
                                other.unwrap_or("(none)")
                            ),
                        )
                        .into());
                    }
                }
            }
            Ok(out)
        }
        _ => Err(Error::invalid(
            param,
            format!("`{param}` must be a string or a list of content blocks"),
        )
        .into()),
    }
}

impl MessagesRequest {
    pub fn validate(self) -> Result<Conversation, ApiError> {
        for name in UNSUPPORTED {
            if let Some(v) = self.other.get(*name)
                && !v.is_null()
                && v.get("type").and_then(Value::as_str) != Some("disabled")
            {
                return Err(Error::unsupported(
                    *name,
                    "Enclave does not implement it yet; remove it from the request",
                )
                .into());
            }
        }
        if self.top_k.is_some() {
            return Err(Error::unsupported(
                "top_k",
                "top-k sampling is not implemented; use `temperature` or `top_p`",
            )
            .into());
        }
        if self.max_tokens == 0 {
            return Err(Error::invalid("max_tokens", "`max_tokens` must be at least 1").into());
        }
        if self.messages.is_empty() {
            return Err(
                Error::invalid("messages", "`messages` must hold at least one message").into(),
            );
        }
        let mut turns = Vec::new();
        if let Some(system) = &self.system {
            turns.push(Turn::new(Role::System, text_of(system, "system")?));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let at = format!("messages[{i}].content");
            match m.role.as_str() {
                "user" => {
                    let Value::Array(blocks) = &m.content else {
                        turns.push(Turn::new(Role::User, text_of(&m.content, &at)?));
                        continue;
                    };
                    let mut text = String::new();
                    let mut images = Vec::new();
                    for (j, b) in blocks.iter().enumerate() {
                        match b.get("type").and_then(Value::as_str) {
                            Some("text") => text.push_str(
                                b.get("text").and_then(Value::as_str).unwrap_or_default(),
                            ),
                            Some("tool_result") => {
                                let id = b.get("tool_use_id").and_then(Value::as_str).ok_or_else(
                                    || {
                                        Error::invalid(
                                            format!("{at}[{j}].tool_use_id"),
                                            "a `tool_result` needs the `tool_use_id` it answers",
                                        )
                                    },
                                )?;
                                let content = match b.get("content") {
                                    None | Some(Value::Null) => String::new(),
                                    Some(c) => text_of(c, &format!("{at}[{j}].content"))?,
                                };
                                let mut t = Turn::new(Role::Tool, content);
                                t.tool_call_id = Some(id.to_string());
                                turns.push(t);
                            }
                            Some("image") => {
                                let source = &b["source"];
                                let url = match source["type"].as_str() {
                                    Some("base64") => format!(
                                        "data:{};base64,{}",
                                        source["media_type"].as_str().unwrap_or_default(),
                                        source["data"].as_str().unwrap_or_default()
                                    ),
                                    _ => source["url"].as_str().unwrap_or_default().to_string(),
                                };
                                let image = Image::from_data_url(&url)
                                    .map_err(|m| Error::invalid(format!("{at}[{j}].source"), m))?;
                                images.push(image);
                            }
                            other => {
                                return Err(Error::unsupported(
                                    format!("{at}[{j}].type"),
                                    format!(
                                        "content of type `{}` is not supported: send text, images and tool results",
                                        other.unwrap_or("(none)")
                                    ),
                                )
                                .into());
                            }
                        }
                    }
                    if !text.is_empty() || !images.is_empty() {
                        let mut t = Turn::new(Role::User, text);
                        t.images = images;
                        turns.push(t);
                    }
                }
                "assistant" => {
                    let mut turn = Turn::new(Role::Assistant, String::new());
                    match &m.content {
                        Value::Array(blocks) => {
                            for (j, b) in blocks.iter().enumerate() {
                                match b.get("type").and_then(Value::as_str) {
                                    Some("text") => turn.text.push_str(
                                        b.get("text").and_then(Value::as_str).unwrap_or_default(),
                                    ),
                                    Some("tool_use") => turn.tool_calls.push(ToolCall {
                                        id: b
                                            .get("id")
                                            .and_then(Value::as_str)
                                            .unwrap_or_default()
                                            .to_string(),
                                        name: b
                                            .get("name")
                                            .and_then(Value::as_str)
                                            .unwrap_or_default()
                                            .to_string(),
                                        arguments: b
                                            .get("input")
                                            .map_or_else(|| "{}".to_string(), Value::to_string),
                                    }),
                                    other => {
                                        return Err(Error::unsupported(
                                            format!("{at}[{j}].type"),
                                            format!(
                                                "content of type `{}` is not supported",
                                                other.unwrap_or("(none)")
                                            ),
                                        )
                                        .into());
                                    }
                                }
                            }
                        }
                        other => turn.text = text_of(other, &at)?,
                    }
                    turns.push(turn);
                }
                other => {
                    return Err(Error::invalid(
                        format!("messages[{i}].role"),
                        format!("`{other}` is not a role: use `user` or `assistant`"),
                    )
                    .into());
                }
            }
        }
        let mut tools = Vec::new();
        for (i, t) in self.tools.unwrap_or_default().into_iter().enumerate() {
            if t.kind.as_deref().is_some_and(|k| k != "custom") {
                return Err(Error::unsupported(
                    format!("tools[{i}].type"),
                    "only client tools (with `input_schema`) are supported",
                )
                .into());
            }
            tools.push(Tool {
                name: t.name,
                description: t.description,
                parameters: t
                    .input_schema
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
        let tool_choice = match self.tool_choice {
            None | Some(Value::Null) => None,
            Some(v) => Some(match v.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("none") => ToolChoice::None,
                Some("any") => ToolChoice::Required,
                Some("tool") => match v.get("name").and_then(Value::as_str) {
                    Some(n) if tools.iter().any(|t| t.name == n) => ToolChoice::Named(n.into()),
                    _ => {
                        return Err(Error::invalid(
                            "tool_choice.name",
                            "`tool_choice` of type `tool` names a tool that is not in `tools`",
                        )
                        .into());
                    }
                },
                _ => {
                    return Err(Error::invalid(
                        "tool_choice",
                        "`tool_choice.type` is `auto`, `any`, `tool` or `none`",
                    )
                    .into());
                }
            }),
        };
        let (temperature, top_p) = crate::openai::sampling(self.temperature, 1.0, self.top_p)?;
        let stop = self.stop_sequences.unwrap_or_default();
        if stop.iter().any(String::is_empty) {
            return Err(Error::invalid("stop_sequences", "a stop sequence cannot be empty").into());
        }
        Ok(Conversation {
            turns,
            tools,
            tool_choice,
            sampling: enclave_service::types::Sampling {
                temperature,
                top_p,
                seed: rand::random(),
                stop,
                background: false,
            },
            max_tokens: Some(self.max_tokens),
            stream: self.stream.unwrap_or(false),
        })
    }
}

fn stop_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
    }
}

#[utoipa::path(post, path = "/v1/messages", tag = "chat", request_body = MessagesRequest, params(("Enclave-Label" = Option<String>, Header, description = "The request's declared label")), responses((status = 200, description = "An Anthropic message; with `stream: true`, Anthropic's event stream", content((Object = "application/json"), (String = "text/event-stream"))), (status = "default", description = "An error in Anthropic's shape, with a stable `code`", body = Object)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<MessagesRequest>,
) -> Response {
    let mut note = CallNote::for_model(&req.model);
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = serve(state, principal, headers, req, &mut note, &clock).await;
    attach(note, result)
}

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut req: MessagesRequest,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let metadata = req.metadata.take();
    let conversation = req.validate()?;
    let stream_it = conversation.stream;
    let declared = declared(&headers, metadata.as_ref())?;
    let continued = crate::conversations::continued(&state, &principal, &headers).await?;
    let asked = conversation
        .last_user_text()
        .unwrap_or_default()
        .to_string();
    let mut a = answer::chat(
        &state,
        &principal,
        declared.as_ref(),
        &model,
        conversation,
        continued.as_ref().map(|(floor, _)| floor),
        note,
        clock,
    )
    .await?;
    if let Some((_, keeper)) = continued {
        a.keep_in(keeper, asked);
    }
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let mut header = header_value(&a.info.label);
    let mut response = if stream_it {
        stream(a, id, model).into_response()
    } else {
        let mut body = collect(a, id, model).await?;
        // A marking in the answer raised its label (within the caller's clearance).
        if let Some(banner) = note.outcome.get().answer_label {
            header = header_value(&banner);
            body["enclave"]["label"] = Value::String(banner);
        }
        Json(body).into_response()
    };
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}

async fn collect(mut a: Answer, id: String, model: String) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut calls = ToolCalls::default();
    while let Some(step) = a.next().await {
        match step {
            Step::Text(t) => text.push_str(&t),
            Step::ToolCall(d) => calls.push(d),
            Step::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in calls.into_inner() {
                    let input: Value =
                        serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                    content.push(json!({
                        "type": "tool_use", "id": c.id, "name": c.function.name, "input": input,
                    }));
                }
                return Ok(json!({
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason(reason),
                    "stop_sequence": null,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
                    "enclave": a.info,
                }));
            }
            Step::Failed(error) => return Err(error.into()),
        }
    }
    Err(Error::EngineUnavailable.into())
}

fn sse(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// Anthropic's event sequence: `message_start`, then per content block `content_block_start`,
/// deltas, `content_block_stop`; `message_delta` with the stop reason and usage; `message_stop`.
/// A failure after the start is an `error` event, and the stream ends.
fn stream(
    mut a: Answer,
    id: String,
    model: String,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let events = async_stream::stream! {
        yield Ok(sse("message_start", &json!({
            "type": "message_start",
            "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
                "enclave": a.info,
            },
        })));
        yield Ok(sse("ping", &json!({"type": "ping"})));
        // The open block: its index and whether it is text (else the tool call it carries).
        let mut open: Option<(usize, Option<u32>)> = None;
        let mut next_block = 0usize;
        while let Some(step) = a.next().await {
            match step {
                Step::Text(t) => {
                    if !matches!(open, Some((_, None))) {
                        if let Some((i, _)) = open.take() {
                            yield Ok(sse("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
                        }
                        open = Some((next_block, None));
                        yield Ok(sse("content_block_start", &json!({
                            "type": "content_block_start", "index": next_block,
                            "content_block": {"type": "text", "text": ""},
                        })));
                        next_block += 1;
                    }
                    let i = open.map_or(0, |o| o.0);
                    yield Ok(sse("content_block_delta", &json!({
                        "type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": t},
                    })));
                }
                Step::ToolCall(d) => {
                    if open.map(|o| o.1) != Some(Some(d.index)) {
                        if let Some((i, _)) = open.take() {
                            yield Ok(sse("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
                        }
                        open = Some((next_block, Some(d.index)));
                        yield Ok(sse("content_block_start", &json!({
                            "type": "content_block_start", "index": next_block,
                            "content_block": {
                                "type": "tool_use",
                                "id": d.id.clone().unwrap_or_default(),
                                "name": d.name.clone().unwrap_or_default(),
                                "input": {},
                            },
                        })));
                        next_block += 1;
                    }
                    if !d.arguments.is_empty() {
                        let i = open.map_or(0, |o| o.0);
                        yield Ok(sse("content_block_delta", &json!({
                            "type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": d.arguments},
                        })));
                    }
                }
                Step::Done { reason, prompt_tokens, completion_tokens, .. } => {
                    if let Some((i, _)) = open.take() {
                        yield Ok(sse("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
                    }
                    yield Ok(sse("message_delta", &json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(reason), "stop_sequence": null},
                        "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
                    })));
                    yield Ok(sse("message_stop", &json!({"type": "message_stop"})));
                    return;
                }
                Step::Failed(error) => {
                    yield Ok(sse("error", &json!({
                        "type": "error",
                        "error": {"type": error_type(crate::error::status(&error).0), "message": error.to_string()},
                    })));
                    return;
                }
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Middleware on `/v1`: errors of `/v1/messages` leave in Anthropic's shape,
/// `{"type": "error", "error": {"type", "message"}}` (plus Enclave's stable `code`), whatever
/// step refused the call. Inside the audit step, so the recorded digest is of what was sent.
pub async fn error_shape(OriginalUri(uri): OriginalUri, req: Request, next: Next) -> Response {
    let anthropic = uri.path() == "/v1/messages";
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !anthropic || status.is_success() || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return ApiError(Error::Internal).into_response();
    };
    let openai: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = openai
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the request failed");
    let shaped = json!({
        "type": "error",
        "error": {
            "type": error_type(status),
            "message": message,
            "code": openai.pointer("/error/code"),
        },
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(shaped.to_string()))
}
